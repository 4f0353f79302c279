//! Blocks we write decode with the reference command-line tools (`lz4 -d`, `gzip -d`).

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

use bytes::Bytes;
use longhorn::{BackupName, BackupOptions, BlockEncoder, Compression, VolumeName};

fn decode_with(tool: &str, payload: &[u8]) -> Vec<u8> {
    let path = format!("/usr/bin/{tool}");
    assert!(
        std::path::Path::new(&path).exists(),
        "{path} is required for this test"
    );
    let mut child = Command::new(&path)
        .args(["-d", "-c"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let data = payload.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&data));
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    assert!(
        out.status.success(),
        "{tool} -d failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn sample_block() -> Bytes {
    let mut v: Vec<u8> = b"longhorn block "
        .iter()
        .cycle()
        .take(2 << 20)
        .copied()
        .collect();
    for (i, b) in v.iter_mut().enumerate().step_by(4093) {
        *b = (i % 251) as u8;
    }
    Bytes::from(v)
}

#[test]
fn lz4_cli_decodes_our_blocks() {
    let data = sample_block();
    let mut enc = BlockEncoder::new(Compression::Lz4);
    for _ in 0..2 {
        let e = enc.encode(&data);
        assert!(e.payload.len() < data.len());
        assert_eq!(decode_with("lz4", &e.payload), data);
    }
    // Incompressible data is stored raw inside the frame; still a valid frame.
    let mut rnd = vec![0u8; 2 << 20];
    let mut x: u64 = 0x9e3779b97f4a7c15;
    for b in rnd.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    let e = enc.encode(&Bytes::from(rnd.clone()));
    assert_eq!(decode_with("lz4", &e.payload), rnd);
}

#[test]
fn lz4_cli_decodes_16mib_blocks_split_into_4mib_frame_blocks() {
    let data: Bytes = sample_block()
        .iter()
        .cycle()
        .take(16 << 20)
        .copied()
        .collect::<Vec<u8>>()
        .into();
    let e = BlockEncoder::new(Compression::Lz4).encode(&data);
    assert_eq!(decode_with("lz4", &e.payload), data);
}

#[test]
fn gzip_cli_decodes_our_blocks() {
    let data = sample_block();
    let e = BlockEncoder::new(Compression::Gzip).encode(&data);
    assert_eq!(&e.payload[..10], &[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff]);
    assert_eq!(decode_with("gzip", &e.payload), data);
}

#[tokio::test]
async fn lz4_cli_decodes_blocks_stored_by_a_backup() {
    let dir = tempfile::tempdir().unwrap();
    let store = common::store_at(dir.path());
    let data = sample_block();
    let vol = VolumeName::new("cli-vol").unwrap();
    let mut w = store
        .begin_backup(BackupOptions::new(
            vol.clone(),
            BackupName::new("b1").unwrap(),
            data.len() as u64,
        ))
        .await
        .unwrap();
    w.put_block(0, data.clone()).await.unwrap();
    let (_, cfg) = w.finish().await.unwrap();
    let path = dir
        .path()
        .join(longhorn::paths::block_path(&vol, &cfg.blocks[0].checksum).unwrap());
    assert_eq!(decode_with("lz4", &std::fs::read(path).unwrap()), data);
}
