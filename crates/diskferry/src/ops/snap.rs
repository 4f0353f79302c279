//! Snapshots of an RBD image as the `rbd snap` command manages them: create, protect,
//! unprotect, remove, list.

use rbd::{Image, OpenMode};
use serde::Serialize;

use crate::context::blocking;
use crate::{Context, Error, RbdSpec, Result};

/// One snapshot, as `snap ls` prints it. `snap ls --json` prints an array of these, in
/// creation order: `[{"id": 4, "name": "base", "size": 8388608, "protected": true}, …]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SnapRow {
    /// The snapshot id.
    pub id: u64,
    /// The snapshot name.
    pub name: String,
    /// The image size at the snapshot, in bytes.
    pub size: u64,
    /// Whether the snapshot is protected.
    pub protected: bool,
}

/// What `snap create|protect|unprotect|rm --json` prints: one object naming the snapshot and
/// what was done to it,
/// `{"snapshot": "rbd:POOL/IMAGE@SNAP", "action": "created" | "protected" | "unprotected" | "removed"}`.
/// On failure nothing is printed on stdout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SnapReport {
    /// The snapshot, `rbd:POOL/IMAGE@SNAP`.
    pub snapshot: String,
    /// What was done to it.
    pub action: SnapAction,
}

/// What `snap` did, as [`SnapReport`] names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SnapAction {
    /// The snapshot was created.
    Created,
    /// The snapshot was protected.
    Protected,
    /// The snapshot was unprotected.
    Unprotected,
    /// The snapshot was removed.
    Removed,
}

impl SnapAction {
    /// `created`, `protected`, `unprotected` or `removed`, as the JSON report spells it.
    pub fn word(self) -> &'static str {
        match self {
            SnapAction::Created => "created",
            SnapAction::Protected => "protected",
            SnapAction::Unprotected => "unprotected",
            SnapAction::Removed => "removed",
        }
    }
}

/// Creates the snapshot `snapshot` names (`rbd:POOL/IMAGE@SNAP`).
pub async fn create(ctx: &Context, snapshot: &RbdSpec) -> Result<SnapReport> {
    change(ctx, snapshot, SnapAction::Created).await
}

/// Protects the snapshot `snapshot` names, as format-1 clones need.
pub async fn protect(ctx: &Context, snapshot: &RbdSpec) -> Result<SnapReport> {
    change(ctx, snapshot, SnapAction::Protected).await
}

/// Unprotects the snapshot `snapshot` names; refused while format-1 clones depend on it.
pub async fn unprotect(ctx: &Context, snapshot: &RbdSpec) -> Result<SnapReport> {
    change(ctx, snapshot, SnapAction::Unprotected).await
}

/// Removes the snapshot `snapshot` names (it must be unprotected).
pub async fn remove(ctx: &Context, snapshot: &RbdSpec) -> Result<SnapReport> {
    change(ctx, snapshot, SnapAction::Removed).await
}

/// The snapshots of the image `image` names, in creation order. A `@SNAP` in `image` is
/// ignored: the image's snapshots are listed.
pub async fn list(ctx: &Context, image: &RbdSpec) -> Result<Vec<SnapRow>> {
    let ioctx = ctx.pool(&image.pool).await?;
    let name = image.image.clone();
    blocking(move || {
        let image = Image::open(&ioctx, &name, OpenMode::ReadWrite)?;
        let mut rows = Vec::new();
        for s in image.snap_list()? {
            let protected = match image.snap_is_protected(&s.name) {
                Ok(protected) => protected,
                // Removed since the listing (another job's retention, a user): not listed.
                Err(e) if e.kind() == rbd::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            rows.push(SnapRow {
                id: s.id,
                name: s.name,
                size: s.size,
                protected,
            });
        }
        Ok(rows)
    })
    .await
}

/// Does `action` to the snapshot `snapshot` names, which must have a `@SNAP`.
async fn change(ctx: &Context, snapshot: &RbdSpec, action: SnapAction) -> Result<SnapReport> {
    let snap = snapshot.snap.clone().ok_or_else(|| Error::InvalidAddress {
        address: snapshot.to_string(),
        reason: "name a snapshot, rbd:POOL/IMAGE@SNAP".into(),
    })?;
    let ioctx = ctx.pool(&snapshot.pool).await?;
    let name = snapshot.image.clone();
    blocking(move || {
        let image = Image::open(&ioctx, &name, OpenMode::ReadWrite)?;
        match action {
            SnapAction::Created => image.snap_create(&snap),
            SnapAction::Protected => image.snap_protect(&snap),
            SnapAction::Unprotected => image.snap_unprotect(&snap),
            SnapAction::Removed => image.snap_remove(&snap),
        }
    })
    .await?;
    Ok(SnapReport {
        snapshot: snapshot.to_string(),
        action,
    })
}
