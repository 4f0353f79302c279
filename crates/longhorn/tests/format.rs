//! Byte-exact cfg output against the reference's verified Go outputs and against the files
//! Longhorn wrote in the fixtures; tolerant parsing; rejection of bad cfgs.

mod common;

use std::collections::BTreeMap;

use common::{files_under, fixtures_dir};
use longhorn::cfg::{LockFile, LockType};
use longhorn::{BackupConfig, BlockMapping, Error, VolumeConfig};

const GO_FIRST_VOLUME: &str = r#"{"Name":"vol","Size":"4194304","Labels":null,"CreatedTime":"2026-01-01T00:00:00Z","LastBackupName":"","LastBackupAt":"","BlockCount":"2","BackingImageName":"\"\"","BackingImageChecksum":"\"\"","CompressionMethod":"\"lz4\"","StorageClassName":"\"\"","DataEngine":"\"v1\""}"#;
const GO_IN_PROGRESS: &str = r#"{"Name":"backup-1","VolumeName":"vol","SnapshotName":"","SnapshotCreatedAt":"","CreatedTime":"","Size":"0","Labels":null,"Parameters":null,"IsIncremental":false,"CompressionMethod":"lz4","NewlyUploadedDataSize":"0","ReUploadedDataSize":"0","ProcessingBlocks":null,"SingleFile":{"FilePath":""}}"#;

#[test]
fn volume_cfg_matches_go_output() {
    let v = VolumeConfig {
        name: "vol".into(),
        size: 4_194_304,
        labels: None,
        created_time: "2026-01-01T00:00:00Z".into(),
        block_count: 2,
        compression_method: "lz4".into(),
        data_engine: "v1".into(),
        ..VolumeConfig::default()
    };
    assert_eq!(v.to_json(), GO_FIRST_VOLUME);
    assert_eq!(
        VolumeConfig::from_json(GO_FIRST_VOLUME.as_bytes(), "v").unwrap(),
        v
    );
}

#[test]
fn in_progress_backup_cfg_matches_go_output() {
    let b = BackupConfig {
        name: "backup-1".into(),
        volume_name: "vol".into(),
        compression_method: "lz4".into(),
        ..BackupConfig::default()
    };
    assert_eq!(b.to_json(), GO_IN_PROGRESS);
    let parsed = BackupConfig::from_json(GO_IN_PROGRESS.as_bytes(), "b").unwrap();
    assert!(parsed.in_progress());
    assert_eq!(parsed, b);
}

#[test]
fn lock_file_matches_go_output() {
    let l = LockFile {
        name: "lock-0123456789abcdef".into(),
        lock_type: LockType::BackupOrRestore,
        acquired: true,
        writer: None,
    };
    assert_eq!(
        l.to_json(),
        r#"{"Name":"lock-0123456789abcdef","Type":1,"Acquired":true}"#
    );
}

#[test]
fn every_fixture_cfg_reserializes_to_the_same_bytes() {
    let mut checked = 0;
    for target in ["target-lz4", "target-gzip", "target-none16"] {
        let root = fixtures_dir().join(target);
        for rel in files_under(&root)
            .into_iter()
            .filter(|r| r.ends_with(".cfg"))
        {
            let bytes = std::fs::read(root.join(&rel)).unwrap();
            let text = String::from_utf8(bytes.clone()).unwrap();
            let out = if rel.ends_with("volume.cfg") {
                VolumeConfig::from_json(&bytes, &rel).unwrap().to_json()
            } else {
                BackupConfig::from_json(&bytes, &rel).unwrap().to_json()
            };
            assert_eq!(out, text, "{target}/{rel}");
            checked += 1;
        }
    }
    assert_eq!(checked, 7, "expected 3 volume.cfg and 4 backup cfgs");
}

#[test]
fn html_escaping_sorted_maps_and_double_encoding() {
    let b = BackupConfig {
        name: "b1".into(),
        volume_name: "v".into(),
        created_time: "2026-01-01T00:00:00Z".into(),
        size: 2 << 20,
        labels: Some(BTreeMap::from([
            ("z".to_string(), "a&b".to_string()),
            ("a".to_string(), "<x>".to_string()),
        ])),
        parameters: Some(BTreeMap::new()),
        is_incremental: true,
        compression_method: "gzip".into(),
        blocks: vec![BlockMapping {
            offset: 0,
            checksum: "7318".repeat(16),
        }],
        ..BackupConfig::default()
    };
    let s = b.to_json();
    assert!(
        s.contains(
            r#""Labels":{"a":"\u003cx\u003e","z":"a\u0026b"},"Parameters":{},"IsIncremental":true"#
        ),
        "{s}"
    );
    assert!(
        s.contains(r#""ProcessingBlocks":null,"Blocks":[{"Offset":0,"BlockChecksum":""#),
        "{s}"
    );
    assert!(s.ends_with(r#""SingleFile":{"FilePath":""}}"#));
    assert_eq!(BackupConfig::from_json(s.as_bytes(), "b").unwrap(), b);

    let v = VolumeConfig {
        name: "v".into(),
        storage_class_name: "a<b".into(),
        ..VolumeConfig::default()
    };
    let s = v.to_json();
    assert!(s.contains(r#""StorageClassName":"\"a\\u003cb\"""#), "{s}");
    assert!(s.contains(r#""CompressionMethod":"\"\"""#), "{s}");
    assert_eq!(VolumeConfig::from_json(s.as_bytes(), "v").unwrap(), v);
}

#[test]
fn tolerant_parsing_like_go() {
    // Lowercase keys, plain (not double-encoded) strings, bare integers, unknown and legacy
    // keys, missing fields.
    let v = VolumeConfig::from_json(
        br#"{"name":"vol","size":8388608,"compressionmethod":"lz4","BackendStoreDriver":"\"v2\"","Extra":{"x":1}}"#,
        "v",
    )
    .unwrap();
    assert_eq!(v.name, "vol");
    assert_eq!(v.size, 8 << 20);
    assert_eq!(v.compression().unwrap(), longhorn::Compression::Lz4);
    assert_eq!(v.data_engine(), "v2");
    let legacy = VolumeConfig::from_json(br#"{"Name":"vol","Size":"2097152"}"#, "v").unwrap();
    assert_eq!(legacy.compression().unwrap(), longhorn::Compression::Gzip);
    assert_eq!(legacy.data_engine(), "v1");
    let b = BackupConfig::from_json(
        br#"{"name":"b","CREATEDTIME":"2026-01-01T00:00:00Z","blocks":[{"offset":"2097152","blockchecksum":"7318590292158730fdac1c9f2f8bd25a334abf0f3a9e1b057cf2cacc2826d86b"}],"BlockSize":"16777216"}"#,
        "b",
    )
    .unwrap();
    assert_eq!(b.blocks[0].offset, 2 << 20);
    assert_eq!(b.compression().unwrap(), longhorn::Compression::Gzip);
    assert_eq!(b.block_size().unwrap(), 2 << 20);
    assert!(!b.in_progress());
}

fn backup_with_blocks(blocks: &str, extra: &str) -> String {
    format!(
        r#"{{"Name":"b","VolumeName":"v","CreatedTime":"2026-01-01T00:00:00Z","CompressionMethod":"lz4"{extra},"Blocks":[{blocks}]}}"#
    )
}

fn block(offset: &str, ck: &str) -> String {
    format!(r#"{{"Offset":{offset},"BlockChecksum":"{ck}"}}"#)
}

#[test]
fn bad_backup_cfgs_are_rejected_with_specific_errors() {
    let ck = "731859029215873fdac1c9f2f8bd25a334abf0f3a9e1b057cf2cacc2826d86b0";
    let err = |s: String| {
        BackupConfig::from_json(s.as_bytes(), "backup_b.cfg")
            .unwrap_err()
            .to_string()
    };

    let unsorted = backup_with_blocks(&[block("2097152", ck), block("0", ck)].join(","), "");
    assert!(err(unsorted).contains("not sorted"));
    let dup = backup_with_blocks(&[block("0", ck), block("0", ck)].join(","), "");
    assert!(err(dup).contains("not sorted by unique offsets"));
    let misaligned = backup_with_blocks(&block("4096", ck), "");
    assert!(err(misaligned).contains("not a multiple of the block size"));
    let upper = backup_with_blocks(&block("0", &ck.to_uppercase()), "");
    assert!(err(upper).contains("64 lowercase hex"));
    let short = backup_with_blocks(&block("0", "abcd"), "");
    assert!(err(short).contains("64 lowercase hex"));
    let negative = backup_with_blocks(&block("-2097152", ck), "");
    assert!(err(negative).contains("negative"));
    let float = backup_with_blocks(&block("1e6", ck), "");
    assert!(err(float).contains("Offset"));
    let method = backup_with_blocks("", r#","CompressionMethod":"zstd""#);
    assert!(err(method).contains("zstd"));
    let bs = backup_with_blocks("", r#","Parameters":{"backup-block-size":"3000"}"#);
    assert!(err(bs).contains("block size"));
    let size = r#"{"Name":"b","Size":"-1"}"#.to_string();
    assert!(err(size).contains("negative"));
    assert!(err("{".into()).contains("backup_b.cfg"));

    // Beyond the volume size: parsed, then refused against the volume.
    let beyond = backup_with_blocks(&block("12582912", ck), "");
    let cfg = BackupConfig::from_json(beyond.as_bytes(), "backup_b.cfg").unwrap();
    let e = cfg.check_within(12 << 20, "backup_b.cfg").unwrap_err();
    assert!(
        matches!(
            e,
            Error::InvalidConfig {
                field: "Blocks",
                ..
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("beyond the volume size"));
    cfg.check_within(14 << 20, "backup_b.cfg").unwrap();
}
