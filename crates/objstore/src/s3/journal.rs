//! Who writes what: the `HOST PID INSTANCE` identity of a writing process ([`Writer`]), and a journal
//! of this host's multipart uploads in progress ([`UploadJournal`]).
//!
//! A multipart upload carries nothing a listing shows but its key and its start time: once
//! the process that started it is killed, nothing on the server says whose it was. So every
//! upload this crate starts is recorded in a small file on the local host (removed again when
//! the upload is completed or aborted). A record whose writer ran on this host and no longer
//! runs proves the upload abandoned; `diskferry cleanup` and the next run of the same job
//! abort it. Recording is best effort: a directory that cannot be written leaves uploads
//! unrecorded, and only their age can then tell (see `diskferry cleanup`).
//!
//! The journal lives in [`ENV_STATE_DIR`] when set, else in `$XDG_RUNTIME_DIR/diskferry`,
//! else in `diskferry-uploads-$USER` under the system's temporary directory: places a
//! reboot empties, as it ends every process a record could name.

use std::fmt;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// Environment variable naming the directory of the upload journal.
pub const ENV_STATE_DIR: &str = "DISKFERRY_STATE_DIR";
/// Where Linux tells the host name (what `hostname` prints).
const HOSTNAME_PATH: &str = "/proc/sys/kernel/hostname";
/// FNV-1a 64 offset basis and prime ([`Writer::place_tag`]).
const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;
/// Where Linux tells the id of the running kernel's boot.
const BOOT_ID_PATH: &str = "/proc/sys/kernel/random/boot_id";
/// The link naming this process's pid namespace (`pid:[INODE]`).
const PID_NAMESPACE_PATH: &str = "/proc/self/ns/pid";
/// Suffix of journal records.
const RECORD_SUFFIX: &str = ".upload";
/// Field names of a record, one `NAME VALUE` line each.
const FIELD_WRITER: &str = "writer";
const FIELD_ENDPOINT: &str = "endpoint";
const FIELD_BUCKET: &str = "bucket";
const FIELD_KEY: &str = "key";
const FIELD_UPLOAD_ID: &str = "upload-id";

/// A writing process: the host it runs on, its pid, and the kernel boot and pid namespace
/// that pid belongs to, written `HOST PID INSTANCE`.
///
/// The host name alone does not say where a pid means the same process: containers that
/// share a host name (a pod on the host's network, say) have pid namespaces of their own, and
/// a pid that is free in one may be a live writer in the other. So a record is judged by its
/// pid only where its instance is this process's own.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Writer {
    /// Host name, as the kernel has it.
    pub host: String,
    /// Process id on that host.
    pub pid: u32,
    /// `BOOT_ID/PID_NAMESPACE_INODE` of the process; `None` in records older diskferry
    /// versions wrote (`HOST PID`), which are judged by host name and pid alone, as before.
    pub instance: Option<String>,
}

/// Whether a [`Writer`] still runs, as far as this host can tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriterState {
    /// This process, or a process of this host that still runs (or a new process that got
    /// the same pid: treated as running, so nothing is removed on a guess).
    Running,
    /// A process of this host that no longer runs.
    Gone,
    /// A process of another host: this host cannot tell.
    OtherHost,
}

impl Writer {
    /// This process.
    pub fn current() -> Self {
        Self {
            host: this_host(),
            pid: std::process::id(),
            instance: this_instance(),
        }
    }

    /// Eight hex digits naming where the pid lives (the host name and the instance), for a
    /// name that must say it in a few characters and cannot carry a record (an import's
    /// working image is named at its creation; its writer record follows a moment later).
    pub fn place_tag(&self) -> String {
        let place = format!("{} {}", self.host, self.instance.as_deref().unwrap_or(""));
        // FNV-1a: stable across versions and builds, unlike std's hasher.
        let hash = place.bytes().fold(FNV_OFFSET, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(FNV_PRIME)
        });
        format!("{:08x}", (hash >> 32) as u32 ^ hash as u32)
    }

    /// This process's writer, when `pid` and `tag` ([`Writer::place_tag`]) name a process of
    /// this very place; `None` when the tag is another place's.
    pub fn of_this_place(pid: u32, tag: &str) -> Option<Writer> {
        let me = Writer::current();
        (me.place_tag() == tag).then_some(Writer { pid, ..me })
    }

    /// Whether the process still runs, seen from this host (and pid namespace).
    pub fn state(&self) -> WriterState {
        let elsewhere = match &self.instance {
            Some(instance) => this_instance().as_ref() != Some(instance),
            None => false,
        };
        if self.host != this_host() || elsewhere {
            WriterState::OtherHost
        } else if self.pid == std::process::id()
            || Path::new(&format!("/proc/{}", self.pid)).exists()
        {
            WriterState::Running
        } else {
            WriterState::Gone
        }
    }
}

impl fmt::Display for Writer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.host, self.pid)?;
        match &self.instance {
            Some(instance) => write!(f, " {instance}"),
            None => Ok(()),
        }
    }
}

/// A writer that is not `HOST PID [INSTANCE]`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a writer (HOST PID [INSTANCE])")]
pub struct BadWriter(pub String);

impl FromStr for Writer {
    type Err = BadWriter;

    fn from_str(s: &str) -> Result<Self, BadWriter> {
        let bad = || BadWriter(s.to_owned());
        let fields: Vec<&str> = s.trim().split(' ').collect();
        let (host, pid, instance) = match fields[..] {
            [host, pid] => (host, pid, None),
            [host, pid, instance] if !instance.is_empty() => (host, pid, Some(instance)),
            _ => return Err(bad()),
        };
        let pid = pid.parse().map_err(|_| bad())?;
        if host.is_empty() || pid == 0 {
            return Err(bad());
        }
        Ok(Self {
            host: host.to_owned(),
            pid,
            instance: instance.map(str::to_owned),
        })
    }
}

/// This process's `BOOT_ID/PID_NAMESPACE_INODE`, `None` where Linux does not tell both.
fn this_instance() -> Option<String> {
    let boot = std::fs::read_to_string(BOOT_ID_PATH).ok()?;
    let namespace = std::fs::read_link(PID_NAMESPACE_PATH).ok()?;
    let inode = namespace
        .to_str()?
        .strip_prefix("pid:[")?
        .strip_suffix(']')?
        .to_owned();
    Some(format!("{}/{inode}", boot.trim()))
}

/// This host's name.
fn this_host() -> String {
    std::fs::read_to_string(HOSTNAME_PATH)
        .map(|h| h.trim().to_owned())
        .unwrap_or_default()
}

/// One multipart upload this host started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadRecord {
    /// The process that started it.
    pub writer: Writer,
    /// The S3 endpoint it went to (empty when the store had none named).
    pub endpoint: String,
    /// Bucket.
    pub bucket: String,
    /// Object key.
    pub key: String,
    /// Upload id.
    pub upload_id: String,
}

impl UploadRecord {
    fn to_text(&self) -> Option<String> {
        let fields = [
            (FIELD_WRITER, self.writer.to_string()),
            (FIELD_ENDPOINT, self.endpoint.clone()),
            (FIELD_BUCKET, self.bucket.clone()),
            (FIELD_KEY, self.key.clone()),
            (FIELD_UPLOAD_ID, self.upload_id.clone()),
        ];
        // One line per field: a value with a line break cannot be recorded.
        if fields.iter().any(|(_, v)| v.contains(['\n', '\r'])) {
            return None;
        }
        Some(
            fields
                .iter()
                .map(|(name, value)| format!("{name} {value}\n"))
                .collect(),
        )
    }

    fn from_text(text: &str) -> Option<Self> {
        let field = |name: &str| {
            text.lines().find_map(|line| {
                line.strip_prefix(name)
                    .and_then(|rest| rest.strip_prefix(' '))
                    .map(str::to_owned)
            })
        };
        Some(Self {
            writer: field(FIELD_WRITER)?.parse().ok()?,
            endpoint: field(FIELD_ENDPOINT).unwrap_or_default(),
            bucket: field(FIELD_BUCKET)?,
            key: field(FIELD_KEY)?,
            upload_id: field(FIELD_UPLOAD_ID)?,
        })
    }

    /// The record's file name: the writer's pid and a hash of the upload.
    fn file_name(&self) -> String {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (&self.endpoint, &self.bucket, &self.key, &self.upload_id).hash(&mut h);
        format!("{}-{:016x}{RECORD_SUFFIX}", self.writer.pid, h.finish())
    }
}

/// The journal of multipart uploads started on this host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadJournal {
    dir: PathBuf,
}

impl UploadJournal {
    /// The journal in `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// The journal in its usual place (see the module's documentation).
    pub fn default_location() -> Self {
        if let Some(dir) = std::env::var_os(ENV_STATE_DIR).filter(|d| !d.is_empty()) {
            return Self::new(dir);
        }
        if let Some(run) = std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
            return Self::new(PathBuf::from(run).join("diskferry"));
        }
        let user = std::env::var("USER").unwrap_or_else(|_| "user".to_owned());
        Self::new(std::env::temp_dir().join(format!("diskferry-uploads-{user}")))
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Records an upload this process started. Best effort: a failure is logged.
    pub fn record(&self, record: &UploadRecord) {
        let Some(text) = record.to_text() else {
            tracing::debug!(key = %record.key, "upload not journaled: a field has a line break");
            return;
        };
        let written = std::fs::create_dir_all(&self.dir)
            .and_then(|()| std::fs::write(self.dir.join(record.file_name()), text));
        if let Err(e) = written {
            tracing::debug!(dir = %self.dir.display(), error = %e, "upload not journaled");
        }
    }

    /// Forgets an upload (completed or aborted). Best effort.
    pub fn forget(&self, record: &UploadRecord) {
        let _ = std::fs::remove_file(self.dir.join(record.file_name()));
    }

    /// Every record, with the path of its file (unreadable records are skipped).
    pub fn records(&self) -> Vec<(PathBuf, UploadRecord)> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut out: Vec<(PathBuf, UploadRecord)> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.to_string_lossy().ends_with(RECORD_SUFFIX))
            .filter_map(|p| {
                let text = std::fs::read_to_string(&p).ok()?;
                Some((p.clone(), UploadRecord::from_text(&text)?))
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// Removes a record's file by its path (as [`UploadJournal::records`] gave it).
    pub fn remove(&self, path: &Path) -> std::io::Result<()> {
        match std::fs::remove_file(path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(pid: u32) -> UploadRecord {
        UploadRecord {
            writer: Writer {
                pid,
                ..Writer::current()
            },
            endpoint: "http://127.0.0.1:7480".into(),
            bucket: "b".into(),
            key: "dir/disk one.qcow2".into(),
            upload_id: "2~abc".into(),
        }
    }

    #[test]
    fn writers_read_back_and_this_process_runs() {
        let me = Writer::current();
        assert_eq!(me.to_string().parse::<Writer>().unwrap(), me);
        assert_eq!(me.state(), WriterState::Running);
        assert!(
            me.instance.is_some(),
            "Linux tells the boot id and pid namespace"
        );
        let other = Writer {
            host: format!("{}-elsewhere", me.host),
            pid: 1,
            instance: None,
        };
        assert_eq!(other.state(), WriterState::OtherHost);
        for bad in [
            "",
            "host",
            "host x",
            "host 0",
            " 12",
            "host 12  x",
            "host 12 x y",
        ] {
            assert!(bad.parse::<Writer>().is_err(), "{bad:?}");
        }
    }

    /// A free pid is a dead writer only in this process's own boot and pid namespace: under
    /// the same host name, another container's (or a previous boot's) is not judged.
    #[test]
    fn a_free_pid_is_judged_only_in_its_own_instance() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        let here = Writer {
            pid,
            ..Writer::current()
        };
        assert_eq!(here.state(), WriterState::Gone);
        let elsewhere = Writer {
            instance: Some("00000000-0000-0000-0000-000000000000/4026531836".into()),
            ..here.clone()
        };
        assert_eq!(elsewhere.state(), WriterState::OtherHost);
        assert_eq!(elsewhere.to_string().parse::<Writer>().unwrap(), elsewhere);
        // A name's tag says the same in eight characters.
        let tag = here.place_tag();
        assert_eq!(tag.len(), 8);
        assert!(tag.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(Writer::of_this_place(pid, &tag), Some(here.clone()));
        assert_eq!(Writer::of_this_place(pid, &elsewhere.place_tag()), None);
        // A record of an older version (`HOST PID`) is judged by host name and pid, as then.
        let old: Writer = format!("{} {pid}", here.host).parse().unwrap();
        assert_eq!(old.instance, None);
        assert_eq!(old.state(), WriterState::Gone);
    }

    #[test]
    fn records_round_trip_and_are_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        let journal = UploadJournal::new(dir.path().join("j"));
        assert!(journal.records().is_empty());
        let r = record(std::process::id());
        journal.record(&r);
        let listed = journal.records();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].1, r);
        journal.forget(&r);
        assert!(journal.records().is_empty());
        let mut broken = record(7);
        broken.key = "a\nb".into();
        journal.record(&broken);
        assert!(journal.records().is_empty());
    }
}
