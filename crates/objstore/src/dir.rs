//! A local directory as an [`ObjectStore`]: keys are `/`-separated paths below it, objects
//! are files ([`LocalFile`] to read, [`LocalFileWriter`] to write), metadata are `user.KEY`
//! extended attributes.

use std::collections::HashMap;
use std::fs::File;
use std::io::{ErrorKind, Read};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;

use crate::error::{Error, Result};
use crate::local::{LocalFile, LocalFileWriter, TEMP_SUFFIX, WRITTEN_STAMP_KEY, XATTR_PREFIX};
use crate::read::{RangeRead, GET_MAX};
use crate::s3::{ListedObject, ObjectInfo, PutOptions};
use crate::store::{DirListing, ObjectStore, WriteOptions};
use crate::write::{ObjectWriter, WrittenObject};

/// Longest list of extended attribute names read from one file.
const XATTR_LIST_MAX: usize = 64 * 1024;
/// Longest metadata value read from one extended attribute.
const XATTR_VALUE_MAX: usize = 4096;

/// The files below one directory, as objects.
///
/// Key `a/b.qcow2` is the file `ROOT/a/b.qcow2`; the empty key is the root itself (so a path
/// with no file name, such as `..`, still names something to report errors about). Keys are
/// relative and never climb out of the root (`..` is refused). Temporary files of unfinished
/// writers ([`TEMP_SUFFIX`]) are not listed, as S3 lists no unfinished upload. Unlike S3, a
/// key cannot be both an object and the prefix of others (`a` and `a/b`): a file is not a
/// directory. Symbolic links below the root are refused (the root itself may be one): a key
/// can come from outside (a manifest, a listing of a store someone else writes to), and a
/// link planted in the directory would take the read or write out of it.
///
/// That check looks at the path before the operation opens it, so it stops links that are
/// there, not a process that writes to the directory *while* the key is used and swaps a
/// component for a link in between. Where that matters, open names with `O_NOFOLLOW` as
/// [`LocalFile::open_no_follow`] does (what `import-vm` does with a directory bundle's
/// plain file names); diskferry itself uses this store only through [`LocalDir::for_file`],
/// whose one key is a file the user named.
#[derive(Debug, Clone)]
pub struct LocalDir {
    root: PathBuf,
    /// Whether keys may pass through symbolic links: only for [`LocalDir::for_file`], whose
    /// one key is the file a user named, link or not.
    follow_links: bool,
}

impl LocalDir {
    /// The files below `root` (which need not exist yet).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            follow_links: false,
        }
    }

    /// The directory holding `path`, and `path`'s key in it (its file name; empty when the
    /// path has none, like `/` or `..`). The store's paths are then `path` itself, spelled
    /// as given: `disk.raw` stays `disk.raw`, `./disk.raw` stays `./disk.raw`.
    ///
    /// A path ending in `/` names a directory, never a file: [`Error::InvalidAddress`].
    pub fn for_file(path: &Path) -> Result<(Self, String)> {
        if path.as_os_str().len() > 1 && path.as_os_str().as_encoded_bytes().ends_with(b"/") {
            return Err(Error::InvalidAddress {
                input: path.display().to_string(),
                reason: "a path ending in '/' names a directory, not a file".into(),
            });
        }
        let Some(name) = path.file_name() else {
            return Ok((Self::new(path).following_links(), String::new()));
        };
        let name = name.to_str().ok_or_else(|| Error::InvalidAddress {
            input: path.display().to_string(),
            reason: "the file name is not valid UTF-8".into(),
        })?;
        let dir = path.parent().unwrap_or(Path::new("")).to_path_buf();
        Ok((Self::new(dir).following_links(), name.to_owned()))
    }

    /// The same store, letting keys pass through symbolic links (a path the user gave).
    fn following_links(mut self) -> Self {
        self.follow_links = true;
        self
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The path of `key`. Absolute keys, keys with `..` and (but for [`LocalDir::for_file`])
    /// keys through a symbolic link below the root are refused: they would leave the root.
    pub fn path(&self, key: &str) -> Result<PathBuf> {
        if key.is_empty() {
            return Ok(self.root.clone());
        }
        // NUL would end the path in the system call; refused before it gets there.
        if key.contains('\0') {
            return Err(Error::InvalidAddress {
                input: key.to_owned(),
                reason: format!("a key in {} holds a NUL byte", self.root.display()),
            });
        }
        let relative = Path::new(key);
        let escapes = relative
            .components()
            .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir));
        if escapes {
            return Err(Error::InvalidAddress {
                input: key.to_owned(),
                reason: format!(
                    "a key in {} must be a relative path without '..'",
                    self.root.display()
                ),
            });
        }
        if !self.follow_links {
            self.refuse_links(key, relative)?;
        }
        Ok(self.root.join(relative))
    }

    /// Refuses `key` if a directory or file on its way below the root is a symbolic link.
    /// The part that does not exist yet has none; a component that cannot be examined is
    /// left to the operation itself to report.
    fn refuse_links(&self, key: &str, relative: &Path) -> Result<()> {
        let mut path = self.root.clone();
        for component in relative.components() {
            path.push(component);
            match path.symlink_metadata() {
                Ok(meta) if meta.file_type().is_symlink() => {
                    return Err(Error::InvalidAddress {
                        input: key.to_owned(),
                        reason: format!(
                            "{} is a symbolic link: keys in {} do not follow links, so that \
                             no name from outside can lead out of it",
                            path.display(),
                            self.root.display()
                        ),
                    });
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
        Ok(())
    }

    /// Creates the directories between the root and the file of `key` (as S3 needs none for
    /// a key with `/`). The root itself is not created: a missing root fails as a missing
    /// directory does for any file. Directories stay when the write is aborted.
    async fn create_parents(&self, key: &str, path: &Path) -> Result<()> {
        let Some(parent) = path.parent().filter(|_| key.contains('/')) else {
            return Ok(());
        };
        let (root, parent) = (self.root.clone(), parent.to_path_buf());
        blocking(&parent.clone(), move || {
            let root = if root.as_os_str().is_empty() {
                Path::new(".")
            } else {
                &root
            };
            if !root.is_dir() {
                return Err(std::io::Error::new(
                    ErrorKind::NotFound,
                    format!("the directory {} does not exist", root.display()),
                ));
            }
            std::fs::create_dir_all(&parent)
        })
        .await
    }

    /// The directory a listing of `prefix` reads, and the start of the names in it.
    fn listing_start(&self, prefix: &str) -> Result<(PathBuf, String, String)> {
        let (dir, name) = match prefix.rfind('/') {
            Some(i) => (&prefix[..=i], &prefix[i + 1..]),
            None => ("", prefix),
        };
        let path = self.path(dir.trim_end_matches('/'))?;
        Ok((path, dir.to_owned(), name.to_owned()))
    }
}

/// Runs blocking file I/O off the async workers, naming `what` in errors.
async fn blocking<T, F>(what: &Path, f: F) -> Result<T>
where
    F: FnOnce() -> std::io::Result<T> + Send + 'static,
    T: Send + 'static,
{
    let what_text = what.display().to_string();
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::io(&what_text, std::io::Error::other(e)))?
        .map_err(|e| match e.kind() {
            ErrorKind::NotFound => Error::NotFound { what: what_text },
            _ => Error::io(&what_text, e),
        })
}

/// Whether a failed `stat` means "there is nothing", not "cannot tell".
fn is_absent(e: &std::io::Error) -> bool {
    e.kind() == ErrorKind::NotFound || e.kind() == ErrorKind::NotADirectory
}

/// The `user.*` extended attributes of `file`, without the prefix. A file system without
/// extended attributes has none.
fn user_xattrs(file: &File) -> HashMap<String, String> {
    let mut names = vec![0u8; XATTR_LIST_MAX];
    let Ok(len) = rustix::fs::flistxattr(file, &mut names) else {
        return HashMap::new();
    };
    names.truncate(len);
    names
        .split(|&b| b == 0)
        .filter_map(|name| std::str::from_utf8(name).ok())
        .filter_map(|name| name.strip_prefix(XATTR_PREFIX).map(|key| (name, key)))
        .filter(|(_, key)| *key != WRITTEN_STAMP_KEY)
        .filter_map(|(name, key)| {
            let mut value = vec![0u8; XATTR_VALUE_MAX];
            let len = rustix::fs::fgetxattr(file, name, &mut value).ok()?;
            value.truncate(len);
            Some((key.to_owned(), String::from_utf8(value).ok()?))
        })
        .collect()
}

/// The objects in `dir` whose names start with `start` (`key_dir` is their keys' directory
/// part); with `deep`, everything below the matching subdirectories too, else those as
/// prefixes.
fn list_entries(
    dir: &Path,
    key_dir: &str,
    start: &str,
    deep: bool,
    follow_links: bool,
    out: &mut DirListing,
) -> std::io::Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if is_absent(&e) => return Ok(()),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        if !name.starts_with(start) || name.ends_with(TEMP_SUFFIX) {
            continue;
        }
        let key = format!("{key_dir}{name}");
        let file_type = entry.file_type()?;
        // A link is no object of a store that refuses them (its key could not be read).
        if file_type.is_symlink() && !follow_links {
            continue;
        }
        // A symbolic link to a directory is not followed: a listing cannot loop.
        if file_type.is_dir() {
            if deep {
                list_entries(
                    &entry.path(),
                    &format!("{key}/"),
                    "",
                    true,
                    follow_links,
                    out,
                )?;
            } else {
                out.prefixes.push(format!("{key}/"));
            }
            continue;
        }
        match std::fs::metadata(entry.path()) {
            Ok(meta) if meta.is_file() => out.objects.push(ListedObject {
                key,
                size: meta.len(),
                etag: None,
            }),
            // A dangling link or a special file is no object.
            Ok(_) => {}
            Err(e) if is_absent(&e) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[async_trait]
impl ObjectStore for LocalDir {
    fn describe(&self, key: &str) -> String {
        match self.path(key) {
            Ok(path) => path.display().to_string(),
            Err(_) => format!("{} in {}", key, self.root.display()),
        }
    }

    async fn head(&self, key: &str) -> Result<ObjectInfo> {
        let path = self.path(key)?;
        blocking(&path.clone(), move || {
            let file = File::open(&path)?;
            let meta = file.metadata()?;
            if meta.is_dir() {
                return Err(std::io::Error::other("is a directory"));
            }
            Ok(ObjectInfo {
                size: meta.len(),
                etag: None,
                content_type: None,
                metadata: user_xattrs(&file),
                modified: meta.modified().ok(),
            })
        })
        .await
    }

    async fn exists(&self, key: &str) -> Result<bool> {
        let path = self.path(key)?;
        blocking(&path.clone(), move || match path.symlink_metadata() {
            Ok(_) => Ok(true),
            Err(e) if is_absent(&e) => Ok(false),
            Err(e) => Err(e),
        })
        .await
    }

    async fn check_new(&self, key: &str, overwrite: bool) -> Result<()> {
        if !overwrite && self.exists(key).await? {
            return Err(Error::AlreadyExists {
                what: self.describe(key),
            });
        }
        Ok(())
    }

    async fn open(&self, key: &str) -> Result<Arc<dyn RangeRead>> {
        Ok(Arc::new(LocalFile::open(self.path(key)?).await?))
    }

    async fn get(&self, key: &str) -> Result<Bytes> {
        let path = self.path(key)?;
        let what = path.display().to_string();
        // Ok(Err(size)): too large, known from its size before reading, or (a file that
        // grows meanwhile) from reading one byte past the limit.
        let read = blocking(&path.clone(), move || {
            let file = std::fs::File::open(&path)?;
            let size = file.metadata()?.len();
            if size > GET_MAX {
                return Ok(Err(size));
            }
            let mut out = Vec::new();
            file.take(GET_MAX + 1).read_to_end(&mut out)?;
            let len = out.len() as u64;
            Ok(if len > GET_MAX { Err(len) } else { Ok(out) })
        })
        .await?;
        let bytes = read.map_err(|size| Error::TooLarge {
            what,
            size,
            max: GET_MAX,
        })?;
        Ok(Bytes::from(bytes))
    }

    async fn put(&self, key: &str, data: Bytes, options: &PutOptions) -> Result<WrittenObject> {
        let options = WriteOptions {
            put: options.clone(),
            ..WriteOptions::default()
        };
        let mut writer = self.writer(key, options).await?;
        if let Err(e) = writer.write_at(0, data).await {
            // The write error is the one to report; the temporary file goes with the writer.
            let _ = writer.abort().await;
            return Err(e);
        }
        writer.finish().await
    }

    async fn delete(&self, key: &str) -> Result<()> {
        let path = self.path(key)?;
        blocking(&path.clone(), move || match std::fs::remove_file(&path) {
            Err(e) if is_absent(&e) => Ok(()),
            other => other,
        })
        .await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ListedObject>> {
        let (dir, key_dir, start) = self.listing_start(prefix)?;
        let follow = self.follow_links;
        let listing = blocking(&dir.clone(), move || {
            let mut out = DirListing::default();
            list_entries(&dir, &key_dir, &start, true, follow, &mut out)?;
            Ok(out)
        })
        .await?;
        Ok(listing.objects)
    }

    async fn list_dir(&self, prefix: &str) -> Result<DirListing> {
        let (dir, key_dir, start) = self.listing_start(prefix)?;
        let follow = self.follow_links;
        blocking(&dir.clone(), move || {
            let mut out = DirListing::default();
            list_entries(&dir, &key_dir, &start, false, follow, &mut out)?;
            Ok(out)
        })
        .await
    }

    async fn writer(&self, key: &str, options: WriteOptions) -> Result<Box<dyn ObjectWriter>> {
        let path = self.path(key)?;
        self.create_parents(key, &path).await?;
        let mut writer = LocalFileWriter::create(path, options.put.overwrite).await?;
        writer.set_sync(options.sync);
        if let Some(size) = options.sparse_size {
            writer.set_sparse_size(size);
        }
        for (key, value) in &options.put.metadata {
            writer.set_metadata(key, value);
        }
        Ok(Box::new(writer))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_is_its_directory_and_its_name() {
        for (path, root, key) in [
            ("disk.raw", "", "disk.raw"),
            ("./disk.raw", ".", "disk.raw"),
            ("/srv/vm/disk.raw", "/srv/vm", "disk.raw"),
            ("/", "/", ""),
        ] {
            let (dir, name) = LocalDir::for_file(Path::new(path)).unwrap();
            assert_eq!(
                (dir.root(), name.as_str()),
                (Path::new(root), key),
                "{path}"
            );
            assert_eq!(dir.describe(&name), path, "{path}");
        }
    }

    #[test]
    fn a_path_ending_in_a_slash_is_no_file() {
        let err = LocalDir::for_file(Path::new("out/"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("out/") && err.contains("directory"), "{err}");
    }

    #[test]
    fn keys_stay_below_the_root() {
        let dir = LocalDir::new("/srv/bundles");
        assert_eq!(
            dir.path("vm/os.qcow2").unwrap(),
            Path::new("/srv/bundles/vm/os.qcow2")
        );
        for key in ["../etc/passwd", "/etc/passwd", "vm/../../x"] {
            let err = dir.path(key).unwrap_err().to_string();
            assert!(err.contains(key) && err.contains("'..'"), "{key}: {err}");
        }
        let err = dir.path("vm/os\0.qcow2").unwrap_err().to_string();
        assert!(
            err.contains(r"vm/os\0.qcow2") && err.contains("NUL"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn get_refuses_an_object_over_the_limit_without_reading_it() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = LocalDir::new(tmp.path());
        // Sparse: no disk space, and a read of it would take seconds, not microseconds.
        let file = std::fs::File::create(tmp.path().join("huge.cfg")).unwrap();
        file.set_len(GET_MAX + 1).unwrap();
        std::fs::write(tmp.path().join("small.cfg"), b"{}").unwrap();
        let err = dir.get("huge.cfg").await.unwrap_err();
        assert!(
            matches!(err, Error::TooLarge { size, max: GET_MAX, .. } if size == GET_MAX + 1),
            "{err}"
        );
        assert!(err.to_string().contains("huge.cfg"), "{err}");
        assert_eq!(&dir.get("small.cfg").await.unwrap()[..], b"{}");
    }

    /// A store someone else can write to (a bundle directory, a Longhorn vfs store): a link
    /// planted in it, to a directory or to a file outside, is refused for reading, writing and
    /// removing, and not listed; the root may itself be a link.
    #[tokio::test]
    async fn keys_do_not_follow_links_out_of_the_root() {
        let tmp = tempfile::tempdir().unwrap();
        let outside = tmp.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        std::fs::write(outside.join("secret"), b"not yours").unwrap();
        let real_root = tmp.path().join("store");
        std::fs::create_dir_all(real_root.join("vm")).unwrap();
        std::fs::write(real_root.join("vm/os.qcow2"), b"disk").unwrap();
        std::os::unix::fs::symlink(&outside, real_root.join("vm/escape")).unwrap();
        std::os::unix::fs::symlink(outside.join("secret"), real_root.join("vm/data.qcow2"))
            .unwrap();
        let root = tmp.path().join("store-link");
        std::os::unix::fs::symlink(&real_root, &root).unwrap();
        let dir = LocalDir::new(&root);

        assert_eq!(&dir.get("vm/os.qcow2").await.unwrap()[..], b"disk");
        for key in ["vm/data.qcow2", "vm/escape/secret"] {
            let err = dir.get(key).await.unwrap_err().to_string();
            assert!(err.contains("symbolic link"), "{key}: {err}");
            assert!(dir.head(key).await.is_err(), "{key}");
            assert!(dir.open(key).await.is_err(), "{key}");
            assert!(dir.delete(key).await.is_err(), "{key}");
        }
        let err = dir
            .put(
                "vm/escape/planted",
                Bytes::from_static(b"x"),
                &PutOptions::default(),
            )
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("symbolic link"), "{err}");
        assert!(!outside.join("planted").exists());
        assert_eq!(std::fs::read(outside.join("secret")).unwrap(), b"not yours");
        let keys: Vec<String> = dir
            .list("")
            .await
            .unwrap()
            .into_iter()
            .map(|o| o.key)
            .collect();
        assert_eq!(keys, ["vm/os.qcow2"]);
    }

    /// A file the user names is theirs to give as a link, as for qemu-img.
    #[tokio::test]
    async fn a_file_named_by_the_user_may_be_a_link() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("disk.raw"), b"disk").unwrap();
        let link = tmp.path().join("link.raw");
        std::os::unix::fs::symlink(tmp.path().join("disk.raw"), &link).unwrap();
        let (dir, key) = LocalDir::for_file(&link).unwrap();
        assert_eq!(&dir.get(&key).await.unwrap()[..], b"disk");
    }
}
