//! `ops::cleanup` on the live cluster: what a killed writer leaves (a temporary snapshot, a
//! working image, a multipart upload, a Longhorn stub with its lock and blocks) is removed
//! when its writer is provably gone (an export-vm's RBD group too), and nothing else is: not
//! a live writer's, not a protected snapshot, not an image kept on purpose, not an upload
//! nothing says is ours.
//!
//! A dead writer is a real process that ran and ended (its pid no longer exists); what it
//! "left" is made the way diskferry makes it, with its `HOST PID` recorded where diskferry
//! records it. The CLI tests (`crates/cli/tests/cleanup_cli.rs`) SIGKILL the real binary.

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use diskferry::longhorn::{open_store, BackupTarget};
use diskferry::ops::cleanup::{
    cleanup, Action, CleanupOptions, CleanupReport, LeftoverKind, Scope, GROUP_WRITER_KEY_PREFIX,
    SNAPSHOT_WRITER_KEY_PREFIX,
};
use diskferry::ops::longhorn::{backup, BackupJob};
use diskferry::sinks::{METADATA_KEPT, METADATA_WRITER};
use diskferry::{Address, CancellationToken, NoProgress};
use diskferry_integration_tests::{
    context, group_of, make_group, new_bucket, pattern, pool, snapshot_names, unique, ImageGuard,
    TEST_POOL,
};
use longhorn::lock::LockOptions;
use longhorn::{BackupName, BackupOptions, BackupStore, VolumeName};
use objstore::{PutOptions, UploadJournal, UploadRecord, Writer};
use rbd::{CreateOptions, Image, OpenMode};

const MIB: usize = 1 << 20;
const HOUR: Duration = Duration::from_secs(3600);

/// A writer of this host that ran and is gone: the pid of a process that has exited.
fn dead_writer() -> Writer {
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let pid = child.id();
    child.wait().unwrap();
    let w = Writer {
        pid,
        ..Writer::current()
    };
    assert_eq!(w.state(), objstore::WriterState::Gone);
    w
}

fn millis_ago(ago: Duration) -> u128 {
    (SystemTime::now() - ago)
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis()
}

/// The item at `location`'s start, panicking with the report when there is none.
fn item<'a>(report: &'a CleanupReport, location: &str) -> &'a diskferry::ops::cleanup::CleanupItem {
    report
        .items
        .iter()
        .find(|i| i.location.starts_with(location))
        .unwrap_or_else(|| panic!("nothing at {location} in {report:#?}"))
}

fn snapshots(image: &str) -> BTreeSet<String> {
    snapshot_names(image).into_iter().collect()
}

fn images() -> BTreeSet<String> {
    rbd::list(&pool()).unwrap().into_iter().collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn an_images_leftovers_of_dead_writers_go_and_the_rest_stays() {
    let ctx = context();
    let io = pool();
    let mut guard = ImageGuard::new(&io);
    let name = guard.add(unique("cleanup-img"));
    rbd::create(&io, &name, 4 * MIB as u64, &CreateOptions::default()).unwrap();
    let (dead, me) = (dead_writer(), Writer::current());
    let now = millis_ago(Duration::ZERO);
    let killed = format!("diskferry-export-{}-{now}", dead.pid);
    let live = format!("diskferry-export-{}-{now}", me.pid);
    let protected = format!("diskferry-export-{}-{}", dead.pid, now + 1);
    // An older diskferry recorded no writer: only its age can tell, and that age is the
    // cluster's record of the creation, not the number in the name (48 hours ago here).
    let unrecorded = format!("diskferry-backup-{}-{}", dead.pid, millis_ago(48 * HOUR));
    let fresh_unrecorded = format!("diskferry-backup-{}-{}", dead.pid, now + 2);
    {
        let image = Image::open(&io, &name, OpenMode::ReadWrite).unwrap();
        for (snap, writer) in [
            (&killed, Some(&dead)),
            (&live, Some(&me)),
            (&protected, Some(&dead)),
            (&unrecorded, None),
            (&fresh_unrecorded, None),
        ] {
            if let Some(w) = writer {
                image
                    .metadata_set(
                        &format!("{SNAPSHOT_WRITER_KEY_PREFIX}{snap}"),
                        &w.to_string(),
                    )
                    .unwrap();
            }
            image.snap_create(snap).unwrap();
        }
        image.snap_create("users-own").unwrap();
        image.snap_protect(&protected).unwrap();
    }
    // An import killed mid-copy; one killed between creating its image and recording its
    // writer (only its name's pid and place tag tell); a partial image kept on purpose
    // (--keep-partial) by an older version (no mark) and by this one (marked); and an
    // unrecorded one whose tag is another place's.
    let tag = dead.place_tag();
    let working = guard.add(format!("{name}.diskferry-new-{}-{now}-{tag}", dead.pid));
    let unrecorded_working = guard.add(format!(
        "{name}.diskferry-new-{}-{}-{tag}",
        dead.pid,
        now + 3
    ));
    let kept = guard.add(format!("{name}.diskferry-new-{}-{}", dead.pid, now + 1));
    let kept_marked = guard.add(format!(
        "{name}.diskferry-new-{}-{}-{tag}",
        dead.pid,
        now + 4
    ));
    let elsewhere = guard.add(format!(
        "{name}.diskferry-new-{}-{}-0badc0de",
        dead.pid,
        now + 5
    ));
    for w in [
        &working,
        &unrecorded_working,
        &kept,
        &kept_marked,
        &elsewhere,
    ] {
        rbd::create(&io, w, MIB as u64, &CreateOptions::default()).unwrap();
    }
    Image::open(&io, &working, OpenMode::ReadWrite)
        .unwrap()
        .metadata_set(METADATA_WRITER, &dead.to_string())
        .unwrap();
    Image::open(&io, &kept_marked, OpenMode::ReadWrite)
        .unwrap()
        .metadata_set(METADATA_KEPT, "--keep-partial")
        .unwrap();
    let scope = Scope::parse(&format!("rbd:{TEST_POOL}/{name}")).unwrap();
    let all_snaps = snapshots(&name);

    let dry = cleanup(
        &ctx,
        &scope,
        &CleanupOptions {
            dry_run: true,
            ..CleanupOptions::default()
        },
    )
    .await
    .unwrap();
    let at = |s: &str| format!("rbd:{TEST_POOL}/{name}@{s}");
    for (location, action) in [
        (at(&killed), Action::WouldRemove),
        (at(&unrecorded), Action::Kept),
        (at(&live), Action::Kept),
        (at(&protected), Action::Kept),
        (at(&fresh_unrecorded), Action::Kept),
        (format!("rbd:{TEST_POOL}/{working}"), Action::WouldRemove),
        (
            format!("rbd:{TEST_POOL}/{unrecorded_working}"),
            Action::WouldRemove,
        ),
        (format!("rbd:{TEST_POOL}/{kept}"), Action::Kept),
        (format!("rbd:{TEST_POOL}/{kept_marked}"), Action::Kept),
        (format!("rbd:{TEST_POOL}/{elsewhere}"), Action::Kept),
    ] {
        assert_eq!(item(&dry, &location).action, action, "{location}: {dry:#?}");
    }
    assert!(!dry.items.iter().any(|i| i.location.contains("users-own")));
    assert_eq!(snapshots(&name), all_snaps, "a dry run removed something");
    assert!(images().contains(&working));

    // What the next run of a job does: only what dead writers of this host provably left.
    let proven = cleanup(&ctx, &scope, &CleanupOptions::proven_only())
        .await
        .unwrap();
    assert_eq!(item(&proven, &at(&killed)).action, Action::Removed);
    assert_eq!(item(&proven, &at(&unrecorded)).action, Action::Kept);
    assert!(!snapshots(&name).contains(&killed));
    assert!(!images().contains(&working));
    assert!(!images().contains(&unrecorded_working));
    assert!(images().contains(&kept));
    assert!(images().contains(&kept_marked));
    assert!(images().contains(&elsewhere));
    let record = Image::open(&io, &name, OpenMode::ReadOnly)
        .unwrap()
        .metadata_get(&format!("{SNAPSHOT_WRITER_KEY_PREFIX}{killed}"))
        .unwrap();
    assert_eq!(record, None, "the removed snapshot's writer record stays");

    // `diskferry cleanup`'s default: what no writer claims, once a day old by the cluster's
    // clock: the snapshot named as 48 hours old was made seconds ago, so it stays.
    let default = cleanup(&ctx, &scope, &CleanupOptions::default())
        .await
        .unwrap();
    assert_eq!(item(&default, &at(&unrecorded)).action, Action::Kept);
    // Once really older than the threshold (here 1 s), it goes.
    std::thread::sleep(Duration::from_secs(2));
    let aged = cleanup(
        &ctx,
        &scope,
        &CleanupOptions {
            min_age: Some(Duration::from_secs(1)),
            ..CleanupOptions::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(item(&aged, &at(&unrecorded)).action, Action::Removed);
    assert_eq!(item(&aged, &at(&fresh_unrecorded)).action, Action::Removed);
    let expected: BTreeSet<String> = [&live, &protected]
        .into_iter()
        .cloned()
        .chain(["users-own".to_owned()])
        .collect();
    assert_eq!(snapshots(&name), expected);
}

#[tokio::test(flavor = "multi_thread")]
async fn only_uploads_of_dead_writers_or_idle_ones_diskferry_would_write_are_aborted() {
    let ctx = context();
    let store = ctx.s3().await.unwrap().clone();
    let bucket = new_bucket(&store, "cleanup-up").await;
    let journal = UploadJournal::default_location();
    let dead = dead_writer();
    let start = |key: &'static str| {
        let (store, bucket) = (store.clone(), bucket.clone());
        async move {
            let up = store
                .create_multipart(&bucket, key, &PutOptions::default())
                .await
                .unwrap();
            up.upload_part(1, Bytes::from(pattern(3, 5 * MIB)))
                .await
                .unwrap();
            up.upload_id().to_owned()
        }
    };
    // Journaled by this process, as every upload diskferry starts is.
    let killed = start("a/killed.qcow2").await;
    let live = start("a/live.qcow2").await;
    let foreign = start("a/other.bin").await;
    let unjournaled = start("a/old.raw").await;
    let outside = start("b/killed.qcow2").await;
    let record = |key: &str, id: &str, writer: &Writer| UploadRecord {
        writer: writer.clone(),
        endpoint: store.endpoint().unwrap_or_default().to_owned(),
        bucket: bucket.clone(),
        key: key.to_owned(),
        upload_id: id.to_owned(),
    };
    let me = Writer::current();
    // The killed one is its dead writer's; two are no one's this host knows.
    journal.forget(&record("a/killed.qcow2", &killed, &me));
    journal.record(&record("a/killed.qcow2", &killed, &dead));
    journal.forget(&record("a/other.bin", &foreign, &me));
    journal.forget(&record("a/old.raw", &unjournaled, &me));
    journal.forget(&record("b/killed.qcow2", &outside, &me));
    journal.record(&record("b/killed.qcow2", &outside, &dead));

    let scope = Scope::parse(&format!("s3://{bucket}/a/")).unwrap();
    let report = cleanup(
        &ctx,
        &scope,
        &CleanupOptions {
            dry_run: false,
            min_age: Some(HOUR),
        },
    )
    .await
    .unwrap();
    let at = |key: &str, id: &str| format!("s3://{bucket}/{key} (upload {id})");
    assert_eq!(
        item(&report, &at("a/killed.qcow2", &killed)).action,
        Action::Removed
    );
    for (key, id) in [
        ("a/live.qcow2", &live),
        ("a/other.bin", &foreign),
        ("a/old.raw", &unjournaled),
    ] {
        let i = item(&report, &at(key, id));
        assert_eq!(i.action, Action::Kept, "{i:?}");
        assert_eq!(i.kind, LeftoverKind::MultipartUpload);
    }
    assert!(item(&report, &at("a/live.qcow2", &live))
        .reason
        .contains("still runs"));
    let pending: BTreeSet<String> = store
        .list_multipart_uploads(&bucket, "")
        .await
        .unwrap()
        .into_iter()
        .map(|u| u.upload_id)
        .collect();
    let expected: BTreeSet<String> = [&live, &foreign, &unjournaled, &outside]
        .into_iter()
        .cloned()
        .collect();
    assert_eq!(pending, expected);
    assert!(
        !journal.records().iter().any(|(_, r)| r.upload_id == killed),
        "the aborted upload's record stays"
    );
    // An idle upload with a key diskferry writes goes once it is older than asked.
    let report = cleanup(
        &ctx,
        &scope,
        &CleanupOptions {
            dry_run: false,
            min_age: Some(Duration::ZERO),
        },
    )
    .await
    .unwrap();
    assert_eq!(
        item(&report, &at("a/old.raw", &unjournaled)).action,
        Action::Removed
    );
    assert_eq!(
        item(&report, &at("a/other.bin", &foreign)).action,
        Action::Kept
    );
    journal.forget(&record("b/killed.qcow2", &outside, &dead));
    journal.forget(&record("a/live.qcow2", &live, &me));
    store.empty_and_delete_bucket(&bucket).await.unwrap();
}

const BLOCK: usize = 2 << 20;

/// A Longhorn backup killed after uploading a block: begun with `writer` recorded, never
/// finished, aborted nor released (as after SIGKILL).
async fn killed_backup(store: &BackupStore, volume: &str, writer: &Writer, seed: u64) {
    let mut opts = BackupOptions::new(
        VolumeName::new(volume).unwrap(),
        BackupName::generate(),
        8 * BLOCK as u64,
    );
    opts.writer = Some(writer.to_string());
    let before = store
        .list_blocks(&VolumeName::new(volume).unwrap())
        .await
        .unwrap()
        .len();
    let mut w = store.begin_backup(opts).await.unwrap();
    w.put_block(0, Bytes::from(pattern(seed, BLOCK)))
        .await
        .unwrap();
    while store
        .list_blocks(&VolumeName::new(volume).unwrap())
        .await
        .unwrap()
        .len()
        == before
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    std::mem::forget(w);
}

async fn longhorn_leftovers_go(target: &str, vfs_root: Option<&std::path::Path>) {
    let ctx = context();
    let target = BackupTarget::parse(target).unwrap();
    // No lock refresh: a killed writer refreshes nothing.
    let store = open_store(&ctx, &target)
        .await
        .unwrap()
        .with_lock_options(LockOptions {
            refresh_interval: HOUR,
            ..LockOptions::default()
        });
    let volume = unique("vol");
    let v = VolumeName::new(volume.as_str()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let disk = dir.path().join("disk.raw");
    std::fs::write(&disk, pattern(7, 6 * MIB)).unwrap();
    let job = BackupJob::new(volume.clone());
    let (source, cancel) = (Address::File(disk.clone()), CancellationToken::new());
    let run_backup = || backup(&ctx, &store, &target, &source, &job, &NoProgress, &cancel);
    run_backup().await.unwrap();

    // Killed: the next backup of the volume removes the stub and its lock, reuses the block.
    killed_backup(&store, &volume, &dead_writer(), 11).await;
    let left = store.leftovers(&v).await.unwrap();
    assert_eq!((left.in_progress.len(), left.locks.len()), (1, 1));
    run_backup().await.unwrap();
    let left = store.leftovers(&v).await.unwrap();
    assert!(left.in_progress.is_empty(), "{left:?}");
    assert!(left.locks.is_empty(), "{left:?}");

    // Killed again: `cleanup` removes the stub with its lock, then sweeps both blocks.
    killed_backup(&store, &volume, &dead_writer(), 12).await;
    let left = store.leftovers(&v).await.unwrap();
    assert_eq!(left.unreferenced_blocks.len(), 2, "{left:?}");
    let scope = Scope::longhorn(&target.url, Some(&volume)).unwrap();
    let report = cleanup(&ctx, &scope, &CleanupOptions::default())
        .await
        .unwrap();
    let kinds: Vec<(LeftoverKind, Action)> =
        report.items.iter().map(|i| (i.kind, i.action)).collect();
    assert_eq!(
        kinds,
        vec![
            (LeftoverKind::InProgressBackup, Action::Removed),
            (LeftoverKind::UnreferencedBlocks, Action::Removed),
        ],
        "{report:#?}"
    );
    let left = store.leftovers(&v).await.unwrap();
    assert_eq!(left, longhorn::Leftovers::default());
    assert_eq!(store.list_backups(&v).await.unwrap().len(), 2);
    if let Some(root) = vfs_root {
        let vol_dir = root.join(longhorn::paths::volume_dir(&v));
        assert!(!vol_dir.join("locks").exists(), "an empty locks/ is left");
        for l1 in std::fs::read_dir(vol_dir.join("blocks")).unwrap() {
            for l2 in std::fs::read_dir(l1.unwrap().path()).unwrap() {
                let l2 = l2.unwrap().path();
                assert!(
                    std::fs::read_dir(&l2).unwrap().next().is_some(),
                    "{} is empty",
                    l2.display()
                );
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_longhorn_backup_on_s3_is_cleaned_by_the_next_backup_and_by_cleanup() {
    let ctx = context();
    let store = ctx.s3().await.unwrap().clone();
    let bucket = new_bucket(&store, "cleanup-lh").await;
    longhorn_leftovers_go(&format!("s3://{bucket}@us-east-1/lh/"), None).await;
    store.empty_and_delete_bucket(&bucket).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_longhorn_backup_on_vfs_is_cleaned_and_emptied_directories_go() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("vfs://{}/", dir.path().display());
    longhorn_leftovers_go(&url, Some(dir.path())).await;
}

/// Removes `group` (its images leave it), as a test's own cleanup.
fn remove_group(group: &str) {
    let io = pool();
    let _ = rbd::group_remove(&io, group);
}

#[tokio::test(flavor = "multi_thread")]
async fn export_vm_groups_of_dead_writers_go_with_their_snapshot_and_others_stay() {
    let ctx = context();
    let io = pool();
    let mut guard = ImageGuard::new(&io);
    let names: Vec<String> = ["a", "b", "c", "d", "e"]
        .iter()
        .map(|n| guard.add(unique(&format!("cleanup-grp-{n}"))))
        .collect();
    for name in &names {
        rbd::create(&io, name, 4 * MIB as u64, &CreateOptions::default()).unwrap();
    }
    let (dead, me) = (dead_writer(), Writer::current());
    let other = Writer {
        host: format!("{}-elsewhere", me.host),
        pid: 1,
        instance: None,
    };
    let group = |w: &Writer| format!("diskferry-export-vm-{}-{}", w.pid, millis_ago(HOUR));
    let (dead_group, live_group, other_group) = (group(&dead), group(&me), group(&other));
    let unrecorded = format!("diskferry-export-vm-{}-1000", dead.pid + 1);
    let mine = unique("users-own-group");
    let left = |group: &str, images: &[&str], writer: Option<&Writer>| {
        let key = format!("{GROUP_WRITER_KEY_PREFIX}{group}");
        let value = writer.map(Writer::to_string);
        make_group(group, images, value.as_deref().map(|v| (key.as_str(), v)));
    };
    left(&dead_group, &[&names[0], &names[1]], Some(&dead));
    left(&live_group, &[&names[2]], Some(&me));
    left(&other_group, &[&names[3]], Some(&other));
    left(&unrecorded, &[], None);
    left(&mine, &[&names[4]], Some(&dead));

    let scope = Scope::RbdPool {
        pool: TEST_POOL.into(),
    };
    let dry = CleanupOptions {
        dry_run: true,
        ..CleanupOptions::default()
    };
    let listed = cleanup(&ctx, &scope, &dry).await.unwrap();
    let found = item(&listed, &format!("rbd:{TEST_POOL}/{dead_group} "));
    assert_eq!(found.kind, LeftoverKind::TemporaryGroup);
    assert_eq!(found.action, Action::WouldRemove, "{found:?}");
    assert!(
        found.location.contains(&names[0]) && found.location.contains("snapshot export"),
        "{found:?}"
    );
    assert_eq!(group_of(&names[0]), Some(dead_group.clone()));

    // One image's scope finds its group and removes it whole.
    let report = cleanup(
        &ctx,
        &Scope::RbdImage {
            pool: TEST_POOL.into(),
            image: names[1].clone(),
        },
        &CleanupOptions::default(),
    )
    .await
    .unwrap();
    let removed = item(&report, &format!("rbd:{TEST_POOL}/{dead_group} "));
    assert_eq!(removed.action, Action::Removed, "{report:#?}");
    assert_eq!(group_of(&names[0]), None);
    assert_eq!(group_of(&names[1]), None);
    for image in &names[..2] {
        let record = Image::open(&io, image, OpenMode::ReadOnly)
            .unwrap()
            .metadata_get(&format!("{GROUP_WRITER_KEY_PREFIX}{dead_group}"))
            .unwrap();
        assert_eq!(record, None, "{image} keeps the writer record");
        assert!(
            snapshots(image).is_empty(),
            "{image} keeps the group's snapshot"
        );
    }

    // The pool: a running writer's, another host's (younger than a day), an unrecorded one
    // without a snapshot (age unknown) and a group not named by diskferry all stay. (A dry
    // run: other tests' leftovers in the shared pool are theirs to look at.)
    let report = cleanup(&ctx, &scope, &dry).await.unwrap();
    for kept in [&live_group, &other_group, &unrecorded] {
        let found = item(&report, &format!("rbd:{TEST_POOL}/{kept} "));
        assert_eq!(found.action, Action::Kept, "{found:?}");
    }
    assert!(
        !report.items.iter().any(|i| i.location.contains(&mine)),
        "{report:#?}"
    );
    assert_eq!(group_of(&names[2]), Some(live_group.clone()));
    assert_eq!(group_of(&names[3]), Some(other_group.clone()));
    assert_eq!(group_of(&names[4]), Some(mine.clone()));
    for g in [&live_group, &other_group, &unrecorded, &mine] {
        remove_group(g);
    }
}
