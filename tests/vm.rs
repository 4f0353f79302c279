//! Whole-VM export and import (issue 5) against the live cluster and RGW: one group snapshot,
//! a manifest written last, every digest checked on the way back; a group a killed run left
//! is removed first, any other group refuses the export.

use bytes::Bytes;
use diskferry::ops::cleanup::GROUP_WRITER_KEY_PREFIX;
use diskferry::ops::{
    self, Bundle, ExportVmOptions, ExportVmReport, ImportVmOptions, ImportVmReport, Manifest,
    VmDisk, MANIFEST_NAME,
};
use diskferry::{CancellationToken, Context, Error, NoProgress, RbdSpec};
use diskferry_integration_tests::{
    context, group_of, make_group, metadata_keys, pattern, pool, rbd_export, reference_digest, run,
    unique, ImageGuard, TEST_POOL,
};
use futures::StreamExt as _;
use objstore::{PutOptions, S3Store, Writer};
use rbd::{CreateOptions, Image, OpenMode};

const MIB: usize = 1 << 20;

/// The tests look for leftover temporary groups of this process: one test at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn make_image(guard: &mut ImageGuard, name: &str, content: &[u8]) {
    let io = pool();
    let name = guard.add(name.to_string());
    rbd::create(&io, &name, content.len() as u64, &CreateOptions::default()).unwrap();
    let image = Image::open(&io, &name, OpenMode::ReadWrite).unwrap();
    let writes = content
        .chunks(MIB)
        .enumerate()
        .filter(|(_, piece)| piece.iter().any(|&b| b != 0))
        .map(|(i, piece)| image.write((i * MIB) as u64, Bytes::copy_from_slice(piece)));
    let mut writes = futures::stream::iter(writes).buffer_unordered(16);
    while let Some(written) = futures::StreamExt::next(&mut writes).await {
        written.unwrap();
    }
    image.flush().await.unwrap();
}

fn os_disk() -> Vec<u8> {
    let mut disk = vec![0u8; 32 * MIB];
    disk[..3 * MIB].copy_from_slice(&pattern(900, 3 * MIB));
    disk[20 * MIB..21 * MIB].fill(0x11);
    disk
}

fn data_disk() -> Vec<u8> {
    let mut disk = vec![0u8; 24 * MIB];
    disk[MIB..5 * MIB].copy_from_slice(&pattern(901, 4 * MIB));
    disk[23 * MIB..].copy_from_slice(&pattern(902, MIB));
    disk
}

struct Vm {
    guard: ImageGuard,
    os: String,
    data: String,
    os_content: Vec<u8>,
    data_content: Vec<u8>,
}

impl Vm {
    async fn make() -> Vm {
        let mut guard = ImageGuard::new(&pool());
        let (os, data) = (unique("vm-os"), unique("vm-data"));
        let (os_content, data_content) = (os_disk(), data_disk());
        make_image(&mut guard, &os, &os_content).await;
        make_image(&mut guard, &data, &data_content).await;
        Vm {
            guard,
            os,
            data,
            os_content,
            data_content,
        }
    }

    fn disks(&self) -> Vec<VmDisk> {
        vec![
            VmDisk::parse(&format!("os=rbd:{TEST_POOL}/{}", self.os)).unwrap(),
            VmDisk::parse(&format!("data=rbd:{TEST_POOL}/{}", self.data)).unwrap(),
        ]
    }
}

async fn bucket(ctx: &Context, prefix: &str) -> (S3Store, String) {
    let store = ctx.s3().await.unwrap().clone();
    let name = unique(prefix).to_lowercase();
    store.create_bucket(&name).await.unwrap();
    (store, name)
}

fn options(name: &str) -> ExportVmOptions {
    ExportVmOptions {
        name: Some(name.to_string()),
        labels: [
            ("vm".to_string(), name.to_string()),
            ("tier".into(), "test".into()),
        ]
        .into_iter()
        .collect(),
        ..ExportVmOptions::default()
    }
}

/// `export_vm` without progress or cancellation.
async fn export(
    ctx: &Context,
    disks: &[VmDisk],
    bundle: &Bundle,
    options: &ExportVmOptions,
) -> diskferry::Result<ExportVmReport> {
    ops::export_vm(
        ctx,
        disks,
        bundle,
        options,
        &NoProgress,
        &CancellationToken::new(),
    )
    .await
}

/// `import_vm` into the test pool without progress or cancellation.
async fn import(
    ctx: &Context,
    bundle: &Bundle,
    options: &ImportVmOptions,
) -> diskferry::Result<ImportVmReport> {
    ops::import_vm(
        ctx,
        bundle,
        TEST_POOL,
        options,
        &NoProgress,
        &CancellationToken::new(),
    )
    .await
}

/// Restores under `prefix` (images PREFIX-ROLE).
fn named(prefix: &str) -> ImportVmOptions {
    ImportVmOptions {
        prefix: Some(prefix.to_owned()),
        ..ImportVmOptions::default()
    }
}

/// RBD groups of the test pool whose name marks them as export-vm's.
fn leftover_groups() -> Vec<String> {
    let conf = diskferry_integration_tests::ceph_conf();
    let out = run(
        "rbd",
        &["--conf", &conf.to_string_lossy(), "group", "ls", TEST_POOL],
    );
    String::from_utf8_lossy(&out)
        .lines()
        .filter(|l| {
            l.starts_with(ops::VM_SNAPSHOT_PREFIX)
                && l.contains(&format!("-{}-", std::process::id()))
        })
        .map(str::to_string)
        .collect()
}

fn snapshot_count(name: &str) -> usize {
    Image::open(&pool(), name, OpenMode::ReadOnly)
        .unwrap()
        .snap_list()
        .unwrap()
        .len()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_two_disk_vm_round_trips_with_its_manifest() {
    let _serial = SERIAL.lock().await;
    let ctx = context();
    let (store, bucket) = bucket(&ctx, "vm-rt").await;
    let mut vm = Vm::make().await;
    let bundle = Bundle::parse(&format!("s3://{bucket}/vms/web1/")).unwrap();
    let report = export(&ctx, &vm.disks(), &bundle, &options("web1"))
        .await
        .unwrap();
    assert!(
        report.group_snapshot.contains(ops::VM_SNAPSHOT_PREFIX),
        "{}",
        report.group_snapshot
    );
    assert!(
        leftover_groups().is_empty(),
        "temporary group left: {:?}",
        leftover_groups()
    );
    assert_eq!(snapshot_count(&vm.os), 0);
    assert_eq!(snapshot_count(&vm.data), 0);

    // The manifest, as stored, read independently.
    let body = store
        .get_object_bytes(&bucket, &format!("vms/web1/{MANIFEST_NAME}"))
        .await
        .unwrap();
    let manifest: Manifest = serde_json::from_slice(&body).unwrap();
    assert_eq!(manifest, report.manifest);
    assert_eq!(manifest.kind, ops::MANIFEST_KIND);
    assert_eq!(manifest.name, "web1");
    assert_eq!(manifest.labels.get("vm").map(String::as_str), Some("web1"));
    assert_eq!(manifest.digest_algorithm, diskferry::DIGEST_ALGORITHM);
    let roles: Vec<&str> = manifest.disks.iter().map(|d| d.role.as_str()).collect();
    assert_eq!(roles, ["os", "data"]);
    for (disk, content) in manifest
        .disks
        .iter()
        .zip([&vm.os_content, &vm.data_content])
    {
        assert_eq!(disk.size, content.len() as u64);
        assert_eq!(disk.digest, reference_digest(content), "{}", disk.role);
        assert_eq!(disk.format, "qcow2");
        assert_eq!(disk.object, format!("{}.qcow2", disk.role));
        let info = store
            .head(&bucket, &format!("vms/web1/{}", disk.object))
            .await
            .unwrap();
        assert_eq!(info.size, disk.object_size);
    }

    // Restore under another name; every disk byte-identical.
    let prefix = unique("restored");
    vm.guard.add(format!("{prefix}-os"));
    vm.guard.add(format!("{prefix}-data"));
    let restored = import(&ctx, &bundle, &named(&prefix)).await.unwrap();
    assert_eq!(restored.name, "web1");
    assert!(restored.disks.iter().all(|d| d.verified));
    assert!(rbd_export(&format!("{prefix}-os")) == vm.os_content);
    assert!(rbd_export(&format!("{prefix}-data")) == vm.data_content);

    // A second import onto the same names is refused before anything is written.
    let err = import(&ctx, &bundle, &named(&prefix)).await.unwrap_err();
    assert!(matches!(err, Error::AlreadyExists(_)), "{err:?}");
    store.empty_and_delete_bucket(&bucket).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bundle_without_its_manifest_or_with_a_changed_disk_is_refused() {
    let _serial = SERIAL.lock().await;
    let ctx = context();
    let (store, bucket) = bucket(&ctx, "vm-bad").await;
    let vm = Vm::make().await;
    let bundle = Bundle::parse(&format!("s3://{bucket}/vm/")).unwrap();
    let mut opts = options("db");
    opts.disk.sink.format = diskferry::sinks::ObjectFormat::RawZstd;
    export(&ctx, &vm.disks(), &bundle, &opts).await.unwrap();
    let manifest = store
        .get_object_bytes(&bucket, &format!("vm/{MANIFEST_NAME}"))
        .await
        .unwrap();

    // Without its manifest: refused, nothing created.
    store
        .delete(&bucket, &format!("vm/{MANIFEST_NAME}"))
        .await
        .unwrap();
    let prefix = unique("never");
    let err = import(&ctx, &bundle, &named(&prefix)).await.unwrap_err();
    assert!(err.to_string().contains("incomplete"), "{err}");
    assert!(err.to_string().contains(MANIFEST_NAME), "{err}");
    for role in ["os", "data"] {
        assert!(Image::open(&pool(), &format!("{prefix}-{role}"), OpenMode::ReadOnly).is_err());
    }

    // With its manifest back but the data disk replaced by other content of the same size:
    // the digest check fails and the disks restored by this run are removed.
    store
        .put_object(
            &bucket,
            &format!("vm/{MANIFEST_NAME}"),
            manifest,
            &PutOptions::default(),
        )
        .await
        .unwrap();
    // The fake: the same disk with one byte changed, exported the same way (same size).
    let mut other = vm.data_content.clone();
    other[MIB + 100] ^= 0xff;
    let mut fakes = ImageGuard::new(&pool());
    fakes.add(format!("{prefix}-os"));
    fakes.add(format!("{prefix}-data"));
    let fake_image = unique("vm-fake");
    make_image(&mut fakes, &fake_image, &other).await;
    let mut raw_zst = opts.disk.clone();
    raw_zst.sink.force = true;
    ops::export(
        &ctx,
        &RbdSpec::parse(&format!("{TEST_POOL}/{fake_image}")).unwrap(),
        &diskferry::Address::parse(&format!("s3://{bucket}/vm/data.raw.zst")).unwrap(),
        &raw_zst,
        &NoProgress,
        &CancellationToken::new(),
    )
    .await
    .unwrap();
    // Its own recorded digest differs from the manifest's: refused before any import.
    let err = import(&ctx, &bundle, &named(&prefix)).await.unwrap_err();
    assert!(matches!(err, Error::Mismatch(_)), "{err:?}");
    assert!(err.to_string().contains("records digest"), "{err}");
    assert!(Image::open(&pool(), &format!("{prefix}-os"), OpenMode::ReadOnly).is_err());
    // Without that metadata, the content digest computed while restoring catches it, and
    // the disks restored by this run are removed.
    let object = store
        .get_object_bytes(&bucket, "vm/data.raw.zst")
        .await
        .unwrap();
    let without_metadata = PutOptions {
        overwrite: true,
        ..PutOptions::default()
    };
    store
        .put_object(&bucket, "vm/data.raw.zst", object, &without_metadata)
        .await
        .unwrap();
    let err = import(&ctx, &bundle, &named(&prefix)).await.unwrap_err();
    assert!(matches!(err, Error::Mismatch(_)), "{err:?}");
    assert!(err.to_string().contains("data"), "{err}");
    for role in ["os", "data"] {
        assert!(
            Image::open(&pool(), &format!("{prefix}-{role}"), OpenMode::ReadOnly).is_err(),
            "{role} left behind"
        );
    }
    store.empty_and_delete_bucket(&bucket).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn export_vm_checks_everything_before_it_starts() {
    let _serial = SERIAL.lock().await;
    let ctx = context();
    let (store, bucket) = bucket(&ctx, "vm-pre").await;
    let vm = Vm::make().await;
    let bundle = Bundle::parse(&format!("s3://{bucket}/x/")).unwrap();
    // A disk object already there: refused, no snapshot, no group, no manifest.
    store
        .put_object(
            &bucket,
            "x/data.qcow2",
            Bytes::from_static(b"old"),
            &PutOptions::default(),
        )
        .await
        .unwrap();
    let err = export(&ctx, &vm.disks(), &bundle, &options("x"))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::AlreadyExists(_)), "{err:?}");
    assert!(leftover_groups().is_empty());
    assert_eq!(snapshot_count(&vm.os), 0);
    let listed = store.list(&bucket, "x/").await.unwrap();
    assert_eq!(listed.len(), 1);

    // A role twice; a disk given at a snapshot; a missing image (no group left behind).
    let mut twice = vm.disks();
    twice[1].role = "os".into();
    let err = export(&ctx, &twice, &bundle, &options("x"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("twice"), "{err}");
    let mut at_snap = vm.disks();
    at_snap[0].image = RbdSpec::parse(&format!("{TEST_POOL}/{}@s", vm.os)).unwrap();
    let err = export(&ctx, &at_snap, &bundle, &options("x"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("@s"), "{err}");
    let mut missing = vm.disks();
    missing[1].image = RbdSpec::parse(&format!("{TEST_POOL}/no-such-image-vm")).unwrap();
    let other = Bundle::parse(&format!("s3://{bucket}/y/")).unwrap();
    let err = export(&ctx, &missing, &other, &options("y"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("no-such-image-vm"), "{err}");
    assert!(leftover_groups().is_empty(), "{:?}", leftover_groups());
    assert!(store.list(&bucket, "y/").await.unwrap().is_empty());
    store.empty_and_delete_bucket(&bucket).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn bundles_work_in_a_local_directory() {
    let _serial = SERIAL.lock().await;
    let ctx = context();
    let mut vm = Vm::make().await;
    let dir = tempfile::tempdir().unwrap();
    let bundle = Bundle::Dir(dir.path().to_path_buf());
    let report = export(&ctx, &vm.disks(), &bundle, &options("local"))
        .await
        .unwrap();
    assert_eq!(report.disks.len(), 2);
    for name in ["os.qcow2", "data.qcow2", MANIFEST_NAME] {
        assert!(dir.path().join(name).is_file(), "{name}");
    }
    let check = run(
        "qemu-img",
        &["check", &dir.path().join("os.qcow2").to_string_lossy()],
    );
    assert!(String::from_utf8_lossy(&check).contains("No errors"));
    let prefix = unique("fromdir");
    vm.guard.add(format!("{prefix}-os"));
    vm.guard.add(format!("{prefix}-data"));
    import(&ctx, &bundle, &named(&prefix)).await.unwrap();
    assert!(rbd_export(&format!("{prefix}-os")) == vm.os_content);
    assert!(rbd_export(&format!("{prefix}-data")) == vm.data_content);
}

/// Makes `group` with the VM's disks in it and its snapshot taken, `writer` recorded on each
/// disk: what an export-vm of `writer` leaves when it is killed (no writer: a user's group).
fn group_left_by(vm: &Vm, group: &str, writer: Option<&Writer>) {
    let key = format!("{GROUP_WRITER_KEY_PREFIX}{group}");
    let value = writer.map(Writer::to_string);
    make_group(
        group,
        &[&vm.os, &vm.data],
        value.as_deref().map(|v| (key.as_str(), v)),
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn export_vm_removes_a_dead_runs_group_first_and_refuses_any_other_group() {
    let _serial = SERIAL.lock().await;
    let ctx = context();
    let vm = Vm::make().await;
    let me = Writer::current();
    let dir = tempfile::tempdir().unwrap();

    // A running export-vm's group (this process): refused, named, kept.
    let live = format!("{}{}-1700000000000", ops::VM_SNAPSHOT_PREFIX, me.pid);
    group_left_by(&vm, &live, Some(&me));
    let bundle = Bundle::Dir(dir.path().join("live"));
    let err = export(&ctx, &vm.disks(), &bundle, &options("live"))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(&live) && err.contains("still runs") && err.contains("diskferry cleanup"),
        "{err}"
    );
    assert_eq!(group_of(&vm.os).as_deref(), Some(live.as_str()));
    rbd::group_remove(&pool(), &live).unwrap();
    for image in [&vm.os, &vm.data] {
        Image::open(&pool(), image, OpenMode::ReadWrite)
            .unwrap()
            .metadata_remove(&format!("{GROUP_WRITER_KEY_PREFIX}{live}"))
            .unwrap();
    }

    // A group that is not diskferry's: refused, named, kept.
    let users = unique("users-group");
    group_left_by(&vm, &users, None);
    let err = export(&ctx, &vm.disks(), &bundle, &options("live"))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(&users) && err.contains("not diskferry's"),
        "{err}"
    );
    rbd::group_remove(&pool(), &users).unwrap();

    // A killed run's (its writer has exited): removed first, said so, and the export runs.
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let dead = Writer {
        pid: child.id(),
        ..me.clone()
    };
    child.wait().unwrap();
    let killed = format!("{}{}-1700000000000", ops::VM_SNAPSHOT_PREFIX, dead.pid);
    group_left_by(&vm, &killed, Some(&dead));
    let report = export(&ctx, &vm.disks(), &bundle, &options("live"))
        .await
        .unwrap();
    assert!(
        report
            .warnings
            .iter()
            .any(|w| w.contains(&killed) && w.contains("killed export-vm")),
        "{:?}",
        report.warnings
    );
    for image in [&vm.os, &vm.data] {
        assert_eq!(group_of(image), None);
        assert_eq!(
            snapshot_count(image),
            0,
            "{image} keeps the group's snapshot"
        );
        let records = metadata_keys(image, GROUP_WRITER_KEY_PREFIX);
        assert!(records.is_empty(), "{image}: {records:?}");
    }
    assert!(leftover_groups().is_empty(), "{:?}", leftover_groups());
}
