//! Whole VMs: `export_vm` snapshots every disk of a VM together (one RBD group snapshot, so
//! the disks are crash-consistent with each other), exports each as an object under one
//! prefix, then writes the bundle's manifest **last**; `import_vm` restores every disk and
//! checks every checksum against the manifest.
//!
//! A bundle:
//! ```text
//! s3://BUCKET/PREFIX/os.qcow2
//! s3://BUCKET/PREFIX/data.qcow2
//! s3://BUCKET/PREFIX/manifest.json    (written last: without it the bundle is incomplete)
//! ```
//! The manifest ([`Manifest`]) names the VM, its labels, and each disk's role, object,
//! format, virtual size, object size and content digest. A local directory works the same
//! way as an S3 prefix.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use objstore::{LocalFile, PutOptions, RangeRead, S3Prefix};
use rbd::{ErrorKind, Image, OpenMode};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::cleanup::{
    clean_before_run, clear_vm_group, forget_group_writer, record_group_writer, Scope,
};
use super::export::{export_image, report, temporary_name, ExportOptions};
use super::import::import_from;
use super::{ExportReport, ImportOptions, ImportReport};
use crate::context::blocking;
use crate::digest::{DigestAlgorithm, RecordedDigest};
use crate::sinks::{check_object_destination, S3_METADATA_DIGEST, S3_METADATA_DIGEST_ALGORITHM};
use crate::sources::open_object_as;
use crate::{
    Address, Context, Error, ObjectFormat, Progress, RbdSpec, Result, Source, DIGEST_ALGORITHM,
};

/// The manifest's object name inside a bundle.
pub const MANIFEST_NAME: &str = "manifest.json";
/// The manifest's `kind`.
pub const MANIFEST_KIND: &str = "diskferry-vm-bundle";
/// The manifest version this library writes (and the highest it reads).
pub const MANIFEST_VERSION: u32 = 1;
/// Prefix of the temporary groups and group snapshots `export_vm` takes.
pub const VM_SNAPSHOT_PREFIX: &str = "diskferry-export-vm-";
/// Longest role, VM name or label.
const NAME_MAX: usize = 64;
/// Longest disk object name a manifest may give (a file name on every local file system).
pub const OBJECT_NAME_MAX: usize = 255;
/// Largest manifest read: a manifest lists a few disks in a few hundred bytes each, so
/// anything near this is not one, and is refused before it is read into memory.
pub const MANIFEST_MAX: u64 = 1 << 20;

/// The manifest of a VM bundle, written last as `manifest.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Always [`MANIFEST_KIND`].
    pub kind: String,
    /// [`MANIFEST_VERSION`].
    pub version: u32,
    /// The VM's name.
    pub name: String,
    /// Free-form labels (`vm=web1`, `owner=…`).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// When the snapshot was taken, UTC, RFC 3339.
    pub created: String,
    /// How the disks relate in time.
    pub consistency: String,
    /// The algorithm of every disk's `digest`.
    pub digest_algorithm: String,
    /// The disks, in the order given at export.
    pub disks: Vec<ManifestDisk>,
}

/// One disk of a bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestDisk {
    /// The disk's role (`os`, `data`, …): unique in the bundle.
    pub role: String,
    /// The object's name, relative to the bundle.
    pub object: String,
    /// Where it was exported from.
    pub source: String,
    /// `qcow2`, `raw` or `raw.zst`.
    pub format: String,
    /// `none`, `deflate` or `zstd`.
    pub compression: String,
    /// Virtual size in bytes.
    pub size: u64,
    /// Size of the object in bytes.
    pub object_size: u64,
    /// The content digest of the disk (see `digest_algorithm`).
    pub digest: String,
}

/// A disk to export: its role and its image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmDisk {
    /// Role, e.g. `os`.
    pub role: String,
    /// The image (its head: the group snapshot is taken by `export_vm`).
    pub image: RbdSpec,
}

impl VmDisk {
    /// Parses `ROLE=rbd:POOL/IMAGE`.
    pub fn parse(input: &str) -> Result<VmDisk> {
        let (role, image) = input.split_once('=').ok_or_else(|| Error::InvalidAddress {
            address: input.into(),
            reason: "expected ROLE=rbd:POOL/IMAGE, e.g. os=rbd:vms/web1-os".into(),
        })?;
        check_name("disk role", role)?;
        let image = Address::parse(image)?.rbd()?.clone();
        Ok(VmDisk {
            role: role.to_string(),
            image,
        })
    }
}

/// Where a bundle is: an S3 prefix or a local directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bundle {
    /// `s3://BUCKET/PREFIX/`.
    S3(S3Prefix),
    /// A local directory.
    Dir(PathBuf),
}

impl Bundle {
    /// Parses `s3://BUCKET/PREFIX/` (a missing final `/` is added) or a directory path.
    pub fn parse(input: &str) -> Result<Bundle> {
        if input.starts_with("s3://") {
            return S3Prefix::parse(input)
                .map(Bundle::S3)
                .map_err(|e| Error::InvalidAddress {
                    address: input.into(),
                    reason: e.to_string(),
                });
        }
        match Address::parse(input)? {
            Address::File(path) => Ok(Bundle::Dir(path)),
            other => Err(Error::InvalidAddress {
                address: other.to_string(),
                reason: "a VM bundle is an S3 prefix s3://BUCKET/PREFIX/ or a directory".into(),
            }),
        }
    }

    /// The address of `name` inside the bundle.
    pub fn object(&self, name: &str) -> Address {
        match self {
            Bundle::S3(prefix) => Address::S3(prefix.join(name)),
            Bundle::Dir(dir) => Address::File(dir.join(name)),
        }
    }

    /// The last component of the prefix or directory (the default VM name).
    fn last_component(&self) -> Option<String> {
        let text = match self {
            Bundle::S3(p) => p.prefix.trim_end_matches('/').to_string(),
            Bundle::Dir(d) => d.to_string_lossy().trim_end_matches('/').to_string(),
        };
        text.rsplit('/')
            .next()
            .filter(|s| !s.is_empty() && *s != "." && *s != "..")
            .map(str::to_string)
    }
}

impl std::fmt::Display for Bundle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Bundle::S3(p) => p.fmt(f),
            Bundle::Dir(d) => write!(f, "{}/", d.display().to_string().trim_end_matches('/')),
        }
    }
}

fn check_name(what: &str, name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= NAME_MAX
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        && !name.starts_with('.');
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidOption(format!(
            "{what} {name:?}: use 1 to {NAME_MAX} letters, digits, '-', '_' or '.' (not first)"
        )))
    }
}

/// Options of [`export_vm`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExportVmOptions {
    /// The VM's name (default: the last component of the bundle's prefix).
    pub name: Option<String>,
    /// Labels recorded in the manifest.
    pub labels: BTreeMap<String, String>,
    /// How each disk is exported (`sink.force` also replaces an existing manifest).
    pub disk: ExportOptions,
}

/// What `export_vm` did.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ExportVmReport {
    /// The bundle.
    pub bundle: String,
    /// The manifest's address.
    pub manifest_location: String,
    /// The manifest written.
    pub manifest: Manifest,
    /// The (temporary, removed since) group snapshot the disks were read from.
    pub group_snapshot: String,
    /// Each disk's export.
    pub disks: Vec<ExportReport>,
    /// Wall time in seconds.
    pub seconds: f64,
    /// Problems that did not fail the export (e.g. a temporary group left behind).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// The group snapshot taken for an export: created in the first disk's pool.
struct GroupSnapshot {
    ioctx: rados::IoCtx,
    group: String,
    snap: String,
    /// The member images, which record this process as the group's writer.
    members: Vec<(rados::IoCtx, String)>,
    /// What was done before the group was made (a killed run's group removed).
    notes: Vec<String>,
}

impl GroupSnapshot {
    /// Puts every image in a new group and snapshots the group. A group a disk is already
    /// in is removed first if a killed export-vm of this host left it, and refused
    /// otherwise ([`clear_vm_group`]).
    async fn take(ctx: &Context, disks: &[VmDisk]) -> Result<(GroupSnapshot, Vec<Image>)> {
        let ioctx = ctx.pool(&disks[0].image.pool).await?;
        let mut members = Vec::new();
        let mut notes = Vec::new();
        for disk in disks {
            if let Some(note) = clear_vm_group(ctx, &disk.image).await? {
                tracing::info!("{note}");
                notes.push(note);
            }
            members.push((ctx.pool(&disk.image.pool).await?, disk.image.clone()));
        }
        let group = temporary_name(VM_SNAPSHOT_PREFIX);
        let images: Vec<(rados::IoCtx, String)> = members
            .iter()
            .map(|(io, spec)| (io.clone(), spec.image.clone()))
            .collect();
        let snapshot = GroupSnapshot {
            ioctx,
            group: group.clone(),
            snap: "export".into(),
            members: images.clone(),
            notes,
        };
        let (io, g, s) = (snapshot.ioctx.clone(), group.clone(), snapshot.snap.clone());
        let taken = blocking(move || {
            let result = (|| {
                // The writer first, on every disk (the first is in the group's pool), so
                // that a kill never leaves a group nothing can prove abandoned.
                for (image_io, spec) in &members {
                    let image = Image::open(image_io, &spec.image, OpenMode::ReadWrite)?;
                    record_group_writer(&image, &g)?;
                }
                rbd::group_create(&io, &g)?;
                for (image_io, spec) in &members {
                    rbd::group_image_add(&io, &g, image_io, &spec.image)?;
                }
                rbd::group_snap_create(&io, &g, &s)?;
                let mut images = Vec::new();
                for (image_io, spec) in &members {
                    let head = Image::open(image_io, &spec.image, OpenMode::ReadOnly)?;
                    let id = head.group_snap_id(&g, &s)?.ok_or_else(|| {
                        rados::Error::new(
                            ErrorKind::NotFound,
                            "find the group snapshot of",
                            spec.to_string(),
                        )
                    })?;
                    drop(head);
                    images.push(Image::open(
                        image_io,
                        &spec.image,
                        OpenMode::SnapshotId(id),
                    )?);
                }
                Ok(images)
            })();
            if result.is_err() {
                // Removing the group removes its snapshots and detaches its images.
                let _ = rbd::group_remove(&io, &g);
                let _ = forget_writers(&images, &g);
            }
            result
        })
        .await;
        match taken {
            Ok(images) => Ok((snapshot, images)),
            Err(Error::Ceph(e)) if e.kind() == ErrorKind::AlreadyExists => {
                Err(Error::InvalidOption(format!(
                    "cannot take a group snapshot of the VM's disks: {e}; an image that already \
                     belongs to an RBD group cannot be added to another (remove it from its group)"
                )))
            }
            Err(e) => Err(e),
        }
    }

    fn describe(&self) -> String {
        format!("group {}/{}@{}", self.ioctx.pool(), self.group, self.snap)
    }

    /// Removes the group snapshot and the group (the images stay as they were), then the
    /// images' records of it.
    async fn remove(self) -> Result<()> {
        let (io, g, s, members) = (self.ioctx, self.group, self.snap, self.members);
        blocking(move || {
            rbd::group_snap_remove(&io, &g, &s)?;
            rbd::group_remove(&io, &g)?;
            forget_writers(&members, &g)
        })
        .await
    }
}

/// Removes the record of this process as the writer of `group` from each image.
fn forget_writers(images: &[(rados::IoCtx, String)], group: &str) -> rbd::Result<()> {
    for (io, name) in images {
        forget_group_writer(&Image::open(io, name, OpenMode::ReadWrite)?, group)?;
    }
    Ok(())
}

/// A VM's group snapshot taken ahead of its export, so that a caller can run something
/// right around the snapshot (a guest freeze and thaw) rather than around the whole copy;
/// [`export_vm_at`] exports from it and removes it.
pub struct VmSnapshot {
    snapshot: GroupSnapshot,
    images: Vec<Image>,
}

impl std::fmt::Debug for VmSnapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VmSnapshot")
            .field("snapshot", &self.snapshot.describe())
            .field("disks", &self.images.len())
            .finish()
    }
}

impl VmSnapshot {
    /// Puts the disks' images in a new temporary group and snapshots it.
    pub async fn take(ctx: &Context, disks: &[VmDisk]) -> Result<VmSnapshot> {
        if disks.is_empty() {
            return Err(Error::InvalidOption("a VM needs at least one disk".into()));
        }
        GroupSnapshot::take(ctx, disks)
            .await
            .map(|(snapshot, images)| VmSnapshot { snapshot, images })
    }

    /// Removes the group snapshot and the group without exporting.
    pub async fn remove(self) -> Result<()> {
        let VmSnapshot { snapshot, images } = self;
        // Closing the images waits for librbd: not on an async worker.
        let _ = tokio::task::spawn_blocking(move || drop(images)).await;
        snapshot.remove().await
    }
}

/// [`export_vm`] from a group snapshot taken before with [`VmSnapshot::take`]; the snapshot
/// is removed in every case, also when the export is refused before it starts.
pub async fn export_vm_at(
    ctx: &Context,
    disks: &[VmDisk],
    snapshot: VmSnapshot,
    bundle: &Bundle,
    options: &ExportVmOptions,
    progress: &dyn Progress,
    cancel: &CancellationToken,
) -> Result<ExportVmReport> {
    let mut given = Some(snapshot);
    let exported = export_vm_from(ctx, disks, &mut given, bundle, options, progress, cancel).await;
    match given {
        // Refused before it was used: it goes all the same.
        Some(unused) => {
            let removed = unused.remove().await;
            exported.map_err(|e| e.after_cleanup(removed, "a temporary group snapshot"))
        }
        None => exported,
    }
}

/// Exports every disk of a VM from one crash-consistent group snapshot into `bundle`, then
/// writes the manifest last.
///
/// Before anything is created, the roles, the images and the destination objects are
/// checked (existing objects or manifest are refused unless `options.disk.sink.force`). If
/// a disk fails, the disks already written by this run are deleted, so no partial bundle
/// remains; the temporary group and its snapshot are always removed.
pub async fn export_vm(
    ctx: &Context,
    disks: &[VmDisk],
    bundle: &Bundle,
    options: &ExportVmOptions,
    progress: &dyn Progress,
    cancel: &CancellationToken,
) -> Result<ExportVmReport> {
    export_vm_from(ctx, disks, &mut None, bundle, options, progress, cancel).await
}

/// [`export_vm`] with the group snapshot `given` (taken from it when used) or a new one.
async fn export_vm_from(
    ctx: &Context,
    disks: &[VmDisk],
    given: &mut Option<VmSnapshot>,
    bundle: &Bundle,
    options: &ExportVmOptions,
    progress: &dyn Progress,
    cancel: &CancellationToken,
) -> Result<ExportVmReport> {
    if disks.is_empty() {
        return Err(Error::InvalidOption(
            "a VM needs at least one --disk".into(),
        ));
    }
    let name = match &options.name {
        Some(name) => name.clone(),
        None => bundle.last_component().ok_or_else(|| {
            Error::InvalidOption(format!(
                "{bundle} has no last component to name the VM; give a name"
            ))
        })?,
    };
    check_name("VM name", &name)?;
    for key in options.labels.keys() {
        check_name("label", key)?;
    }
    let mut roles = std::collections::HashSet::new();
    for disk in disks {
        check_name("disk role", &disk.role)?;
        if !roles.insert(disk.role.as_str()) {
            return Err(Error::InvalidOption(format!(
                "disk role {:?} is given twice",
                disk.role
            )));
        }
        if let Some(snap) = &disk.image.snap {
            return Err(Error::InvalidAddress {
                address: disk.image.to_string(),
                reason: format!(
                    "export-vm snapshots all disks together itself; name the image without @{snap}"
                ),
            });
        }
    }
    let sink = &options.disk.sink;
    let extension = sink.format.name();
    let objects: Vec<Address> = disks
        .iter()
        .map(|d| bundle.object(&format!("{}.{extension}", d.role)))
        .collect();
    let manifest_address = bundle.object(MANIFEST_NAME);
    // Everything is checked before anything is created.
    if let Bundle::Dir(dir) = bundle {
        if dir.exists() && !dir.is_dir() {
            return Err(Error::InvalidAddress {
                address: bundle.to_string(),
                reason: "it exists and is not a directory".into(),
            });
        }
    }
    check_object_destination(ctx, &manifest_address, sink.force).await?;
    for object in &objects {
        check_object_destination(ctx, object, sink.force).await?;
    }
    // What a killed run of this export-vm left of its uploads (its group goes when the
    // group snapshot is taken).
    for object in &objects {
        if let Address::S3(object) = object {
            let scope = Scope::S3 {
                bucket: object.bucket.clone(),
                prefix: object.key.clone(),
            };
            clean_before_run(ctx, &scope).await;
        }
    }
    if sink.force {
        // An old manifest must not describe the new disks while they are written.
        delete_object(ctx, &manifest_address).await?;
    }
    // A local bundle's directory is created as `aws s3 cp` creates prefixes (and `mkdir -p`
    // would): what this run creates, it removes again if the export fails.
    let created_dir = match bundle {
        Bundle::Dir(dir) if !dir.exists() => Some(create_dirs(dir).await?),
        _ => None,
    };
    let exported = export_group(
        ctx,
        disks,
        given.take(),
        bundle,
        &objects,
        &manifest_address,
        name,
        options,
        progress,
        cancel,
    )
    .await;
    if exported.is_err() {
        if let Some(created) = created_dir {
            // Only empty directories go: nothing of anyone else's is touched.
            for dir in created.iter().rev() {
                let _ = std::fs::remove_dir(dir);
            }
        }
    }
    exported
}

/// The directories `mkdir -p dir` creates, created, outermost first.
async fn create_dirs(dir: &std::path::Path) -> Result<Vec<PathBuf>> {
    let missing: Vec<PathBuf> = dir
        .ancestors()
        .take_while(|d| !d.as_os_str().is_empty() && !d.exists())
        .map(std::path::Path::to_path_buf)
        .collect();
    tokio::fs::create_dir_all(dir)
        .await
        .map_err(|e| Error::io(format!("create directory {}", dir.display()), e))?;
    Ok(missing.into_iter().rev().collect())
}

/// `export_vm` once its destination is checked and exists.
#[allow(clippy::too_many_arguments)]
async fn export_group(
    ctx: &Context,
    disks: &[VmDisk],
    given: Option<VmSnapshot>,
    bundle: &Bundle,
    objects: &[Address],
    manifest_address: &Address,
    name: String,
    options: &ExportVmOptions,
    progress: &dyn Progress,
    cancel: &CancellationToken,
) -> Result<ExportVmReport> {
    let started = Instant::now();
    let sink = &options.disk.sink;
    let extension = sink.format.name();
    let (mut snapshot, images) = match given {
        Some(VmSnapshot { snapshot, images }) => (snapshot, images),
        None => GroupSnapshot::take(ctx, disks).await?,
    };
    let group_snapshot = snapshot.describe();
    let mut warnings = std::mem::take(&mut snapshot.notes);
    // The one RFC 3339 formatter, Longhorn's (UTC, whole seconds).
    let created = longhorn::timefmt::now_rfc3339();
    let mut written: Vec<Address> = Vec::new();
    let mut reports = Vec::new();
    let mut failure = None;
    for ((disk, image), object) in disks.iter().zip(images).zip(objects) {
        let spec = disk
            .image
            .at(Some(&format!("{}@{}", snapshot.group, snapshot.snap)));
        let label = format!("{} ({group_snapshot})", disk.image);
        match export_image(
            ctx,
            &spec,
            image,
            &label,
            object,
            &options.disk,
            progress,
            cancel,
        )
        .await
        {
            Ok((transfer, part_size)) => {
                written.push(object.clone());
                reports.push(report(
                    disk.image.to_string(),
                    group_snapshot.clone(),
                    true,
                    object,
                    sink,
                    transfer,
                    part_size,
                    Vec::new(),
                ));
            }
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
    }
    // The remaining images (after a failure) are closed before the snapshot goes.
    if let Err(e) = snapshot.remove().await {
        warnings.push(format!(
            "could not remove the temporary {group_snapshot}: {e}"
        ));
    }
    let manifest = Manifest {
        kind: MANIFEST_KIND.into(),
        version: MANIFEST_VERSION,
        name,
        labels: options.labels.clone(),
        created,
        consistency: "crash-consistent: all disks from one RBD group snapshot".into(),
        // An RBD image carries no recorded digest: every disk was digested with the default.
        digest_algorithm: DIGEST_ALGORITHM.into(),
        disks: disks
            .iter()
            .zip(&reports)
            .map(|(disk, r)| ManifestDisk {
                role: disk.role.clone(),
                object: format!("{}.{extension}", disk.role),
                source: disk.image.to_string(),
                format: r.format.clone(),
                compression: r.compression.clone(),
                size: r.size,
                object_size: r.object_size,
                digest: r.digest.clone(),
            })
            .collect(),
    };
    let result = match failure {
        Some(e) => Err(e),
        None if cancel.is_cancelled() => Err(Error::Cancelled),
        None => write_manifest(ctx, manifest_address, &manifest, sink.force).await,
    };
    if let Err(error) = result {
        // No manifest: remove the disks of this run too, so nothing half-done remains.
        let mut left = Vec::new();
        for object in &written {
            if let Err(e) = delete_object(ctx, object).await {
                left.push(format!("{object} ({e})"));
            }
        }
        if left.is_empty() {
            return Err(error);
        }
        let cleanup = Err(Error::InvalidOption(
            "could not delete exported disks".into(),
        ));
        return Err(error.after_cleanup(cleanup, left.join(", ")));
    }
    Ok(ExportVmReport {
        bundle: bundle.to_string(),
        manifest_location: manifest_address.to_string(),
        manifest,
        group_snapshot,
        disks: reports,
        seconds: started.elapsed().as_secs_f64(),
        warnings,
    })
}

/// Deletes the object `address` (a missing one is no error).
async fn delete_object(ctx: &Context, address: &Address) -> Result<()> {
    let (store, key) = ctx.store_for(address).await?;
    Ok(store.delete(&key).await?)
}

/// Writes the manifest as the object `address`, replacing one only with `force`.
async fn write_manifest(
    ctx: &Context,
    address: &Address,
    manifest: &Manifest,
    force: bool,
) -> Result<()> {
    let mut body = serde_json::to_vec_pretty(manifest)
        .map_err(|e| Error::io("encode the manifest", std::io::Error::other(e)))?;
    body.push(b'\n');
    let options = PutOptions {
        content_type: Some("application/json".into()),
        overwrite: force,
        ..PutOptions::default()
    };
    let (store, key) = ctx.store_for(address).await?;
    store.put(&key, body.into(), &options).await?;
    Ok(())
}

/// Reads and checks the manifest of `bundle`. A missing manifest means an incomplete bundle.
pub async fn read_manifest(ctx: &Context, bundle: &Bundle) -> Result<Manifest> {
    let address = bundle.object(MANIFEST_NAME);
    let incomplete = || {
        Error::NotFound(format!(
            "{address}: the bundle is incomplete (export-vm writes its manifest last) or {bundle} is not a VM bundle"
        ))
    };
    let bad = |reason: String| Error::UnsupportedSource {
        source_name: address.to_string(),
        reason,
    };
    let Some(object) = open_bundle_object(ctx, bundle, MANIFEST_NAME).await? else {
        return Err(incomplete());
    };
    // The size first: a huge object is no manifest, and is not read into memory. The read
    // takes the size seen at open, so a manifest that grows meanwhile is not read whole.
    let size = object.size();
    if size > MANIFEST_MAX {
        return Err(bad(format!(
            "{size} bytes is not a manifest (at most {MANIFEST_MAX})"
        )));
    }
    let body = object.read_at(0, size as usize).await?;
    let manifest: Manifest =
        serde_json::from_slice(&body).map_err(|e| bad(format!("not a valid manifest: {e}")))?;
    if manifest.kind != MANIFEST_KIND {
        return Err(bad(format!(
            "its kind is {:?}, not {MANIFEST_KIND:?}",
            manifest.kind
        )));
    }
    if manifest.version > MANIFEST_VERSION {
        return Err(bad(format!(
            "manifest version {} is newer than this diskferry reads ({MANIFEST_VERSION})",
            manifest.version
        )));
    }
    if let Err(e) = DigestAlgorithm::parse(&manifest.digest_algorithm) {
        return Err(bad(format!("its digests cannot be checked: {e}")));
    }
    if manifest.disks.is_empty() {
        return Err(bad("it lists no disks".into()));
    }
    // The default prefix of the images made: a name from outside, checked as one.
    check_name("VM name", &manifest.name).map_err(|e| bad(e.to_string()))?;
    let mut roles = std::collections::HashSet::new();
    for disk in &manifest.disks {
        check_name("disk role", &disk.role).map_err(|e| bad(e.to_string()))?;
        if !roles.insert(disk.role.clone()) {
            return Err(bad(format!("disk role {:?} appears twice", disk.role)));
        }
        if let Err(e) = disk.format.parse::<ObjectFormat>() {
            return Err(bad(format!("disk {:?}: {e}", disk.role)));
        }
        check_object_name(&disk.object).map_err(|why| {
            bad(format!(
                "disk {:?}: object name {:?} is not a plain name inside the bundle: {why}",
                disk.role, disk.object
            ))
        })?;
    }
    Ok(manifest)
}

/// The object `name` of `bundle`, opened for reading; `None` if there is none. A directory
/// bundle's files are names from inside it, not paths the user gave: one that is a symbolic
/// link, or no regular file, is refused by the open itself ([`LocalFile::open_no_follow`]),
/// so a link planted in the directory cannot lead out of it. The directory may be a link.
async fn open_bundle_object(
    ctx: &Context,
    bundle: &Bundle,
    name: &str,
) -> Result<Option<Arc<dyn RangeRead>>> {
    let opened = match bundle {
        Bundle::S3(_) => {
            let (store, key) = ctx.store_for(&bundle.object(name)).await?;
            store.open(&key).await
        }
        Bundle::Dir(dir) => LocalFile::open_no_follow(dir.join(name))
            .await
            .map(|file| Arc::new(file) as Arc<dyn RangeRead>),
    };
    match opened {
        Ok(object) => Ok(Some(object)),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Why `name` (a manifest's disk object) is not a plain file name inside the bundle, if it
/// is not: it must not climb out (`..`, `/`, `\`), hide (a leading `.`), or hold control
/// characters (NUL ends a path in the C calls below us; others hide in messages). `%` is
/// no escape: the name is used as it is, never decoded.
fn check_object_name(name: &str) -> std::result::Result<(), &'static str> {
    if name.is_empty() {
        return Err("it is empty");
    }
    if name.len() > OBJECT_NAME_MAX {
        return Err("it is longer than 255 bytes");
    }
    if name.contains(['/', '\\']) {
        return Err("it holds a path separator");
    }
    if name.starts_with('.') {
        return Err("it starts with '.'");
    }
    if name.chars().any(char::is_control) {
        return Err("it holds a control character");
    }
    Ok(())
}

/// Options of [`import_vm`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImportVmOptions {
    /// Image names are `<prefix>-<role>` (default prefix: the manifest's VM name).
    pub prefix: Option<String>,
    /// How each image is created (`sink.replace` replaces existing images).
    pub import: ImportOptions,
}

/// One restored disk.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ImportedDisk {
    /// The disk's role.
    pub role: String,
    /// The image written.
    pub image: String,
    /// Whether its content digest matched the manifest (always true in a report: a
    /// mismatch fails the import).
    pub verified: bool,
    /// The import.
    pub import: ImportReport,
}

/// What `import_vm` did.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ImportVmReport {
    /// The bundle.
    pub bundle: String,
    /// The VM's name from the manifest.
    pub name: String,
    /// The manifest's labels.
    pub labels: BTreeMap<String, String>,
    /// Each disk.
    pub disks: Vec<ImportedDisk>,
    /// Wall time in seconds.
    pub seconds: f64,
}

/// Restores every disk of `bundle` into `pool` as `<prefix>-<role>` and checks each content
/// digest (and the object's size and recorded digest) against the manifest. A bundle
/// without a manifest is refused. If any disk fails or differs, the images this run created
/// are removed.
pub async fn import_vm(
    ctx: &Context,
    bundle: &Bundle,
    pool: &str,
    options: &ImportVmOptions,
    progress: &dyn Progress,
    cancel: &CancellationToken,
) -> Result<ImportVmReport> {
    let started = Instant::now();
    let manifest = read_manifest(ctx, bundle).await?;
    let prefix = options
        .prefix
        .clone()
        .unwrap_or_else(|| manifest.name.clone());
    check_name("image name prefix", &prefix)?;
    let targets: Vec<RbdSpec> = manifest
        .disks
        .iter()
        .map(|d| RbdSpec {
            pool: pool.to_string(),
            image: format!("{prefix}-{}", d.role),
            snap: None,
        })
        .collect();
    // Check the objects and the images before importing anything. Each disk is imported
    // from the object opened and checked here.
    let ioctx = ctx.pool(pool).await?;
    let mut objects = Vec::new();
    for (disk, target) in manifest.disks.iter().zip(&targets) {
        let Some(object) = open_bundle_object(ctx, bundle, &disk.object).await? else {
            return Err(Error::NotFound(format!(
                "{} (disk {:?} of the manifest)",
                bundle.object(&disk.object),
                disk.role
            )));
        };
        check_object(object.as_ref(), &manifest, disk)?;
        objects.push(object);
        if !options.import.sink.replace {
            let (io, name) = (ioctx.clone(), target.image.clone());
            let exists = blocking(move || match Image::open(&io, &name, OpenMode::ReadOnly) {
                Ok(_) => Ok(true),
                Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
                Err(e) => Err(e),
            })
            .await?;
            if exists {
                return Err(Error::AlreadyExists(target.to_string()));
            }
        }
    }
    let mut disks = Vec::new();
    let mut failure = None;
    let remote = matches!(bundle, Bundle::S3(_));
    for ((disk, target), opened) in manifest.disks.iter().zip(&targets).zip(objects) {
        let object = bundle.object(&disk.object);
        // The manifest records each disk's format: it is not guessed from the content.
        let format = disk.format.parse()?;
        let imported = async {
            let source = open_object_as(opened, Some(format), remote).await?;
            let source = ManifestDigest::wrap(source, &manifest, disk, &object)?;
            let sink = &options.import.sink;
            import_from(ctx, source, target, sink, progress, cancel).await
        };
        match imported.await {
            Ok(report) => {
                let imported = ImportedDisk {
                    role: disk.role.clone(),
                    image: target.to_string(),
                    verified: report.digest == disk.digest && report.size == disk.size,
                    import: report,
                };
                let verified = imported.verified;
                disks.push(imported);
                if !verified {
                    let got = &disks.last().expect("pushed").import;
                    failure = Some(Error::Mismatch(format!(
                        "disk {:?} ({object}): restored {} bytes with digest {}, the manifest says {} bytes with digest {}",
                        disk.role, got.size, got.digest, disk.size, disk.digest
                    )));
                    break;
                }
            }
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
    }
    if let Some(error) = failure {
        let mut left = Vec::new();
        for done in &disks {
            let (io, name) = (
                ioctx.clone(),
                done.image
                    .rsplit('/')
                    .next()
                    .unwrap_or_default()
                    .to_string(),
            );
            if let Err(e) = blocking(move || rbd::remove(&io, &name)).await {
                left.push(format!("{} ({e})", done.image));
            }
        }
        if left.is_empty() {
            return Err(error);
        }
        let cleanup = Err(Error::InvalidOption(
            "could not remove restored images".into(),
        ));
        return Err(error.after_cleanup(cleanup, left.join(", ")));
    }
    Ok(ImportVmReport {
        bundle: bundle.to_string(),
        name: manifest.name,
        labels: manifest.labels,
        disks,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// A bundle's disk whose object recorded no digest of its own (a file copied without its
/// extended attributes): the manifest's digest stands as its record, so the disk is digested
/// with the manifest's algorithm and kept only if it matches.
struct ManifestDigest {
    inner: Box<dyn Source>,
    recorded: RecordedDigest,
}

impl ManifestDigest {
    /// `source`, given the manifest's digest of `disk` when it recorded none itself.
    fn wrap(
        source: Box<dyn Source>,
        manifest: &Manifest,
        disk: &ManifestDisk,
        object: &dyn std::fmt::Display,
    ) -> Result<Box<dyn Source>> {
        if source.recorded_digest().is_some() {
            // `check_object` found it equal to the manifest's.
            return Ok(source);
        }
        let algorithm = DigestAlgorithm::parse(&manifest.digest_algorithm).map_err(|e| {
            Error::UnsupportedSource {
                source_name: object.to_string(),
                reason: format!("its manifest's digests cannot be checked: {e}"),
            }
        })?;
        Ok(Box::new(ManifestDigest {
            inner: source,
            recorded: RecordedDigest {
                algorithm,
                digest: disk.digest.clone(),
            },
        }))
    }
}

#[async_trait::async_trait]
impl Source for ManifestDigest {
    fn describe(&self) -> String {
        self.inner.describe()
    }

    fn format(&self) -> &'static str {
        self.inner.format()
    }

    fn format_origin(&self) -> crate::FormatOrigin {
        self.inner.format_origin()
    }

    fn recorded_digest(&self) -> Option<RecordedDigest> {
        Some(self.recorded.clone())
    }

    fn size(&self) -> u64 {
        self.inner.size()
    }

    async fn next_extent(&mut self) -> Result<Option<crate::Extent>> {
        self.inner.next_extent().await
    }
}

/// Checks a bundle's object, opened, against its manifest entry: it has the recorded size,
/// and its recorded digest, if it has one, is the manifest's, of the manifest's algorithm.
fn check_object(object: &dyn RangeRead, manifest: &Manifest, disk: &ManifestDisk) -> Result<()> {
    let name = object.describe();
    if object.size() != disk.object_size {
        return Err(Error::Mismatch(format!(
            "{name} is {} bytes, the manifest says {}",
            object.size(),
            disk.object_size
        )));
    }
    if let Some(digest) = object.metadata(S3_METADATA_DIGEST) {
        let algorithm = object.metadata(S3_METADATA_DIGEST_ALGORITHM);
        if digest != disk.digest || algorithm.as_deref() != Some(manifest.digest_algorithm.as_str())
        {
            return Err(Error::Mismatch(format!(
                "{name} records digest {digest} ({}), the manifest says {} ({})",
                algorithm.as_deref().unwrap_or("no algorithm"),
                disk.digest,
                manifest.digest_algorithm.as_str()
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disks_and_bundles_parse() {
        let disk = VmDisk::parse("os=rbd:vms/web1-os").unwrap();
        assert_eq!(disk.role, "os");
        assert_eq!(disk.image.to_string(), "rbd:vms/web1-os");
        assert!(VmDisk::parse("rbd:vms/x").is_err());
        assert!(VmDisk::parse("a/b=rbd:vms/x").is_err());
        assert!(VmDisk::parse("os=s3://b/k").is_err());
        let bundle = Bundle::parse("s3://bkt/vms/web1").unwrap();
        assert_eq!(bundle.to_string(), "s3://bkt/vms/web1/");
        assert_eq!(
            bundle.object("os.qcow2").to_string(),
            "s3://bkt/vms/web1/os.qcow2"
        );
        assert_eq!(bundle.last_component().as_deref(), Some("web1"));
        assert_eq!(
            Bundle::parse("/tmp/x/")
                .unwrap()
                .object(MANIFEST_NAME)
                .to_string(),
            "/tmp/x/manifest.json"
        );
        assert!(Bundle::parse("rbd:p/i").is_err());
    }
}
