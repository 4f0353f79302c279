//! Where an `export` job stores what it makes, how it finds it again, and the export itself
//! (over [`crate::ops::export`] and [`crate::ops::export_vm_at`]; no copy code of
//! its own).
//!
//! Layout under the job's `target` (an `s3://BUCKET/PREFIX/` or a directory), one level per
//! thing a person looks for:
//! ```text
//! TARGET/JOB/rbd/POOL/IMAGE/20261206T020000Z.qcow2       one image, one object per run
//! TARGET/JOB/vm/VM/20261206T020000Z/os.qcow2             one VM (a bundle) per run,
//! TARGET/JOB/vm/VM/20261206T020000Z/data.qcow2           export-vm's layout,
//! TARGET/JOB/vm/VM/20261206T020000Z/manifest.json        its manifest written last
//! ```
//! The time is the run's, in UTC, as in the job's snapshot names; the extension is the
//! format's (`qcow2`, `raw`, `raw.zst`). The object of an image is the export of the
//! snapshot `diskferry.JOB.TIME` of that image, with export's metadata (digest, format,
//! source); a VM's labels (the job's `labels`) are in its manifest.
//!
//! What the job made is read back from these names alone: retention of (job, image) lists
//! `TARGET/JOB/rbd/POOL/IMAGE/` and considers only objects named `TIME.EXT` with a time and an
//! extension it writes; a VM's bundles count only with their manifest (a bundle without one
//! is unfinished, never a backup) and are removed manifest first, then the disks the manifest
//! names. Nothing else under the prefix is ever touched.
//!
//! Names from outside (pools, images, VM names) become path components only when they are
//! plain: not empty, not `.` or `..`, no `/`, `\` or control character, not starting with `.`.
//! An image whose name is not is refused, so no name can climb out of the target.

use std::sync::Arc;

use chrono::{DateTime, NaiveDateTime, Utc};
use objstore::ObjectStore;

use crate::ops::cleanup::{cleanup, CleanupOptions, Scope};
use crate::ops::{
    Bundle, ExportOptions, ExportReport, ExportVmOptions, ExportVmReport, VmSnapshot, MANIFEST_NAME,
};
use crate::serve::config::{
    ClusterCompression, ExportSettings, Job, VmGroup, SNAPSHOT_TIME_FORMAT,
};
use crate::sinks::ObjectSinkOptions;
use crate::{Address, Context, ObjectFormat, Progress, RbdSpec};
use tokio_util::sync::CancellationToken;

/// The level under the job's directory that holds single images.
pub const IMAGES_DIR: &str = "rbd";
/// The level under the job's directory that holds VM bundles.
pub const VMS_DIR: &str = "vm";
/// The formats an export job writes, whose extensions retention recognises.
const FORMATS: [ObjectFormat; 3] = [
    ObjectFormat::Qcow2,
    ObjectFormat::Raw,
    ObjectFormat::RawZstd,
];
/// A stand-in file name, to learn the store and key prefix of a directory of the layout.
const PROBE_NAME: &str = "probe";

/// Checks that `name` (a pool, image or VM name) is a plain path component.
pub fn component<'a>(what: &str, name: &'a str) -> Result<&'a str, String> {
    let why = if name.is_empty() {
        Some("it is empty")
    } else if name == "." || name == ".." || name.starts_with('.') {
        Some("it starts with '.'")
    } else if name.contains(['/', '\\']) {
        Some("it holds a path separator")
    } else if name.chars().any(char::is_control) {
        Some("it holds a control character")
    } else {
        None
    };
    match why {
        Some(why) => Err(format!(
            "{what} name {name:?} cannot be part of an object key under the export target: {why}"
        )),
        None => Ok(name),
    }
}

/// The stamp of a run time in keys: `20261206T020000Z`.
pub fn stamp(now: DateTime<Utc>) -> String {
    now.format(SNAPSHOT_TIME_FORMAT).to_string()
}

/// The time a stamp names, if it is exactly one.
fn parse_stamp(text: &str) -> Option<DateTime<Utc>> {
    NaiveDateTime::parse_from_str(text, SNAPSHOT_TIME_FORMAT)
        .ok()
        .map(|t| t.and_utc())
        .filter(|t| stamp(*t) == text)
}

/// One thing a job stored: an object, a VM bundle or a Longhorn backup, with its run time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredItem {
    /// How reports name it: the object's or bundle's address, or the backup's name.
    pub id: String,
    /// The run time it was made at.
    pub time: DateTime<Utc>,
}

/// A directory of the layout (one image's or one VM's), with the store it is in.
pub struct Place {
    /// The directory's address prefix: `TARGET/JOB/rbd/POOL/IMAGE/` or `TARGET/JOB/vm/VM/`.
    bundle: Bundle,
    /// The store holding it.
    store: Arc<dyn ObjectStore>,
    /// The key prefix of the directory in `store` (empty or ending in `/`).
    prefix: String,
    /// The format of new objects.
    format: ObjectFormat,
}

impl std::fmt::Debug for Place {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Place")
            .field("bundle", &self.bundle.to_string())
            .finish()
    }
}

/// `target` joined with the relative path `rel` (plain components, `/`-separated, ending in
/// `/`).
fn sub_bundle(target: &Bundle, rel: &str) -> crate::Result<Bundle> {
    match target {
        Bundle::S3(prefix) => {
            Bundle::parse(&format!("s3://{}/{}{rel}", prefix.bucket, prefix.prefix))
        }
        Bundle::Dir(dir) => Ok(Bundle::Dir(dir.join(rel.trim_end_matches('/')))),
    }
}

impl Place {
    async fn open(ctx: &Context, settings: &ExportSettings, rel: String) -> Result<Place, String> {
        let bundle = sub_bundle(&settings.target, &rel).map_err(|e| e.to_string())?;
        let (store, key) = ctx
            .store_for(&bundle.object(PROBE_NAME))
            .await
            .map_err(|e| format!("export target {}: {e}", settings.target))?;
        let prefix = key.strip_suffix(PROBE_NAME).unwrap_or_default().to_string();
        Ok(Place {
            bundle,
            store,
            prefix,
            format: settings.format,
        })
    }

    /// The directory of `image` for `job`: `TARGET/JOB/rbd/POOL/IMAGE/`. `pool` is the
    /// image's pool as the cluster names it (the default pool resolved).
    pub async fn of_image(
        ctx: &Context,
        job: &Job,
        settings: &ExportSettings,
        pool: &str,
        image: &RbdSpec,
    ) -> Result<Place, String> {
        let rel = format!(
            "{}/{IMAGES_DIR}/{}/{}/",
            component("job", &job.name)?,
            component("pool", pool)?,
            component("image", &image.image)?
        );
        Self::open(ctx, settings, rel).await
    }

    /// The directory of the VM `vm` for `job`: `TARGET/JOB/vm/VM/`.
    pub async fn of_vm(
        ctx: &Context,
        job: &Job,
        settings: &ExportSettings,
        vm: &VmGroup,
    ) -> Result<Place, String> {
        let rel = format!(
            "{}/{VMS_DIR}/{}/",
            component("job", &job.name)?,
            component("VM", &vm.name)?
        );
        Self::open(ctx, settings, rel).await
    }

    /// The object of an image's run at `now`: `…/20261206T020000Z.qcow2`.
    pub fn object(&self, now: DateTime<Utc>) -> Address {
        self.bundle
            .object(&format!("{}.{}", stamp(now), self.format.name()))
    }

    /// The bundle of a VM's run at `now`: `…/20261206T020000Z/`.
    pub fn vm_bundle(&self, now: DateTime<Utc>) -> crate::Result<Bundle> {
        sub_bundle(&self.bundle, &format!("{}/", stamp(now)))
    }

    /// Whether the image's object of the run at `now` exists.
    pub async fn has_object(&self, now: DateTime<Utc>) -> crate::Result<bool> {
        let key = format!("{}{}.{}", self.prefix, stamp(now), self.format.name());
        Ok(self.store.exists(&key).await?)
    }

    /// Whether the VM's bundle of the run at `now` is finished (its manifest exists).
    pub async fn has_bundle(&self, now: DateTime<Utc>) -> crate::Result<bool> {
        let key = format!("{}{}/{MANIFEST_NAME}", self.prefix, stamp(now));
        Ok(self.store.exists(&key).await?)
    }

    /// The objects of the image's runs, each with its time (nothing else in the directory).
    pub async fn objects(&self) -> crate::Result<Vec<StoredItem>> {
        let listing = self.store.list_dir(&self.prefix).await?;
        Ok(listing
            .objects
            .iter()
            .filter_map(|o| {
                let name = o.key.strip_prefix(&self.prefix)?;
                let time = FORMATS
                    .iter()
                    .find_map(|f| parse_stamp(name.strip_suffix(f.name())?.strip_suffix('.')?))?;
                Some(StoredItem {
                    id: self.bundle.object(name).to_string(),
                    time,
                })
            })
            .collect())
    }

    /// The finished bundles of the VM's runs (those with a manifest), each with its time.
    pub async fn bundles(&self) -> crate::Result<Vec<StoredItem>> {
        let listing = self.store.list_dir(&self.prefix).await?;
        let mut found = Vec::new();
        for dir in &listing.prefixes {
            let Some(time) = dir
                .strip_prefix(&self.prefix)
                .and_then(|d| d.strip_suffix('/'))
                .and_then(parse_stamp)
            else {
                continue;
            };
            if self.has_bundle(time).await? {
                found.push(StoredItem {
                    id: self.vm_bundle(time)?.to_string(),
                    time,
                });
            }
        }
        Ok(found)
    }

    /// Removes the image's object of the run at `time`.
    pub async fn remove_object(&self, time: DateTime<Utc>) -> crate::Result<()> {
        let extensions = FORMATS.iter().map(|f| f.name());
        for extension in extensions {
            let key = format!("{}{}.{extension}", self.prefix, stamp(time));
            self.store.delete(&key).await?;
        }
        Ok(())
    }

    /// Removes the VM's bundle of the run at `time`: the manifest first (so that what is
    /// left is never taken for a finished bundle), then the disks it names.
    pub async fn remove_bundle(&self, ctx: &Context, time: DateTime<Utc>) -> crate::Result<()> {
        let bundle = self.vm_bundle(time)?;
        let manifest = crate::ops::read_manifest(ctx, &bundle).await?;
        let dir = format!("{}{}/", self.prefix, stamp(time));
        self.store.delete(&format!("{dir}{MANIFEST_NAME}")).await?;
        for disk in &manifest.disks {
            // read_manifest checked that each name is plain, inside the bundle.
            self.store.delete(&format!("{dir}{}", disk.object)).await?;
        }
        if let Bundle::Dir(path) = &bundle {
            // Empty now, unless someone put something else there: then it stays.
            let _ = std::fs::remove_dir(path);
        }
        Ok(())
    }

    /// Removes what killed runs of this host left in the directory: multipart uploads and
    /// temporary files whose writer provably no longer runs ([`cleanup`] with
    /// [`CleanupOptions::proven_only`]). Each run writes a name of its own time, so no later
    /// run would meet them otherwise. How many were removed.
    pub async fn remove_leftovers(&self, ctx: &Context) -> crate::Result<usize> {
        let scope = match &self.bundle {
            Bundle::S3(p) => Scope::S3 {
                bucket: p.bucket.clone(),
                prefix: p.prefix.clone(),
            },
            Bundle::Dir(dir) if dir.is_dir() => Scope::Dir { path: dir.clone() },
            // Not made yet: nothing in it.
            Bundle::Dir(_) => return Ok(0),
        };
        Ok(cleanup(ctx, &scope, &CleanupOptions::proven_only())
            .await?
            .removed())
    }

    /// Creates the image's directory of a local target (S3 needs none). The target directory
    /// itself must exist, as a bucket must.
    pub async fn prepare(&self, target: &Bundle) -> crate::Result<()> {
        if let (Bundle::Dir(root), Bundle::Dir(dir)) = (target, &self.bundle) {
            let what = || format!("export target directory {}", root.display());
            match target_dir_state(root) {
                Ok(()) => {}
                Err(TargetDirProblem::Missing) => return Err(crate::Error::NotFound(what())),
                Err(problem) => return Err(crate::Error::io(what(), problem.into_io())),
            }
            tokio::fs::create_dir_all(dir)
                .await
                .map_err(|e| crate::Error::io(format!("create directory {}", dir.display()), e))?;
        }
        Ok(())
    }
}

/// Why a local target directory (an export job's, a Longhorn job's `vfs://`) cannot take
/// what a job writes. The messages follow the directory's path.
#[derive(Debug, thiserror::Error)]
pub enum TargetDirProblem {
    /// Nothing is there.
    #[error("does not exist (create it: a job creates only its own directories under it)")]
    Missing,
    /// Something other than a directory is there.
    #[error("is not a directory")]
    NotADirectory,
    /// Its status cannot be read (e.g. a parent directory is not searchable).
    #[error("cannot be looked at: {0}")]
    Inaccessible(#[source] std::io::Error),
    /// A file cannot be created in it.
    #[error("is not writable by this user: {0}")]
    NotWritable(#[source] std::io::Error),
}

impl TargetDirProblem {
    /// The problem as an I/O error, for callers that report one.
    fn into_io(self) -> std::io::Error {
        match self {
            TargetDirProblem::Inaccessible(e) | TargetDirProblem::NotWritable(e) => e,
            other => std::io::Error::new(
                match other {
                    TargetDirProblem::Missing => std::io::ErrorKind::NotFound,
                    _ => std::io::ErrorKind::NotADirectory,
                },
                other.to_string(),
            ),
        }
    }
}

/// Whether `dir` is a directory (without writing to it): what a run checks first.
pub fn target_dir_state(dir: &std::path::Path) -> Result<(), TargetDirProblem> {
    match std::fs::metadata(dir) {
        Ok(meta) if meta.is_dir() => Ok(()),
        Ok(_) => Err(TargetDirProblem::NotADirectory),
        // `FILE/` (a target is written with its slash) or `FILE/DIR`.
        Err(e) if e.kind() == std::io::ErrorKind::NotADirectory => {
            Err(TargetDirProblem::NotADirectory)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(TargetDirProblem::Missing),
        Err(e) => Err(TargetDirProblem::Inaccessible(e)),
    }
}

/// The name of the file [`check_target_dir`] creates and removes: hidden, and no name a job
/// or retention ever looks at.
const WRITE_PROBE_PREFIX: &str = ".diskferry-check.";

/// Whether a job could write into `dir` now: it is a directory and a file can be created in
/// it (tried, then removed: permissions alone miss ACLs, read-only mounts and root).
pub fn check_target_dir(dir: &std::path::Path) -> Result<(), TargetDirProblem> {
    target_dir_state(dir)?;
    let probe = dir.join(format!("{WRITE_PROBE_PREFIX}{}", std::process::id()));
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)
        .map_err(TargetDirProblem::NotWritable)?;
    std::fs::remove_file(&probe).map_err(TargetDirProblem::NotWritable)
}

/// The export options of the job's settings.
pub fn export_options(settings: &ExportSettings) -> ExportOptions {
    let compression = match settings.compression {
        ClusterCompression::None => None,
        other => other.name().parse().ok(),
    };
    ExportOptions {
        sink: ObjectSinkOptions {
            format: settings.format,
            compression,
            ..ObjectSinkOptions::default()
        },
        ..ExportOptions::default()
    }
}

/// Exports the snapshot `snapshot` into `destination` (nothing is left on failure or
/// cancellation: the op aborts the upload or removes its temporary file).
pub async fn export_snapshot(
    ctx: &Context,
    settings: &ExportSettings,
    snapshot: &RbdSpec,
    destination: &Address,
    progress: &dyn Progress,
    cancel: &CancellationToken,
) -> crate::Result<ExportReport> {
    let options = export_options(settings);
    crate::ops::export(ctx, snapshot, destination, &options, progress, cancel).await
}

/// Exports a VM from its group snapshot into `bundle` (manifest last, with the job's labels);
/// the group snapshot is removed in every case.
#[allow(clippy::too_many_arguments)]
pub async fn export_vm(
    ctx: &Context,
    job: &Job,
    settings: &ExportSettings,
    vm: &VmGroup,
    snapshot: VmSnapshot,
    bundle: &Bundle,
    progress: &dyn Progress,
    cancel: &CancellationToken,
) -> crate::Result<ExportVmReport> {
    let options = ExportVmOptions {
        name: Some(vm.name.clone()),
        labels: job.labels.clone(),
        disk: export_options(settings),
    };
    crate::ops::export_vm_at(ctx, &vm.disks, snapshot, bundle, &options, progress, cancel).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_names_become_key_components() {
        assert!(component("image", "vm1-os").is_ok());
        for bad in ["", ".", "..", ".hidden", "a/b", "a\\b", "a\nb"] {
            assert!(component("image", bad).is_err(), "{bad:?}");
        }
    }

    #[tokio::test]
    async fn a_target_that_is_a_file_is_not_reported_missing() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("afile");
        std::fs::write(&file, b"x").unwrap();
        let settings = ExportSettings {
            target: Bundle::Dir(file.clone()),
            format: ObjectFormat::Qcow2,
            compression: ClusterCompression::None,
        };
        let place = Place {
            bundle: sub_bundle(&settings.target, "job/rbd/rbd/image/").unwrap(),
            store: Arc::new(objstore::LocalDir::new(dir.path())),
            prefix: String::new(),
            format: settings.format,
        };
        let err = place
            .prepare(&settings.target)
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("is not a directory"), "{err}");
        assert!(!err.contains("does not exist"), "{err}");
        assert!(err.contains(&file.display().to_string()), "{err}");

        let missing = Bundle::Dir(dir.path().join("missing"));
        let err = place.prepare(&missing).await.unwrap_err().to_string();
        assert!(err.contains("does not exist"), "{err}");
    }

    #[test]
    fn target_directories_are_checked_as_a_run_would_use_them() {
        let dir = tempfile::tempdir().unwrap();
        assert!(check_target_dir(dir.path()).is_ok());
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            0,
            "probe left"
        );
        let file = dir.path().join("afile");
        std::fs::write(&file, b"x").unwrap();
        for file in [file.clone(), file.join(""), file.join("sub")] {
            assert!(
                matches!(
                    check_target_dir(&file),
                    Err(TargetDirProblem::NotADirectory)
                ),
                "{}",
                file.display()
            );
        }
        assert!(matches!(
            check_target_dir(&dir.path().join("missing")),
            Err(TargetDirProblem::Missing)
        ));
    }

    #[test]
    fn stamps_round_trip_and_nothing_else_parses() {
        let t = DateTime::parse_from_rfc3339("2026-12-06T02:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(stamp(t), "20261206T020000Z");
        assert_eq!(parse_stamp("20261206T020000Z"), Some(t));
        for other in [
            "20261206T020000",
            "x20261206T020000Z",
            "20261306T020000Z",
            "",
        ] {
            assert_eq!(parse_stamp(other), None, "{other:?}");
        }
    }
}
