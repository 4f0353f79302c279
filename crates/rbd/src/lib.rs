//! Safe wrapper of librbd.
//!
//! - Pool-level functions take an [`IoCtx`] (a pool): create, list, remove, rename images,
//!   clone, and group operations.
//! - [`Image`] is an open image (read-write, read-only, or at a snapshot): stat, resize,
//!   metadata, snapshots, children, flatten, [`Image::diff_iterate`], and asynchronous I/O
//!   whose completions are bridged to futures.
//!
//! Every `unsafe` block carries a `// SAFETY:` comment. C callbacks (AIO completions, diff
//! iteration) go through `extern "C"` trampolines that catch panics, so no unwinding ever
//! crosses into C.
//!
//! Management calls block the calling thread (librbd does them synchronously): call them from
//! `spawn_blocking` in async code. I/O calls submit at once and return `'static` futures.

// This crate wraps C: `unsafe` is allowed here, and only here and in `rados` (workspace lint).
#![allow(unsafe_code)]

mod aio;
mod clone;
mod config;
mod diff;
mod features;
mod group;
pub mod group_cleanup;
mod image;
mod options;
mod snap;
mod stuck;

pub use clone::{clone, CloneFormat, CloneOptions, LinkedImage};
pub use diff::DiffExtent;
pub use features::Features;
pub use group::{
    group_create, group_image_add, group_image_remove, group_remove, group_snap_create,
    group_snap_list, group_snap_remove, GroupSnap,
};
pub use image::{create, list, remove, rename, CreateOptions, Image, ImageInfo, OpenMode};
pub use rados::{Error, ErrorKind, IoCtx, Result};
pub use snap::SnapInfo;

/// The smallest object size (order 12, 4 KiB) librbd accepts.
pub const MIN_OBJECT_ORDER: u8 = 12;
/// The largest object size (order 25, 32 MiB) librbd accepts.
pub const MAX_OBJECT_ORDER: u8 = 25;
/// The default object size, 4 MiB (order 22), as the `rbd` command uses.
pub const DEFAULT_OBJECT_ORDER: u8 = 22;
