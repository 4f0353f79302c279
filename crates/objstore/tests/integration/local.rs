//! Local files: the conformance suite plus overwrite and cleanup rules.

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use futures::FutureExt;
use objstore::{Error, LocalDir, LocalFile, LocalFileWriter, ObjectWriter, RangeRead, TEMP_SUFFIX};

use crate::conformance::{self, StoreHarness, READ_SIZE};
use crate::support::pattern;

/// The temporary files below `dir`, at any depth.
fn temp_files(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().to_string_lossy().into_owned();
        if entry.file_type().unwrap().is_dir() {
            found.extend(temp_files(&entry.path()));
        } else if name.ends_with(TEMP_SUFFIX) {
            found.push(name);
        }
    }
    found
}

#[tokio::test]
async fn local_file_range_read_conformance() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("disk.raw");
    let data = pattern(READ_SIZE, 10);
    std::fs::write(&path, &data).unwrap();
    let reader: Arc<dyn RangeRead> = Arc::new(LocalFile::open(&path).await.unwrap());
    conformance::range_read(reader, &data).await;
}

#[tokio::test]
async fn local_dir_store_conformance() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    conformance::store_suite(&StoreHarness {
        store: Arc::new(LocalDir::new(&root)),
        leftovers: Box::new(move |_| {
            let found = temp_files(&root);
            async move { found }.boxed()
        }),
    })
    .await;
}

#[tokio::test]
async fn missing_local_file_is_not_found_naming_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nope.qcow2");
    let err = LocalFile::open(&path).await.unwrap_err();
    assert!(err.is_not_found(), "{err:?}");
    assert!(err.to_string().contains("nope.qcow2"), "{err}");
}

#[tokio::test]
async fn existing_destination_needs_force() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out.qcow2");
    std::fs::write(&path, b"old").unwrap();
    let err = LocalFileWriter::create(&path, false).await.unwrap_err();
    assert!(matches!(err, Error::AlreadyExists { .. }), "{err:?}");
    assert!(err.to_string().contains("out.qcow2"), "{err}");

    let mut w = LocalFileWriter::create(&path, true).await.unwrap();
    w.write_at(0, Bytes::from_static(b"new content"))
        .await
        .unwrap();
    assert_eq!(
        std::fs::read(&path).unwrap(),
        b"old",
        "replaced before finish"
    );
    let written = Box::new(w).finish().await.unwrap();
    assert_eq!(written.size, 11);
    assert_eq!(std::fs::read(&path).unwrap(), b"new content");
    assert!(temp_files(dir.path()).is_empty());
}

#[tokio::test]
async fn destination_created_meanwhile_is_not_overwritten() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("race.img");
    let mut w = LocalFileWriter::create(&path, false).await.unwrap();
    w.write_at(0, Bytes::from_static(b"mine")).await.unwrap();
    std::fs::write(&path, b"theirs").unwrap();
    let err = Box::new(w).finish().await.unwrap_err();
    assert!(matches!(err, Error::AlreadyExists { .. }), "{err:?}");
    assert_eq!(std::fs::read(&path).unwrap(), b"theirs");
    assert!(
        temp_files(dir.path()).is_empty(),
        "temp file left after a failed finish"
    );
}

#[tokio::test]
async fn dropping_an_unfinished_writer_removes_its_temp_file() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = LocalFileWriter::create(dir.path().join("dropped"), false)
        .await
        .unwrap();
    w.write_at(0, Bytes::from_static(b"x")).await.unwrap();
    assert_eq!(temp_files(dir.path()).len(), 1);
    drop(w);
    assert!(temp_files(dir.path()).is_empty());
    assert!(!dir.path().join("dropped").exists());
}
