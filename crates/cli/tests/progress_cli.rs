//! What the progress bar is told by a job on the live cluster: the disk's name as the user
//! typed it (not the temporary snapshot an export reads), and the data moved apart from the
//! offsets handled (so the bar's rate is the data rate, not one inflated by holes).

use std::sync::Mutex;

use diskferry::ops::{self, ExportOptions, ImportOptions};
use diskferry::{Address, CancellationToken, NoProgress, Progress};
use diskferry_integration_tests::{context, pattern, pool, unique, ImageGuard, TEST_POOL};

const MIB: usize = 1 << 20;

/// What a job told its progress.
#[derive(Debug, Default)]
struct Seen {
    started: Mutex<Vec<(String, u64)>>,
    data: Mutex<u64>,
    position: Mutex<u64>,
}

impl Progress for Seen {
    fn start(&self, what: &str, size: u64) {
        self.started.lock().unwrap().push((what.to_string(), size));
    }
    fn position(&self, offset: u64) {
        *self.position.lock().unwrap() = offset;
    }
    fn data_moved(&self, bytes: u64) {
        *self.data.lock().unwrap() = bytes;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_export_through_a_temporary_snapshot_shows_the_image_and_the_data_moved() {
    // 32 MiB with 2 MiB of data in the middle: the rest is a hole the export never reads.
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("disk.raw");
    let mut content = vec![0u8; 32 * MIB];
    content[8 * MIB..10 * MIB].copy_from_slice(&pattern(12, 2 * MIB));
    std::fs::write(&raw, &content).unwrap();
    let ioctx = pool();
    let mut guard = ImageGuard::new(&ioctx);
    let name = guard.add(unique("cli-progress"));
    let image = Address::parse(&format!("rbd:{TEST_POOL}/{name}")).unwrap();
    let ctx = context();
    let cancel = CancellationToken::new();
    ops::import(
        &ctx,
        &Address::File(raw.clone()),
        image.rbd().unwrap(),
        &ImportOptions::default(),
        &NoProgress,
        &cancel,
    )
    .await
    .unwrap();

    let seen = Seen::default();
    let destination = Address::File(dir.path().join("disk.qcow2"));
    let report = ops::export(
        &ctx,
        image.rbd().unwrap(),
        &destination,
        &ExportOptions::default(),
        &seen,
        &cancel,
    )
    .await
    .unwrap();
    assert!(report.temporary_snapshot, "{report:?}");

    let started = seen.started.lock().unwrap().clone();
    assert_eq!(started, [(image.to_string(), 32 * MIB as u64)]);
    assert_eq!(*seen.data.lock().unwrap(), 2 * MIB as u64);
    assert_eq!(*seen.position.lock().unwrap(), 32 * MIB as u64);
}
