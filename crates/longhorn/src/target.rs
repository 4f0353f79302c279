//! Backup target URLs as Longhorn writes them: `s3://BUCKET@REGION/PATH/` and `vfs:///DIR/`,
//! plus the `?backup=..&volume=..` form Longhorn uses to name a backup.

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::error::{Error, Result};
use crate::names::{BackupName, VolumeName};

/// Query key naming the volume in a backup URL.
pub const VOLUME_QUERY_KEY: &str = "volume";
/// Query key naming the backup in a backup URL.
pub const BACKUP_QUERY_KEY: &str = "backup";

/// Where a backup store lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetLocation {
    /// An S3 (or RGW) bucket.
    S3 {
        /// Bucket name (the URL's user part, or its host when there is no user part).
        bucket: String,
        /// Region (the URL's host), if given.
        region: Option<String>,
    },
    /// A local directory (Longhorn's `vfs` driver).
    Vfs {
        /// The absolute directory; `backupstore/` lives inside it.
        dir: PathBuf,
    },
}

/// A parsed backup target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupTarget {
    /// The URL as given, without the volume/backup query keys.
    pub url: String,
    /// Where the store is.
    pub location: TargetLocation,
    /// Key prefix under which `backupstore/` lives: for S3 the URL path without its leading
    /// `/` (empty for `s3://b@r/`), for vfs the empty string (the driver root is the directory).
    pub root_prefix: String,
}

/// A backup target plus the volume and backup a backup URL names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupUrl {
    /// The target.
    pub target: BackupTarget,
    /// `volume=` (required for a volume or backup URL, absent for a bare target).
    pub volume: Option<VolumeName>,
    /// `backup=`, absent for a volume URL.
    pub backup: Option<BackupName>,
}

fn invalid(url: &str, reason: impl Into<String>) -> Error {
    Error::InvalidTarget {
        url: url.to_owned(),
        reason: reason.into(),
    }
}

impl BackupTarget {
    /// Parses a target URL (query keys `volume`/`backup` are refused here: use [`BackupUrl`]).
    pub fn parse(url: &str) -> Result<Self> {
        let parsed = BackupUrl::parse(url)?;
        if parsed.volume.is_some() || parsed.backup.is_some() {
            return Err(invalid(
                url,
                "a target URL must not name a volume or backup",
            ));
        }
        Ok(parsed.target)
    }

    /// The backup URL naming `backup` of `volume` on this target, as Longhorn's
    /// `EncodeBackupURL` writes it (query keys sorted).
    pub fn backup_url(&self, volume: &VolumeName, backup: Option<&BackupName>) -> String {
        let (base, query) = match self.url.split_once('?') {
            Some((b, q)) => (b, q),
            None => (self.url.as_str(), ""),
        };
        let mut pairs: Vec<(String, String)> = url::form_urlencoded::parse(query.as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        pairs.push((VOLUME_QUERY_KEY.to_owned(), volume.to_string()));
        if let Some(b) = backup {
            pairs.push((BACKUP_QUERY_KEY.to_owned(), b.to_string()));
        }
        // Go's url.Values.Encode sorts by key, keeping the value order within a key.
        pairs.sort_by(|a, b| a.0.cmp(&b.0));
        let mut ser = url::form_urlencoded::Serializer::new(String::new());
        for (k, v) in &pairs {
            ser.append_pair(k, v);
        }
        format!("{base}?{}", ser.finish())
    }
}

impl BackupUrl {
    /// Parses a target, volume or backup URL.
    pub fn parse(input: &str) -> Result<Self> {
        // Longhorn's util.UnescapeURL: shells sometimes leave `&` escaped.
        let text = input.replace("\\u0026", "&").replace("u0026", "&");
        let u = url::Url::parse(&text).map_err(|e| invalid(input, e.to_string()))?;
        let raw_path = text
            .split_once("://")
            .map(|(_, rest)| rest.split(['?', '#']).next().unwrap_or(""))
            .and_then(|rest| rest.find('/').map(|i| &rest[i..]))
            .unwrap_or("");
        if raw_path.split('/').any(|seg| seg == ".." || seg == ".") {
            return Err(invalid(input, "path must not contain '.' or '..' segments"));
        }
        let mut volume = None;
        let mut backup = None;
        let mut kept = BTreeMap::new();
        for (k, v) in u.query_pairs() {
            match k.as_ref() {
                VOLUME_QUERY_KEY => volume = Some(VolumeName::new(v.as_ref())?),
                BACKUP_QUERY_KEY => backup = Some(BackupName::new(v.as_ref())?),
                _ => {
                    kept.insert(k.into_owned(), v.into_owned());
                }
            }
        }
        if backup.is_some() && volume.is_none() {
            return Err(invalid(input, "a backup URL must name its volume"));
        }
        let path = percent_decode(u.path());
        let (location, root_prefix) = match u.scheme() {
            "s3" => {
                if path.is_empty() {
                    return Err(invalid(
                        input,
                        "the S3 path must not be empty (use at least '/')",
                    ));
                }
                let host = u.host_str().unwrap_or("").to_owned();
                let user = percent_decode(u.username());
                let (bucket, region) = if user.is_empty() {
                    (host, None)
                } else {
                    (user, (!host.is_empty()).then_some(host))
                };
                if bucket.is_empty() {
                    return Err(invalid(input, "no bucket"));
                }
                let prefix = path
                    .trim_start_matches('/')
                    .trim_end_matches('/')
                    .to_owned();
                (TargetLocation::S3 { bucket, region }, prefix)
            }
            "vfs" => {
                if u.host_str().is_some_and(|h| !h.is_empty()) {
                    return Err(invalid(
                        input,
                        "a vfs URL must have an empty host (vfs:///dir/)",
                    ));
                }
                if !path.starts_with('/') || path.trim_matches('/').is_empty() {
                    return Err(invalid(input, "a vfs URL needs an absolute directory"));
                }
                let dir = PathBuf::from(path.trim_end_matches('/'));
                (TargetLocation::Vfs { dir }, String::new())
            }
            other => return Err(invalid(input, format!("unsupported scheme {other:?}"))),
        };
        let mut base = text.split(['?', '#']).next().unwrap_or("").to_owned();
        if !kept.is_empty() {
            let mut ser = url::form_urlencoded::Serializer::new(String::new());
            for (k, v) in &kept {
                ser.append_pair(k, v);
            }
            base = format!("{base}?{}", ser.finish());
        }
        Ok(Self {
            target: BackupTarget {
                url: base,
                location,
                root_prefix,
            },
            volume,
            backup,
        })
    }
}

/// Decodes `%XX` escapes (URL paths and user parts); invalid escapes stay as they are.
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s3_targets() {
        let t = BackupTarget::parse("s3://bucket@us-east-1/").unwrap();
        assert_eq!(
            t.location,
            TargetLocation::S3 {
                bucket: "bucket".into(),
                region: Some("us-east-1".into())
            }
        );
        assert_eq!(t.root_prefix, "");
        let t = BackupTarget::parse("s3://backupbucket@us-east-1/backupstore/").unwrap();
        assert_eq!(t.root_prefix, "backupstore");
        let t = BackupTarget::parse("s3://bucket/foo/bar/").unwrap();
        assert_eq!(
            t.location,
            TargetLocation::S3 {
                bucket: "bucket".into(),
                region: None
            }
        );
        assert_eq!(t.root_prefix, "foo/bar");
        let t = BackupTarget::parse("s3://my%40bucket@r/a%20b&c/").unwrap();
        assert_eq!(t.root_prefix, "a b&c");
        assert!(
            matches!(t.location, TargetLocation::S3 { ref bucket, .. } if bucket == "my@bucket")
        );
        assert_eq!(percent_decode("%4"), "%4");
        assert_eq!(percent_decode("a%2Fb%zz"), "a/b%zz");
        assert!(BackupTarget::parse("s3://bucket@us-east-1").is_err());
        assert!(BackupTarget::parse("s3://bucket@us-east-1/a/../b/").is_err());
    }

    #[test]
    fn vfs_targets() {
        let t = BackupTarget::parse("vfs:///var/lib/backups/").unwrap();
        assert_eq!(
            t.location,
            TargetLocation::Vfs {
                dir: PathBuf::from("/var/lib/backups")
            }
        );
        assert!(BackupTarget::parse("vfs://host/dir/").is_err());
        assert!(BackupTarget::parse("vfs:///").is_err());
        assert!(BackupTarget::parse("vfs:///a/../etc/").is_err());
        assert!(BackupTarget::parse("nfs://server:/x/").is_err());
    }

    #[test]
    fn backup_urls_round_trip() {
        let t = BackupTarget::parse("s3://bucket@us-east-1/").unwrap();
        let v = VolumeName::new("vol").unwrap();
        let b = BackupName::new("backup-23d15bfdecc141b9").unwrap();
        let url = t.backup_url(&v, Some(&b));
        assert_eq!(
            url,
            "s3://bucket@us-east-1/?backup=backup-23d15bfdecc141b9&volume=vol"
        );
        let p = BackupUrl::parse(&url).unwrap();
        assert_eq!(p.target, t);
        assert_eq!(p.volume, Some(v));
        assert_eq!(p.backup, Some(b));
        let p = BackupUrl::parse("s3://bucket@us-east-1/?backup=b1\\u0026volume=vol").unwrap();
        assert_eq!(p.backup.unwrap().as_str(), "b1");
        assert!(BackupUrl::parse("s3://bucket@r/?volume=../x").is_err());
        assert!(BackupUrl::parse("s3://bucket@r/?backup=b1").is_err());
    }
}
