//! Flatten: a clone takes all its data from its parent and stops being a clone.

use rbd::{Image, LinkedImage, OpenMode};
use serde::Serialize;

use crate::context::blocking;
use crate::{Context, Error, RbdSpec, Result, RBD_SCHEME};

/// What `flatten --json` prints: one object,
/// `{"image": "rbd:POOL/IMAGE", "parent": "rbd:POOL/PARENT@SNAP"}`: the image, which now
/// holds all its data, and the snapshot it was a clone of until now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FlattenReport {
    /// The image, `rbd:POOL/IMAGE`.
    pub image: String,
    /// Its former parent snapshot, `rbd:POOL/[NAMESPACE/]PARENT@SNAP`.
    pub parent: String,
}

/// Copies into the clone `image` names all the data it still reads from its parent, and
/// detaches it. An image that is no clone is an [`Error::NotAClone`]; an address with
/// `@SNAP` is refused (a snapshot cannot be flattened).
pub async fn flatten(ctx: &Context, image: &RbdSpec) -> Result<FlattenReport> {
    if image.snap.is_some() {
        return Err(Error::InvalidAddress {
            address: image.to_string(),
            reason: "flatten an image, not a snapshot; remove @SNAP".into(),
        });
    }
    let ioctx = ctx.pool(&image.pool).await?;
    let name = image.image.clone();
    let parent = blocking(move || {
        let image = Image::open(&ioctx, &name, OpenMode::ReadWrite)?;
        let parent = image.parent()?;
        if parent.is_some() {
            image.flatten()?;
        }
        Ok(parent)
    })
    .await?;
    let Some((parent, snap)) = parent else {
        return Err(Error::NotAClone(image.to_string()));
    };
    Ok(FlattenReport {
        image: image.to_string(),
        parent: linked_address(&parent, &snap),
    })
}

/// `rbd:POOL/[NAMESPACE/]IMAGE@SNAP` for a parent librbd names.
fn linked_address(image: &LinkedImage, snap: &str) -> String {
    let namespace = if image.namespace.is_empty() {
        String::new()
    } else {
        format!("{}/", image.namespace)
    };
    format!(
        "{RBD_SCHEME}{}/{namespace}{}@{snap}",
        image.pool, image.image
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_parent_is_named_with_its_namespace_when_it_has_one() {
        let parent = |namespace: &str| LinkedImage {
            pool: "rbd".into(),
            namespace: namespace.into(),
            image: "golden".into(),
            trash: false,
        };
        assert_eq!(linked_address(&parent(""), "base"), "rbd:rbd/golden@base");
        assert_eq!(
            linked_address(&parent("team"), "base"),
            "rbd:rbd/team/golden@base"
        );
    }
}
