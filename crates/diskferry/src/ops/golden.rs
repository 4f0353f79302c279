//! The golden-image workflow: import, snapshot, protect; then copy-on-write clones.

use std::collections::HashSet;

use rbd::{CloneOptions, Image, OpenMode};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::{import, ImportOptions, ImportReport};
use crate::context::blocking;
use crate::{Address, Context, Error, Progress, RbdSpec, Result};

/// What `golden` did.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GoldenReport {
    /// The import.
    pub import: ImportReport,
    /// The protected snapshot, `rbd:POOL/IMAGE@SNAP`.
    pub snapshot: String,
}

/// Imports `source` into `base`, snapshots it as `snap` and protects the snapshot, so clones
/// of either format can be made from it. If the snapshot step fails, the image is removed
/// (unless `keep_partial`), as for a failed import.
pub async fn golden(
    ctx: &Context,
    source: &Address,
    base: &RbdSpec,
    snap: &str,
    options: &ImportOptions,
    progress: &dyn Progress,
    cancel: &CancellationToken,
) -> Result<GoldenReport> {
    if base.snap.is_some() {
        return Err(Error::InvalidAddress {
            address: base.to_string(),
            reason: "name the image without @SNAP; the snapshot is given with --snap".into(),
        });
    }
    let report = import(ctx, source, base, options, progress, cancel).await?;
    let ioctx = ctx.pool(&base.pool).await?;
    let (io, name, snap_name) = (ioctx.clone(), base.image.clone(), snap.to_string());
    let snapped = blocking(move || {
        let image = Image::open(&io, &name, OpenMode::ReadWrite)?;
        image.snap_create(&snap_name)?;
        image.snap_protect(&snap_name)
    })
    .await;
    if let Err(error) = snapped {
        if !options.sink.keep_partial {
            let (io, name) = (ioctx, base.image.clone());
            let cleaned = blocking(move || {
                let image = Image::open(&io, &name, OpenMode::ReadWrite)?;
                for s in image.snap_list()? {
                    let _ = image.snap_unprotect(&s.name);
                    image.snap_remove(&s.name)?;
                }
                drop(image);
                rbd::remove(&io, &name)
            })
            .await;
            return Err(error.after_cleanup(cleaned, base.to_string()));
        }
        return Err(error);
    }
    Ok(GoldenReport {
        import: report,
        snapshot: base.at(Some(snap)).to_string(),
    })
}

/// What `clone --json` prints: one object,
/// `{"parent": "rbd:POOL/IMAGE@SNAP", "format": 1 | 2, "children": ["rbd:POOL/CHILD", …]}`:
/// the parent snapshot, the clone format, and the clones made, in the order given. A failed
/// `clone` prints nothing on stdout and leaves no clone behind.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CloneReport {
    /// The parent snapshot, `rbd:POOL/IMAGE@SNAP`.
    pub parent: String,
    /// The clone format, 1 or 2.
    pub format: u8,
    /// The clones made, `rbd:POOL/CHILD`, in the order given.
    pub children: Vec<String>,
}

/// Clones `parent` (which must name a snapshot) into each of `children`, in constant time
/// each, and reports the clones made, in the order given.
///
/// All or nothing: every child is checked before the first clone (an image without `@SNAP`,
/// named once, that does not exist yet; all that exist are named in one
/// [`Error::ExistingTargets`]), and when a clone fails or `cancel` fires, the clones this
/// call made are removed before the error returns (a removal that fails too is named in an
/// [`Error::CleanupFailed`]).
pub async fn clone_many(
    ctx: &Context,
    parent: &RbdSpec,
    children: &[RbdSpec],
    options: &CloneOptions,
    cancel: &CancellationToken,
) -> Result<CloneReport> {
    let snap = parent.snap.clone().ok_or_else(|| Error::InvalidAddress {
        address: parent.to_string(),
        reason: "a clone's parent must be a snapshot: rbd:POOL/IMAGE@SNAP".into(),
    })?;
    let mut seen = HashSet::with_capacity(children.len());
    for child in children {
        if child.snap.is_some() {
            return Err(Error::InvalidAddress {
                address: child.to_string(),
                reason: "a clone is an image; remove @SNAP".into(),
            });
        }
        if !seen.insert(child) {
            return Err(Error::InvalidAddress {
                address: child.to_string(),
                reason: "named twice; each clone needs a name of its own".into(),
            });
        }
        crate::sinks::refuse_working_name(child)?;
    }
    let parent_io = ctx.pool(&parent.pool).await?;
    let mut targets = Vec::with_capacity(children.len());
    for child in children {
        targets.push((ctx.pool(&child.pool).await?, child));
    }
    let existing = existing_images(&targets).await?;
    if !existing.is_empty() {
        return Err(Error::ExistingTargets(existing));
    }

    let mut made: Vec<(rados::IoCtx, &RbdSpec)> = Vec::with_capacity(children.len());
    for (child_io, child) in &targets {
        let cloned = if cancel.is_cancelled() {
            Err(Error::Cancelled)
        } else {
            let (p_io, p_name, p_snap, c_io, c_name, opts) = (
                parent_io.clone(),
                parent.image.clone(),
                snap.clone(),
                child_io.clone(),
                child.image.clone(),
                options.clone(),
            );
            blocking(move || rbd::clone(&p_io, &p_name, &p_snap, &c_io, &c_name, &opts)).await
        };
        if let Err(error) = cloned {
            let (cleanup, left_behind) = remove_clones(&made).await;
            return Err(error.after_cleanup(cleanup, left_behind));
        }
        made.push((child_io.clone(), child));
    }
    Ok(CloneReport {
        parent: parent.to_string(),
        format: options.format as u8,
        children: made.iter().map(|(_, child)| child.to_string()).collect(),
    })
}

/// The addresses of those `targets` that exist.
async fn existing_images(targets: &[(rados::IoCtx, &RbdSpec)]) -> Result<Vec<String>> {
    let mut existing = Vec::new();
    for (io, spec) in targets {
        let (io, name) = (io.clone(), spec.image.clone());
        let found = blocking(move || match Image::open(&io, &name, OpenMode::ReadOnly) {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == rados::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        })
        .await?;
        if found {
            existing.push(spec.to_string());
        }
    }
    Ok(existing)
}

/// Removes the clones `made`, newest first, trying every one: the first failure, and the
/// addresses of the clones that could not be removed.
async fn remove_clones(made: &[(rados::IoCtx, &RbdSpec)]) -> (Result<()>, String) {
    let mut first_error = None;
    let mut left = Vec::new();
    for (io, spec) in made.iter().rev() {
        let (io, name) = (io.clone(), spec.image.clone());
        if let Err(e) = blocking(move || rbd::remove(&io, &name)).await {
            first_error.get_or_insert(e);
            left.push(spec.to_string());
        }
    }
    (first_error.map_or(Ok(()), Err), left.join(", "))
}
