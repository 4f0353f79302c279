//! One place that turns a user's `s3://…`, `http(s)://…` or path into a reader or writer.

use std::path::PathBuf;
use std::sync::Arc;

use crate::address::{S3Address, S3_SCHEME};
use crate::error::{Error, Result};
use crate::http::{HttpClient, HttpObject};
use crate::local::{LocalFile, LocalFileWriter};
use crate::read::RangeRead;
use crate::s3::{S3Store, S3WriterOptions};
use crate::write::ObjectWriter;

/// `file://` URLs are accepted as local paths.
const FILE_SCHEME: &str = "file://";
/// Separator that marks a URL rather than a path.
const SCHEME_SEP: &str = "://";

/// Where an object lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// `s3://bucket/key`.
    S3(S3Address),
    /// An `http://` or `https://` URL (read-only).
    Http(String),
    /// A local path (or `file:///path`).
    File(PathBuf),
}

impl Location {
    /// Classifies `input`: `s3://` and `http(s)://` URLs, `file://` URLs, and anything without
    /// a `scheme://` as a path. Other schemes are an [`Error::InvalidAddress`].
    pub fn parse(input: &str) -> Result<Self> {
        if input.starts_with(S3_SCHEME) {
            return Ok(Location::S3(S3Address::parse(input)?));
        }
        if let Some(path) = input.strip_prefix(FILE_SCHEME) {
            if path.is_empty() {
                return Err(Error::InvalidAddress {
                    input: input.into(),
                    reason: "no path".into(),
                });
            }
            return Ok(Location::File(PathBuf::from(path)));
        }
        let lower = input.to_ascii_lowercase();
        if lower.starts_with("http://") || lower.starts_with("https://") {
            return Ok(Location::Http(input.to_owned()));
        }
        if let Some((scheme, _)) = input.split_once(SCHEME_SEP) {
            if !scheme.is_empty()
                && scheme
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
            {
                return Err(Error::InvalidAddress {
                    input: input.into(),
                    reason: format!(
                        "unsupported scheme {scheme:?}: use s3://, http(s)://, file:// or a path"
                    ),
                });
            }
        }
        if input.is_empty() {
            return Err(Error::InvalidAddress {
                input: input.into(),
                reason: "empty".into(),
            });
        }
        Ok(Location::File(PathBuf::from(input)))
    }

    /// Opens the object for range reads. `s3` is needed for `s3://` locations.
    pub async fn open_reader(&self, s3: Option<&S3Store>) -> Result<Arc<dyn RangeRead>> {
        Ok(match self {
            Location::S3(a) => Arc::new(need_s3(s3, a)?.open(&a.bucket, &a.key).await?),
            Location::Http(url) => {
                Arc::new(HttpObject::open_with(HttpClient::shared(), url).await?)
            }
            Location::File(p) => Arc::new(LocalFile::open(p).await?),
        })
    }

    /// Starts a writer. `force` allows replacing an existing object or file; `s3_opts` sets
    /// the part size and parallelism of S3 writes (its `put.overwrite` is set from `force`).
    pub async fn create_writer(
        &self,
        s3: Option<&S3Store>,
        force: bool,
        mut s3_opts: S3WriterOptions,
    ) -> Result<Box<dyn ObjectWriter>> {
        Ok(match self {
            Location::S3(a) => {
                s3_opts.put.overwrite = force;
                Box::new(need_s3(s3, a)?.writer(&a.bucket, &a.key, s3_opts).await?)
            }
            Location::Http(url) => {
                return Err(Error::InvalidAddress {
                    input: url.clone(),
                    reason: "HTTP locations are read-only; write to s3:// or a path".into(),
                })
            }
            Location::File(p) => Box::new(LocalFileWriter::create(p, force).await?),
        })
    }
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Location::S3(a) => write!(f, "{a}"),
            Location::Http(u) => f.write_str(u),
            Location::File(p) => write!(f, "{}", p.display()),
        }
    }
}

fn need_s3<'a>(s3: Option<&'a S3Store>, a: &S3Address) -> Result<&'a S3Store> {
    s3.ok_or_else(|| Error::Config {
        reason: format!("{a} needs S3 settings (endpoint and keys)"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_locations() {
        assert_eq!(
            Location::parse("s3://b-1/k").unwrap(),
            Location::S3(S3Address::new("b-1", "k"))
        );
        assert_eq!(
            Location::parse("https://h/x").unwrap(),
            Location::Http("https://h/x".into())
        );
        assert_eq!(
            Location::parse("HTTP://h/x").unwrap(),
            Location::Http("HTTP://h/x".into())
        );
        assert_eq!(
            Location::parse("file:///tmp/a").unwrap(),
            Location::File("/tmp/a".into())
        );
        assert_eq!(
            Location::parse("disk.qcow2").unwrap(),
            Location::File("disk.qcow2".into())
        );
        assert_eq!(
            Location::parse("./a:b").unwrap(),
            Location::File("./a:b".into())
        );
        let e = Location::parse("ftp://h/x").unwrap_err().to_string();
        assert!(
            e.contains("ftp://h/x") && e.contains("unsupported scheme"),
            "{e}"
        );
        assert!(Location::parse("s3://b").is_err());
        assert!(Location::parse("").is_err());
    }

    #[tokio::test]
    async fn s3_location_without_settings_is_a_config_error() {
        let loc = Location::parse("s3://bucket/key").unwrap();
        let e = loc.open_reader(None).await.unwrap_err().to_string();
        assert!(e.contains("s3://bucket/key"), "{e}");
        let e = Location::parse("http://h/x")
            .unwrap()
            .create_writer(None, false, S3WriterOptions::default())
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("read-only"), "{e}");
    }
}
