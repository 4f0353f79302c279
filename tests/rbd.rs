//! librbd wrapper against the live cluster: images, I/O, snapshots, clones, diffs, groups,
//! and every error kind the wrapper names.

use bytes::Bytes;
use diskferry_integration_tests::{cluster, pattern, pool, unique, ImageGuard};
use futures::future::try_join_all;
use rbd::{
    CloneFormat, CloneOptions, CreateOptions, DiffExtent, ErrorKind, Features, Image, OpenMode,
};

const MIB: u64 = 1 << 20;

fn create(guard: &mut ImageGuard, prefix: &str, size: u64) -> String {
    let name = guard.add(unique(prefix));
    rbd::create(&pool(), &name, size, &CreateOptions::default()).expect("create image");
    name
}

fn open_rw(name: &str) -> Image {
    Image::open(&pool(), name, OpenMode::ReadWrite).expect("open image")
}

#[tokio::test]
async fn write_pattern_read_back_with_many_in_flight() {
    let ioctx = pool();
    let mut guard = ImageGuard::new(&ioctx);
    let name = create(&mut guard, "rw", 64 * MIB);
    let image = open_rw(&name);
    let chunk = 4 * MIB as usize;
    let data = pattern(1, 64 * MIB as usize);
    let writes = data
        .chunks(chunk)
        .enumerate()
        .map(|(i, c)| image.write((i * chunk) as u64, Bytes::copy_from_slice(c)));
    try_join_all(writes).await.expect("16 writes in flight");
    image.flush().await.expect("flush");
    let reads = (0..16).map(|i| image.read((i * chunk) as u64, chunk));
    let back: Vec<Bytes> = try_join_all(reads).await.expect("reads");
    assert_eq!(back.concat(), data);
}

#[tokio::test]
async fn write_zeroes_and_discard_read_back_as_zero() {
    let ioctx = pool();
    let mut guard = ImageGuard::new(&ioctx);
    let name = create(&mut guard, "zero", 16 * MIB);
    let image = open_rw(&name);
    image
        .write(0, Bytes::from(pattern(2, 16 * MIB as usize)))
        .await
        .unwrap();
    image.write_zeroes(MIB, MIB as usize).await.unwrap();
    image.discard(8 * MIB, 4 * MIB).await.unwrap();
    let back = image.read(0, 16 * MIB as usize).await.unwrap();
    assert!(back[MIB as usize..2 * MIB as usize].iter().all(|&b| b == 0));
    assert!(back[8 * MIB as usize..12 * MIB as usize]
        .iter()
        .all(|&b| b == 0));
    assert!(back[..MIB as usize].iter().any(|&b| b != 0));
    assert!(back[12 * MIB as usize..].iter().any(|&b| b != 0));
    // Read buffers are not zero-filled before librbd fills them: once the buffers of data
    // reads are freed, reads of the zeroed ranges (likely reusing that memory) still read 0.
    for _ in 0..4 {
        drop(image.read(0, 4 * MIB as usize).await.unwrap());
        let zeroed = image.read(MIB, MIB as usize).await.unwrap();
        let discarded = image.read(8 * MIB, 4 * MIB as usize).await.unwrap();
        assert!(zeroed.iter().chain(discarded.iter()).all(|&b| b == 0));
    }
}

#[tokio::test]
async fn read_past_the_end_is_an_error_naming_the_image() {
    let ioctx = pool();
    let mut guard = ImageGuard::new(&ioctx);
    let name = create(&mut guard, "eof", MIB);
    let image = open_rw(&name);
    let err = image.read(MIB - 4096, 8192).await.unwrap_err();
    assert!(err.to_string().contains(&name), "{err}");
}

#[tokio::test]
async fn dropped_futures_do_not_free_buffers_librbd_uses() {
    let ioctx = pool();
    let mut guard = ImageGuard::new(&ioctx);
    let name = create(&mut guard, "drop", 32 * MIB);
    let image = open_rw(&name);
    // Submit and drop at once: the requests own their buffers until the callbacks run.
    for i in 0..8u64 {
        drop(image.write(i * 4 * MIB, Bytes::from(pattern(i, 4 * MIB as usize))));
        drop(image.read(i * 4 * MIB, 4 * MIB as usize));
    }
    // Closing waits for every completion; reopening sees the data.
    drop(image);
    let image = open_rw(&name);
    let back = image.read(28 * MIB, 4 * MIB as usize).await.unwrap();
    assert_eq!(&back[..], &pattern(7, 4 * MIB as usize)[..]);
}

#[test]
fn create_stat_resize_rename_list_remove() {
    let ioctx = pool();
    let mut guard = ImageGuard::new(&ioctx);
    let name = guard.add(unique("life"));
    let options = CreateOptions::default().with_object_size(MIB).unwrap();
    rbd::create(&ioctx, &name, 10 * MIB, &options).unwrap();
    let err = rbd::create(&ioctx, &name, MIB, &options).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AlreadyExists);
    assert!(err.to_string().contains(&format!("rbd/{name}")), "{err}");

    let image = open_rw(&name);
    let info = image.stat().unwrap();
    assert_eq!(info.size, 10 * MIB);
    assert_eq!(info.object_size, MIB);
    assert_eq!(info.num_objects, 10);
    assert_eq!(info.features, Features::DEFAULT);
    assert!(
        info.block_name_prefix.starts_with("rbd_data."),
        "{}",
        info.block_name_prefix
    );
    image.resize(20 * MIB).unwrap();
    assert_eq!(image.size().unwrap(), 20 * MIB);
    drop(image);

    let renamed = guard.add(unique("renamed"));
    rbd::rename(&ioctx, &name, &renamed).unwrap();
    let names = rbd::list(&ioctx).unwrap();
    assert!(
        names.contains(&renamed) && !names.contains(&name),
        "{names:?}"
    );
    rbd::remove(&ioctx, &renamed).unwrap();
    assert!(!rbd::list(&ioctx).unwrap().contains(&renamed));
    let err = rbd::remove(&ioctx, &renamed).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
}

#[test]
fn features_and_data_pool_options_are_applied() {
    let ioctx = pool();
    let mut guard = ImageGuard::new(&ioctx);
    let name = guard.add(unique("feat"));
    let options = CreateOptions {
        features: Features::parse("layering").unwrap(),
        ..CreateOptions::default()
    };
    rbd::create(&ioctx, &name, MIB, &options).unwrap();
    assert_eq!(open_rw(&name).stat().unwrap().features, Features::LAYERING);

    let missing = CreateOptions {
        data_pool: Some("no-such-data-pool".into()),
        ..CreateOptions::default()
    };
    let err = rbd::create(&ioctx, &guard.add(unique("dp")), MIB, &missing).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
}

#[test]
fn metadata_get_set_list_remove() {
    let ioctx = pool();
    let mut guard = ImageGuard::new(&ioctx);
    let name = create(&mut guard, "meta", MIB);
    let image = open_rw(&name);
    assert_eq!(image.metadata_get("diskferry.sha256").unwrap(), None);
    image.metadata_set("diskferry.sha256", "abc123").unwrap();
    image
        .metadata_set("diskferry.source", "file:///x.qcow2")
        .unwrap();
    image.metadata_set("empty", "").unwrap();
    let long = "v".repeat(5000);
    image.metadata_set("long", &long).unwrap();
    assert_eq!(
        image.metadata_get("diskferry.sha256").unwrap().as_deref(),
        Some("abc123")
    );
    assert_eq!(image.metadata_get("long").unwrap(), Some(long.clone()));
    let all = image.metadata_list().unwrap();
    assert_eq!(
        all,
        vec![
            ("diskferry.sha256".to_string(), "abc123".to_string()),
            (
                "diskferry.source".to_string(),
                "file:///x.qcow2".to_string()
            ),
            ("empty".to_string(), String::new()),
            ("long".to_string(), long),
        ]
    );
    image.metadata_remove("diskferry.sha256").unwrap();
    assert_eq!(image.metadata_get("diskferry.sha256").unwrap(), None);
}

#[tokio::test]
async fn snapshot_protect_clone_v1_isolation_busy_flatten() {
    let ioctx = pool();
    let mut guard = ImageGuard::new(&ioctx);
    let base = create(&mut guard, "base", 8 * MIB);
    let image = open_rw(&base);
    let original = pattern(10, 8 * MIB as usize);
    image.write(0, Bytes::from(original.clone())).await.unwrap();
    image.flush().await.unwrap();
    image.snap_create("golden").unwrap();
    assert!(image.snap_exists("golden").unwrap());
    let snaps = image.snap_list().unwrap();
    assert_eq!(snaps.len(), 1);
    assert_eq!((snaps[0].name.as_str(), snaps[0].size), ("golden", 8 * MIB));
    assert_eq!(image.snap_id("golden").unwrap(), snaps[0].id);

    // v1 needs protection.
    let child = guard.add(unique("child"));
    let v1 = CloneOptions {
        format: CloneFormat::V1,
        ..CloneOptions::default()
    };
    let err = rbd::clone(&ioctx, &base, "golden", &ioctx, &child, &v1).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
    image.snap_protect("golden").unwrap();
    assert!(image.snap_is_protected("golden").unwrap());
    rbd::clone(&ioctx, &base, "golden", &ioctx, &child, &v1).unwrap();

    // Writing to the clone leaves the parent unchanged.
    let clone_image = open_rw(&child);
    let (parent_info, parent_snap) = clone_image.parent().unwrap().expect("a clone has a parent");
    assert_eq!(
        (parent_info.image.as_str(), parent_snap.as_str()),
        (base.as_str(), "golden")
    );
    let new_data = pattern(11, MIB as usize);
    clone_image
        .write(2 * MIB, Bytes::from(new_data.clone()))
        .await
        .unwrap();
    let clone_back = clone_image.read(0, 8 * MIB as usize).await.unwrap();
    assert_eq!(
        &clone_back[2 * MIB as usize..3 * MIB as usize],
        &new_data[..]
    );
    assert_eq!(
        &clone_back[..2 * MIB as usize],
        &original[..2 * MIB as usize]
    );
    let parent_back = image.read(0, 8 * MIB as usize).await.unwrap();
    assert_eq!(&parent_back[..], &original[..]);

    // Children are listed, and unprotect is refused while the v1 child exists.
    let at_snap = Image::open(&ioctx, &base, OpenMode::Snapshot("golden".into())).unwrap();
    let children = at_snap.children().unwrap();
    assert_eq!(children.len(), 1);
    assert_eq!(children[0].image, child);
    let err = image.snap_unprotect("golden").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Busy, "{err}");
    assert!(err.to_string().contains(&format!("{base}@golden")), "{err}");

    // After flatten the clone stands alone and unprotect works.
    clone_image.flatten().unwrap();
    assert_eq!(clone_image.parent().unwrap(), None);
    assert_eq!(
        clone_image.read(0, 8 * MIB as usize).await.unwrap(),
        clone_back
    );
    assert!(at_snap.children().unwrap().is_empty());
    image.snap_unprotect("golden").unwrap();
    assert!(!image.snap_is_protected("golden").unwrap());
}

/// More snapshots and children than librbd's first-guess buffers hold (16 each): the
/// listings grow their buffers and return every entry, in order.
#[test]
fn listings_longer_than_the_first_guess_are_complete() {
    const MANY: usize = 40;
    let ioctx = pool();
    let mut guard = ImageGuard::new(&ioctx);
    let base = create(&mut guard, "many", MIB);
    let image = open_rw(&base);
    let names: Vec<String> = (0..MANY).map(|i| format!("s{i:02}")).collect();
    for name in &names {
        image.snap_create(name).unwrap();
    }
    let listed: Vec<String> = image
        .snap_list()
        .unwrap()
        .into_iter()
        .map(|s| s.name)
        .collect();
    assert_eq!(listed, names);

    let mut children: Vec<String> = (0..MANY)
        .map(|_| {
            let child = guard.add(unique("many-child"));
            rbd::clone(
                &ioctx,
                &base,
                "s00",
                &ioctx,
                &child,
                &CloneOptions::default(),
            )
            .unwrap();
            child
        })
        .collect();
    let at_snap = Image::open(&ioctx, &base, OpenMode::Snapshot("s00".into())).unwrap();
    let mut listed: Vec<String> = at_snap
        .children()
        .unwrap()
        .into_iter()
        .map(|c| c.image)
        .collect();
    listed.sort();
    children.sort();
    assert_eq!(listed, children);
}

#[tokio::test]
async fn clone_v2_needs_no_protection_and_writes_to_a_snapshot_are_read_only() {
    let ioctx = pool();
    let mut guard = ImageGuard::new(&ioctx);
    let base = create(&mut guard, "base2", 4 * MIB);
    let image = open_rw(&base);
    image
        .write(0, Bytes::from(pattern(20, 4 * MIB as usize)))
        .await
        .unwrap();
    image.snap_create("s").unwrap();
    let child = guard.add(unique("child2"));
    rbd::clone(&ioctx, &base, "s", &ioctx, &child, &CloneOptions::default()).unwrap();
    assert_eq!(
        open_rw(&child).read(0, 4 * MIB as usize).await.unwrap(),
        Image::open(&ioctx, &base, OpenMode::Snapshot("s".into()))
            .unwrap()
            .read(0, 4 * MIB as usize)
            .await
            .unwrap()
    );
    let at_snap = Image::open(&ioctx, &base, OpenMode::Snapshot("s".into())).unwrap();
    let err = at_snap
        .write(0, Bytes::from_static(b"x"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ReadOnly, "{err}");
}

#[tokio::test]
async fn snapshot_rollback_restores_content_and_removal_works() {
    let ioctx = pool();
    let mut guard = ImageGuard::new(&ioctx);
    let name = create(&mut guard, "rollback", 4 * MIB);
    let image = open_rw(&name);
    let before = pattern(30, 4 * MIB as usize);
    image.write(0, Bytes::from(before.clone())).await.unwrap();
    image.snap_create("before").unwrap();
    image
        .write(0, Bytes::from(pattern(31, 4 * MIB as usize)))
        .await
        .unwrap();
    image.snap_rollback("before").unwrap();
    assert_eq!(
        &image.read(0, 4 * MIB as usize).await.unwrap()[..],
        &before[..]
    );
    image.snap_remove("before").unwrap();
    assert!(image.snap_list().unwrap().is_empty());
    let err = image.snap_remove("before").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    assert!(err.to_string().contains(&format!("{name}@before")), "{err}");
}

#[tokio::test]
async fn diff_iterate_reports_exactly_the_written_and_changed_extents() {
    let ioctx = pool();
    let mut guard = ImageGuard::new(&ioctx);
    let name = create(&mut guard, "diff", 64 * MIB);
    let image = open_rw(&name);
    // Writes that start at an object boundary are reported exactly.
    let writes = [
        (0u64, 4096usize),
        (8 * MIB, 64 * 1024),
        (40 * MIB, MIB as usize),
    ];
    for (i, &(offset, len)) in writes.iter().enumerate() {
        image
            .write(offset, Bytes::from(pattern(i as u64, len)))
            .await
            .unwrap();
    }
    image.flush().await.unwrap();
    let extents = image.diff_extents(None, false, false).unwrap();
    let expected: Vec<DiffExtent> = writes
        .iter()
        .map(|&(offset, len)| DiffExtent {
            offset,
            len: len as u64,
            exists: true,
        })
        .collect();
    assert_eq!(extents, expected);

    // A write inside an object: Pacific's OSD reports the object's data from the object's
    // start to the write's end. The report covers the write and stays inside its object.
    let (mid, mid_len) = (5 * MIB, 64 * 1024u64);
    image
        .write(mid, Bytes::from(pattern(7, mid_len as usize)))
        .await
        .unwrap();
    image.flush().await.unwrap();
    let extents = image.diff_extents(None, false, false).unwrap();
    let around: Vec<&DiffExtent> = extents
        .iter()
        .filter(|e| e.offset < 8 * MIB && e.offset + e.len > 4 * MIB)
        .collect();
    assert_eq!(around.len(), 1, "{extents:?}");
    assert!(
        around[0].offset >= 4 * MIB && around[0].offset <= mid,
        "{extents:?}"
    );
    assert_eq!(
        around[0].offset + around[0].len,
        mid + mid_len,
        "{extents:?}"
    );

    // Whole-object mode reports the 4 MiB objects that hold data.
    let whole = image.diff_extents(None, false, true).unwrap();
    let objects: Vec<(u64, u64)> = whole.iter().map(|e| (e.offset, e.len)).collect();
    assert_eq!(
        objects,
        vec![
            (0, 4 * MIB),
            (4 * MIB, 4 * MIB),
            (8 * MIB, 4 * MIB),
            (40 * MIB, 4 * MIB)
        ]
    );

    // Between two snapshots: exactly the new write and the discarded range.
    image.snap_create("one").unwrap();
    image
        .write(20 * MIB, Bytes::from(pattern(9, 8192)))
        .await
        .unwrap();
    image.discard(40 * MIB, MIB).await.unwrap();
    image.flush().await.unwrap();
    image.snap_create("two").unwrap();
    let at_two = Image::open(&ioctx, &name, OpenMode::Snapshot("two".into())).unwrap();
    let changed = at_two.diff_extents(Some("one"), false, false).unwrap();
    assert_eq!(
        changed,
        vec![
            DiffExtent {
                offset: 20 * MIB,
                len: 8192,
                exists: true
            },
            DiffExtent {
                offset: 40 * MIB,
                len: MIB,
                exists: false
            },
        ]
    );

    // The visitor can stop early.
    let mut seen = 0;
    image
        .diff_iterate(None, 0, 64 * MIB, false, false, &mut |_| {
            seen += 1;
            false
        })
        .unwrap();
    assert_eq!(seen, 1);
}

#[tokio::test]
async fn group_snapshot_captures_two_images_together() {
    let ioctx = pool();
    let mut guard = ImageGuard::new(&ioctx);
    let os = create(&mut guard, "vm-os", 4 * MIB);
    let data = create(&mut guard, "vm-data", 4 * MIB);
    let group = unique("vm-group");
    rbd::group_create(&ioctx, &group).unwrap();
    struct GroupGuard(rbd::IoCtx, String);
    impl Drop for GroupGuard {
        fn drop(&mut self) {
            let _ = rbd::group_remove(&self.0, &self.1);
        }
    }
    let _group_guard = GroupGuard(ioctx.clone(), group.clone());
    rbd::group_image_add(&ioctx, &group, &ioctx, &os).unwrap();
    rbd::group_image_add(&ioctx, &group, &ioctx, &data).unwrap();

    let (os_image, data_image) = (open_rw(&os), open_rw(&data));
    let (os_before, data_before) = (pattern(40, 4 * MIB as usize), pattern(41, 4 * MIB as usize));
    os_image
        .write(0, Bytes::from(os_before.clone()))
        .await
        .unwrap();
    data_image
        .write(0, Bytes::from(data_before.clone()))
        .await
        .unwrap();
    rbd::group_snap_create(&ioctx, &group, "consistent").unwrap();
    os_image
        .write(0, Bytes::from(pattern(42, 4 * MIB as usize)))
        .await
        .unwrap();
    data_image
        .write(0, Bytes::from(pattern(43, 4 * MIB as usize)))
        .await
        .unwrap();

    let snaps = rbd::group_snap_list(&ioctx, &group).unwrap();
    assert_eq!(snaps.len(), 1);
    assert_eq!(snaps[0].name, "consistent");
    assert!(snaps[0].complete);
    for (name, image, before) in [
        (&os, &os_image, &os_before),
        (&data, &data_image, &data_before),
    ] {
        let id = image
            .group_snap_id(&group, "consistent")
            .unwrap()
            .expect("member has the group snapshot");
        let at_snap = Image::open(&ioctx, name, OpenMode::SnapshotId(id)).unwrap();
        assert_eq!(
            &at_snap.read(0, 4 * MIB as usize).await.unwrap()[..],
            &before[..]
        );
    }
    assert_eq!(os_image.group_snap_id(&group, "other").unwrap(), None);

    rbd::group_snap_remove(&ioctx, &group, "consistent").unwrap();
    assert!(rbd::group_snap_list(&ioctx, &group).unwrap().is_empty());
    rbd::group_image_remove(&ioctx, &group, &ioctx, &os).unwrap();
    rbd::group_image_remove(&ioctx, &group, &ioctx, &data).unwrap();
    let err = rbd::group_create(&ioctx, &group).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AlreadyExists);
}

#[test]
fn error_kinds_are_named_and_messages_name_the_object() {
    let ioctx = pool();
    let err = Image::open(&ioctx, "no-such-image-xyz", OpenMode::ReadWrite).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    assert!(err.to_string().contains("rbd/no-such-image-xyz"), "{err}");

    let err = Image::open(&ioctx, "bad\0name", OpenMode::ReadOnly).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidName);

    let mut guard = ImageGuard::new(&ioctx);
    let name = create(&mut guard, "errs", MIB);
    let err = Image::open(&ioctx, &name, OpenMode::Snapshot("nosnap".into())).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    assert!(err.to_string().contains(&format!("{name}@nosnap")), "{err}");

    // Removing an image that still has a snapshot is refused as busy.
    let image = open_rw(&name);
    image.snap_create("keep").unwrap();
    drop(image);
    let err = rbd::remove(&ioctx, &name).unwrap_err();
    assert!(
        matches!(err.kind(), ErrorKind::Busy),
        "{err} ({:?})",
        err.kind()
    );

    // Creating in a pool the client may only read is refused.
    let id = unique("ro");
    let keyring = tempfile::NamedTempFile::new().unwrap();
    let status = std::process::Command::new("ceph")
        .args([
            "--conf",
            &diskferry_integration_tests::ceph_conf().to_string_lossy(),
        ])
        .args([
            "auth",
            "get-or-create",
            &format!("client.{id}"),
            "mon",
            "allow r",
            "osd",
            "allow r pool=rbd",
        ])
        .args(["-o", &keyring.path().to_string_lossy()])
        .status()
        .expect("run ceph auth");
    assert!(status.success(), "ceph auth get-or-create failed");
    let config = rados::ClusterConfig {
        client_id: Some(id.clone()),
        keyring: Some(keyring.path().to_path_buf()),
        use_ceph_args: false,
        ..diskferry_integration_tests::cluster_config()
    };
    let result = (|| {
        let ro = rados::Cluster::connect(&config)?;
        rbd::create(
            &ro.ioctx("rbd")?,
            &unique("denied"),
            MIB,
            &CreateOptions::default(),
        )
    })();
    let _ = std::process::Command::new("ceph")
        .args([
            "--conf",
            &diskferry_integration_tests::ceph_conf().to_string_lossy(),
        ])
        .args(["auth", "del", &format!("client.{id}")])
        .status();
    let err = result.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::PermissionDenied, "{err}");
    let _ = cluster();
}

#[tokio::test]
async fn a_panicking_diff_visitor_panics_in_rust_not_in_c() {
    let ioctx = pool();
    let mut guard = ImageGuard::new(&ioctx);
    let name = create(&mut guard, "panic", 16 * MIB);
    let image = open_rw(&name);
    for i in 0..4u64 {
        image
            .write(i * 4 * MIB, Bytes::from(pattern(i, 4096)))
            .await
            .unwrap();
    }
    let mut calls = 0;
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        image.diff_iterate(None, 0, 16 * MIB, false, false, &mut |_| {
            calls += 1;
            panic!("visitor failed");
        })
    }));
    let payload = result.expect_err("the panic reaches the caller");
    assert_eq!(payload.downcast_ref::<&str>(), Some(&"visitor failed"));
    assert_eq!(calls, 1, "the visitor is not called again after panicking");
    // The image is still usable afterwards.
    assert_eq!(image.diff_extents(None, false, false).unwrap().len(), 4);
}

#[test]
fn missing_snapshots_unprotected_parents_and_non_clones_are_named_in_words() {
    let ioctx = pool();
    let mut guard = ImageGuard::new(&ioctx);
    let name = create(&mut guard, "words", MIB);
    let missing = unique("words-missing");

    // Opening at a snapshot: the message says which of the image and the snapshot is missing.
    let err = Image::open(&ioctx, &name, OpenMode::Snapshot("nosnap".into())).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    assert_eq!(
        err.to_string(),
        format!("open snapshot rbd/{name}@nosnap: no such snapshot (image rbd/{name} exists)")
    );
    let err = Image::open(&ioctx, &missing, OpenMode::Snapshot("s".into())).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    assert_eq!(
        err.to_string(),
        format!("open image rbd/{missing}: no such image")
    );

    // Snapshot calls on an open image: the snapshot is what is missing.
    let image = open_rw(&name);
    for (result, op) in [
        (image.snap_remove("nosnap"), "remove snapshot"),
        (image.snap_protect("nosnap"), "protect snapshot"),
        (image.snap_unprotect("nosnap"), "unprotect snapshot"),
        (image.snap_rollback("nosnap"), "roll back to snapshot"),
    ] {
        let err = result.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
        assert_eq!(
            err.to_string(),
            format!("{op} rbd/{name}@nosnap: no such snapshot")
        );
    }

    // Clones of a missing parent snapshot or image say which.
    let child = guard.add(unique("words-child"));
    let v2 = CloneOptions::default();
    let err = rbd::clone(&ioctx, &name, "nosnap", &ioctx, &child, &v2).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    assert!(
        err.to_string().ends_with(&format!(
            ": the parent snapshot does not exist (image rbd/{name} does)"
        )),
        "{err}"
    );
    let err = rbd::clone(&ioctx, &missing, "s", &ioctx, &child, &v2).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    assert!(
        err.to_string()
            .ends_with(&format!(": the parent image rbd/{missing} does not exist")),
        "{err}"
    );

    // A format-1 clone of an unprotected snapshot: librbd says only EINVAL.
    image.snap_create("base").unwrap();
    let v1 = CloneOptions {
        format: CloneFormat::V1,
        ..CloneOptions::default()
    };
    let err = rbd::clone(&ioctx, &name, "base", &ioctx, &child, &v1).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    assert_eq!(
        err.to_string(),
        format!(
            "clone rbd/{name}@base to rbd/{child}: snapshot rbd/{name}@base must be protected \
             before a format-1 clone (protect it, or use clone format 2)"
        )
    );

    // Flatten of an image that is no clone: librbd says only EINVAL.
    let err = image.flatten().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    assert_eq!(
        err.to_string(),
        format!("flatten rbd/{name}: not a clone; nothing to flatten")
    );
}

#[test]
fn snapshot_protection_errors_say_why_in_words() {
    let mut guard = ImageGuard::new(&pool());
    let name = create(&mut guard, "protect", 8 << 20);
    let image = open_rw(&name);
    image.snap_create("s").unwrap();
    // librbd answers only EINVAL or EBUSY here; the message says what is wrong.
    let err = image.snap_unprotect("s").unwrap_err().to_string();
    assert!(err.contains("is not protected"), "{err}");
    image.snap_protect("s").unwrap();
    let err = image.snap_protect("s").unwrap_err().to_string();
    assert!(err.contains("protected already"), "{err}");
    let err = image.snap_remove("s").unwrap_err().to_string();
    assert!(err.contains("unprotect it first"), "{err}");
    image.snap_unprotect("s").unwrap();
    image.snap_remove("s").unwrap();
}

// ---------------------------------------------------------------- zero-copy writes (issue 13)

/// A write buffer that is overwritten and handed to the next write as soon as the last
/// `Bytes` holding it is dropped, i.e. when librbd's completion for it has fired: if librbd
/// still read it after that (a cache entry, a resend), the image would get another write's
/// data or the poison.
struct ReusedBuffer {
    data: Vec<u8>,
    free: std::sync::Arc<std::sync::Mutex<Vec<Vec<u8>>>>,
}

/// What a freed [`ReusedBuffer`] is overwritten with.
const POISON: u8 = 0xA5;

impl AsRef<[u8]> for ReusedBuffer {
    fn as_ref(&self) -> &[u8] {
        &self.data
    }
}

impl Drop for ReusedBuffer {
    fn drop(&mut self) {
        let mut data = std::mem::take(&mut self.data);
        data.fill(POISON);
        self.free.lock().unwrap().push(data);
    }
}

/// A new connection to the test cluster with `options` set on it (`CEPH_ARGS` not read),
/// asking for zero-copy writes (the default, set here so that the tests below keep testing
/// them: see `ClusterConfig::zero_copy_writes`).
fn connect_with(options: &[(&str, &str)]) -> rados::Cluster {
    let config = rados::ClusterConfig {
        options: options
            .iter()
            .map(|(o, v)| (o.to_string(), v.to_string()))
            .collect(),
        use_ceph_args: false,
        zero_copy_writes: true,
        ..diskferry_integration_tests::cluster_config()
    };
    rados::Cluster::connect(&config).expect("connect with the options")
}

/// The `rbd` pool through a new connection with zero-copy writes and Ceph's defaults
/// otherwise (the pool keeps its connection alive).
fn zero_copy_pool() -> rados::IoCtx {
    connect_with(&[]).ioctx("rbd").expect("the rbd pool")
}

/// `rbd config image ACTION rbd/NAME ARGS…` (`set OPTION VALUE`, `remove OPTION`).
fn rbd_config_image(name: &str, args: &[&str]) {
    let conf = diskferry_integration_tests::ceph_conf();
    let spec = format!("rbd/{name}");
    let (action, rest) = args.split_first().expect("an action");
    let mut all = vec!["--conf", conf.to_str().expect("UTF-8 conf path")];
    all.extend(["config", "image", action, &spec]);
    all.extend(rest);
    diskferry_integration_tests::run("rbd", &all);
}

/// Writes a pattern over a fresh image through a cluster handle with `options` (each write
/// from a buffer reused as soon as its completion fires, several in flight, chunks crossing
/// object boundaries), then reads it back through another handle and with the `rbd` CLI.
async fn zero_copy_round_trip(
    label: &str,
    options: &[(&str, &str)],
    image_override: &[(&str, &str)],
) {
    const SIZE: usize = 40 << 20;
    const CHUNK: usize = (1 << 20) + (1 << 19) + 4096; // not a divisor of the 4 MiB objects
    const IN_FLIGHT: usize = 6;
    const DEADLINE: std::time::Duration = std::time::Duration::from_secs(120);
    use futures::stream::{self, StreamExt, TryStreamExt};

    let mut guard = ImageGuard::new(&pool());
    let name = create(&mut guard, &format!("zc-{label}"), SIZE as u64);
    for (option, value) in image_override {
        rbd_config_image(&name, &["set", option, value]);
    }
    let handle = connect_with(options);
    let image = Image::open(&handle.ioctx("rbd").unwrap(), &name, OpenMode::ReadWrite).unwrap();
    let expected = pattern(0x2c, SIZE);
    let free = std::sync::Arc::new(std::sync::Mutex::new(Vec::<Vec<u8>>::new()));
    let writes = stream::iter((0..SIZE).step_by(CHUNK).map(|offset| {
        let end = (offset + CHUNK).min(SIZE);
        let mut data = free.lock().unwrap().pop().unwrap_or_default();
        data.clear();
        data.extend_from_slice(&expected[offset..end]);
        let bytes = Bytes::from_owner(ReusedBuffer {
            data,
            free: free.clone(),
        });
        image.write(offset as u64, bytes)
    }))
    .buffer_unordered(IN_FLIGHT)
    .try_collect::<Vec<()>>();
    let done = match tokio::time::timeout(DEADLINE, writes).await {
        Ok(done) => done,
        Err(_) => {
            let reused = free.lock().unwrap().len();
            // Closing or removing the image would wait on those completions: leave both.
            std::mem::forget(image);
            std::mem::forget(guard);
            panic!(
                "{label}: writes not completed within {DEADLINE:?} ({reused} buffers released; \
                 image rbd/{name} left behind)"
            );
        }
    };
    done.expect("writes");
    image.flush().await.expect("flush");
    let writes = SIZE.div_ceil(CHUNK);
    let buffers = free.lock().unwrap().len();
    assert!(
        buffers < writes,
        "{label}: {buffers} buffers for {writes} writes: none reused"
    );
    drop(image);
    drop(handle);

    // A fresh handle with default options, then the rbd CLI: both see the pattern.
    let fresh = rados::Cluster::connect(&diskferry_integration_tests::cluster_config()).unwrap();
    let image = Image::open(&fresh.ioctx("rbd").unwrap(), &name, OpenMode::ReadOnly).unwrap();
    let back = image.read(0, SIZE).await.unwrap();
    let first_difference = back.iter().zip(&expected).position(|(a, b)| a != b);
    assert_eq!(first_difference, None, "{label}: read back differs");
    assert!(
        diskferry_integration_tests::rbd_export(&name) == expected,
        "{label}: rbd export differs"
    );
}

/// Whether a handle connected with `options` has zero-copy writes on, and its cache off.
fn zero_copy_in_effect(options: &[(&str, &str)]) -> bool {
    let handle = connect_with(options);
    let on = handle.conf_get("rbd_disable_zero_copy_writes").unwrap() == "false";
    assert!(!on || handle.conf_get("rbd_cache").unwrap() == "false");
    on
}

#[test]
fn zero_copy_writes_are_on_by_default_and_off_when_declined() {
    let conf_get = |zero_copy_writes| {
        let handle = rados::Cluster::connect(&rados::ClusterConfig {
            use_ceph_args: false,
            zero_copy_writes,
            ..diskferry_integration_tests::cluster_config()
        })
        .unwrap();
        handle.conf_get("rbd_disable_zero_copy_writes").unwrap()
    };
    assert_eq!(conf_get(true), "false", "zero-copy on");
    assert_eq!(conf_get(false), "true", "librbd's copy");
    assert!(rados::ClusterConfig::default().zero_copy_writes);
    // Named by the user, even at Ceph's default value: kept (CEPH_ARGS works the same way).
    let declined = connect_with(&[("rbd_disable_zero_copy_writes", "true")]);
    assert_eq!(
        declined.conf_get("rbd_disable_zero_copy_writes").unwrap(),
        "true"
    );
}

#[test]
fn zero_copy_writes_are_on_only_where_no_cache_was_chosen() {
    assert!(zero_copy_in_effect(&[]), "Ceph's defaults");
    assert!(zero_copy_in_effect(&[("rbd_cache", "false")]));
    // A cache the user chose stays, and librbd's copy with it.
    assert!(!zero_copy_in_effect(&[(
        "rbd_cache_policy",
        "writethrough"
    )]));
    assert!(!zero_copy_in_effect(&[("rbd_cache_policy", "writeback")]));
    assert!(!zero_copy_in_effect(&[("rbd_cache_max_dirty", "8388608")]));
}

/// A conf file that names librbd's copy switch or its cache, even at Ceph's default values
/// (which the connection cannot tell from unset ones), is the user's choice: librbd's copy
/// stays.
#[test]
fn a_conf_file_naming_the_copy_or_the_cache_keeps_librbds_copy() {
    let base = std::fs::read_to_string(diskferry_integration_tests::ceph_conf()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    for (line, copies) in [
        ("", false),
        ("rbd_disable_zero_copy_writes = true", true),
        ("rbd cache = true", true),
        ("rbd_cache_policy = writearound", true),
        ("# rbd_cache = true", false),
        ("rbd_cache = false", false),
    ] {
        let conf = dir.path().join("ceph.conf");
        std::fs::write(&conf, format!("{base}\n[client]\n{line}\n")).unwrap();
        let handle = rados::Cluster::connect(&rados::ClusterConfig {
            conf_file: Some(conf),
            use_ceph_args: false,
            ..rados::ClusterConfig::default()
        })
        .unwrap();
        let copy = handle.conf_get("rbd_disable_zero_copy_writes").unwrap();
        assert_eq!(
            copy == "true",
            copies,
            "{line:?}: rbd_disable_zero_copy_writes={copy}"
        );
    }
}

#[tokio::test]
async fn zero_copy_writes_land_whole_with_the_defaults() {
    zero_copy_round_trip("defaults", &[], &[]).await;
}

#[tokio::test]
async fn writes_land_whole_with_write_around() {
    zero_copy_round_trip("writearound", &[("rbd_cache_max_dirty", "8388608")], &[]).await;
}

#[tokio::test]
async fn writes_land_whole_with_write_through() {
    zero_copy_round_trip("writethrough", &[("rbd_cache_policy", "writethrough")], &[]).await;
}

#[tokio::test]
async fn writes_land_whole_with_write_back() {
    zero_copy_round_trip("writeback", &[("rbd_cache_policy", "writeback")], &[]).await;
}

#[tokio::test]
async fn zero_copy_writes_land_whole_when_the_image_picks_a_cache_policy() {
    // The handle turns the cache off; an image's own policy alone does not turn it back on.
    zero_copy_round_trip("img-writeback", &[], &[("rbd_cache_policy", "writeback")]).await;
}

/// librbd's own behaviour that the defaults avoid (run by hand, `--ignored`): the write-through
/// object cacher keeps zero-copy on and holds the written buffers as clean cache entries, so
/// the completions of the last writes wait until the cache evicts them. Since the rbd crate
/// refuses writes under that combination (`rbd/src/config.rs`), this fails at once with the
/// refusal ("diskferry refuses to write instead of hanging") instead of after 120 s.
#[tokio::test]
#[ignore]
async fn zero_copy_with_write_through_holds_completions() {
    let forced = [
        ("rbd_cache_policy", "writethrough"),
        ("rbd_disable_zero_copy_writes", "false"),
    ];
    zero_copy_round_trip("writethrough-zc", &forced, &[]).await;
}

/// A pool or image override can turn an object-cacher cache back on over the zero-copy writes
/// the connection chose; librbd would then hold every write's completion forever (see
/// `zero_copy_with_write_through_holds_completions`). The rbd crate refuses such writes at
/// once, naming the image, the settings with their sources and the fix; without the override
/// the same image takes writes as before.
#[tokio::test]
async fn zero_copy_writes_under_an_image_write_through_override_fail_at_once() {
    const LIMIT: std::time::Duration = std::time::Duration::from_secs(15);
    let ioctx = pool();
    let mut guard = ImageGuard::new(&ioctx);
    let name = create(&mut guard, "zc-refuse", 8 * MIB);
    rbd_config_image(&name, &["set", "rbd_cache", "true"]);
    rbd_config_image(&name, &["set", "rbd_cache_policy", "writethrough"]);
    let data = Bytes::from(pattern(0x5e, MIB as usize));

    let image = Image::open(&zero_copy_pool(), &name, OpenMode::ReadWrite).expect("open image");
    let started = std::time::Instant::now();
    let outcome = match tokio::time::timeout(LIMIT, image.write(0, data.clone())).await {
        Ok(outcome) => outcome,
        Err(_) => {
            // Closing or removing the image would wait on the held completion: leave both.
            std::mem::forget(image);
            std::mem::forget(guard);
            panic!("write not refused and not completed within {LIMIT:?} (rbd/{name} left)");
        }
    };
    let err = outcome.expect_err("the write must be refused");
    assert!(started.elapsed() < LIMIT);
    assert_eq!(err.kind(), ErrorKind::Unsupported);
    let text = err.to_string();
    for part in [
        format!("write to rbd/{name}: diskferry refuses to write instead of hanging"),
        "rbd_disable_zero_copy_writes=false (client config)".to_string(),
        "rbd_cache=true (image override)".to_string(),
        "rbd_cache_policy=writethrough (image override)".to_string(),
        "CEPH_ARGS=\"--rbd_disable_zero_copy_writes=true\"".to_string(),
        format!("`rbd config image remove rbd/{name} rbd_cache_policy`"),
    ] {
        assert!(text.contains(&part), "{part:?} not in: {text}");
    }
    // Everything but writes still works on such an image.
    image.metadata_set("zc-refuse", "ok").expect("metadata");
    drop(image);

    rbd_config_image(&name, &["remove", "rbd_cache"]);
    rbd_config_image(&name, &["remove", "rbd_cache_policy"]);
    let image = open_rw(&name);
    tokio::time::timeout(LIMIT, image.write(0, data.clone()))
        .await
        .expect("write without the override completes")
        .expect("write without the override");
    image.flush().await.expect("flush");
    assert_eq!(image.read(0, data.len()).await.expect("read back"), data);
}

/// How long a write librbd would fail may take before a test gives up on it as hung.
const HANG_LIMIT: std::time::Duration = std::time::Duration::from_secs(15);

/// Awaits `write` for at most `limit`. A write that neither completes nor fails by then hangs
/// in librbd: the image is leaked (closing it would wait on the held completion) and the test
/// fails naming `what`.
async fn within<T>(
    limit: std::time::Duration,
    what: &str,
    image: &Image,
    write: impl std::future::Future<Output = T>,
) -> T {
    match tokio::time::timeout(limit, write).await {
        Ok(outcome) => outcome,
        Err(_) => {
            std::mem::forget(image.clone());
            panic!("{what}: neither completed nor failed within {limit:?} (a hung write)");
        }
    }
}

/// With zero-copy writes, librbd never completes a write it fails before splitting it into
/// object requests (its request keeps the caller's buffer, and the completion waits for the
/// buffer: run by hand against librbd 16.2.15, each of these hung). The rbd crate refuses them
/// before submission, with the error librbd gives when it copies; nothing is written.
#[tokio::test]
async fn zero_copy_writes_librbd_would_fail_early_are_refused_at_once() {
    let ioctx = pool();
    let mut guard = ImageGuard::new(&ioctx);
    let name = create(&mut guard, "zc-early", 8 * MIB);
    let io = zero_copy_pool();
    let writer = Image::open(&io, &name, OpenMode::ReadWrite).unwrap();
    let data = Bytes::from(pattern(0x77, MIB as usize));
    within(
        HANG_LIMIT,
        "first write",
        &writer,
        writer.write(0, data.clone()),
    )
    .await
    .expect("a write within the image");
    writer.snap_create("s").unwrap();

    let read_only = Image::open(&io, &name, OpenMode::ReadOnly).unwrap();
    let at_snap = Image::open(&io, &name, OpenMode::Snapshot("s".into())).unwrap();
    for (image, why) in [
        (&read_only, "the image was opened read-only"),
        (&at_snap, "a snapshot is read-only"),
    ] {
        let err = within(HANG_LIMIT, why, image, image.write(0, data.clone()))
            .await
            .expect_err(why);
        assert_eq!(err.kind(), ErrorKind::ReadOnly, "{err}");
        assert_eq!(err.errno(), libc::EROFS);
        assert!(err.to_string().contains(why), "{err}");
        assert!(err.to_string().contains(&name), "{err}");
    }

    let size = 8 * MIB;
    for (offset, case) in [
        (size, "at the end"),
        (size - 4096, "straddling the end"),
        (1 << 50, "far beyond the end"),
        (u64::MAX - 10, "where offset + length overflows"),
    ] {
        let err = within(
            HANG_LIMIT,
            case,
            &writer,
            writer.write(offset, data.clone()),
        )
        .await
        .expect_err(case);
        assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{case}: {err}");
        let text = err.to_string();
        assert!(
            text.contains(&format!("[{offset}..+{}]", data.len()))
                && text.contains("the range goes past the image's end (8388608 bytes)"),
            "{case}: {text}"
        );
    }
    // librbd would have written the part within the image and reported success.
    let tail = writer.read(size - 4096, 4096).await.unwrap();
    assert!(tail.iter().all(|&b| b == 0), "the straddling write wrote");
    // The writer still works, and an exact fit is no overflow.
    within(
        HANG_LIMIT,
        "last megabyte",
        &writer,
        writer.write(size - MIB, data.clone()),
    )
    .await
    .expect("a write that ends at the image's end");
    assert_eq!(writer.read(size - MIB, MIB as usize).await.unwrap(), data);
}

/// The watchers of `rbd/NAME` by address (`rbd status`).
fn watchers(name: &str) -> Vec<String> {
    let conf = diskferry_integration_tests::ceph_conf();
    let spec = format!("rbd/{name}");
    let json = diskferry_integration_tests::run(
        "rbd",
        &[
            "--conf",
            conf.to_str().expect("UTF-8 conf path"),
            "status",
            &spec,
            "--format",
            "json",
        ],
    );
    let status: serde_json::Value = serde_json::from_slice(&json).expect("rbd status JSON");
    status["watchers"]
        .as_array()
        .expect("a watcher list")
        .iter()
        .map(|w| w["address"].as_str().expect("an address").to_string())
        .collect()
}

/// `ceph osd blocklist ACTION ADDRESS [ARGS]`.
fn blocklist(action: &str, address: &str, args: &[&str]) {
    let conf = diskferry_integration_tests::ceph_conf();
    let mut all = vec![
        "--conf",
        conf.to_str().expect("UTF-8 conf path"),
        "osd",
        "blocklist",
        action,
        address,
    ];
    all.extend(args);
    diskferry_integration_tests::run("ceph", &all);
}

/// Evicts a leaked image handle's client (blocklisted for a minute, then let go) so that its
/// image can be removed: the handle stays open for the rest of the process.
fn evict(address: &str) {
    blocklist("add", address, &["60"]);
    std::thread::sleep(std::time::Duration::from_secs(2));
    blocklist("rm", address, &[]);
}

/// A client the cluster blocklists can no longer write; librbd fails its next write at once
/// when it copies the buffer (ESHUTDOWN), and never completes it with zero-copy (run by hand
/// against librbd 16.2.15). The rbd crate sees the error librbd recorded in the held
/// completion and fails the write with it.
#[tokio::test]
async fn a_blocklisted_clients_zero_copy_write_fails_instead_of_hanging() {
    const LIMIT: std::time::Duration = std::time::Duration::from_secs(60);
    let ioctx = pool();
    let mut guard = ImageGuard::new(&ioctx);
    let name = create(&mut guard, "zc-blocklisted", 8 * MIB);
    let writer = Image::open(&zero_copy_pool(), &name, OpenMode::ReadWrite).expect("open image");
    let data = Bytes::from(pattern(0x3b, MIB as usize));
    within(
        LIMIT,
        "write before",
        &writer,
        writer.write(0, data.clone()),
    )
    .await
    .expect("a write before the blocklisting");
    let address = match watchers(&name).as_slice() {
        [one] => one.clone(),
        other => panic!("expected the writer as the one watcher, got {other:?}"),
    };
    blocklist("add", &address, &["600"]);
    let started = std::time::Instant::now();
    let outcome = within(LIMIT, "write after", &writer, writer.write(MIB, data)).await;
    let waited = started.elapsed();
    blocklist("rm", &address, &[]);
    let err = outcome.expect_err("a blocklisted client's write must fail");
    assert_eq!(err.errno(), libc::ESHUTDOWN, "{err}");
    assert!(err
        .to_string()
        .contains(&format!("write to rbd/{name} [1048576..+1048576]")));
    // Seen at the first or second look (1 s apart), not after the limit.
    assert!(waited < std::time::Duration::from_secs(10), "{waited:?}");
    // Closing does not wait long for the write librbd holds.
    let closing = std::time::Instant::now();
    drop(writer);
    assert!(closing.elapsed() < std::time::Duration::from_secs(5));
}

/// Another client holding an image's exclusive lock without releasing it (`rbd device map
/// --exclusive`) makes librbd fail writes at once when it copies (EROFS), and never complete
/// them with zero-copy, even after that client lets the lock go (run by hand against librbd
/// 16.2.15; a hostile pass found the let-go case hanging a first version of this fix, which
/// looked at the lock's holder instead of at the failed write). The rbd crate fails such a
/// write with librbd's error, whether the holder still holds the lock or not.
#[tokio::test]
async fn a_zero_copy_write_against_another_clients_exclusive_lock_fails_instead_of_hanging() {
    const LIMIT: std::time::Duration = std::time::Duration::from_secs(60);
    for let_go in [false, true] {
        let ioctx = pool();
        let mut guard = ImageGuard::new(&ioctx);
        let name = create(&mut guard, "zc-locked", 8 * MIB);
        let holder = open_rw(&name);
        holder.lock_exclusive().expect("take the exclusive lock");
        let holder_address = watchers(&name).pop().expect("the holder watches");

        let writer =
            Image::open(&zero_copy_pool(), &name, OpenMode::ReadWrite).expect("open image");
        let writer_address = watchers(&name)
            .into_iter()
            .find(|a| *a != holder_address)
            .expect("the writer watches");
        let started = std::time::Instant::now();
        let write = writer.write(0, Bytes::from(pattern(0x4c, MIB as usize)));
        let holder = if let_go {
            tokio::time::sleep(std::time::Duration::from_secs(3)).await;
            drop(holder);
            None
        } else {
            Some(holder)
        };
        let outcome = within(LIMIT, "write against the lock", &writer, write).await;
        let waited = started.elapsed();
        let err = outcome.expect_err("the write must fail");
        assert_eq!(err.kind(), ErrorKind::ReadOnly, "let go {let_go}: {err}");
        assert!(
            waited < std::time::Duration::from_secs(20),
            "let go {let_go}: {waited:?}"
        );
        let closing = std::time::Instant::now();
        drop(writer);
        assert!(closing.elapsed() < std::time::Duration::from_secs(5));
        // Nothing was written; the leaked writer is evicted so that the image can go.
        let reader = Image::open(&ioctx, &name, OpenMode::ReadOnly).unwrap();
        assert!(reader
            .read(0, MIB as usize)
            .await
            .unwrap()
            .iter()
            .all(|&b| b == 0));
        drop((reader, holder));
        evict(&writer_address);
    }
}
