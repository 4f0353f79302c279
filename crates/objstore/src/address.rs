//! `s3://BUCKET/KEY` and `s3://BUCKET/PREFIX/` addresses.

use std::fmt;

use crate::error::{Error, Result};

/// The URL scheme of S3 addresses.
pub const S3_SCHEME: &str = "s3://";

/// Shortest bucket name S3 accepts.
pub const BUCKET_NAME_MIN: usize = 3;
/// Longest bucket name S3 accepts.
pub const BUCKET_NAME_MAX: usize = 63;
/// Longest object key S3 accepts, in bytes.
pub const KEY_MAX_BYTES: usize = 1024;

/// An object address: `s3://BUCKET/KEY`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct S3Address {
    /// The bucket.
    pub bucket: String,
    /// The object key (never empty, never ending in `/`).
    pub key: String,
}

/// A prefix address: `s3://BUCKET/` or `s3://BUCKET/PREFIX/`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct S3Prefix {
    /// The bucket.
    pub bucket: String,
    /// The prefix: empty (the whole bucket) or ending in `/`.
    pub prefix: String,
}

impl S3Address {
    /// Makes an address from its parts (not validated; see [`S3Address::parse`]).
    pub fn new(bucket: impl Into<String>, key: impl Into<String>) -> Self {
        Self {
            bucket: bucket.into(),
            key: key.into(),
        }
    }

    /// Parses `s3://BUCKET/KEY`. The key may contain `/` but must not end with one.
    pub fn parse(input: &str) -> Result<Self> {
        let (bucket, rest) = split(input)?;
        if rest.is_empty() {
            return Err(invalid(input, "no object key after the bucket"));
        }
        if rest.ends_with('/') {
            return Err(invalid(
                input,
                "an object key must not end with '/' (that is a prefix)",
            ));
        }
        check_key(input, rest)?;
        Ok(Self::new(bucket, rest))
    }
}

impl S3Prefix {
    /// Parses `s3://BUCKET`, `s3://BUCKET/` or `s3://BUCKET/PREFIX/`; a missing final `/` is
    /// added, so `s3://b/backups` means everything under `backups/`.
    pub fn parse(input: &str) -> Result<Self> {
        let (bucket, rest) = split(input)?;
        let mut prefix = rest.to_owned();
        if !prefix.is_empty() && !prefix.ends_with('/') {
            prefix.push('/');
        }
        check_key(input, &prefix)?;
        Ok(Self {
            bucket: bucket.to_owned(),
            prefix,
        })
    }

    /// The address of `name` under this prefix.
    pub fn join(&self, name: &str) -> S3Address {
        S3Address::new(self.bucket.clone(), format!("{}{}", self.prefix, name))
    }
}

impl fmt::Display for S3Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{S3_SCHEME}{}/{}", self.bucket, self.key)
    }
}

impl fmt::Display for S3Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{S3_SCHEME}{}/{}", self.bucket, self.prefix)
    }
}

impl std::str::FromStr for S3Address {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Self::parse(s)
    }
}

impl std::str::FromStr for S3Prefix {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Self::parse(s)
    }
}

fn invalid(input: &str, reason: impl Into<String>) -> Error {
    Error::InvalidAddress {
        input: input.to_owned(),
        reason: reason.into(),
    }
}

/// Splits `s3://bucket/rest` into a validated bucket and the (possibly empty) rest.
fn split(input: &str) -> Result<(&str, &str)> {
    let Some(body) = input.strip_prefix(S3_SCHEME) else {
        return Err(invalid(input, "expected s3://BUCKET/KEY"));
    };
    let (bucket, rest) = body.split_once('/').unwrap_or((body, ""));
    check_bucket(input, bucket)?;
    Ok((bucket, rest))
}

/// Checks bucket names: 3–63 characters of letters, digits, `.`, `-` and `_`, starting and
/// ending with a letter or digit. That is S3's rule for new buckets, relaxed to upper case and
/// `_` because RGW keeps such legacy names (`rgw_relaxed_s3_bucket_names`) and path-style
/// requests reach them.
fn check_bucket(input: &str, bucket: &str) -> Result<()> {
    if bucket.is_empty() {
        return Err(invalid(input, "no bucket name"));
    }
    if bucket.contains('@') {
        return Err(invalid(
            input,
            "'@' in the bucket: the Longhorn form s3://bucket@region/ is parsed by the longhorn crate",
        ));
    }
    if !(BUCKET_NAME_MIN..=BUCKET_NAME_MAX).contains(&bucket.len()) {
        return Err(invalid(
            input,
            format!(
                "bucket name {bucket:?} must be {BUCKET_NAME_MIN} to {BUCKET_NAME_MAX} characters"
            ),
        ));
    }
    let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_');
    let ok_edge = |c: char| c.is_ascii_alphanumeric();
    let first = bucket.chars().next().unwrap_or('-');
    let last = bucket.chars().last().unwrap_or('-');
    if !bucket.chars().all(ok_char) || !ok_edge(first) || !ok_edge(last) {
        return Err(invalid(
            input,
            format!(
                "bucket name {bucket:?} may only hold letters, digits, '.', '-' and '_', \
                 and must start and end with a letter or digit"
            ),
        ));
    }
    Ok(())
}

fn check_key(input: &str, key: &str) -> Result<()> {
    if key.len() > KEY_MAX_BYTES {
        return Err(invalid(
            input,
            format!("key is {} bytes, the limit is {KEY_MAX_BYTES}", key.len()),
        ));
    }
    if key.starts_with('/') {
        return Err(invalid(
            input,
            "key starts with '/' (double slash after the bucket?)",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_object_addresses() {
        let a = S3Address::parse("s3://disks/vm/root.qcow2").unwrap();
        assert_eq!(a.bucket, "disks");
        assert_eq!(a.key, "vm/root.qcow2");
        assert_eq!(a.to_string(), "s3://disks/vm/root.qcow2");
    }

    #[test]
    fn rejects_bad_object_addresses() {
        for (input, needle) in [
            ("disks/vm.qcow2", "expected s3://"),
            ("s3://", "no bucket"),
            ("s3://disks", "no object key"),
            ("s3://disks/", "no object key"),
            ("s3://disks/dir/", "prefix"),
            ("s3://dis ks/x", "letters, digits"),
            ("s3://-disks/x", "start and end"),
            ("s3://ab/x", "3 to 63"),
            ("s3://b@us-east-1/x", "Longhorn"),
            ("s3://disks//x", "double slash"),
        ] {
            let err = S3Address::parse(input).unwrap_err().to_string();
            assert!(err.contains(needle), "{input}: {err}");
            assert!(
                err.contains(input),
                "{input}: error does not name the input: {err}"
            );
        }
    }

    #[test]
    fn parses_prefixes() {
        let p = S3Prefix::parse("s3://backups").unwrap();
        assert_eq!((p.bucket.as_str(), p.prefix.as_str()), ("backups", ""));
        let p = S3Prefix::parse("s3://backups/lh").unwrap();
        assert_eq!(p.prefix, "lh/");
        let p = S3Prefix::parse("s3://backups/lh/vol/").unwrap();
        assert_eq!(p.prefix, "lh/vol/");
        assert_eq!(p.join("a.cfg").to_string(), "s3://backups/lh/vol/a.cfg");
    }
}
