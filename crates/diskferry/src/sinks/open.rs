//! Opening an address as a sink, beside [`crate::sources::open_source`]: the one place that
//! looks at what kind of place a destination is. An `rbd:` address is an [`RbdSink`], an
//! object address (`s3://…` or a path) an [`ObjectSink`] on the address's store.

use rbd::{Image, OpenMode};

use super::{ObjectSink, ObjectSinkOptions, RbdSink, RbdSinkOptions};
use crate::{blocking, Address, Context, Error, ObjectFormat, RbdSpec, Result, Sink};

/// How [`open_sink`] writes a disk.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SinkOptions {
    /// An object's format, compression and upload; `force` replaces an existing object or
    /// image.
    pub object: ObjectSinkOptions,
    /// How an RBD image is created and written (its `replace` is `object.force`).
    pub rbd: RbdSinkOptions,
}

impl SinkOptions {
    /// The options for an object destination alone (an RBD image gets the defaults).
    pub fn object(object: ObjectSinkOptions) -> SinkOptions {
        SinkOptions {
            object,
            rbd: RbdSinkOptions::default(),
        }
    }
}

/// Refuses, before anything is created or read, a destination [`open_sink`] would refuse: an
/// existing image or object without `force` ([`Error::AlreadyExists`]), a missing bucket, an
/// RBD snapshot, an RBD image asked to hold anything but a raw disk, an address that is
/// neither an image nor an object.
///
/// The sink checks again when it is opened (an image or object may appear meanwhile).
pub async fn check_sink(ctx: &Context, destination: &Address, options: &SinkOptions) -> Result<()> {
    options.object.validate()?;
    match destination {
        Address::Rbd(spec) => {
            check_rbd_destination(destination, &options.object)?;
            if !options.object.force && rbd_image_exists(ctx, spec).await? {
                return Err(Error::AlreadyExists(destination.to_string()));
            }
            Ok(())
        }
        _ => check_object_destination(ctx, destination, options.object.force).await,
    }
}

/// Whether the RBD image `spec` names exists.
async fn rbd_image_exists(ctx: &Context, spec: &RbdSpec) -> Result<bool> {
    let ioctx = ctx.pool(&spec.pool).await?;
    let name = spec.image.clone();
    blocking(
        move || match Image::open(&ioctx, &name, OpenMode::ReadOnly) {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == rbd::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        },
    )
    .await
}

/// Refuses what an RBD image cannot be: a snapshot, or anything but a raw disk.
fn check_rbd_destination(destination: &Address, object: &ObjectSinkOptions) -> Result<()> {
    if object.format != ObjectFormat::Raw || object.compression.is_some() {
        return Err(Error::InvalidOption(format!(
            "{destination} is an RBD image, which holds a raw disk: write into it as raw \
             ({} with {} compression does not apply)",
            object.format,
            object.compression_name()
        )));
    }
    if let Address::Rbd(spec) = destination {
        if spec.snap.is_some() {
            return Err(Error::InvalidAddress {
                address: destination.to_string(),
                reason: "cannot write into a snapshot; name an image".into(),
            });
        }
    }
    Ok(())
}

/// Refuses an object destination that cannot be written: not an object address, an
/// existing object without `force` ([`Error::AlreadyExists`]), a missing bucket
/// ([`Error::NotFound`]). Nothing is created.
pub async fn check_object_destination(
    ctx: &Context,
    destination: &Address,
    force: bool,
) -> Result<()> {
    if let Address::File(path) = destination {
        check_plain_file(destination, path)?;
    }
    let (store, key) = ctx.store_for(destination).await?;
    match store.check_new(&key, force).await {
        Ok(()) => Ok(()),
        Err(objstore::Error::AlreadyExists { .. }) => {
            Err(Error::AlreadyExists(destination.to_string()))
        }
        Err(objstore::Error::NotFound { what }) => Err(Error::NotFound(what)),
        Err(e) => Err(e.into()),
    }
}

/// Refuses a local destination that exists and is not a plain file: the new output replaces
/// its name when it is complete, so `--force` would put a regular file in place of a device
/// node, a FIFO or a symbolic link (and write nothing to the device or the link's target).
fn check_plain_file(destination: &Address, path: &std::path::Path) -> Result<()> {
    let Ok(found) = path.symlink_metadata() else {
        return Ok(());
    };
    let kind = found.file_type();
    let what = if kind.is_symlink() {
        "a symbolic link; give the path of the file it points to"
    } else if kind.is_file() {
        return Ok(());
    } else if kind.is_dir() {
        "a directory"
    } else {
        "not a regular file (a device, FIFO or socket); diskferry writes files, objects and \
         RBD images, not devices"
    };
    Err(Error::InvalidAddress {
        address: destination.to_string(),
        reason: format!("it is {what}"),
    })
}

/// Opens `destination` as the sink of a disk of `size` bytes read from `source` (recorded
/// with the disk): an RBD image (raw, sparse, as `import` writes it) or an object (qcow2,
/// raw or raw.zst, as `export` writes it). Each sink refuses an existing image or object
/// itself (unless `force`); [`check_sink`] does so earlier, before the source is read.
pub async fn open_sink(
    ctx: &Context,
    destination: &Address,
    size: u64,
    source: &str,
    options: &SinkOptions,
) -> Result<Box<dyn Sink>> {
    Ok(match destination {
        Address::Rbd(spec) => {
            check_rbd_destination(destination, &options.object)?;
            let rbd = RbdSinkOptions {
                replace: options.object.force,
                ..options.rbd.clone()
            };
            Box::new(RbdSink::create(ctx, spec, size, rbd).await?)
        }
        _ => Box::new(ObjectSink::create(ctx, destination, size, source, &options.object).await?),
    })
}
