//! What a SIGKILLed run leaves, through the real binary on the live cluster and RGW: an
//! export's multipart upload and temporary snapshot, a Longhorn backup's in-progress cfg,
//! lock and snapshot (S3 and vfs targets), an `import --force`'s working image. `diskferry
//! cleanup --dry-run` lists each, the next run of the same job or `diskferry cleanup`
//! removes them, and the upload of another process that still runs is not touched. A killed
//! `export-vm` leaves its RBD group (its disks in it, its snapshot) and its upload: `cleanup`
//! and the next `export-vm` remove them; a running export-vm's group is kept.

mod common;

use common::{diskferry, ok, run};

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use diskferry::longhorn::{open_store, BackupStore, BackupTarget};
use diskferry_integration_tests::{
    context, group_of, metadata_keys, new_bucket, pattern, pool, s3_config, snapshot_names, unique,
    ImageGuard, TEST_POOL,
};
use longhorn::paths::locks_dir;
use longhorn::VolumeName;
use objstore::{S3Store, Writer, WriterState};
use rbd::{CreateOptions, Image, OpenMode};
use serde_json::Value;

const MIB: usize = 1 << 20;
/// How long a job may take to show progress before the test gives up.
const PROGRESS_TIMEOUT: Duration = Duration::from_secs(120);
/// Poll period while waiting for progress.
const POLL: Duration = Duration::from_millis(20);

async fn make_image(guard: &mut ImageGuard, name: &str, mib: usize) {
    let io = pool();
    let name = guard.add(name.to_string());
    rbd::create(&io, &name, (mib * MIB) as u64, &CreateOptions::default()).unwrap();
    let image = Image::open(&io, &name, OpenMode::ReadWrite).unwrap();
    // Random data, repeated: every block is written, and making it costs no time.
    let piece = Bytes::from(pattern(4242, 4 * MIB));
    for i in 0..mib / 4 {
        image
            .write((i * 4 * MIB) as u64, piece.clone())
            .await
            .unwrap();
    }
    image.flush().await.unwrap();
}

/// MiB of new data a killed Longhorn backup must upload: 32 blocks, about a second or more of
/// uploads with one block in flight, in which the test can catch it.
const UNIQUE_MIB: usize = 64;

/// Writes data no other run of the test wrote into the first `mib` MiB of `name`: each of
/// those 2 MiB Longhorn blocks is new, so a backup of it uploads them and can be caught mid-way.
async fn rewrite_unique(name: &str, mib: usize, seed: u64) {
    let image = Image::open(&pool(), name, OpenMode::ReadWrite).unwrap();
    for i in 0..mib / 4 {
        let piece = Bytes::from(pattern(seed * 1000 + i as u64, 4 * MIB));
        image.write((i * 4 * MIB) as u64, piece).await.unwrap();
    }
    image.flush().await.unwrap();
}

async fn bucket(prefix: &str) -> (S3Store, String) {
    let store = S3Store::from_config(&s3_config()).unwrap();
    let name = new_bucket(&store, prefix).await;
    (store, name)
}

/// Multipart uploads of `key` (and longer keys) in progress.
async fn pending(store: &S3Store, bucket: &str, key: &str) -> usize {
    store
        .list_multipart_uploads(bucket, key)
        .await
        .unwrap()
        .len()
}

fn spawn(args: &[&str]) -> Child {
    diskferry()
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// Polls `ready` until it holds, failing if `child` ends first or nothing happens in time.
async fn wait_for<F, Fut>(child: &mut Child, what: &str, ready: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    if let Some(status) = wait_for_or_end(child, what, ready).await {
        panic!("the job ended ({status}) before {what}");
    }
}

/// Polls `ready` until it holds (`None`) or `child` ends first (its status); fails if
/// neither happens in time.
async fn wait_for_or_end<F, Fut>(
    child: &mut Child,
    what: &str,
    mut ready: F,
) -> Option<std::process::ExitStatus>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    while !ready().await {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        assert!(started.elapsed() < PROGRESS_TIMEOUT, "no {what} in time");
        tokio::time::sleep(POLL).await;
    }
    None
}

fn signal(child: &Child, name: &str) {
    let sent = Command::new("kill")
        .args([&format!("-{name}"), &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success(), "kill -{name}");
}

/// SIGKILL: the process gets no chance to clean up.
fn sigkill(mut child: Child) {
    child.kill().unwrap();
    child.wait().unwrap();
}

/// Whether an upload of `key` has stored at least one part (a few MiB of progress).
async fn has_a_part(store: &S3Store, bucket: &str, key: &str) -> bool {
    for u in store.list_multipart_uploads(bucket, key).await.unwrap() {
        if let Ok(Some(_)) = store
            .upload_last_part_time(bucket, &u.key, &u.upload_id)
            .await
        {
            return true;
        }
    }
    false
}

/// The `(kind, action)` of each item of a `cleanup --json` report, and the reasons.
fn actions(report: &Value) -> Vec<(String, String, String)> {
    report["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["kind"].as_str().unwrap().to_owned(),
                i["action"].as_str().unwrap().to_owned(),
                i["location"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn has(report: &Value, kind: &str, action: &str) -> bool {
    actions(report)
        .iter()
        .any(|(k, a, _)| k == kind && a == action)
}

/// Starts `export` of a 256 MiB image and SIGKILLs it once a part is stored.
async fn killed_export(store: &S3Store, bucket: &str, image: &str, key: &str) -> Vec<String> {
    let args = export_args(bucket, image, key);
    let mut child = spawn(&args.iter().map(String::as_str).collect::<Vec<_>>());
    wait_for(&mut child, "an uploaded part", || {
        has_a_part(store, bucket, key)
    })
    .await;
    sigkill(child);
    args
}

fn export_args(bucket: &str, image: &str, key: &str) -> Vec<String> {
    [
        "export",
        &format!("rbd:{TEST_POOL}/{image}"),
        &format!("s3://{bucket}/{key}"),
        "--part-size",
        "5M",
        "--jobs",
        "1",
    ]
    .map(str::to_owned)
    .to_vec()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_export_leaves_its_upload_and_snapshot_and_the_rerun_removes_both() {
    let (store, bucket) = bucket("cl-kill-export").await;
    let mut guard = ImageGuard::new(&pool());
    let image = unique("cl-kill-export");
    make_image(&mut guard, &image, 256).await;
    let key = "disks/vm.qcow2";
    let args = killed_export(&store, &bucket, &image, key).await;
    assert_eq!(pending(&store, &bucket, key).await, 1);
    let snaps = snapshot_names(&image);
    assert!(
        snaps.len() == 1 && snaps[0].starts_with("diskferry-export-"),
        "{snaps:?}"
    );

    let listed = ok(&run(&[
        "cleanup",
        "--dry-run",
        "--json",
        &format!("rbd:{TEST_POOL}/{image}"),
    ]));
    assert!(
        has(&listed, "temporary-snapshot", "would-remove"),
        "{listed}"
    );
    let listed = ok(&run(&[
        "cleanup",
        "--dry-run",
        "--json",
        &format!("s3://{bucket}/"),
    ]));
    assert!(has(&listed, "multipart-upload", "would-remove"), "{listed}");
    assert_eq!(
        snapshot_names(&image).len(),
        1,
        "a dry run removed the snapshot"
    );
    assert_eq!(pending(&store, &bucket, key).await, 1);

    let mut rerun: Vec<&str> = args.iter().map(String::as_str).collect();
    rerun.push("--json");
    let rerun = ok(&run(&rerun));
    assert!(rerun["digest"].is_string(), "{rerun}");
    assert!(
        store
            .list_multipart_uploads(&bucket, "")
            .await
            .unwrap()
            .is_empty(),
        "the killed run's upload is left after the rerun"
    );
    assert!(
        snapshot_names(&image).is_empty(),
        "{:?}",
        snapshot_names(&image)
    );
    store.empty_and_delete_bucket(&bucket).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn cleanup_removes_a_killed_exports_leftovers_but_not_a_running_processs_upload() {
    let (store, bucket) = bucket("cl-cleanup").await;
    let mut guard = ImageGuard::new(&pool());
    let (image, other) = (unique("cl-cleanup"), unique("cl-cleanup-live"));
    make_image(&mut guard, &image, 256).await;
    make_image(&mut guard, &other, 256).await;
    killed_export(&store, &bucket, &image, "killed.qcow2").await;
    // Another export that still runs (stopped, so it is mid-upload while we look).
    let live_args = export_args(&bucket, &other, "live.qcow2");
    let mut live = diskferry()
        .args(&live_args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for(&mut live, "an uploaded part", || {
        has_a_part(&store, &bucket, "live.qcow2")
    })
    .await;
    signal(&live, "STOP");

    let snaps = ok(&run(&[
        "cleanup",
        "--json",
        &format!("rbd:{TEST_POOL}/{image}"),
    ]));
    assert!(has(&snaps, "temporary-snapshot", "removed"), "{snaps}");
    assert!(snapshot_names(&image).is_empty());
    let uploads = ok(&run(&["cleanup", "--json", &format!("s3://{bucket}/")]));
    signal(&live, "CONT");
    let items = actions(&uploads);
    assert!(
        items.iter().any(|(k, a, l)| k == "multipart-upload"
            && a == "removed"
            && l.contains("/killed.qcow2 ")),
        "{uploads}"
    );
    let kept = uploads["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["location"].as_str().unwrap().contains("/live.qcow2 "))
        .unwrap_or_else(|| panic!("the live upload is not listed: {uploads}"));
    assert_eq!(kept["action"], "kept", "{uploads}");
    assert!(
        kept["reason"].as_str().unwrap().contains("still runs"),
        "{kept}"
    );
    let out = live.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the running export was disturbed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(store
        .list_multipart_uploads(&bucket, "")
        .await
        .unwrap()
        .is_empty());
    assert!(store.exists(&bucket, "live.qcow2").await.unwrap());
    store.empty_and_delete_bucket(&bucket).await.unwrap();
}

/// Attempts at killing a run mid-way before the test gives up.
const KILL_ATTEMPTS: usize = 5;

/// Runs `args` and SIGKILLs the process while `in_progress` holds, retrying up to
/// [`KILL_ATTEMPTS`] times. The run can end between the poll that sees it in progress and the
/// kill (CI saw a Longhorn backup whose blocks were all stored already killed after its final
/// cfg, before it removed its lock), so it is stopped (SIGSTOP) first and killed only if it is
/// still in progress then; if it had finished, it is let go on to its end and run again. A run
/// can also finish between two polls (CI saw a backup whose blocks were all reused do so):
/// that too is a missed attempt, if the run succeeded.
async fn killed_run<F, Fut>(args: &[&str], what: &str, mut in_progress: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..KILL_ATTEMPTS {
        let mut child = spawn(args);
        if let Some(status) = wait_for_or_end(&mut child, what, &mut in_progress).await {
            assert!(
                status.success(),
                "a run ended before {what} and failed: {status}"
            );
            eprintln!("a run ended before {what}: run again");
            continue;
        }
        signal(&child, "STOP");
        if in_progress().await {
            sigkill(child);
            return;
        }
        signal(&child, "CONT");
        eprintln!("a run stopped after {what}: let go on and run again");
        let status = child.wait().unwrap();
        assert!(
            status.success(),
            "a run that was not killed failed: {status}"
        );
    }
    panic!("no run was caught {what} in {KILL_ATTEMPTS} attempts");
}

/// A Longhorn backup of a 256 MiB image into `target` (one block in flight), SIGKILLed while
/// its in-progress cfg and a block are stored.
async fn killed_backup(store: &BackupStore, target: &str, image: &str, volume: &str) {
    let v = VolumeName::new(volume).unwrap();
    let source = format!("rbd:{TEST_POOL}/{image}");
    let args = [
        "longhorn", "backup", &source, target, "--volume", volume, "--jobs", "1",
    ];
    killed_run(&args, "an in-progress backup with a block", || async {
        let left = store.leftovers(&v).await.unwrap();
        !left.in_progress.is_empty() && !store.list_blocks(&v).await.unwrap().is_empty()
    })
    .await;
}

async fn longhorn_kill_rerun_cleanup(target: &str, vfs_root: Option<&std::path::Path>) {
    let ctx = context();
    let store = open_store(&ctx, &BackupTarget::parse(target).unwrap())
        .await
        .unwrap();
    let mut guard = ImageGuard::new(&pool());
    let image = unique("cl-lh");
    make_image(&mut guard, &image, 256).await;
    let volume = unique("vol");
    let v = VolumeName::new(volume.as_str()).unwrap();
    let backup = [
        "longhorn",
        "backup",
        &format!("rbd:{TEST_POOL}/{image}"),
        target,
        "--volume",
        &volume,
        "--json",
    ]
    .map(str::to_owned);

    rewrite_unique(&image, UNIQUE_MIB, 1).await;
    killed_backup(&store, target, &image, &volume).await;
    let left = store.leftovers(&v).await.unwrap();
    assert_eq!(left.in_progress.len(), 1, "{left:?}");
    assert_eq!(left.locks.len(), 1, "{left:?}");
    assert!(snapshot_names(&image)[0].starts_with("diskferry-backup-"));
    let listed = ok(&run(&[
        "cleanup",
        "--dry-run",
        "--json",
        "--longhorn",
        target,
        "--volume",
        &volume,
    ]));
    assert!(
        has(&listed, "in-progress-backup", "would-remove"),
        "{listed}"
    );

    // The next backup removes the stub, its lock and the snapshot, and reuses the blocks.
    let report = ok(&run(&backup.iter().map(String::as_str).collect::<Vec<_>>()));
    assert!(report["reused_blocks"].as_u64().unwrap() > 0, "{report}");
    let left = store.leftovers(&v).await.unwrap();
    assert!(left.in_progress.is_empty(), "the stub is left: {left:?}");
    assert!(left.locks.is_empty(), "the lock is left: {left:?}");
    assert!(
        snapshot_names(&image).is_empty(),
        "{:?}",
        snapshot_names(&image)
    );
    if let Some(root) = vfs_root {
        let locks = root.join(locks_dir(&v));
        assert!(!locks.exists(), "an empty {} is left", locks.display());
    }

    // Killed again: `cleanup` removes the stub with its lock (a deletion need not wait the
    // lock's 150 s out), and the snapshot. New data, so that this run too uploads blocks
    // (one that reuses every block stores its final cfg within a second: CI missed it).
    rewrite_unique(&image, UNIQUE_MIB, 2).await;
    killed_backup(&store, target, &image, &volume).await;
    let cleaned = ok(&run(&[
        "cleanup",
        "--json",
        "--longhorn",
        target,
        "--volume",
        &volume,
    ]));
    assert!(has(&cleaned, "in-progress-backup", "removed"), "{cleaned}");
    let left = store.leftovers(&v).await.unwrap();
    assert!(
        left.in_progress.is_empty() && left.locks.is_empty(),
        "{left:?}"
    );
    assert!(left.unreferenced_blocks.is_empty(), "{left:?}");
    let snaps = ok(&run(&[
        "cleanup",
        "--json",
        &format!("rbd:{TEST_POOL}/{image}"),
    ]));
    assert!(has(&snaps, "temporary-snapshot", "removed"), "{snaps}");
    let name = report["backup"].as_str().unwrap();
    let started = Instant::now();
    ok(&run(&[
        "longhorn", "rm", target, "--volume", &volume, "--backup", name, "--json",
    ]));
    assert!(started.elapsed() < Duration::from_secs(60));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_longhorn_backup_to_s3_is_cleaned_by_the_next_backup_and_by_cleanup() {
    let (store, bucket) = bucket("cl-lh").await;
    longhorn_kill_rerun_cleanup(&format!("s3://{bucket}@us-east-1/lh/"), None).await;
    store.empty_and_delete_bucket(&bucket).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_longhorn_backup_to_vfs_is_cleaned_and_leaves_no_empty_directory() {
    let dir = tempfile::tempdir().unwrap();
    let target = format!("vfs://{}/", dir.path().display());
    longhorn_kill_rerun_cleanup(&target, Some(dir.path())).await;
}

/// A killed restore leaves its lock and nothing that names it but the lock itself, whose
/// writer (`HOST PID`) is a process that no longer runs: the next restore of the volume
/// removes it, and so does `cleanup`, without waiting for the lock to expire (150 s, during
/// which it would keep every deletion of the volume's backups out).
#[tokio::test(flavor = "multi_thread")]
async fn a_killed_longhorn_restore_leaves_a_lock_the_next_restore_and_cleanup_remove() {
    let dir = tempfile::tempdir().unwrap();
    let target = format!("vfs://{}/", dir.path().display());
    let store = open_store(&context(), &BackupTarget::parse(&target).unwrap())
        .await
        .unwrap();
    let mut guard = ImageGuard::new(&pool());
    let image = unique("cl-lhr");
    make_image(&mut guard, &image, 256).await;
    let volume = unique("vol");
    let v = VolumeName::new(volume.as_str()).unwrap();
    let source = format!("rbd:{TEST_POOL}/{image}");
    ok(&run(&[
        "longhorn", "backup", &source, &target, "--volume", &volume, "--json",
    ]));
    let out_dir = tempfile::tempdir().unwrap();
    let out = out_dir.path().join("restored.raw");
    let out = out.to_str().unwrap();
    let restore = [
        "longhorn", "restore", &target, "--volume", &volume, out, "--force", "--json",
    ];
    let holds_a_lock = || async { !store.lock_entries(&v).await.unwrap().is_empty() };

    killed_run(&restore, "a restore holding its lock", holds_a_lock).await;
    let locks = store.lock_entries(&v).await.unwrap();
    assert_eq!(locks.len(), 1, "{locks:?}");
    let writer: Writer = locks[0].writer.as_deref().unwrap().parse().unwrap();
    assert_eq!(writer.state(), WriterState::Gone, "{writer}");
    let listed = ok(&run(&[
        "cleanup",
        "--dry-run",
        "--json",
        "--longhorn",
        &target,
        "--volume",
        &volume,
    ]));
    assert!(has(&listed, "lock", "would-remove"), "{listed}");

    // The next restore removes it (and takes and releases its own).
    let report = ok(&run(&restore));
    assert_eq!(report["digest_verified"], true, "{report}");
    let locks = store.lock_entries(&v).await.unwrap();
    assert!(
        locks.is_empty(),
        "the killed restore's lock is left: {locks:?}"
    );

    // Killed again: `cleanup` removes it at once.
    killed_run(&restore, "a restore holding its lock", holds_a_lock).await;
    let cleaned = ok(&run(&[
        "cleanup",
        "--json",
        "--longhorn",
        &target,
        "--volume",
        &volume,
    ]));
    assert!(has(&cleaned, "lock", "removed"), "{cleaned}");
    assert!(store.lock_entries(&v).await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_import_force_leaves_a_working_image_the_next_import_force_removes() {
    let io = pool();
    let mut guard = ImageGuard::new(&io);
    let name = unique("cl-force");
    make_image(&mut guard, &name, 4).await;
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("big.raw");
    std::fs::write(&raw, pattern(17, MIB).repeat(256)).unwrap();
    let raw = raw.to_str().unwrap().to_owned();
    let dest = format!("rbd:{TEST_POOL}/{name}");
    let working = |io: &rbd::IoCtx| -> Vec<String> {
        rbd::list(io)
            .unwrap()
            .into_iter()
            .filter(|n| n.starts_with(&format!("{name}.diskferry-new-")))
            .collect()
    };
    let mut child = spawn(&["import", "--force", &raw, &dest]);
    wait_for(&mut child, "a working image", || {
        let found = !working(&io).is_empty();
        async move { found }
    })
    .await;
    // A few MiB of progress.
    tokio::time::sleep(Duration::from_millis(300)).await;
    sigkill(child);
    let left = working(&io);
    assert_eq!(left.len(), 1, "{left:?}");
    for w in &left {
        guard.add(w.clone());
    }
    let listed = ok(&run(&["cleanup", "--dry-run", "--json", &dest]));
    assert!(has(&listed, "working-image", "would-remove"), "{listed}");

    ok(&run(&["import", "--force", &raw, &dest, "--json"]));
    assert!(working(&io).is_empty(), "{:?}", working(&io));
    let size = Image::open(&io, &name, OpenMode::ReadOnly)
        .unwrap()
        .size()
        .unwrap();
    assert_eq!(size, (256 * MIB) as u64);
}

/// The export-vm groups (`diskferry-export-vm-*`) of the test pool.
fn vm_groups() -> Vec<String> {
    rbd::group_cleanup::group_list(&pool())
        .unwrap()
        .into_iter()
        .filter(|g| g.starts_with("diskferry-export-vm-"))
        .collect()
}

/// A VM of a 256 MiB `os` disk and a 4 MiB `data` disk and the arguments of its `export-vm`
/// into `s3://BUCKET/vms/app/`, one block in flight (`--jobs 1`, 5 MiB parts) so that it is
/// still copying `os` when a test kills or stops it. Its images go when it is dropped, its
/// bucket with [`KilledVm::finish`].
struct KilledVm {
    os: String,
    data: String,
    args: Vec<String>,
    store: S3Store,
    bucket: String,
    _guard: ImageGuard,
}

impl KilledVm {
    async fn new(prefix: &str) -> KilledVm {
        let (store, bucket) = bucket(prefix).await;
        let mut guard = ImageGuard::new(&pool());
        let (os, data) = (
            unique(&format!("{prefix}-os")),
            unique(&format!("{prefix}-data")),
        );
        make_image(&mut guard, &os, 256).await;
        make_image(&mut guard, &data, 4).await;
        let args = Self::args(&os, &data, &format!("s3://{bucket}/vms/app/"));
        KilledVm {
            os,
            data,
            args,
            store,
            bucket,
            _guard: guard,
        }
    }

    /// Removes the bucket.
    async fn finish(self) {
        self.store
            .empty_and_delete_bucket(&self.bucket)
            .await
            .unwrap();
    }

    fn args(os: &str, data: &str, bundle: &str) -> Vec<String> {
        [
            "export-vm",
            "--disk",
            &format!("os=rbd:{TEST_POOL}/{os}"),
            "--disk",
            &format!("data=rbd:{TEST_POOL}/{data}"),
            "--part-size",
            "5M",
            "--jobs",
            "1",
            bundle,
        ]
        .map(str::to_owned)
        .to_vec()
    }

    /// Starts the export-vm and waits until its first disk has stored a part.
    async fn start(&self) -> Child {
        let (store, bucket) = (&self.store, self.bucket.as_str());
        let mut child = spawn(&self.args.iter().map(String::as_str).collect::<Vec<_>>());
        wait_for(&mut child, "an uploaded part of os", || {
            has_a_part(store, bucket, "vms/app/os.qcow2")
        })
        .await;
        child
    }

    /// Starts the export-vm, SIGKILLs it mid-copy and checks what it left: its group with
    /// both disks in it, and its upload. Returns the group's name.
    async fn kill(&self) -> String {
        let (store, bucket) = (&self.store, self.bucket.as_str());
        let child = self.start().await;
        let pid = child.id();
        sigkill(child);
        let group = group_of(&self.os).expect("the killed export-vm left no group");
        assert!(
            group.starts_with(&format!("diskferry-export-vm-{pid}-")),
            "{group}"
        );
        assert_eq!(group_of(&self.data).as_deref(), Some(group.as_str()));
        // Each disk's snapshot of the group's snapshot.
        assert_eq!(snapshot_names(&self.os).len(), 1);
        assert_eq!(pending(store, bucket, "vms/app/os.qcow2").await, 1);
        group
    }

    /// `export-vm --json` to completion, then `diskferry verify` of each disk against its
    /// image (which nothing wrote since).
    fn export_and_verify(&self) -> Value {
        let bucket = &self.bucket;
        let mut args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        args.push("--json");
        let report = ok(&run(&args));
        for (role, image) in [("os", &self.os), ("data", &self.data)] {
            ok(&run(&[
                "verify",
                &format!("s3://{bucket}/vms/app/{role}.qcow2"),
                &format!("rbd:{TEST_POOL}/{image}"),
            ]));
        }
        report
    }

    /// Nothing of an export-vm is left: no group, no disk in one, no snapshot, no writer
    /// record, no upload.
    async fn assert_nothing_left(&self, group: &str) {
        let (store, bucket) = (&self.store, self.bucket.as_str());
        assert!(
            !vm_groups().iter().any(|g| g == group),
            "the group {group} is left"
        );
        for image in [&self.os, &self.data] {
            assert_eq!(group_of(image), None);
            assert!(
                snapshot_names(image).is_empty(),
                "{:?}",
                snapshot_names(image)
            );
            let records = metadata_keys(image, "diskferry.");
            assert!(records.is_empty(), "{image} keeps {records:?}");
        }
        assert!(
            store
                .list_multipart_uploads(bucket, "")
                .await
                .unwrap()
                .is_empty(),
            "an upload is left"
        );
    }
}

/// The item of a `cleanup --json` report whose location names `what`.
fn item<'a>(report: &'a Value, what: &str) -> &'a Value {
    report["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["location"].as_str().unwrap().contains(what))
        .unwrap_or_else(|| panic!("{what} is not listed: {report}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn cleanup_removes_a_killed_export_vms_group_its_snapshot_and_its_upload() {
    let vm = KilledVm::new("cl-kill-vm").await;
    let (store, bucket) = (&vm.store, vm.bucket.as_str());
    let group = vm.kill().await;

    // The pool's dry run lists the group with its disks and snapshot, and removes nothing.
    let listed = ok(&run(&[
        "cleanup",
        "--dry-run",
        "--json",
        &format!("rbd:{TEST_POOL}"),
    ]));
    let found = item(&listed, &group);
    assert_eq!(found["kind"], "temporary-group", "{found}");
    assert_eq!(found["action"], "would-remove", "{found}");
    let location = found["location"].as_str().unwrap();
    assert!(
        location.contains(&vm.os)
            && location.contains(&vm.data)
            && location.contains("snapshot export"),
        "{location}"
    );
    assert!(
        found["reason"].as_str().unwrap().contains("no longer runs"),
        "{found}"
    );
    assert_eq!(group_of(&vm.os).as_deref(), Some(group.as_str()));

    // The upload, found through the upload journal.
    let uploads = ok(&run(&["cleanup", "--json", &format!("s3://{bucket}/")]));
    let upload = item(&uploads, "/vms/app/os.qcow2 ");
    assert_eq!(upload["action"], "removed", "{uploads}");
    assert_eq!(pending(store, bucket, "vms/app/").await, 0);

    // Cleanup of one disk removes its group: snapshot, both disks out of it, the group.
    let cleaned = ok(&run(&[
        "cleanup",
        "--json",
        &format!("rbd:{TEST_POOL}/{}", vm.data),
    ]));
    assert_eq!(item(&cleaned, &group)["action"], "removed", "{cleaned}");
    vm.assert_nothing_left(&group).await;

    let report = vm.export_and_verify();
    assert_eq!(report["manifest"]["disks"][0]["role"], "os", "{report}");
    vm.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_next_export_vm_removes_a_killed_runs_group_and_upload_and_its_bundle_verifies() {
    let vm = KilledVm::new("cl-rerun-vm").await;
    let group = vm.kill().await;

    let report = vm.export_and_verify();
    let warnings = report["warnings"].to_string();
    assert!(
        warnings.contains(&format!("removed rbd:{TEST_POOL}/{group}"))
            && warnings.contains("killed export-vm"),
        "{report}"
    );
    vm.assert_nothing_left(&group).await;
    vm.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_export_vm_of_disks_a_running_export_vm_holds_fails_and_leaves_its_group() {
    let vm = KilledVm::new("cl-live-vm").await;
    let mut live = vm.start().await;
    // Stopped: it holds its group while the second run and the cleanup look.
    signal(&live, "STOP");
    let group = group_of(&vm.os).expect("the running export-vm has a group");

    let second = KilledVm::args(&vm.os, &vm.data, &format!("s3://{}/vms/second/", vm.bucket));
    let out = run(&second.iter().map(String::as_str).collect::<Vec<_>>());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the second export-vm ran");
    assert!(
        stderr.contains(&group) && stderr.contains("still runs"),
        "{stderr}"
    );
    let kept = ok(&run(&[
        "cleanup",
        "--json",
        &format!("rbd:{TEST_POOL}/{}", vm.os),
    ]));
    assert_eq!(item(&kept, &group)["action"], "kept", "{kept}");
    assert_eq!(group_of(&vm.os).as_deref(), Some(group.as_str()));

    signal(&live, "CONT");
    let status = live.wait().unwrap();
    assert!(status.success(), "the running export-vm was disturbed");
    vm.assert_nothing_left(&group).await;
    vm.finish().await;
}
