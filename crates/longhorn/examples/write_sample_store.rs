//! Writes a small backup store with every feature the writer has (lz4/gzip/none, 2 and
//! 16 MiB blocks, incremental merge, full mode, labels needing HTML escapes) so that other
//! implementations (Go's encoding/json, pierrec/lz4, Longhorn itself) can check it.
//!
//! `cargo run -p longhorn --example write_sample_store DIR` (DIR must exist).

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use longhorn::{
    BackupMode, BackupName, BackupOptions, BackupStore, BlockSize, Compression, MergeWith,
    VfsDriver, VolumeName,
};

const MIB: usize = 1 << 20;

fn pattern(seed: u8, len: usize) -> Vec<u8> {
    let mut x = u64::from(seed).wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|i| {
            if i % 3 == 0 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
            }
            (x as u8) & 0x3f
        })
        .collect()
}

async fn backup(store: &BackupStore, opts: BackupOptions, blocks: &[(u64, Vec<u8>)]) {
    let mut w = store.begin_backup(opts).await.unwrap();
    for (off, data) in blocks {
        w.put_block(*off, Bytes::from(data.clone())).await.unwrap();
    }
    let (stats, cfg) = w.finish().await.unwrap();
    println!("{} {}: {stats:?}", cfg.volume_name, cfg.name);
}

#[tokio::main]
async fn main() {
    let dir = std::env::args()
        .nth(1)
        .expect("usage: write_sample_store DIR");
    let store = BackupStore::new(Arc::new(VfsDriver::new(dir).unwrap()));
    let labels = BTreeMap::from([
        ("app".to_string(), "a<b>&c".to_string()),
        ("line".to_string(), "x\u{2028}y\"z\\".to_string()),
    ]);
    let bs = 2 * MIB;

    let vol = VolumeName::new("go-lz4").unwrap();
    let mut o = BackupOptions::new(vol.clone(), BackupName::new("b1").unwrap(), (6 * bs) as u64);
    o.labels = Some(labels.clone());
    o.storage_class_name = "sc<&>".into();
    let b0 = pattern(1, bs);
    backup(
        &store,
        o,
        &[
            (0, b0.clone()),
            (bs as u64, pattern(2, bs)),
            (2 * bs as u64, vec![0; bs]),
            (3 * bs as u64, b0),
            (5 * bs as u64, vec![0xab; bs]),
        ],
    )
    .await;
    let mut o = BackupOptions::new(vol.clone(), BackupName::new("b2").unwrap(), (6 * bs) as u64);
    o.merge = MergeWith::LastBackup;
    o.labels = Some(labels);
    backup(
        &store,
        o,
        &[(bs as u64, pattern(3, bs)), (4 * bs as u64, pattern(4, bs))],
    )
    .await;

    let mut o = BackupOptions::new(
        VolumeName::new("go-gzip").unwrap(),
        BackupName::new("b1").unwrap(),
        (2 * bs) as u64,
    );
    o.compression = Compression::Gzip;
    backup(
        &store,
        o,
        &[(0, pattern(5, bs)), (bs as u64, pattern(6, bs))],
    )
    .await;

    let mut o = BackupOptions::new(
        VolumeName::new("go-none16").unwrap(),
        BackupName::new("b1").unwrap(),
        (32 * MIB) as u64,
    );
    o.compression = Compression::None;
    o.block_size = BlockSize::Mib16;
    backup(&store, o, &[(16 * MIB as u64, pattern(7, 16 * MIB))]).await;

    let mut o = BackupOptions::new(
        VolumeName::new("go-lz4").unwrap(),
        BackupName::new("b3").unwrap(),
        (6 * bs) as u64,
    );
    o.mode = BackupMode::Full;
    o.storage_class_name = "sc<&>\"q\"".into();
    o.labels = Some(BTreeMap::from([("k&".to_string(), "<v>".to_string())]));
    backup(&store, o, &[(0, pattern(1, bs))]).await;
}
