//! `backup_<name>.cfg` (Go struct `backupstore.Backup`).

use std::collections::BTreeMap;

use crate::codec::Compression;
use crate::error::{Error, Result};
use crate::gojson::{
    kind, push_string, push_string_int, push_string_map, value_u64, Fields, ObjectWriter,
};
use crate::paths::is_checksum;

use super::block_size::parse_block_size;

/// Parameter key of the backup mode (`full` or `incremental`).
pub const PARAM_BACKUP_MODE: &str = "backup-mode";
/// Parameter key of the block size.
pub const PARAM_BACKUP_BLOCK_SIZE: &str = "backup-block-size";

/// `Parameters["backup-mode"]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BackupMode {
    /// Reuse blocks that already exist in the volume (Longhorn's default).
    #[default]
    Incremental,
    /// Re-upload every block even if it exists (repairs corrupted blocks).
    Full,
}

impl BackupMode {
    /// The parameter value.
    pub fn as_str(self) -> &'static str {
        match self {
            BackupMode::Incremental => "incremental",
            BackupMode::Full => "full",
        }
    }
}

/// One entry of a backup's block list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockMapping {
    /// Volume offset in bytes (a multiple of the block size).
    pub offset: u64,
    /// The block's checksum, i.e. its file name.
    pub checksum: String,
}

/// `backup_<name>.cfg`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BackupConfig {
    /// Backup name.
    pub name: String,
    /// Volume name.
    pub volume_name: String,
    /// Longhorn snapshot name the backup was taken from.
    pub snapshot_name: String,
    /// RFC 3339; orders backups when the last one is deleted.
    pub snapshot_created_at: String,
    /// RFC 3339 completion time; empty while the backup is in progress.
    pub created_time: String,
    /// `len(Blocks) * blockSize`.
    pub size: u64,
    /// Labels; `None` is `null`.
    pub labels: Option<BTreeMap<String, String>>,
    /// Parameters (`backup-mode`, `backup-block-size`); `None` is `null`.
    pub parameters: Option<BTreeMap<String, String>>,
    /// Whether a previous backup's block list was merged in.
    pub is_incremental: bool,
    /// Compression method as stored (plain string), possibly empty; see
    /// [`BackupConfig::compression`].
    pub compression_method: String,
    /// Compressed bytes newly uploaded.
    pub newly_uploaded_data_size: u64,
    /// Compressed bytes re-uploaded in full mode.
    pub re_uploaded_data_size: u64,
    /// `ProcessingBlocks` is `{}` (true) or `null` (false): `{}` for a full final cfg.
    pub processing_blocks_present: bool,
    /// The complete block list, sorted by offset.
    pub blocks: Vec<BlockMapping>,
    /// `SingleFile.FilePath` (legacy, normally empty).
    pub single_file_path: String,
}

impl BackupConfig {
    /// Whether the backup is still being written.
    pub fn in_progress(&self) -> bool {
        self.created_time.is_empty()
    }

    /// The effective compression: empty means gzip.
    pub fn compression(&self) -> Result<Compression> {
        if self.compression_method.is_empty() {
            Ok(Compression::Gzip)
        } else {
            Compression::parse(&self.compression_method)
        }
    }

    /// The block size from `Parameters["backup-block-size"]` (2 MiB when absent).
    pub fn block_size(&self) -> Result<u64> {
        parse_block_size(
            self.parameters
                .as_ref()
                .and_then(|p| p.get(PARAM_BACKUP_BLOCK_SIZE))
                .map(String::as_str),
        )
    }

    /// Exactly the bytes Go's `json.Marshal` writes.
    pub fn to_json(&self) -> String {
        let mut w = ObjectWriter::new();
        w.string("Name", &self.name);
        w.string("VolumeName", &self.volume_name);
        w.string("SnapshotName", &self.snapshot_name);
        w.string("SnapshotCreatedAt", &self.snapshot_created_at);
        w.string("CreatedTime", &self.created_time);
        push_string_int(w.key("Size"), self.size);
        push_string_map(w.key("Labels"), &self.labels);
        push_string_map(w.key("Parameters"), &self.parameters);
        w.key("IsIncremental")
            .push_str(if self.is_incremental { "true" } else { "false" });
        w.string("CompressionMethod", &self.compression_method);
        push_string_int(
            w.key("NewlyUploadedDataSize"),
            self.newly_uploaded_data_size,
        );
        push_string_int(w.key("ReUploadedDataSize"), self.re_uploaded_data_size);
        w.key("ProcessingBlocks")
            .push_str(if self.processing_blocks_present {
                "{}"
            } else {
                "null"
            });
        if !self.blocks.is_empty() {
            let out = w.key("Blocks");
            out.push('[');
            for (i, b) in self.blocks.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str("{\"Offset\":");
                out.push_str(&b.offset.to_string());
                out.push_str(",\"BlockChecksum\":");
                push_string(out, &b.checksum, true);
                out.push('}');
            }
            out.push(']');
        }
        let sf = w.key("SingleFile");
        sf.push_str("{\"FilePath\":");
        push_string(sf, &self.single_file_path, true);
        sf.push('}');
        w.finish()
    }

    /// Parses a backup cfg tolerantly and validates it: known compression, parsable block
    /// size, checksums of 64 lowercase hex, offsets aligned, strictly ascending.
    pub fn from_json(data: &[u8], path: &str) -> Result<Self> {
        let f = Fields::parse(data, path)?;
        let blocks = parse_blocks(&f)?;
        let single_file_path = match f.get("SingleFile") {
            Some(serde_json::Value::Object(o)) => {
                Fields::from_object(o, path).string("FilePath")?
            }
            _ => String::new(),
        };
        let b = Self {
            name: f.string("Name")?,
            volume_name: f.string("VolumeName")?,
            snapshot_name: f.string("SnapshotName")?,
            snapshot_created_at: f.string("SnapshotCreatedAt")?,
            created_time: f.string("CreatedTime")?,
            size: f.string_u64("Size")?,
            labels: f.string_map("Labels")?,
            parameters: f.string_map("Parameters")?,
            is_incremental: f.boolean("IsIncremental")?,
            compression_method: f.string("CompressionMethod")?,
            newly_uploaded_data_size: f.string_u64("NewlyUploadedDataSize")?,
            re_uploaded_data_size: f.string_u64("ReUploadedDataSize")?,
            processing_blocks_present: f.is_object("ProcessingBlocks"),
            blocks,
            single_file_path,
        };
        b.validate(path)?;
        Ok(b)
    }

    fn validate(&self, path: &str) -> Result<()> {
        let bad = |field, reason: String| Error::InvalidConfig {
            path: path.to_owned(),
            field,
            reason,
        };
        self.compression()
            .map_err(|e| bad("CompressionMethod", e.to_string()))?;
        let bs = self
            .block_size()
            .map_err(|e| bad("Parameters", e.to_string()))?;
        let mut prev: Option<u64> = None;
        for (i, b) in self.blocks.iter().enumerate() {
            if !is_checksum(&b.checksum) {
                return Err(bad(
                    "Blocks",
                    format!(
                        "block {i}: checksum {:?} is not 64 lowercase hex",
                        b.checksum
                    ),
                ));
            }
            if b.offset % bs != 0 {
                return Err(bad(
                    "Blocks",
                    format!(
                        "block {i}: offset {} is not a multiple of the block size {bs}",
                        b.offset
                    ),
                ));
            }
            if let Some(p) = prev {
                if b.offset <= p {
                    return Err(bad(
                        "Blocks",
                        format!(
                            "block {i}: offset {} after {p}: the list is not sorted by unique offsets",
                            b.offset
                        ),
                    ));
                }
            }
            prev = Some(b.offset);
        }
        Ok(())
    }

    /// Checks that every block lies inside a volume of `volume_size` bytes.
    pub fn check_within(&self, volume_size: u64, path: &str) -> Result<()> {
        let bs = self.block_size()?;
        if let Some(b) = self
            .blocks
            .iter()
            .find(|b| b.offset.saturating_add(bs) > volume_size)
        {
            return Err(Error::InvalidConfig {
                path: path.to_owned(),
                field: "Blocks",
                reason: format!(
                    "block {} at offset {} ends beyond the volume size {volume_size}",
                    b.checksum, b.offset
                ),
            });
        }
        Ok(())
    }
}

fn parse_blocks(f: &Fields) -> Result<Vec<BlockMapping>> {
    let bad = |reason: String| Error::InvalidConfig {
        path: f.path().to_owned(),
        field: "Blocks",
        reason,
    };
    match f.get("Blocks") {
        None | Some(serde_json::Value::Null) => Ok(Vec::new()),
        Some(serde_json::Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, item)| {
                let serde_json::Value::Object(o) = item else {
                    return Err(bad(format!("block {i} is {}, not an object", kind(item))));
                };
                let bf = Fields::from_object(o, f.path());
                let offset = match bf.get("Offset") {
                    None | Some(serde_json::Value::Null) => 0,
                    Some(v) => value_u64(v).map_err(|r| bad(format!("block {i}: Offset: {r}")))?,
                };
                let checksum = bf
                    .string("BlockChecksum")
                    .map_err(|e| bad(format!("block {i}: {e}")))?;
                Ok(BlockMapping { offset, checksum })
            })
            .collect(),
        Some(v) => Err(bad(format!("expected an array, found {}", kind(v)))),
    }
}
