//! The golden-image workflow: import, snapshot, protect; then copy-on-write clones.

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

/// Clones `parent` (which must name a snapshot) into each of `children`, in constant time
/// each. Stops at the first failure; clones made before it stay (each is complete).
pub async fn clone_many(
    ctx: &Context,
    parent: &RbdSpec,
    children: &[RbdSpec],
    options: &CloneOptions,
) -> Result<Vec<String>> {
    let snap = parent.snap.clone().ok_or_else(|| Error::InvalidAddress {
        address: parent.to_string(),
        reason: "a clone's parent must be a snapshot: rbd:POOL/IMAGE@SNAP".into(),
    })?;
    let parent_io = ctx.pool(&parent.pool).await?;
    let mut made = Vec::with_capacity(children.len());
    for child in children {
        if child.snap.is_some() {
            return Err(Error::InvalidAddress {
                address: child.to_string(),
                reason: "a clone is an image; remove @SNAP".into(),
            });
        }
        let child_io = ctx.pool(&child.pool).await?;
        let (p_io, p_name, p_snap, c_name, opts) = (
            parent_io.clone(),
            parent.image.clone(),
            snap.clone(),
            child.image.clone(),
            options.clone(),
        );
        blocking(move || rbd::clone(&p_io, &p_name, &p_snap, &child_io, &c_name, &opts)).await?;
        made.push(child.to_string());
    }
    Ok(made)
}
