//! Backup: a writer that takes `(offset, block)` pairs, skips zero blocks, dedups against
//! blocks the volume already stores, compresses and uploads new ones in parallel with a
//! bounded number of blocks in memory, then writes the final cfg and `volume.cfg`.
//!
//! Order of writes, as Longhorn does it: lock; `volume.cfg` if the volume is new; the
//! in-progress backup cfg (`CreatedTime == ""`); blocks; the final backup cfg; `volume.cfg`;
//! unlock.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;

use super::{BackupStore, Pool};
use crate::cfg::{
    BackupConfig, BackupMode, BlockSize, LockType, VolumeConfig, DEFAULT_BLOCK_SIZE,
    PARAM_BACKUP_BLOCK_SIZE, PARAM_BACKUP_MODE,
};
use crate::codec::{checksum_hex, is_zero, BlockEncoder, Compression};
use crate::error::{Error, Result};
use crate::lock::{PendingLock, VolumeLock};
use crate::names::{BackupName, VolumeName};
use crate::paths::{backup_cfg_path, block_path};
use crate::timefmt::now_rfc3339;

/// Blocks held in memory at once by default (each also has its compressed copy in flight).
pub const DEFAULT_MAX_IN_FLIGHT_BLOCKS: usize = 8;

/// What to do when the requested compression differs from the volume's sticky method.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CompressionPolicy {
    /// Use the volume's method, as Longhorn's `CreateDeltaBlockBackup` does.
    #[default]
    AdoptVolume,
    /// Refuse the backup.
    RequireMatch,
}

/// Which earlier block list the new backup starts from.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum MergeWith {
    /// None: the backup holds exactly the blocks given (a full scan).
    #[default]
    Nothing,
    /// `volume.cfg`'s `LastBackupName` (an error if the volume has none).
    LastBackup,
    /// A named completed backup of the same volume.
    Backup(BackupName),
}

/// Where the writer learns which blocks the volume already stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DedupSource {
    /// List `blocks/` once (one walk of the two shard levels): finds every stored block.
    #[default]
    ListStore,
    /// Trust the merged backup's block list (or the volume's last backup's, without a merge):
    /// no listing, at the price of re-uploading blocks only older backups reference.
    LastBackup,
}

/// Settings of one backup.
#[derive(Debug, Clone)]
pub struct BackupOptions {
    /// Backup volume name.
    pub volume: VolumeName,
    /// Backup name (refused if it already exists).
    pub backup: BackupName,
    /// Snapshot name recorded in the cfg (Longhorn's next incremental backup compares it).
    pub snapshot_name: String,
    /// `SnapshotCreatedAt`; `None` means now.
    pub snapshot_created_at: Option<String>,
    /// Volume size in bytes: a multiple of the block size.
    pub volume_size: u64,
    /// Block size.
    pub block_size: BlockSize,
    /// Requested compression (see `compression_policy`).
    pub compression: Compression,
    /// How to treat a volume whose method differs.
    pub compression_policy: CompressionPolicy,
    /// `incremental` reuses stored blocks; `full` re-uploads them.
    pub mode: BackupMode,
    /// The block list to start from; blocks given to the writer replace its entries.
    pub merge: MergeWith,
    /// Backup labels (also become the volume's labels).
    pub labels: Option<BTreeMap<String, String>>,
    /// Backing image name for `volume.cfg`.
    pub backing_image_name: String,
    /// Backing image checksum for `volume.cfg`.
    pub backing_image_checksum: String,
    /// Storage class name for `volume.cfg`.
    pub storage_class_name: String,
    /// `v1` or `v2`.
    pub data_engine: String,
    /// Blocks accepted but not yet uploaded, at most. Memory is about this many times
    /// (block + compressed copy + one codec scratch of up to 4.4 MiB), whatever the disk size:
    /// ≈ 50 MiB for the default 8 × 2 MiB; consider fewer for 16 MiB blocks.
    pub max_in_flight_blocks: usize,
    /// How stored blocks are found for dedup.
    pub dedup: DedupSource,
    /// Who writes the backup (`HOST PID`), recorded with the lock's name in the in-progress
    /// cfg's labels ([`WRITER_LABEL`], [`LOCK_LABEL`]) so that, if the writer is killed, a
    /// later run can prove the stub and the lock abandoned ([`BackupStore::leftovers`]).
    /// `None` records nothing: such a stub is never taken for a leftover.
    pub writer: Option<String>,
}

/// In-progress cfg label: `HOST PID` of the process writing the backup (Longhorn reads no
/// labels of an in-progress cfg, and the final cfg does not carry it).
pub const WRITER_LABEL: &str = "diskferry.io/writer";
/// In-progress cfg label: the name of the lock the writer holds.
pub const LOCK_LABEL: &str = "diskferry.io/lock";

impl BackupOptions {
    /// Defaults: 2 MiB lz4 blocks, incremental mode, no merge, engine `v1`.
    pub fn new(volume: VolumeName, backup: BackupName, volume_size: u64) -> Self {
        Self {
            volume,
            snapshot_name: backup.to_string(),
            backup,
            snapshot_created_at: None,
            volume_size,
            block_size: BlockSize::default(),
            compression: Compression::default(),
            compression_policy: CompressionPolicy::default(),
            mode: BackupMode::default(),
            merge: MergeWith::default(),
            labels: None,
            backing_image_name: String::new(),
            backing_image_checksum: String::new(),
            storage_class_name: String::new(),
            data_engine: crate::cfg::DEFAULT_DATA_ENGINE.to_owned(),
            max_in_flight_blocks: DEFAULT_MAX_IN_FLIGHT_BLOCKS,
            dedup: DedupSource::default(),
            writer: None,
        }
    }
}

/// Counters of one backup.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BackupStats {
    /// Blocks given to the writer (zero ones included).
    pub blocks_in: u64,
    /// All-zero blocks skipped.
    pub zero_blocks: u64,
    /// Blocks uploaded that the volume did not store before.
    pub new_blocks: u64,
    /// Blocks re-uploaded in full mode although stored.
    pub reuploaded_blocks: u64,
    /// Blocks not uploaded because the volume (or this backup) already stores them.
    pub reused_blocks: u64,
    /// Blocks of the merged backup's list kept as they were.
    pub kept_from_previous: u64,
    /// Compressed bytes of new blocks (`NewlyUploadedDataSize`).
    pub bytes_uploaded: u64,
    /// Compressed bytes re-uploaded (`ReUploadedDataSize`).
    pub bytes_reuploaded: u64,
    /// Blocks in the final block list.
    pub blocks_total: u64,
    /// `volume.cfg`'s `Size` after the backup: the backup's volume size, or the size recorded
    /// before when that was larger (see [`BackupWriter::finish`]).
    pub volume_size: u64,
}

#[derive(Debug, Default)]
struct Dedup {
    stored: HashSet<String>,
    claimed: HashSet<String>,
}

#[derive(Debug)]
struct Shared {
    dedup: Mutex<Dedup>,
    encoders: Pool<BlockEncoder>,
    mode: BackupMode,
}

/// What happened to one block.
#[derive(Debug)]
enum Outcome {
    Zero,
    Reused(String),
    Uploaded {
        checksum: String,
        bytes: u64,
        was_stored: bool,
    },
}

/// An open backup. Feed it blocks, then [`BackupWriter::finish`] (or [`BackupWriter::abort`]).
#[derive(Debug)]
pub struct BackupWriter {
    store: BackupStore,
    opts: BackupOptions,
    block_size: u64,
    compression: Compression,
    lock: Option<VolumeLock>,
    base: BTreeMap<u64, String>,
    merged: bool,
    shared: Arc<Shared>,
    permits: Arc<Semaphore>,
    tasks: JoinSet<Result<(u64, Outcome)>>,
    results: BTreeMap<u64, Option<String>>,
    submitted: HashSet<u64>,
    stats: BackupStats,
}

fn bad_block(offset: u64, reason: impl Into<String>) -> Error {
    Error::BadBlock {
        offset,
        reason: reason.into(),
    }
}

/// Refuses a volume size that is not a positive multiple of the block size.
fn check_size(opts: &BackupOptions) -> Result<()> {
    let block_size = opts.block_size.bytes();
    if opts.volume_size == 0 || !opts.volume_size.is_multiple_of(block_size) {
        return Err(Error::Refused {
            volume: opts.volume.to_string(),
            reason: format!(
                "volume size {} is not a positive multiple of the block size {block_size} \
                 (see BlockSize::round_up)",
                opts.volume_size
            ),
        });
    }
    Ok(())
}

/// What [`BackupStore::plan_backup`] found: the backup can go ahead with these settings.
#[derive(Debug)]
struct BackupPlan {
    /// `volume.cfg`, `None` for a new volume.
    volume_cfg: Option<VolumeConfig>,
    /// The compression the backup uses (the volume's sticky method).
    compression: Compression,
    /// The backup whose block list is merged in.
    previous: Option<BackupName>,
    /// Its block list, by offset.
    base: BTreeMap<u64, String>,
}

impl BackupStore {
    /// Starts a backup: takes the backup lock (refused while a deletion holds one), creates
    /// `volume.cfg` for a new volume, settles the compression, loads the block list to merge
    /// with, lists stored blocks for dedup and writes the in-progress cfg. A request that is
    /// wrong in itself (a size that is not a block multiple, a name taken, a merge base that
    /// is missing or incompatible, a compression mismatch under
    /// [`CompressionPolicy::RequireMatch`]) is refused before the lock.
    pub async fn begin_backup(&self, opts: BackupOptions) -> Result<BackupWriter> {
        check_size(&opts)?;
        let planned = &opts;
        let (plan, lock) = self
            .checked_lock(&opts.volume, Some(LockType::BackupOrRestore), move || {
                self.plan_backup(planned)
            })
            .await?;
        let lock_name = lock.as_ref().map(|l| l.name().to_owned());
        match self.prepare_backup(opts, plan, lock_name).await {
            Ok(mut w) => {
                w.lock = lock;
                Ok(w)
            }
            Err(e) => {
                if let Some(l) = lock {
                    let _ = l.release().await;
                }
                Err(e)
            }
        }
    }

    /// [`BackupStore::begin_backup`] under a lock started earlier ([`BackupStore::start_lock`]
    /// of [`LockType::BackupOrRestore`] on the volume), so that the protocol's wait has passed
    /// while the caller prepared its source. The request is checked while the lock is still
    /// being taken (a refusal gives the lock up at once) and again under it; the lock is
    /// released on every failure.
    pub async fn begin_backup_with_lock(
        &self,
        opts: BackupOptions,
        lock: PendingLock,
    ) -> Result<BackupWriter> {
        if let Err(e) = check_size(&opts) {
            lock.abandon().await;
            return Err(e);
        }
        if let Err(e) = self.plan_backup(&opts).await {
            lock.abandon().await;
            return Err(e);
        }
        let lock = lock.wait().await?;
        // Again under the lock: a deletion may have run meanwhile.
        let plan = match self.plan_backup(&opts).await {
            Ok(plan) => plan,
            Err(e) => {
                let _ = lock.release().await;
                return Err(e);
            }
        };
        let lock_name = lock.name().to_owned();
        match self.prepare_backup(opts, plan, Some(lock_name)).await {
            Ok(mut w) => {
                w.lock = Some(lock);
                Ok(w)
            }
            Err(e) => {
                let _ = lock.release().await;
                Err(e)
            }
        }
    }

    /// Checks a backup request against the store, reading only (its reads at once).
    async fn plan_backup(&self, opts: &BackupOptions) -> Result<BackupPlan> {
        let volume = &opts.volume;
        let refuse = |reason: String| Error::Refused {
            volume: volume.to_string(),
            reason,
        };
        let block_size = opts.block_size.bytes();
        let named_base = async {
            match &opts.merge {
                MergeWith::Backup(b) => self.inspect_backup(volume, b).await.map(Some),
                _ => Ok::<_, Error>(None),
            }
        };
        let taken = async {
            Ok::<_, Error>(
                self.driver
                    .exists(&backup_cfg_path(volume, &opts.backup))
                    .await?,
            )
        };
        let (taken, volume_cfg, named_base) =
            tokio::try_join!(taken, self.load_volume(volume), named_base,)?;
        if taken {
            return Err(refuse(format!("backup {} already exists", opts.backup)));
        }
        let compression = match &volume_cfg {
            Some(vol) => {
                let sticky = vol.compression()?;
                if sticky != opts.compression
                    && opts.compression_policy == CompressionPolicy::RequireMatch
                {
                    return Err(Error::CompressionMismatch {
                        volume: volume.to_string(),
                        volume_method: sticky.to_string(),
                        requested: opts.compression.to_string(),
                    });
                }
                sticky
            }
            None => opts.compression,
        };
        let previous = match &opts.merge {
            MergeWith::Nothing => None,
            MergeWith::LastBackup => match &volume_cfg {
                Some(vol) if !vol.last_backup_name.is_empty() => {
                    Some(BackupName::new(vol.last_backup_name.clone())?)
                }
                _ => {
                    return Err(refuse(
                        "merge with the last backup requested, but the volume has none".into(),
                    ))
                }
            },
            MergeWith::Backup(b) => Some(b.clone()),
        };
        let mut base = BTreeMap::new();
        if let Some(prev) = &previous {
            let cfg = match named_base {
                Some(cfg) => cfg,
                None => self.inspect_backup(volume, prev).await?,
            };
            let prev_bs = cfg.block_size()?;
            if prev_bs != block_size {
                return Err(refuse(format!(
                    "backup {prev} has block size {prev_bs}, this backup {block_size}: they cannot be merged"
                )));
            }
            cfg.check_within(opts.volume_size, &backup_cfg_path(volume, prev))?;
            base = cfg
                .blocks
                .into_iter()
                .map(|b| (b.offset, b.checksum))
                .collect();
        }
        Ok(BackupPlan {
            volume_cfg,
            compression,
            previous,
            base,
        })
    }

    /// Acts on a checked plan under the lock: creates `volume.cfg` for a new volume, learns
    /// the stored blocks and writes the in-progress cfg.
    async fn prepare_backup(
        &self,
        opts: BackupOptions,
        plan: BackupPlan,
        lock_name: Option<String>,
    ) -> Result<BackupWriter> {
        let volume = opts.volume.clone();
        let BackupPlan {
            volume_cfg,
            compression,
            previous,
            base,
        } = plan;
        let block_size = opts.block_size.bytes();
        let new_volume_cfg = volume_cfg.is_none().then(|| VolumeConfig {
            name: volume.to_string(),
            size: opts.volume_size,
            labels: opts.labels.clone(),
            created_time: now_rfc3339(),
            backing_image_name: opts.backing_image_name.clone(),
            backing_image_checksum: opts.backing_image_checksum.clone(),
            compression_method: compression.as_str().to_owned(),
            storage_class_name: opts.storage_class_name.clone(),
            data_engine: opts.data_engine.clone(),
            ..VolumeConfig::default()
        });
        // Both at once: they touch different files.
        let create_volume = async {
            match &new_volume_cfg {
                Some(vol) => self.save_volume(vol, &volume).await,
                None => Ok(()),
            }
        };
        let list_stored = async {
            match opts.dedup {
                DedupSource::ListStore => self.list_blocks(&volume).await,
                DedupSource::LastBackup => Ok(HashSet::new()),
            }
        };
        let ((), mut stored) = tokio::try_join!(create_volume, list_stored)?;
        // Blocks a completed backup references are stored.
        stored.extend(base.values().cloned());
        if opts.dedup == DedupSource::LastBackup && previous.is_none() {
            if let Some(last) = volume_cfg.and_then(|v| BackupName::new(v.last_backup_name).ok()) {
                if let Ok(cfg) = self.inspect_backup(&volume, &last).await {
                    stored.extend(cfg.blocks.into_iter().map(|b| b.checksum));
                }
            }
        }
        let marks: BTreeMap<String, String> = opts
            .writer
            .iter()
            .map(|w| (WRITER_LABEL.to_owned(), w.clone()))
            .chain(lock_name.map(|l| (LOCK_LABEL.to_owned(), l)))
            .collect();
        let placeholder = BackupConfig {
            name: opts.backup.to_string(),
            volume_name: volume.to_string(),
            compression_method: compression.as_str().to_owned(),
            labels: opts.writer.is_some().then_some(marks),
            ..BackupConfig::default()
        };
        self.save_backup(&placeholder, &volume, &opts.backup)
            .await?;
        let permits = Arc::new(Semaphore::new(opts.max_in_flight_blocks.max(1)));
        let shared = Arc::new(Shared {
            dedup: Mutex::new(Dedup {
                stored,
                claimed: HashSet::new(),
            }),
            encoders: Pool::new(move || BlockEncoder::new(compression)),
            mode: opts.mode,
        });
        Ok(BackupWriter {
            store: self.clone(),
            block_size,
            compression,
            lock: None,
            merged: previous.is_some(),
            base,
            shared,
            permits,
            tasks: JoinSet::new(),
            results: BTreeMap::new(),
            submitted: HashSet::new(),
            stats: BackupStats::default(),
            opts,
        })
    }
}

/// Hashes, dedups and compresses one block on a blocking thread.
fn process_block(shared: &Shared, data: &Bytes) -> (Outcome, Option<Bytes>) {
    if is_zero(data) {
        return (Outcome::Zero, None);
    }
    let checksum = checksum_hex(data);
    let (upload, was_stored) = {
        let mut d = shared.dedup.lock().unwrap_or_else(|p| p.into_inner());
        let was_stored = d.stored.contains(&checksum);
        let claimed = !d.claimed.insert(checksum.clone());
        let upload = !claimed && (!was_stored || shared.mode == BackupMode::Full);
        (upload, was_stored)
    };
    if !upload {
        return (Outcome::Reused(checksum), None);
    }
    let mut enc = shared.encoders.take();
    let payload = enc.compress(data);
    shared.encoders.put(enc);
    (
        Outcome::Uploaded {
            checksum,
            bytes: payload.len() as u64,
            was_stored,
        },
        Some(payload),
    )
}

async fn block_task(
    store: BackupStore,
    shared: Arc<Shared>,
    volume: VolumeName,
    offset: u64,
    data: Bytes,
    _permit: OwnedSemaphorePermit,
) -> Result<(u64, Outcome)> {
    let (outcome, payload) = tokio::task::spawn_blocking(move || process_block(&shared, &data))
        .await
        .map_err(|e| Error::Task(e.to_string()))?;
    if let (Outcome::Uploaded { checksum, .. }, Some(payload)) = (&outcome, payload) {
        let path = block_path(&volume, checksum)?;
        store
            .driver
            .put(&path, payload)
            .await
            .map_err(|source| Error::BlockWrite {
                checksum: checksum.clone(),
                offset,
                source,
            })?;
    }
    Ok((offset, outcome))
}

impl BackupWriter {
    /// The block size in bytes.
    pub fn block_size(&self) -> u64 {
        self.block_size
    }

    /// The compression actually used (the volume's sticky method).
    pub fn compression(&self) -> Compression {
        self.compression
    }

    /// Whether the backup starts from an earlier backup's block list.
    pub fn is_incremental(&self) -> bool {
        self.merged
    }

    /// Adds or replaces a label before [`BackupWriter::finish`] writes the cfgs (for values
    /// known only at the end, such as a content digest). Labels go to the backup cfg and,
    /// as Longhorn does, to `volume.cfg`.
    pub fn set_label(&mut self, key: &str, value: &str) {
        self.opts
            .labels
            .get_or_insert_with(BTreeMap::new)
            .insert(key.to_owned(), value.to_owned());
    }

    fn record(&mut self, offset: u64, outcome: Outcome) {
        let entry = match outcome {
            Outcome::Zero => {
                self.stats.zero_blocks += 1;
                None
            }
            Outcome::Reused(ck) => {
                self.stats.reused_blocks += 1;
                Some(ck)
            }
            Outcome::Uploaded {
                checksum,
                bytes,
                was_stored,
            } => {
                if was_stored {
                    self.stats.reuploaded_blocks += 1;
                    self.stats.bytes_reuploaded += bytes;
                } else {
                    self.stats.new_blocks += 1;
                    self.stats.bytes_uploaded += bytes;
                }
                Some(checksum)
            }
        };
        self.results.insert(offset, entry);
    }

    fn collect_finished(&mut self) -> Result<()> {
        while let Some(joined) = self.tasks.try_join_next() {
            let (offset, outcome) = joined.map_err(|e| Error::Task(e.to_string()))??;
            self.record(offset, outcome);
        }
        Ok(())
    }

    /// Adds the block at `offset` (exactly one block of data). All-zero blocks are not stored:
    /// the range reads as zeros (and, when merging, replaces the earlier block there). Waits
    /// while the in-flight limit is reached.
    pub async fn put_block(&mut self, offset: u64, data: Bytes) -> Result<()> {
        if !offset.is_multiple_of(self.block_size) {
            return Err(bad_block(
                offset,
                format!(
                    "offset is not a multiple of the block size {}",
                    self.block_size
                ),
            ));
        }
        if offset.saturating_add(self.block_size) > self.opts.volume_size {
            return Err(bad_block(
                offset,
                format!(
                    "block ends beyond the volume size {}",
                    self.opts.volume_size
                ),
            ));
        }
        if data.len() as u64 != self.block_size {
            return Err(bad_block(
                offset,
                format!(
                    "{} bytes given, the block size is {}",
                    data.len(),
                    self.block_size
                ),
            ));
        }
        if !self.submitted.insert(offset) {
            return Err(bad_block(offset, "block given twice"));
        }
        self.stats.blocks_in += 1;
        self.collect_finished()?;
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| Error::Task(e.to_string()))?;
        self.tasks.spawn(block_task(
            self.store.clone(),
            self.shared.clone(),
            self.opts.volume.clone(),
            offset,
            data,
            permit,
        ));
        Ok(())
    }

    /// Declares `[offset, offset + len)` zero or unallocated now: when merging, the earlier
    /// backup's blocks there are dropped. Block-aligned ranges only.
    pub fn put_zero_range(&mut self, offset: u64, len: u64) -> Result<()> {
        if !offset.is_multiple_of(self.block_size) || !len.is_multiple_of(self.block_size) {
            return Err(bad_block(
                offset,
                format!("zero range of {len} bytes is not block-aligned"),
            ));
        }
        let end = offset.saturating_add(len);
        if end > self.opts.volume_size {
            return Err(bad_block(offset, "zero range ends beyond the volume size"));
        }
        let covered: Vec<u64> = self.base.range(offset..end).map(|(o, _)| *o).collect();
        for o in covered {
            if !self.submitted.contains(&o) {
                self.results.insert(o, None);
            }
        }
        Ok(())
    }

    /// Waits for the uploads, writes the final backup cfg and then `volume.cfg` (its `Size`
    /// becomes this backup's volume size, or stays the recorded one if that is larger), and
    /// releases the lock. Returns the stats and the cfg written. On failure before the final cfg is
    /// written, the in-progress cfg is removed (a leftover one would block every later GC).
    pub async fn finish(mut self) -> Result<(BackupStats, BackupConfig)> {
        let mut final_written = false;
        match self.complete(&mut final_written).await {
            Ok(cfg) => {
                if let Some(l) = self.lock.take() {
                    l.release().await?;
                }
                Ok((self.stats, cfg))
            }
            Err(e) => {
                self.tasks.abort_all();
                while self.tasks.join_next().await.is_some() {}
                if !final_written {
                    let path = backup_cfg_path(&self.opts.volume, &self.opts.backup);
                    let _ = self.store.driver.delete(&[path]).await;
                }
                if let Some(l) = self.lock.take() {
                    let _ = l.release().await;
                }
                Err(e)
            }
        }
    }

    async fn complete(&mut self, final_written: &mut bool) -> Result<BackupConfig> {
        while let Some(joined) = self.tasks.join_next().await {
            let (offset, outcome) = joined.map_err(|e| Error::Task(e.to_string()))??;
            self.record(offset, outcome);
        }
        let mut map = std::mem::take(&mut self.base);
        let base_len = map.len() as u64;
        let mut replaced = 0u64;
        for (offset, entry) in std::mem::take(&mut self.results) {
            if map.contains_key(&offset) {
                replaced += 1;
            }
            match entry {
                Some(ck) => {
                    map.insert(offset, ck);
                }
                None => {
                    map.remove(&offset);
                }
            }
        }
        self.stats.kept_from_previous = base_len - replaced;
        self.stats.blocks_total = map.len() as u64;
        let volume = self.opts.volume.clone();
        let snapshot_created_at = self
            .opts
            .snapshot_created_at
            .clone()
            .unwrap_or_else(now_rfc3339);
        let mut parameters = None;
        if self.block_size != DEFAULT_BLOCK_SIZE || self.opts.mode != BackupMode::Incremental {
            parameters = Some(BTreeMap::from([
                (
                    PARAM_BACKUP_BLOCK_SIZE.to_owned(),
                    self.block_size.to_string(),
                ),
                (
                    PARAM_BACKUP_MODE.to_owned(),
                    self.opts.mode.as_str().to_owned(),
                ),
            ]));
        }
        let cfg = BackupConfig {
            name: self.opts.backup.to_string(),
            volume_name: volume.to_string(),
            snapshot_name: self.opts.snapshot_name.clone(),
            snapshot_created_at: snapshot_created_at.clone(),
            created_time: now_rfc3339(),
            size: map.len() as u64 * self.block_size,
            labels: self.opts.labels.clone(),
            parameters,
            is_incremental: self.merged,
            compression_method: self.compression.as_str().to_owned(),
            newly_uploaded_data_size: self.stats.bytes_uploaded,
            re_uploaded_data_size: self.stats.bytes_reuploaded,
            processing_blocks_present: !self.merged,
            blocks: map
                .into_iter()
                .map(|(offset, checksum)| crate::cfg::BlockMapping { offset, checksum })
                .collect(),
            single_file_path: String::new(),
        };
        self.store
            .save_backup(&cfg, &volume, &self.opts.backup)
            .await?;
        *final_written = true;
        let mut vol = self.store.inspect_volume(&volume).await?;
        vol.last_backup_name = self.opts.backup.to_string();
        vol.last_backup_at = snapshot_created_at;
        vol.block_count += self.stats.new_blocks;
        // Longhorn records the volume's size now (volumes only grow) and restores every
        // backup of the volume at that size. A smaller size would put older backups' blocks
        // beyond it, and no restore (theirs or ours) could place them: keep the larger one,
        // and this backup restores zero-padded, like a backup taken before a growth.
        vol.size = vol.size.max(self.opts.volume_size);
        self.stats.volume_size = vol.size;
        vol.labels = self.opts.labels.clone();
        vol.backing_image_name = self.opts.backing_image_name.clone();
        vol.backing_image_checksum = self.opts.backing_image_checksum.clone();
        vol.compression_method = self.compression.as_str().to_owned();
        vol.storage_class_name = self.opts.storage_class_name.clone();
        vol.data_engine = self.opts.data_engine.clone();
        self.store.save_volume(&vol, &volume).await?;
        Ok(cfg)
    }

    /// Stops the uploads, removes the in-progress cfg (uploaded blocks stay until a deletion's
    /// GC) and releases the lock, also when the cfg cannot be removed (the first error is
    /// returned).
    pub async fn abort(mut self) -> Result<()> {
        self.tasks.abort_all();
        while self.tasks.join_next().await.is_some() {}
        let path = backup_cfg_path(&self.opts.volume, &self.opts.backup);
        let removed = self.store.driver.delete(&[path]).await;
        let released = match self.lock.take() {
            Some(l) => l.release().await,
            None => Ok(()),
        };
        removed?;
        released
    }

    /// Counters so far (complete after [`BackupWriter::finish`]).
    pub fn stats(&self) -> BackupStats {
        self.stats
    }
}
