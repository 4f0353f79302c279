//! `volume.cfg` (Go struct `backupstore.Volume`).

use std::collections::BTreeMap;

use crate::codec::Compression;
use crate::error::Result;
use crate::gojson::{push_double_encoded, push_string_int, push_string_map, Fields, ObjectWriter};

/// The method assumed when `CompressionMethod` is empty or absent (files before Longhorn 1.5).
pub const LEGACY_COMPRESSION_METHOD: Compression = Compression::Gzip;
/// The data engine assumed when `DataEngine` is empty or absent.
pub const DEFAULT_DATA_ENGINE: &str = "v1";

/// `volume.cfg`. String fields hold the decoded values; serialization double-encodes the Go
/// `,string` ones.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VolumeConfig {
    /// Volume name.
    pub name: String,
    /// Volume size in bytes (the size at the latest backup).
    pub size: u64,
    /// The latest backup's labels; `None` is JSON `null`.
    pub labels: Option<BTreeMap<String, String>>,
    /// RFC 3339 time the backup volume was created.
    pub created_time: String,
    /// Name of the last completed backup, empty if none.
    pub last_backup_name: String,
    /// That backup's `SnapshotCreatedAt`.
    pub last_backup_at: String,
    /// Distinct stored blocks.
    pub block_count: u64,
    /// Backing image name (double-encoded on the wire).
    pub backing_image_name: String,
    /// Backing image checksum (double-encoded).
    pub backing_image_checksum: String,
    /// Compression method as stored, possibly empty (double-encoded); see
    /// [`VolumeConfig::compression`].
    pub compression_method: String,
    /// Storage class name (double-encoded).
    pub storage_class_name: String,
    /// `v1` or `v2`, possibly empty (double-encoded); see [`VolumeConfig::data_engine`].
    pub data_engine: String,
}

impl VolumeConfig {
    /// The effective compression method: empty means gzip (legacy files).
    pub fn compression(&self) -> Result<Compression> {
        if self.compression_method.is_empty() {
            Ok(LEGACY_COMPRESSION_METHOD)
        } else {
            Compression::parse(&self.compression_method)
        }
    }

    /// The effective data engine: empty means `v1`.
    pub fn data_engine(&self) -> &str {
        if self.data_engine.is_empty() {
            DEFAULT_DATA_ENGINE
        } else {
            &self.data_engine
        }
    }

    /// Exactly the bytes Go's `json.Marshal` writes for this volume.
    pub fn to_json(&self) -> String {
        let mut w = ObjectWriter::new();
        w.string("Name", &self.name);
        push_string_int(w.key("Size"), self.size);
        push_string_map(w.key("Labels"), &self.labels);
        w.string("CreatedTime", &self.created_time);
        w.string("LastBackupName", &self.last_backup_name);
        w.string("LastBackupAt", &self.last_backup_at);
        push_string_int(w.key("BlockCount"), self.block_count);
        push_double_encoded(w.key("BackingImageName"), &self.backing_image_name);
        push_double_encoded(w.key("BackingImageChecksum"), &self.backing_image_checksum);
        push_double_encoded(w.key("CompressionMethod"), &self.compression_method);
        push_double_encoded(w.key("StorageClassName"), &self.storage_class_name);
        push_double_encoded(w.key("DataEngine"), &self.data_engine);
        w.finish()
    }

    /// Parses `volume.cfg` as tolerantly as Longhorn (case-insensitive keys, unknown keys
    /// ignored, plain or double-encoded `,string` strings, string or bare integers).
    pub fn from_json(data: &[u8], path: &str) -> Result<Self> {
        let f = Fields::parse(data, path)?;
        let mut data_engine = f.double_encoded_string("DataEngine")?;
        if data_engine.is_empty() {
            // Renamed from BackendStoreDriver in Longhorn 1.6.
            data_engine = f.double_encoded_string("BackendStoreDriver")?;
        }
        let v = Self {
            name: f.string("Name")?,
            size: f.string_u64("Size")?,
            labels: f.string_map("Labels")?,
            created_time: f.string("CreatedTime")?,
            last_backup_name: f.string("LastBackupName")?,
            last_backup_at: f.string("LastBackupAt")?,
            block_count: f.string_u64("BlockCount")?,
            backing_image_name: f.double_encoded_string("BackingImageName")?,
            backing_image_checksum: f.double_encoded_string("BackingImageChecksum")?,
            compression_method: f.double_encoded_string("CompressionMethod")?,
            storage_class_name: f.double_encoded_string("StorageClassName")?,
            data_engine,
        };
        v.compression()
            .map_err(|e| crate::error::Error::InvalidConfig {
                path: path.to_owned(),
                field: "CompressionMethod",
                reason: e.to_string(),
            })?;
        Ok(v)
    }
}
