//! The configuration of `diskferry serve`: one TOML file, validated as a whole when it is
//! loaded.
//!
//! ```toml
//! time-zone = "Europe/Berlin"      # the default zone of every job's schedule and retention
//!
//! [locks]
//! pool = "rbd"                     # RADOS pool of the per-(job, image) lock objects
//!
//! [[jobs]]
//! name = "nightly"
//! kind = "export"                  # snapshot | export | longhorn-backup
//! images = ["rbd:rbd/web1-os", "rbd:rbd/web1-data"]
//! target = "s3://backups/diskferry/"
//! ```
//!
//! `docs/serve.example.toml` shows every field with its default. The rules:
//! - Unknown fields are refused everywhere, so a misspelt setting never goes unnoticed.
//! - Every problem found is reported, each with the path of its field (`jobs[2].schedule`
//!   while reading the file; `jobs.nightly.retention` once the job's name is known) and what
//!   is wrong in words.
//! - Time zones are explicit IANA names; nothing depends on the host's local zone. A job's
//!   `time-zone` wins over the file's.
//! - A job without `schedule` runs at 02:00 every day (`0 2 * * *`; note that `@daily` is
//!   00:00), and one without `[jobs.retention]` keeps one snapshot a day for 7 days
//!   (`keep-daily = 7`). A retention table with no rule in it is refused: it would keep
//!   everything forever.
//! - Paths must be absolute: the service's working directory is nobody's choice.
//! - No secret is written in the file: the bearer token, the Ceph keyring and the S3 keys are
//!   named by path (or come from the environment, as for the CLI).

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use chrono::{DateTime, NaiveDateTime, Utc};
use objstore::S3Config;
use rados::ClusterConfig;
use schedule::{time_zone, Count, Policy, Schedule, ScheduleError, Tz};
use serde::{Deserialize, Serialize};

use crate::longhorn::{BackupTarget, Compression as LonghornCompression, TargetLocation};
use crate::ops::{Bundle, VmDisk};
use crate::serve::export_job::check_target_dir;
use crate::{Address, Context, ObjectFormat, RbdSpec};

/// The HTTP port when `http.listen` is not given (on 127.0.0.1).
pub const DEFAULT_HTTP_PORT: u16 = 9750;
/// The schedule of a job that gives none: 02:00 every day, in the job's zone.
pub const DEFAULT_SCHEDULE: &str = "0 2 * * *";
/// keep-daily of a job without a retention table.
pub const DEFAULT_KEEP_DAILY: u32 = 7;
/// The lock lease when `locks.lease-seconds` is not given; a run renews it every third of it.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(60);
/// The shortest lease accepted: shorter ones lapse on a slow renew round trip.
pub const MIN_LEASE: Duration = Duration::from_secs(5);
/// The longest lease accepted: after a crash, nobody takes over a run for this long.
pub const MAX_LEASE: Duration = Duration::from_secs(3600);
/// Images a job works on in parallel when `concurrency` is not given.
pub const DEFAULT_CONCURRENCY: usize = 1;
/// The most images a job may work on in parallel; each one holds its own buffers.
pub const MAX_CONCURRENCY: usize = 64;
/// A hook's timeout when `timeout-seconds` is not given.
pub const DEFAULT_HOOK_TIMEOUT: Duration = Duration::from_secs(60);
/// The longest hook timeout accepted (a hook runs while the guest may be frozen).
pub const MAX_HOOK_TIMEOUT: Duration = Duration::from_secs(3600);
/// The longest job name: a DNS label's, so a name also fits Kubernetes objects and labels.
pub const JOB_NAME_MAX: usize = 63;
/// The longest VM name, disk role or label key (the VM bundle manifest's limit).
pub const NAME_MAX: usize = 64;
/// The first component of the RBD snapshots a job makes: `diskferry.JOB.20261206T020000Z`.
pub const SNAPSHOT_PREFIX: &str = "diskferry";
/// The time stamp in snapshot names (UTC, to the second).
pub const SNAPSHOT_TIME_FORMAT: &str = "%Y%m%dT%H%M%SZ";
/// How many upcoming runs `diskferry serve --check` shows per job.
pub const CHECK_RUNS: usize = 3;

/// The environment variables of the AWS CLI that name its files: `s3.credentials-file` and
/// `s3.config-file` stand in for them.
const ENV_SHARED_CREDENTIALS_FILE: &str = "AWS_SHARED_CREDENTIALS_FILE";
const ENV_CONFIG_FILE: &str = "AWS_CONFIG_FILE";
/// The Ceph client id must be given without this entity-type prefix.
const CEPH_CLIENT_PREFIX: &str = "client.";

// ---------------------------------------------------------------------------------------------
// What the file holds, as written (serde). Every table refuses unknown fields.

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawConfig {
    time_zone: Option<String>,
    #[serde(default)]
    http: RawHttp,
    locks: Option<RawLocks>,
    #[serde(default)]
    ceph: RawCeph,
    #[serde(default)]
    s3: RawS3,
    #[serde(default)]
    jobs: Vec<RawJob>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawHttp {
    listen: Option<String>,
    token_file: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawLocks {
    pool: Option<String>,
    lease_seconds: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawCeph {
    conf: Option<PathBuf>,
    keyring: Option<PathBuf>,
    id: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawS3 {
    endpoint: Option<String>,
    region: Option<String>,
    profile: Option<String>,
    credentials_file: Option<PathBuf>,
    config_file: Option<PathBuf>,
    ca_bundle: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawJob {
    name: String,
    kind: JobKind,
    schedule: Option<String>,
    time_zone: Option<String>,
    retention: Option<Policy>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    concurrency: Option<u64>,
    images: Option<Vec<String>>,
    vms: Option<Vec<RawVm>>,
    select: Option<Vec<RawSelector>>,
    #[serde(default)]
    hooks: RawHooks,
    target: Option<String>,
    format: Option<String>,
    compression: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawVm {
    name: String,
    disks: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawSelector {
    pool: String,
    pattern: Option<String>,
    metadata_key: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawHooks {
    pre: Option<RawHook>,
    post: Option<RawHook>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawHook {
    command: Vec<String>,
    timeout_seconds: Option<u64>,
}

// ---------------------------------------------------------------------------------------------
// The validated configuration.

/// A validated configuration: every job, and the settings the service shares between them.
#[derive(Debug, Clone)]
pub struct Config {
    /// The HTTP endpoint.
    pub http: Http,
    /// Where runs take their locks.
    pub locks: Locks,
    /// The Ceph connection, over the environment.
    pub ceph: CephSettings,
    /// The S3 connection, over the environment.
    pub s3: S3Settings,
    /// The jobs, in the file's order; their names are unique.
    pub jobs: Vec<Job>,
}

/// `[http]`: where `/metrics`, `/healthz`, `/jobs` and `POST /jobs/NAME/run` are served.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Http {
    /// `listen`: the address and port (default `127.0.0.1:9750`).
    pub listen: SocketAddr,
    /// `token-file`: the file holding the bearer token that `/jobs` and `POST /jobs/NAME/run`
    /// require. Without it only `/healthz` and `/metrics` are served.
    pub token_file: Option<PathBuf>,
}

/// `[locks]`: the RADOS exclusive locks with a lease that let several instances share the
/// work (one lock per job and image).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Locks {
    /// `pool`: the pool that holds the lock objects.
    pub pool: String,
    /// `lease-seconds`: how long a lock outlives an instance that stopped renewing it.
    pub lease: Duration,
}

/// `[ceph]`: settings over the environment a Ceph user has (`CEPH_CONF`, `CEPH_ARGS`), as the
/// CLI's `--ceph-conf`, `--keyring` and `--id`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CephSettings {
    /// `conf`: the ceph.conf.
    pub conf: Option<PathBuf>,
    /// `keyring`: the keyring.
    pub keyring: Option<PathBuf>,
    /// `id`: the client id, without `client.`.
    pub id: Option<String>,
}

/// `[s3]`: settings over the environment and profile files the AWS CLI reads. Keys are
/// never written here: they come from the environment or from `credentials-file`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct S3Settings {
    /// `endpoint`: the endpoint URL (as `--endpoint`).
    pub endpoint: Option<String>,
    /// `region`: the region (as `--region`).
    pub region: Option<String>,
    /// `profile`: the profile of the shared files (as `AWS_PROFILE`).
    pub profile: Option<String>,
    /// `credentials-file`: the shared credentials file (as `AWS_SHARED_CREDENTIALS_FILE`).
    pub credentials_file: Option<PathBuf>,
    /// `config-file`: the shared config file (as `AWS_CONFIG_FILE`).
    pub config_file: Option<PathBuf>,
    /// `ca-bundle`: the PEM file of the authorities trusted for an `https://` endpoint.
    pub ca_bundle: Option<PathBuf>,
}

/// What a job does on each run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum JobKind {
    /// RBD snapshots only.
    Snapshot,
    /// Snapshot, then export each image (or VM bundle) into an object store or directory.
    Export,
    /// Snapshot, then back each image up into a Longhorn backup store, incrementally from
    /// the job's previous snapshot.
    LonghornBackup,
}

impl JobKind {
    /// The name in the file: `snapshot`, `export`, `longhorn-backup`.
    pub fn name(self) -> &'static str {
        match self {
            JobKind::Snapshot => "snapshot",
            JobKind::Export => "export",
            JobKind::LonghornBackup => "longhorn-backup",
        }
    }
}

impl fmt::Display for JobKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A job's kind with the settings of that kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// `kind = "snapshot"`.
    Snapshot,
    /// `kind = "export"`.
    Export(ExportSettings),
    /// `kind = "longhorn-backup"`.
    LonghornBackup(LonghornSettings),
}

impl Action {
    /// The kind.
    pub fn kind(&self) -> JobKind {
        match self {
            Action::Snapshot => JobKind::Snapshot,
            Action::Export(_) => JobKind::Export,
            Action::LonghornBackup(_) => JobKind::LonghornBackup,
        }
    }
}

/// Where and how an export job writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportSettings {
    /// `target`: `s3://BUCKET/PREFIX/` or an absolute directory; each run writes under it.
    pub target: Bundle,
    /// `format`: qcow2 (default), raw or raw.zst.
    pub format: ObjectFormat,
    /// `compression`: qcow2 cluster compression (default none).
    pub compression: ClusterCompression,
}

/// qcow2 cluster compression of an export job, as the CLI's `export --compression`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ClusterCompression {
    /// Uncompressed clusters.
    #[default]
    None,
    /// deflate clusters (readable by every qemu).
    Deflate,
    /// zstd clusters (qemu 5.1 and later).
    Zstd,
}

impl ClusterCompression {
    /// `none`, `deflate` or `zstd`.
    pub fn name(self) -> &'static str {
        match self {
            ClusterCompression::None => "none",
            ClusterCompression::Deflate => "deflate",
            ClusterCompression::Zstd => "zstd",
        }
    }

    fn parse(text: &str) -> Option<ClusterCompression> {
        [Self::None, Self::Deflate, Self::Zstd]
            .into_iter()
            .find(|c| c.name() == text)
    }
}

/// Where and how a Longhorn backup job writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LonghornSettings {
    /// `target`: `s3://BUCKET@REGION/PATH/` or `vfs:///DIR/`, as `diskferry longhorn` and
    /// Longhorn itself take it.
    pub target: BackupTarget,
    /// `compression`: the block compression of new backup volumes (default lz4, Longhorn's).
    pub compression: LonghornCompression,
}

/// Which images a job works on: exactly one of the three forms.
#[derive(Debug, Clone)]
pub enum ImageSet {
    /// `images = ["rbd:POOL/IMAGE", …]`: these images.
    List(Vec<RbdSpec>),
    /// `[[jobs.vms]]`: VM disk groups, as `export-vm` takes them: each VM's disks are
    /// snapshotted together (one group snapshot), and an export writes the manifest last.
    Vms(Vec<VmGroup>),
    /// `[[jobs.select]]`: the images of a pool that a selector picks, found at each run.
    Select(Vec<Selector>),
}

impl fmt::Display for ImageSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fn joined<T: fmt::Display>(items: &[T]) -> String {
            let shown: Vec<String> = items.iter().map(ToString::to_string).collect();
            shown.join("; ")
        }
        f.write_str(&match self {
            ImageSet::List(images) => joined(images),
            ImageSet::Vms(vms) => joined(vms),
            ImageSet::Select(selectors) => joined(selectors),
        })
    }
}

/// One VM: its name and disks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmGroup {
    /// `name`: the VM's name (the bundle's name in an export).
    pub name: String,
    /// `disks = ["ROLE=rbd:POOL/IMAGE", …]`, in the given order.
    pub disks: Vec<VmDisk>,
}

impl fmt::Display for VmGroup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let disks: Vec<String> = self
            .disks
            .iter()
            .map(|d| format!("{}={}", d.role, d.image))
            .collect();
        write!(f, "vm {} ({})", self.name, disks.join(", "))
    }
}

/// Picks images of one pool: by name pattern, by an image-metadata key that lists the job,
/// or by both (then an image must satisfy both).
#[derive(Debug, Clone)]
pub struct Selector {
    /// `pool`.
    pub pool: String,
    /// `pattern`: a glob over image names (`*`, `?`, `[a-z]`).
    pub pattern: Option<glob::Pattern>,
    /// `metadata-key`: an image is picked when its metadata under this key (e.g.
    /// `diskferry.jobs`) lists the job's name, the way Longhorn volumes opt in to a recurring
    /// job by label. Names are separated by commas or white space.
    pub metadata_key: Option<String>,
}

impl Selector {
    /// Whether the pattern (if any) matches the image name.
    pub fn matches_name(&self, image: &str) -> bool {
        self.pattern.as_ref().is_none_or(|p| p.matches(image))
    }

    /// Whether `value`, an image's metadata under `metadata-key`, lists `job`. Always true
    /// without a metadata key; false for an image that has no such metadata (`None`).
    pub fn lists_job(&self, value: Option<&str>, job: &str) -> bool {
        if self.metadata_key.is_none() {
            return true;
        }
        value.is_some_and(|v| {
            v.split(|c: char| c == ',' || c.is_whitespace())
                .any(|name| name == job)
        })
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "images of pool {}", self.pool)?;
        if let Some(p) = &self.pattern {
            write!(f, " named like {:?}", p.as_str())?;
        }
        if let Some(key) = &self.metadata_key {
            let and = if self.pattern.is_some() { " and" } else { "" };
            write!(f, "{and} listing the job in metadata {key:?}")?;
        }
        Ok(())
    }
}

/// A command run around a job's snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Hook {
    /// `command`: the program and its arguments (no shell).
    pub command: Vec<String>,
    /// `timeout-seconds`: how long it may run before it is killed and counts as failed.
    pub timeout: Duration,
}

/// `[jobs.hooks]`: `pre` runs before the snapshot (a failure fails the run and no snapshot is
/// taken); `post` runs after it, whenever `pre` succeeded, also when the snapshot failed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Hooks {
    /// Before the snapshot.
    pub pre: Option<Hook>,
    /// After the snapshot.
    pub post: Option<Hook>,
}

impl Hooks {
    /// Whether neither hook is set.
    pub fn is_empty(&self) -> bool {
        self.pre.is_none() && self.post.is_none()
    }
}

/// One job.
#[derive(Debug, Clone)]
pub struct Job {
    /// `name`: unique; 1 to 63 lowercase letters, digits and `-`, starting and ending with a
    /// letter or digit, since it becomes part of snapshot names and object keys.
    pub name: String,
    /// `kind` and its settings.
    pub action: Action,
    /// `images`, `vms` or `select`.
    pub images: ImageSet,
    /// `schedule` in the job's `time-zone`.
    pub schedule: Schedule,
    /// `[jobs.retention]`, applied per image in the job's zone.
    pub retention: Policy,
    /// `labels`: recorded with what the job stores that has a place for them: a VM bundle's
    /// manifest, a Longhorn backup's labels. An export over images stores plain objects with
    /// export's metadata only, as `diskferry export` (which has no labels) does.
    pub labels: BTreeMap<String, String>,
    /// `concurrency`: images worked on in parallel.
    pub concurrency: usize,
    /// `[jobs.hooks]`.
    pub hooks: Hooks,
}

impl Job {
    /// The kind.
    pub fn kind(&self) -> JobKind {
        self.action.kind()
    }

    /// The zone of the schedule and of the retention's calendar.
    pub fn time_zone(&self) -> Tz {
        self.schedule.time_zone()
    }

    /// The name of the snapshot this job takes at `at`: `diskferry.JOB.20261206T020000Z`.
    pub fn snapshot_name(&self, at: DateTime<Utc>) -> String {
        format!(
            "{SNAPSHOT_PREFIX}.{}.{}",
            self.name,
            at.format(SNAPSHOT_TIME_FORMAT)
        )
    }

    /// When a snapshot named by [`Job::snapshot_name`] was taken, or `None` when the name is
    /// not one of this job's: retention only ever considers what the job made.
    pub fn snapshot_time(&self, snapshot: &str) -> Option<DateTime<Utc>> {
        let stamp = snapshot
            .strip_prefix(SNAPSHOT_PREFIX)?
            .strip_prefix('.')?
            .strip_prefix(self.name.as_str())?
            .strip_prefix('.')?;
        NaiveDateTime::parse_from_str(stamp, SNAPSHOT_TIME_FORMAT)
            .ok()
            .map(|t| t.and_utc())
            .filter(|t| t.format(SNAPSHOT_TIME_FORMAT).to_string() == stamp)
    }
}

// ---------------------------------------------------------------------------------------------
// Errors.

/// One thing wrong in a configuration: where, and what.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// The field's path: `jobs[2].schedule`, `jobs.nightly.retention`, `locks.pool`.
    pub path: String,
    /// What is wrong, in words.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read the configuration {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not TOML of the expected shape: a syntax error, an unknown field, a value
    /// of the wrong type. Reading stops at the first.
    #[error("{origin}{}: {}", location(*.line, *.column), with_path(.path, .message))]
    Syntax {
        /// The file.
        origin: String,
        /// The 1-based line, when known.
        line: Option<usize>,
        /// The 1-based column, when known.
        column: Option<usize>,
        /// The field's path (empty at the top).
        path: String,
        /// What is wrong.
        message: String,
    },
    /// The file has the expected shape, but values are wrong: every one is listed.
    #[error("{origin}: {}", list_problems(.problems))]
    Invalid {
        /// The file.
        origin: String,
        /// Each problem, in the file's order.
        problems: Vec<Problem>,
    },
}

impl ConfigError {
    /// Every problem, with its path (one for a read or syntax error).
    pub fn problems(&self) -> Vec<Problem> {
        match self {
            ConfigError::Read { source, .. } => vec![Problem {
                path: String::new(),
                message: source.to_string(),
            }],
            ConfigError::Syntax {
                line,
                column,
                path,
                message,
                ..
            } => vec![Problem {
                path: path.clone(),
                message: format!("{message}{}", location(*line, *column)),
            }],
            ConfigError::Invalid { problems, .. } => problems.clone(),
        }
    }
}

fn location(line: Option<usize>, column: Option<usize>) -> String {
    match (line, column) {
        (Some(l), Some(c)) => format!(" (line {l}, column {c})"),
        (Some(l), None) => format!(" (line {l})"),
        _ => String::new(),
    }
}

fn with_path(path: &str, message: &str) -> String {
    if path.is_empty() {
        message.to_string()
    } else {
        format!("{path}: {message}")
    }
}

fn list_problems(problems: &[Problem]) -> String {
    match problems {
        [one] => one.to_string(),
        many => {
            let lines: Vec<String> = many.iter().map(|p| format!("\n  {p}")).collect();
            format!("{} problems:{}", many.len(), lines.concat())
        }
    }
}

/// The problems found so far.
#[derive(Default)]
struct Problems(Vec<Problem>);

impl Problems {
    fn add(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(Problem {
            path: path.into(),
            message: message.into(),
        });
    }
}

// ---------------------------------------------------------------------------------------------
// Loading and validation.

impl Config {
    /// Reads and validates the file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        Config::load_text(path).map(|(config, _)| config)
    }

    /// [`Config::load`], with the file's text: what `serve` hands its worker processes, so
    /// that they run what it validated even if the file changes meanwhile.
    pub fn load_text(path: &Path) -> Result<(Config, String), ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let config = Config::parse(&text, &path.display().to_string())?;
        Ok((config, text))
    }

    /// Validates the TOML `text`; `origin` (the file's name) starts every message.
    pub fn parse(text: &str, origin: &str) -> Result<Config, ConfigError> {
        let syntax = |path: String, error: toml::de::Error| {
            let (line, column) = match error.span() {
                Some(span) => {
                    let (l, c) = line_and_column(text, span.start);
                    (Some(l), Some(c))
                }
                None => (None, None),
            };
            ConfigError::Syntax {
                origin: origin.to_string(),
                line,
                column,
                path,
                message: error.message().trim().to_string(),
            }
        };
        let document = toml::de::Deserializer::parse(text).map_err(|e| syntax(String::new(), e))?;
        let raw: RawConfig = serde_path_to_error::deserialize(document).map_err(|e| {
            let path = e.path().to_string();
            let path = if path == "." { String::new() } else { path };
            syntax(path, e.into_inner())
        })?;
        let mut problems = Problems::default();
        let config = validate(raw, &mut problems);
        if problems.0.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError::Invalid {
                origin: origin.to_string(),
                problems: problems.0,
            })
        }
    }

    /// The job named `name`.
    pub fn job(&self, name: &str) -> Option<&Job> {
        self.jobs.iter().find(|j| j.name == name)
    }

    /// The library context of the service: the environment a Ceph and AWS CLI user has, with
    /// the file's `[ceph]` and `[s3]` settings over it (as the CLI's flags).
    pub fn context(&self) -> Context {
        let mut ceph = ClusterConfig::from_env();
        if self.ceph.conf.is_some() {
            ceph.conf_file = self.ceph.conf.clone();
        }
        if self.ceph.keyring.is_some() {
            ceph.keyring = self.ceph.keyring.clone();
        }
        if self.ceph.id.is_some() {
            ceph.client_id = self.ceph.id.clone();
        }
        let file_of = |name: &str| match name {
            ENV_SHARED_CREDENTIALS_FILE => self.s3.credentials_file.as_ref(),
            ENV_CONFIG_FILE => self.s3.config_file.as_ref(),
            _ => None,
        };
        let s3 = S3Config::from_lookup_profile(
            |name| match file_of(name) {
                Some(path) => Some(path.display().to_string()),
                None => std::env::var(name).ok(),
            },
            self.s3.profile.as_deref(),
        )
        .with_endpoint(self.s3.endpoint.clone())
        .with_region(self.s3.region.clone())
        .with_ca_bundle(self.s3.ca_bundle.clone());
        Context::new(ceph, s3)
    }

    /// What the configuration names that is not usable from here now, each as a problem
    /// with its field: files that cannot be read (token, keyring, …), a token file the
    /// service would refuse (empty, too short, readable by others), a local target directory
    /// that is missing, not a directory or not writable. The service or its first run would
    /// fail on each; `--check` refuses the configuration for them.
    pub fn start_problems(&self) -> Vec<Problem> {
        let files = [
            ("http.token-file", self.http.token_file.as_ref()),
            ("ceph.conf", self.ceph.conf.as_ref()),
            ("ceph.keyring", self.ceph.keyring.as_ref()),
            ("s3.credentials-file", self.s3.credentials_file.as_ref()),
            ("s3.config-file", self.s3.config_file.as_ref()),
            ("s3.ca-bundle", self.s3.ca_bundle.as_ref()),
        ];
        let unreadable = files.into_iter().filter_map(|(path, file)| {
            let file = file?;
            let problem = match std::fs::File::open(file) {
                Err(e) => format!("cannot read {}: {e}", file.display()),
                Ok(_) if file.is_dir() => format!("{} is a directory", file.display()),
                // The token is checked as the service will read it (empty, too short, …).
                Ok(_) if path == "http.token-file" => crate::serve::http::ApiToken::from_file(file)
                    .err()?
                    .to_string(),
                Ok(_) => return None,
            };
            Some(Problem {
                path: path.to_string(),
                message: problem,
            })
        });
        let targets = self.jobs.iter().filter_map(|job| {
            let dir = match &job.action {
                Action::Export(ExportSettings {
                    target: Bundle::Dir(dir),
                    ..
                }) => dir,
                Action::LonghornBackup(l) => match &l.target.location {
                    TargetLocation::Vfs { dir } => dir,
                    TargetLocation::S3 { .. } => return None,
                },
                _ => return None,
            };
            let problem = check_target_dir(dir).err()?;
            Some(Problem {
                path: format!("jobs.{}.target", job.name),
                message: format!("{} {problem}", dir.display()),
            })
        });
        unreadable.chain(targets).collect()
    }

    /// What `diskferry serve --check` prints: every job with its next `runs` run times after
    /// `now`, and the files that cannot be read now.
    pub fn check_report(&self, origin: &str, now: SystemTime, runs: usize) -> CheckReport {
        let now = DateTime::<Utc>::from(now);
        CheckReport {
            file: origin.to_string(),
            http: self.http.clone(),
            lock_pool: self.locks.pool.clone(),
            lease_seconds: self.locks.lease.as_secs(),
            jobs: self
                .jobs
                .iter()
                .map(|job| JobReport {
                    name: job.name.clone(),
                    kind: job.kind(),
                    images: job.images.to_string(),
                    target: match &job.action {
                        Action::Snapshot => None,
                        Action::Export(e) => Some(format!(
                            "{} ({}{})",
                            e.target,
                            e.format,
                            match e.compression {
                                ClusterCompression::None => String::new(),
                                c => format!(", {} clusters", c.name()),
                            }
                        )),
                        Action::LonghornBackup(l) => {
                            Some(format!("{} ({})", l.target.url, l.compression))
                        }
                    },
                    schedule: job.schedule.expression().to_string(),
                    time_zone: job.time_zone().name().to_string(),
                    retention: job.retention.to_string(),
                    concurrency: job.concurrency,
                    next_runs: job
                        .schedule
                        .upcoming(now, runs)
                        .into_iter()
                        .map(|utc| {
                            let local = utc.with_timezone(&job.time_zone());
                            RunTime {
                                local: local.to_rfc3339(),
                                utc: utc.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
                                shown: format!(
                                    "{} ({})",
                                    local.format("%Y-%m-%d %H:%M:%S %Z"),
                                    utc.format("%Y-%m-%d %H:%M UTC")
                                ),
                            }
                        })
                        .collect(),
                })
                .collect(),
        }
    }
}

/// The `--json` output of `diskferry serve --check`.
#[derive(Debug, Clone, Serialize)]
pub struct CheckReport {
    /// The configuration file.
    pub file: String,
    /// The HTTP endpoint.
    pub http: Http,
    /// The pool of the lock objects.
    pub lock_pool: String,
    /// The lock lease in seconds.
    pub lease_seconds: u64,
    /// Every job.
    pub jobs: Vec<JobReport>,
}

/// One job in a [`CheckReport`].
#[derive(Debug, Clone, Serialize)]
pub struct JobReport {
    /// The name.
    pub name: String,
    /// The kind.
    pub kind: JobKind,
    /// Which images, in words.
    pub images: String,
    /// Where it writes, for export and Longhorn jobs.
    pub target: Option<String>,
    /// The cron expression.
    pub schedule: String,
    /// The IANA zone of the schedule and the retention.
    pub time_zone: String,
    /// The retention policy, in words.
    pub retention: String,
    /// Images in parallel.
    pub concurrency: usize,
    /// The next runs.
    pub next_runs: Vec<RunTime>,
}

/// A run time, in the job's zone and in UTC.
#[derive(Debug, Clone, Serialize)]
pub struct RunTime {
    /// RFC 3339 with the zone's offset: `2026-12-07T02:00:00+01:00`.
    pub local: String,
    /// RFC 3339 in UTC: `2026-12-07T01:00:00Z`.
    pub utc: String,
    /// For people: `2026-12-07 02:00:00 CET (2026-12-07 01:00 UTC)`.
    pub shown: String,
}

/// The 1-based line and column of byte `offset` in `text`.
fn line_and_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

fn validate(raw: RawConfig, problems: &mut Problems) -> Config {
    let default_zone = raw.time_zone.as_deref().and_then(|name| {
        time_zone(name)
            .map_err(|e| problems.add("time-zone", e.to_string()))
            .ok()
    });
    let http = validate_http(raw.http, problems);
    let locks = validate_locks(raw.locks, problems);
    let ceph = validate_ceph(raw.ceph, problems);
    let s3 = validate_s3(raw.s3, problems);
    if raw.jobs.is_empty() {
        problems.add(
            "jobs",
            "no job: add at least one [[jobs]] table with a name, a kind and its images",
        );
    }
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut jobs = Vec::new();
    for (index, job) in raw.jobs.into_iter().enumerate() {
        let name_ok = match check_job_name(&job.name) {
            Ok(()) => true,
            Err(why) => {
                problems.add(format!("jobs[{index}].name"), why);
                false
            }
        };
        let unique = match seen.get(&job.name) {
            Some(first) if name_ok => {
                problems.add(
                    format!("jobs[{index}].name"),
                    format!(
                        "{:?} is also the name of jobs[{first}]: job names must be unique",
                        job.name
                    ),
                );
                false
            }
            _ => {
                seen.insert(job.name.clone(), index);
                true
            }
        };
        let path = if name_ok && unique {
            format!("jobs.{}", job.name)
        } else {
            format!("jobs[{index}]")
        };
        if let Some(job) = validate_job(job, &path, default_zone, problems) {
            jobs.push(job);
        }
    }
    Config {
        http,
        locks,
        ceph,
        s3,
        jobs,
    }
}

fn validate_http(raw: RawHttp, problems: &mut Problems) -> Http {
    let default = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), DEFAULT_HTTP_PORT);
    let listen = match raw.listen {
        None => default,
        Some(text) => text.parse().unwrap_or_else(|_| {
            problems.add(
                "http.listen",
                format!(
                    "{text:?} is not an address and port such as \"127.0.0.1:{DEFAULT_HTTP_PORT}\" \
                     or \"[::1]:{DEFAULT_HTTP_PORT}\""
                ),
            );
            default
        }),
    };
    check_absolute("http.token-file", raw.token_file.as_deref(), problems);
    Http {
        listen,
        token_file: raw.token_file,
    }
}

fn validate_locks(raw: Option<RawLocks>, problems: &mut Problems) -> Locks {
    let Some(raw) = raw else {
        problems.add(
            "locks",
            "missing: add a [locks] table with the pool that holds the run locks, e.g. \
             pool = \"rbd\" (every instance sharing this configuration must use the same one)",
        );
        return Locks {
            pool: String::new(),
            lease: DEFAULT_LEASE,
        };
    };
    let pool = raw.pool.unwrap_or_default();
    if pool.is_empty() {
        problems.add(
            "locks.pool",
            "missing or empty: name the pool of the lock objects",
        );
    } else if let Err(why) = check_pool_name(&pool) {
        problems.add("locks.pool", why);
    }
    let lease = match raw.lease_seconds {
        None => DEFAULT_LEASE,
        Some(secs) => {
            let lease = Duration::from_secs(secs);
            if !(MIN_LEASE..=MAX_LEASE).contains(&lease) {
                problems.add(
                    "locks.lease-seconds",
                    format!(
                        "{secs} is out of range: give {} to {} seconds (a run renews its lock \
                         every third of it; after a crash nobody takes over for that long)",
                        MIN_LEASE.as_secs(),
                        MAX_LEASE.as_secs()
                    ),
                );
            }
            lease
        }
    };
    Locks { pool, lease }
}

fn validate_ceph(raw: RawCeph, problems: &mut Problems) -> CephSettings {
    check_absolute("ceph.conf", raw.conf.as_deref(), problems);
    check_absolute("ceph.keyring", raw.keyring.as_deref(), problems);
    if let Some(id) = &raw.id {
        if id.is_empty() {
            problems.add("ceph.id", "empty: give the client id, e.g. \"diskferry\"");
        } else if let Some(bare) = id.strip_prefix(CEPH_CLIENT_PREFIX) {
            problems.add(
                "ceph.id",
                format!("{id:?}: give the id without {CEPH_CLIENT_PREFIX:?}, i.e. {bare:?}"),
            );
        }
    }
    CephSettings {
        conf: raw.conf,
        keyring: raw.keyring,
        id: raw.id,
    }
}

fn validate_s3(raw: RawS3, problems: &mut Problems) -> S3Settings {
    if let Some(endpoint) = &raw.endpoint {
        if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
            problems.add(
                "s3.endpoint",
                format!("{endpoint:?} is not an http:// or https:// URL"),
            );
        }
    }
    for (path, value) in [("s3.region", &raw.region), ("s3.profile", &raw.profile)] {
        if value.as_deref().is_some_and(|v| v.trim().is_empty()) {
            problems.add(path, "empty: leave it out to use the environment's");
        }
    }
    check_absolute(
        "s3.credentials-file",
        raw.credentials_file.as_deref(),
        problems,
    );
    check_absolute("s3.config-file", raw.config_file.as_deref(), problems);
    check_absolute("s3.ca-bundle", raw.ca_bundle.as_deref(), problems);
    S3Settings {
        endpoint: raw.endpoint,
        region: raw.region,
        profile: raw.profile,
        credentials_file: raw.credentials_file,
        config_file: raw.config_file,
        ca_bundle: raw.ca_bundle,
    }
}

fn check_absolute(path: &str, file: Option<&Path>, problems: &mut Problems) {
    if let Some(file) = file {
        if !file.is_absolute() {
            problems.add(
                path,
                format!(
                    "{:?} is a relative path: give an absolute one (the service's working \
                     directory is not fixed)",
                    file.display().to_string()
                ),
            );
        }
    }
}

/// What each cron field takes, for messages in our words (the parser's own are terse and
/// name its internals).
const CRON_FIELD_FORMS: &str = "numbers, lists (1,15), ranges (1-5), steps (*/15) or *";

/// What the cron field `field` holds, for messages.
fn cron_field_range(field: &str) -> &'static str {
    match field {
        "second" => "a second is 0-59",
        "minute" => "a minute is 0-59",
        "hour" => "an hour is 0-23",
        "day-of-month" => "a day of the month is 1-31",
        "month" => "a month is 1-12 or JAN-DEC",
        "day-of-week" => "a day of the week is 0-7 (0 and 7 are Sunday) or SUN-SAT",
        _ => "a value is out of its range",
    }
}

/// A schedule's error in our words: the parser's wording ("Component error: Number out of
/// bounds.") is left out, the field and what it takes are named.
fn schedule_message(error: &ScheduleError) -> String {
    match error {
        ScheduleError::Field {
            expr, field, value, ..
        } => format!(
            "cron expression {expr:?}: {field} field {value:?} is not valid: {}, written as {}",
            cron_field_range(field),
            CRON_FIELD_FORMS
        ),
        ScheduleError::Invalid { expr, .. } => format!(
            "cron expression {expr:?} is not valid: each of its fields (minute hour \
             day-of-month month day-of-week) takes {CRON_FIELD_FORMS}"
        ),
        ScheduleError::FieldCount { expr, found } => format!(
            "cron expression {expr:?} has {found} field{}: expected 5 (minute hour \
             day-of-month month day-of-week) or 6 (a leading seconds field, then those 5)",
            if *found == 1 { "" } else { "s" }
        ),
        other => other.to_string(),
    }
}

/// What a glob pattern may hold, for messages.
const GLOB_FORMS: &str =
    "* for any characters, ? for one, [abc] or [a-z] for one of a set, [!abc] for one outside it";

/// A pattern's error in our words (the glob crate's wording, "Pattern syntax error near
/// position 7: invalid range pattern", is left out), with where it goes wrong.
fn glob_message(pattern: &str, error: &glob::PatternError) -> String {
    format!(
        "{pattern:?} is not a valid glob pattern (at character {}): write {GLOB_FORMS}",
        error.pos + 1
    )
}

/// Job names go into snapshot names (`diskferry.JOB.STAMP`, split at the dots), object keys
/// and metric labels: a DNS label's characters keep them unambiguous everywhere.
fn check_job_name(name: &str) -> Result<(), String> {
    let ok_char = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-';
    let ok_end = |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    if !name.is_empty()
        && name.len() <= JOB_NAME_MAX
        && name.chars().all(ok_char)
        && ok_end(name.chars().next())
        && ok_end(name.chars().last())
    {
        Ok(())
    } else {
        Err(format!(
            "{name:?} is not a job name: use 1 to {JOB_NAME_MAX} lowercase letters, digits and \
             '-', starting and ending with a letter or digit (it becomes part of snapshot names \
             and object keys)"
        ))
    }
}

/// The rule of the VM bundle manifest for VM names, disk roles and label keys.
fn check_manifest_name(what: &str, name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= NAME_MAX
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{what} {name:?}: use 1 to {NAME_MAX} letters, digits, '-', '_' or '.' (not first)"
        ))
    }
}

fn check_pool_name(pool: &str) -> Result<(), String> {
    if pool.contains(['/', '@', '\0']) || pool.chars().any(char::is_whitespace) {
        Err(format!(
            "{pool:?} is not a pool name: no '/', '@' or white space"
        ))
    } else {
        Ok(())
    }
}

/// An `rbd:POOL/IMAGE` address of an image's head, with its pool.
fn parse_image(text: &str) -> Result<RbdSpec, String> {
    let spec = Address::parse(text)
        .and_then(|a| a.rbd().cloned())
        .map_err(|e| e.to_string())?;
    check_image(text, &spec)?;
    Ok(spec)
}

fn check_image(text: &str, spec: &RbdSpec) -> Result<(), String> {
    if spec.snap.is_some() {
        return Err(format!(
            "{text:?} names a snapshot: give the image, rbd:POOL/IMAGE; the job takes its own \
             snapshots"
        ));
    }
    if spec.pool.is_empty() {
        return Err(format!(
            "{text:?} names no pool: write rbd:POOL/IMAGE (the service does not take the \
             cluster's default pool)"
        ));
    }
    Ok(())
}

fn validate_job(
    raw: RawJob,
    path: &str,
    default_zone: Option<Tz>,
    problems: &mut Problems,
) -> Option<Job> {
    let at = |field: &str| format!("{path}.{field}");
    let zone = match &raw.time_zone {
        Some(name) => time_zone(name)
            .map_err(|e| problems.add(at("time-zone"), e.to_string()))
            .ok(),
        None => {
            if default_zone.is_none() {
                problems.add(
                    at("time-zone"),
                    "missing: give an IANA zone such as \"Europe/Berlin\" or \"UTC\" here or at \
                     the top of the file (no local zone is assumed)",
                );
            }
            default_zone
        }
    };
    // The expression is checked even when the zone is wrong, so both problems show at once.
    let expr = raw.schedule.as_deref().unwrap_or(DEFAULT_SCHEDULE);
    let schedule = Schedule::parse(expr, zone.unwrap_or(Tz::UTC))
        .map_err(|e| problems.add(at("schedule"), schedule_message(&e)))
        .ok()
        .filter(|_| zone.is_some());
    let retention = match raw.retention {
        None => Policy {
            keep_daily: Count::Limit(DEFAULT_KEEP_DAILY),
            ..Policy::default()
        },
        Some(policy) => {
            if policy.is_empty() {
                problems.add(
                    at("retention"),
                    "no keep rule is set, so nothing would ever be removed: set at least one \
                     (e.g. keep-daily = 7), or keep-last = \"unlimited\" to keep everything on \
                     purpose",
                );
            }
            policy
        }
    };
    let concurrency = match raw.concurrency {
        None => DEFAULT_CONCURRENCY,
        Some(n) => match usize::try_from(n) {
            Ok(n) if (1..=MAX_CONCURRENCY).contains(&n) => n,
            _ => {
                problems.add(
                    at("concurrency"),
                    format!("{n} is out of range: give 1 to {MAX_CONCURRENCY} images in parallel"),
                );
                DEFAULT_CONCURRENCY
            }
        },
    };
    for key in raw.labels.keys() {
        if let Err(why) = check_manifest_name("label key", key) {
            problems.add(at(&format!("labels.{key}")), why);
        }
    }
    let hooks = Hooks {
        pre: raw
            .hooks
            .pre
            .and_then(|h| validate_hook(h, &at("hooks.pre"), problems)),
        post: raw
            .hooks
            .post
            .and_then(|h| validate_hook(h, &at("hooks.post"), problems)),
    };
    let images = validate_images(raw.images, raw.vms, raw.select, path, problems);
    let action = validate_action(
        raw.kind,
        raw.target,
        raw.format,
        raw.compression,
        path,
        problems,
    );
    Some(Job {
        name: raw.name,
        action: action?,
        images: images?,
        schedule: schedule?,
        retention,
        labels: raw.labels,
        concurrency,
        hooks,
    })
}

fn validate_hook(raw: RawHook, path: &str, problems: &mut Problems) -> Option<Hook> {
    let mut ok = true;
    if raw.command.first().is_none_or(|program| program.is_empty()) {
        problems.add(
            format!("{path}.command"),
            "empty: give the program and its arguments, e.g. [\"/usr/bin/virt-freezer\", \"--freeze\", \"--name\", \"web1\"]",
        );
        ok = false;
    }
    let timeout = match raw.timeout_seconds {
        None => DEFAULT_HOOK_TIMEOUT,
        Some(secs) => {
            let timeout = Duration::from_secs(secs);
            if timeout.is_zero() || timeout > MAX_HOOK_TIMEOUT {
                problems.add(
                    format!("{path}.timeout-seconds"),
                    format!(
                        "{secs} is out of range: give 1 to {} seconds",
                        MAX_HOOK_TIMEOUT.as_secs()
                    ),
                );
                ok = false;
            }
            timeout
        }
    };
    ok.then_some(Hook {
        command: raw.command,
        timeout,
    })
}

fn validate_images(
    images: Option<Vec<String>>,
    vms: Option<Vec<RawVm>>,
    select: Option<Vec<RawSelector>>,
    path: &str,
    problems: &mut Problems,
) -> Option<ImageSet> {
    let given = [
        images.is_some().then_some("images"),
        vms.is_some().then_some("vms"),
        select.is_some().then_some("select"),
    ];
    let given: Vec<&str> = given.into_iter().flatten().collect();
    if given.len() != 1 {
        let found = if given.is_empty() {
            "none is given".to_string()
        } else {
            format!("{} are given", given.join(" and "))
        };
        problems.add(
            path,
            format!(
                "give exactly one of images (a list of rbd:POOL/IMAGE), vms (VM disk groups) or \
                 select (images picked by pattern or metadata): {found}"
            ),
        );
        return None;
    }
    let problems_before = problems.0.len();
    let mut seen = HashSet::new();
    let mut once = |field: &str, spec: &RbdSpec, problems: &mut Problems| {
        if !seen.insert(spec.clone()) {
            problems.add(field, format!("{spec} is listed twice in this job"));
        }
    };
    let set = if let Some(images) = images {
        if images.is_empty() {
            problems.add(format!("{path}.images"), "empty: list at least one image");
        }
        let mut specs = Vec::new();
        for (i, text) in images.iter().enumerate() {
            let field = format!("{path}.images[{i}]");
            match parse_image(text) {
                Ok(spec) => {
                    once(&field, &spec, problems);
                    specs.push(spec);
                }
                Err(why) => problems.add(field, why),
            }
        }
        ImageSet::List(specs)
    } else if let Some(vms) = vms {
        if vms.is_empty() {
            problems.add(format!("{path}.vms"), "empty: list at least one VM");
        }
        let mut names = BTreeSet::new();
        let mut groups = Vec::new();
        for (i, vm) in vms.into_iter().enumerate() {
            let at = format!("{path}.vms[{i}]");
            if let Err(why) = check_manifest_name("VM name", &vm.name) {
                problems.add(format!("{at}.name"), why);
            } else if !names.insert(vm.name.clone()) {
                problems.add(
                    format!("{at}.name"),
                    format!("VM {:?} is listed twice in this job", vm.name),
                );
            }
            if vm.disks.is_empty() {
                problems.add(
                    format!("{at}.disks"),
                    "empty: list the VM's disks as \"ROLE=rbd:POOL/IMAGE\"",
                );
            }
            let mut roles = BTreeSet::new();
            let mut disks = Vec::new();
            for (j, text) in vm.disks.iter().enumerate() {
                let field = format!("{at}.disks[{j}]");
                let disk = VmDisk::parse(text)
                    .map_err(|e| e.to_string())
                    .and_then(|d| check_image(text, &d.image).map(|()| d));
                match disk {
                    Ok(disk) => {
                        if !roles.insert(disk.role.clone()) {
                            problems.add(
                                &field,
                                format!("role {:?} is given twice in this VM", disk.role),
                            );
                        }
                        once(&field, &disk.image, problems);
                        disks.push(disk);
                    }
                    Err(why) => problems.add(field, why),
                }
            }
            groups.push(VmGroup {
                name: vm.name,
                disks,
            });
        }
        ImageSet::Vms(groups)
    } else {
        let select = select.unwrap_or_default();
        if select.is_empty() {
            problems.add(
                format!("{path}.select"),
                "empty: give at least one selector",
            );
        }
        let mut selectors = Vec::new();
        for (i, raw) in select.into_iter().enumerate() {
            let at = format!("{path}.select[{i}]");
            if raw.pool.is_empty() {
                problems.add(
                    format!("{at}.pool"),
                    "empty: name the pool to pick images from",
                );
            } else if let Err(why) = check_pool_name(&raw.pool) {
                problems.add(format!("{at}.pool"), why);
            }
            if raw.pattern.is_none() && raw.metadata_key.is_none() {
                problems.add(
                    &at,
                    "give pattern (a glob over image names, e.g. \"vm-*\"), metadata-key (e.g. \
                     \"diskferry.jobs\"), or both: a selector without either would pick every \
                     image of the pool",
                );
            }
            let pattern = raw.pattern.as_deref().and_then(|p| {
                let field = format!("{at}.pattern");
                if p.is_empty() {
                    problems.add(field, "empty: give a glob such as \"vm-*\"");
                    return None;
                }
                if p.contains('/') {
                    problems.add(
                        field,
                        format!("{p:?} contains '/': the pattern matches image names only; the pool is pool"),
                    );
                    return None;
                }
                glob::Pattern::new(p)
                    .map_err(|e| problems.add(field, glob_message(p, &e)))
                    .ok()
            });
            if raw
                .metadata_key
                .as_deref()
                .is_some_and(|k| k.trim().is_empty())
            {
                problems.add(
                    format!("{at}.metadata-key"),
                    "empty: give the metadata key, e.g. \"diskferry.jobs\"",
                );
            }
            selectors.push(Selector {
                pool: raw.pool,
                pattern,
                metadata_key: raw.metadata_key,
            });
        }
        ImageSet::Select(selectors)
    };
    (problems.0.len() == problems_before).then_some(set)
}

fn validate_action(
    kind: JobKind,
    target: Option<String>,
    format: Option<String>,
    compression: Option<String>,
    path: &str,
    problems: &mut Problems,
) -> Option<Action> {
    let at = |field: &str| format!("{path}.{field}");
    let problems_before = problems.0.len();
    let not_for = |field: &str, problems: &mut Problems, what: &str| {
        problems.add(
            at(field),
            format!("a {} job has no {field}: {what}", kind.name()),
        );
    };
    let action = match kind {
        JobKind::Snapshot => {
            for (field, value) in [
                ("target", &target),
                ("format", &format),
                ("compression", &compression),
            ] {
                if value.is_some() {
                    not_for(
                        field,
                        problems,
                        "it keeps RBD snapshots only (kind = \"export\" or \"longhorn-backup\" \
                         store copies)",
                    );
                }
            }
            Some(Action::Snapshot)
        }
        JobKind::Export => {
            let target = match target {
                None => {
                    problems.add(
                        at("target"),
                        "missing: give s3://BUCKET/PREFIX/ or an absolute directory",
                    );
                    None
                }
                Some(text) => match Bundle::parse(&text) {
                    Ok(Bundle::Dir(dir)) if !dir.is_absolute() => {
                        problems.add(
                            at("target"),
                            format!(
                                "{text:?} is a relative directory: give an absolute one or \
                                 s3://BUCKET/PREFIX/"
                            ),
                        );
                        None
                    }
                    Ok(bundle) => Some(bundle),
                    Err(e) => {
                        problems.add(at("target"), e.to_string());
                        None
                    }
                },
            };
            let format = match format.as_deref() {
                None => Some(ObjectFormat::Qcow2),
                Some(text) => text
                    .parse::<ObjectFormat>()
                    .map_err(|_| {
                        problems.add(
                            at("format"),
                            format!("{text:?} is not a format: give qcow2, raw or raw.zst"),
                        )
                    })
                    .ok(),
            };
            let compression = match compression.as_deref() {
                None => Some(ClusterCompression::None),
                Some(text) => match ClusterCompression::parse(text) {
                    None => {
                        problems.add(
                            at("compression"),
                            format!(
                                "{text:?} is not a qcow2 cluster compression: give none, \
                                 deflate or zstd"
                            ),
                        );
                        None
                    }
                    Some(c)
                        if c != ClusterCompression::None
                            && format.is_some_and(|f| f != ObjectFormat::Qcow2) =>
                    {
                        let format = format.unwrap_or(ObjectFormat::Qcow2);
                        problems.add(
                            at("compression"),
                            format!(
                                "compression is for qcow2 clusters; the {format} format is {}",
                                if format == ObjectFormat::RawZstd {
                                    "compressed with zstd already"
                                } else {
                                    "uncompressed (use the raw.zst format to compress it)"
                                }
                            ),
                        );
                        None
                    }
                    Some(c) => Some(c),
                },
            };
            match (target, format, compression) {
                (Some(target), Some(format), Some(compression)) => {
                    Some(Action::Export(ExportSettings {
                        target,
                        format,
                        compression,
                    }))
                }
                _ => None,
            }
        }
        JobKind::LonghornBackup => {
            if format.is_some() {
                not_for("format", problems, "Longhorn stores its own block format");
            }
            let target = match target {
                None => {
                    problems.add(
                        at("target"),
                        "missing: give the backup target as Longhorn takes it, \
                         s3://BUCKET@REGION/PATH/ or vfs:///DIR/",
                    );
                    None
                }
                Some(text) => BackupTarget::parse(&text)
                    .map_err(|e| problems.add(at("target"), e.to_string()))
                    .ok(),
            };
            let compression = match compression.as_deref() {
                None => Some(LonghornCompression::default()),
                Some(text) => LonghornCompression::parse(text)
                    .map_err(|_| {
                        problems.add(
                            at("compression"),
                            format!(
                                "{text:?} is not a Longhorn compression: give lz4, gzip or none"
                            ),
                        )
                    })
                    .ok(),
            };
            match (target, compression) {
                (Some(target), Some(compression)) => {
                    Some(Action::LonghornBackup(LonghornSettings {
                        target,
                        compression,
                    }))
                }
                _ => None,
            }
        }
    };
    action.filter(|_| problems.0.len() == problems_before)
}

#[cfg(test)]
#[path = "config_tests.rs"]
mod tests;
