//! Addresses a user types: `rbd:POOL/IMAGE[@SNAP]`, `s3://BUCKET/KEY`, `http(s)://…`, paths.

use std::fmt;
use std::path::PathBuf;

use objstore::S3Address;

use crate::{Error, Result};

/// The prefix of RBD addresses.
pub const RBD_SCHEME: &str = "rbd:";

/// The pool of an address that names none: the cluster's `rbd_default_pool`, resolved by
/// [`crate::Context::pool`].
pub const DEFAULT_POOL: &str = "";

/// An RBD image, optionally at a snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RbdSpec {
    /// Pool name.
    pub pool: String,
    /// Image name.
    pub image: String,
    /// Snapshot name.
    pub snap: Option<String>,
}

impl RbdSpec {
    /// Parses `[POOL/]IMAGE[@SNAP]` (without the `rbd:` prefix). Without a pool, the image is
    /// in the cluster's default pool (`rbd_default_pool`, `rbd` unless configured), as for
    /// the `rbd` command: the pool is then empty here and resolved on connection.
    pub fn parse(spec: &str) -> Result<RbdSpec> {
        let invalid = |reason: &str| Error::InvalidAddress {
            address: format!("{RBD_SCHEME}{spec}"),
            reason: reason.to_string(),
        };
        let (path, snap) = match spec.split_once('@') {
            Some((path, snap)) => (path, Some(snap)),
            None => (spec, None),
        };
        let (pool, image) = path.split_once('/').unwrap_or((DEFAULT_POOL, path));
        if image.is_empty() && !path.contains('/') {
            return Err(invalid("expected rbd:[POOL/]IMAGE[@SNAP]"));
        }
        if (pool.is_empty() && path.contains('/')) || image.is_empty() {
            return Err(invalid("the pool and the image name must not be empty"));
        }
        if image.contains('/') {
            return Err(invalid(
                "pool namespaces are not supported; expected rbd:[POOL/]IMAGE[@SNAP]",
            ));
        }
        if snap == Some("") {
            return Err(invalid("the snapshot name after '@' must not be empty"));
        }
        if spec.contains(['\0', ' ']) {
            return Err(invalid("names must not contain spaces or NUL bytes"));
        }
        Ok(RbdSpec {
            pool: pool.to_string(),
            image: image.to_string(),
            snap: snap.map(str::to_string),
        })
    }

    /// The same image at another snapshot (or the head).
    pub fn at(&self, snap: Option<&str>) -> RbdSpec {
        RbdSpec {
            snap: snap.map(str::to_string),
            ..self.clone()
        }
    }
}

impl fmt::Display for RbdSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(RBD_SCHEME)?;
        if self.pool != DEFAULT_POOL {
            write!(f, "{}/", self.pool)?;
        }
        f.write_str(&self.image)?;
        if let Some(snap) = &self.snap {
            write!(f, "@{snap}")?;
        }
        Ok(())
    }
}

/// Where a disk is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Address {
    /// An RBD image or snapshot.
    Rbd(RbdSpec),
    /// An S3 (RGW) object.
    S3(S3Address),
    /// An HTTP(S) URL.
    Http(String),
    /// A local file.
    File(PathBuf),
}

impl Address {
    /// Parses an address. A string with no known scheme is a local path.
    pub fn parse(input: &str) -> Result<Address> {
        if input.is_empty() {
            return Err(Error::InvalidAddress {
                address: input.into(),
                reason: "empty".into(),
            });
        }
        if let Some(spec) = input.strip_prefix(RBD_SCHEME) {
            return RbdSpec::parse(spec).map(Address::Rbd);
        }
        if input.starts_with("s3://") {
            return S3Address::parse(input)
                .map(Address::S3)
                .map_err(Error::from_address_error);
        }
        if input.starts_with("http://") || input.starts_with("https://") {
            return Ok(Address::Http(input.to_string()));
        }
        if let Some(path) = input.strip_prefix("file://") {
            return Ok(Address::File(PathBuf::from(path)));
        }
        if let Some((scheme, _)) = input.split_once("://") {
            return Err(Error::InvalidAddress {
                address: objstore::redact_url(input),
                reason: format!(
                    "unknown scheme {scheme:?}; expected rbd:[POOL/]IMAGE[@SNAP], s3://BUCKET/KEY, http(s)://… or a path"
                ),
            });
        }
        Ok(Address::File(PathBuf::from(input)))
    }

    /// The RBD spec, or an error naming the address for operations that need RBD.
    pub fn rbd(&self) -> Result<&RbdSpec> {
        match self {
            Address::Rbd(spec) => Ok(spec),
            other => Err(Error::InvalidAddress {
                address: other.to_string(),
                reason: "expected an RBD address rbd:[POOL/]IMAGE[@SNAP]".into(),
            }),
        }
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Address::Rbd(spec) => spec.fmt(f),
            Address::S3(addr) => write!(f, "s3://{}/{}", addr.bucket, addr.key),
            // Never a password or a pre-signed URL's signature in a message or a log.
            Address::Http(url) => f.write_str(&objstore::redact_url(url)),
            Address::File(path) => write!(f, "{}", path.display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_kind() {
        assert_eq!(
            Address::parse("rbd:pool/img@snap").unwrap(),
            Address::Rbd(RbdSpec {
                pool: "pool".into(),
                image: "img".into(),
                snap: Some("snap".into())
            })
        );
        assert_eq!(Address::parse("rbd:p/i").unwrap().to_string(), "rbd:p/i");
        match Address::parse("s3://bucket/dir/disk.qcow2").unwrap() {
            Address::S3(a) => assert_eq!(
                (a.bucket.as_str(), a.key.as_str()),
                ("bucket", "dir/disk.qcow2")
            ),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            Address::parse("https://h/x.img").unwrap(),
            Address::Http("https://h/x.img".into())
        );
        assert_eq!(
            Address::parse("./a.qcow2").unwrap(),
            Address::File("./a.qcow2".into())
        );
        assert_eq!(
            Address::parse("file:///tmp/a").unwrap(),
            Address::File("/tmp/a".into())
        );
    }

    #[test]
    fn a_bad_s3_address_says_invalid_address_once() {
        let err = Address::parse("s3://").unwrap_err().to_string();
        assert_eq!(err.matches("invalid address").count(), 1, "{err}");
        assert!(err.contains("\"s3://\""), "{err}");
    }

    #[test]
    fn an_image_without_a_pool_is_in_the_default_pool() {
        let spec = RbdSpec::parse("img@s").unwrap();
        assert_eq!(
            (spec.pool.as_str(), spec.image.as_str()),
            (DEFAULT_POOL, "img")
        );
        assert_eq!(spec.snap.as_deref(), Some("s"));
        assert_eq!(spec.to_string(), "rbd:img@s");
        assert_eq!(
            Address::parse("rbd:p/img").unwrap().to_string(),
            "rbd:p/img"
        );
    }

    #[test]
    fn http_addresses_are_shown_without_credentials_or_signatures() {
        let url = "https://alice:s3cret@h.example/d.qcow2?X-Amz-Signature=abcdef";
        let shown = Address::parse(url).unwrap().to_string();
        assert_eq!(shown, "https://h.example/d.qcow2?…");
        let err = Address::parse("ftp://alice:s3cret@h/x")
            .unwrap_err()
            .to_string();
        assert!(!err.contains("s3cret"), "{err}");
    }

    #[test]
    fn bad_addresses_name_the_input_and_the_problem() {
        for (input, needle) in [
            ("rbd:", "expected rbd:[POOL/]IMAGE"),
            ("rbd:@snap", "expected rbd:[POOL/]IMAGE"),
            ("rbd:/img", "must not be empty"),
            ("rbd:pool/", "must not be empty"),
            ("rbd:p/ns/img", "namespaces"),
            ("rbd:p/img@", "snapshot name"),
            ("ftp://x/y", "unknown scheme"),
            ("s3://", ""),
            ("", "empty"),
        ] {
            let err = Address::parse(input).unwrap_err().to_string();
            assert!(
                err.contains(needle) && err.contains(&format!("{input:?}")),
                "{input}: {err}"
            );
        }
    }
}
