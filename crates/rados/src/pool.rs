//! Monitor commands, and whether a pool is full.
//!
//! A write to a pool that is full (its quota reached, or the OSDs past their full ratio) does
//! not fail in librados: the objecter holds it until the pool has room again or the OSD op
//! timeout ends it (measured: an import sat silent for the whole 300 s timeout, then said
//! "create image …: timed out"). Asking the monitors first, and again whenever writes stall,
//! turns that into an error that names the cause at once.

use std::ffi::c_char;
use std::ptr;

use serde::Deserialize;

use crate::cluster::ClusterHandle;
use crate::cstr::c_string;
use crate::{Error, ErrorKind, Result};

/// The pool flag the monitors set when a pool is full (quota or OSD full ratio).
const FLAG_FULL: &str = "full";
/// The pool flag set when the pool's own quota (bytes or objects) is reached.
const FLAG_FULL_QUOTA: &str = "full_quota";
/// Bytes in a mebibyte, for messages.
const MIB: u64 = 1 << 20;

/// Runs a monitor command (JSON, as `ceph --format json` sends it) and returns its output.
pub(crate) fn mon_command(cluster: &ClusterHandle, command: &str) -> Result<Vec<u8>> {
    let c_cmd = c_string(command, "mon command")?;
    let cmds = [c_cmd.as_ptr()];
    let (mut out, mut out_len): (*mut c_char, usize) = (ptr::null_mut(), 0);
    let (mut status, mut status_len): (*mut c_char, usize) = (ptr::null_mut(), 0);
    // SAFETY: connected handle; one NUL-terminated command that outlives the call; no input
    // buffer; valid out-pointers that librados fills with buffers it allocated.
    let code = unsafe {
        ceph_sys::api().rados_mon_command(
            cluster.raw(),
            cmds.as_ptr().cast_mut(),
            cmds.len(),
            ptr::null(),
            0,
            &mut out,
            &mut out_len,
            &mut status,
            &mut status_len,
        )
    };
    let take = |buf: *mut c_char, len: usize| -> Vec<u8> {
        if buf.is_null() {
            return Vec::new();
        }
        // SAFETY: librados allocated `len` bytes at `buf` for this call.
        let bytes = unsafe { std::slice::from_raw_parts(buf.cast::<u8>(), len) }.to_vec();
        // SAFETY: freed once, with the function librados documents for its buffers.
        unsafe { ceph_sys::api().rados_buffer_free(buf) };
        bytes
    };
    let out = take(out, out_len);
    let status = take(status, status_len);
    if code < 0 {
        let status = String::from_utf8_lossy(&status).trim().to_string();
        let err = Error::from_code(code.into(), "run mon command", command);
        return Err(if status.is_empty() {
            err
        } else {
            err.with_reason(status)
        });
    }
    Ok(out)
}

/// A pool's entry in `osd dump` (the fields used here).
#[derive(Debug, Deserialize)]
struct DumpedPool {
    pool_name: String,
    #[serde(default)]
    flags_names: String,
    #[serde(default)]
    quota_max_bytes: u64,
    #[serde(default)]
    quota_max_objects: u64,
}

#[derive(Debug, Deserialize)]
struct OsdDump {
    pools: Vec<DumpedPool>,
}

/// What `osd pool get-quota` says of the pool's use.
#[derive(Debug, Default, Deserialize)]
struct QuotaUse {
    #[serde(default)]
    current_num_bytes: u64,
    #[serde(default)]
    current_num_objects: u64,
}

/// Why a pool is full, in words, from the `osd dump` JSON and (optionally) the pool's use;
/// `None` when it is not full or not in the dump.
fn full_reason(
    dump: &[u8],
    pool: &str,
    usage: impl FnOnce() -> Option<Vec<u8>>,
) -> Result<Option<String>> {
    let dump: OsdDump = serde_json::from_slice(dump).map_err(|e| {
        Error::new(ErrorKind::Other, "read osd dump for pool", pool)
            .with_reason(format!("unexpected JSON from the monitors: {e}"))
    })?;
    let Some(entry) = dump.pools.iter().find(|p| p.pool_name == pool) else {
        return Ok(None);
    };
    let flags: Vec<&str> = entry.flags_names.split(',').collect();
    if !flags.contains(&FLAG_FULL) && !flags.contains(&FLAG_FULL_QUOTA) {
        return Ok(None);
    }
    if !flags.contains(&FLAG_FULL_QUOTA) {
        return Ok(Some(format!(
            "pool {pool} is full: the cluster's OSDs are past their full ratio (see `ceph df`, `ceph health detail`)"
        )));
    }
    let used: QuotaUse = usage()
        .and_then(|json| serde_json::from_slice(&json).ok())
        .unwrap_or_default();
    let bytes_reached =
        entry.quota_max_bytes > 0 && used.current_num_bytes >= entry.quota_max_bytes;
    let objects_reached =
        entry.quota_max_objects > 0 && used.current_num_objects >= entry.quota_max_objects;
    let quota = if objects_reached && !bytes_reached {
        format!(
            "quota max_objects {} reached ({} objects stored)",
            entry.quota_max_objects, used.current_num_objects
        )
    } else if entry.quota_max_bytes > 0 {
        let stored = if used.current_num_bytes > 0 {
            format!(" ({} MiB stored)", used.current_num_bytes / MIB)
        } else {
            String::new()
        };
        format!(
            "quota max_bytes {} MiB reached{stored}",
            entry.quota_max_bytes.div_ceil(MIB)
        )
    } else {
        format!("quota max_objects {} reached", entry.quota_max_objects)
    };
    Ok(Some(format!(
        "pool {pool} is full: {quota}; raise the quota (`ceph osd pool set-quota {pool} …`) or free space"
    )))
}

/// Fails with [`ErrorKind::NoSpace`] and the reason in words when `pool` is full; Ok when it
/// has room (or the monitors do not know it: the write itself will then say why).
pub(crate) fn check_not_full(cluster: &ClusterHandle, pool: &str) -> Result<()> {
    let dump = mon_command(cluster, r#"{"prefix": "osd dump", "format": "json"}"#)?;
    let usage = || {
        let command = serde_json::json!({
            "prefix": "osd pool get-quota", "pool": pool, "format": "json"
        });
        mon_command(cluster, &command.to_string()).ok()
    };
    match full_reason(&dump, pool, usage)? {
        None => Ok(()),
        Some(reason) => {
            Err(Error::new(ErrorKind::NoSpace, "write to pool", pool).with_reason(reason))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DUMP: &str = r#"{"epoch": 40, "flags": "sortbitwise", "pools": [
        {"pool_name": "rbd", "flags_names": "hashpspool,full,full_quota,selfmanaged_snaps",
         "quota_max_bytes": 629145600, "quota_max_objects": 0},
        {"pool_name": "osdfull", "flags_names": "hashpspool,full", "quota_max_bytes": 0,
         "quota_max_objects": 0},
        {"pool_name": "fine", "flags_names": "hashpspool", "quota_max_bytes": 10,
         "quota_max_objects": 0}]}"#;

    #[test]
    fn a_pool_over_its_byte_quota_is_named_with_the_quota() {
        let usage =
            || Some(br#"{"current_num_bytes": 834666496, "current_num_objects": 9}"#.to_vec());
        let reason = full_reason(DUMP.as_bytes(), "rbd", usage).unwrap().unwrap();
        assert!(
            reason
                .starts_with("pool rbd is full: quota max_bytes 600 MiB reached (796 MiB stored)"),
            "{reason}"
        );
    }

    #[test]
    fn a_pool_full_for_the_osds_says_so_and_others_are_not_full() {
        let reason = full_reason(DUMP.as_bytes(), "osdfull", || None)
            .unwrap()
            .unwrap();
        assert!(
            reason.contains("OSDs are past their full ratio"),
            "{reason}"
        );
        assert_eq!(full_reason(DUMP.as_bytes(), "fine", || None).unwrap(), None);
        assert_eq!(
            full_reason(DUMP.as_bytes(), "absent", || None).unwrap(),
            None
        );
    }
}
