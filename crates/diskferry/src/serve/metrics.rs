//! The Prometheus metrics of `diskferry serve`: one [`Metrics`] registry per process, fed by
//! the job runner and rendered in the Prometheus text format (version 0.0.4) for `/metrics`.
//!
//! # Why `prometheus-client`
//!
//! We use the official Rust client, `prometheus-client`, not the `metrics` facade with
//! `metrics-exporter-prometheus`:
//! - **Small:** it adds three crates to our tree (itself, its derive macro, `dtoa`; the rest,
//!   `parking_lot`, `itoa`, `syn`, are already here). `metrics` with its exporter adds about
//!   20 crates or second versions even without the exporter's default features (`metrics-util`,
//!   `quanta`, `evmap`/`left-right`, `sketches-ddsketch`, another `rand`, `hashbrown`), and its
//!   defaults bring its own HTTP listener and push-gateway client, which we do not want: we
//!   serve `/metrics` beside `/jobs` ourselves.
//! - **No global state:** a [`Metrics`] value owns its registry. The facade records into one
//!   process-wide recorder, so two registries in one process (tests, or two services linked
//!   into one binary) would share counters.
//! - **Histograms stay histograms:** the exporter renders histograms as summaries unless
//!   buckets are configured per name; here the buckets are part of the metric's type, and
//!   summaries could not be aggregated across the instances that share the work.
//! - **Typed label sets:** labels are Rust structs, so a series cannot gain an unbounded label
//!   by accident (such as a run or backup id), and every series we promise can be created at 0
//!   at start-up with exactly the label values the runner will later use.
//! - Since 0.26 it writes the classic text format that `promtool check metrics` and every
//!   Prometheus version read, not only OpenMetrics.
//!
//! # The metrics
//!
//! | name | type | labels |
//! |---|---|---|
//! | `diskferry_runs_total` | counter | `job`, `result` (`success`, `failure`) |
//! | `diskferry_last_success_timestamp_seconds` | gauge | `job`, `image` |
//! | `diskferry_run_duration_seconds` | histogram | `job` |
//! | `diskferry_read_bytes_total` | counter | `job` |
//! | `diskferry_written_bytes_total` | counter | `job` |
//! | `diskferry_skipped_bytes_total` | counter | `job` |
//! | `diskferry_artifacts_created_total` | counter | `job`, `kind` (`snapshot`, `backup`) |
//! | `diskferry_artifacts_pruned_total` | counter | `job`, `kind` (`snapshot`, `backup`) |
//! | `diskferry_runs_skipped_locked_total` | counter | `job` |
//! | `diskferry_runs_skipped_overlap_total` | counter | `job` |
//! | `diskferry_runs_done_elsewhere_total` | counter | `job` |
//! | `diskferry_runs_in_flight` | gauge | `job`, `image` |
//! | `diskferry_run_progress_ratio` | gauge (0..1) | `job`, `image` |
//!
//! A "run" here is the run of one job over one image (or VM disk group), the unit the runner
//! locks and reports. Label values are bounded by the configuration: one series per job (and
//! result or kind) and one per job and image, never one per run or per backup. Every counter
//! exists at 0 from start-up for every configured job, and every per-image gauge for every
//! configured (job, image) pair, so `rate()` and `absent()` work from the first scrape.
//! Alerts are written on the last-success gauge:
//! `time() - diskferry_last_success_timestamp_seconds > 26 * 3600`; it is 0 for an image that
//! has no successful run on record, so such an image alerts too.

use std::fmt;
use std::hash::Hash;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::{Family, MetricConstructor};
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Metric, Registry};
use serde::{Deserialize, Serialize};

/// The `Content-Type` of [`Metrics::render`]'s output: the Prometheus text format 0.0.4.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Upper bounds of the run-duration histogram's buckets, in seconds: from a snapshot-only run
/// (about a second) to a full export of a large disk (hours), roughly doubling.
pub const RUN_DURATION_BUCKETS_SECONDS: [f64; 15] = [
    1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0, 7200.0, 14400.0,
    28800.0, 86400.0,
];

/// Defines a label-value enum: each variant with its label value (also its serde name), the
/// `ALL` list (so every series can be created at 0), `as_str`, `Display` and the encoder.
macro_rules! label_values {
    (
        $(#[$meta:meta])*
        pub enum $name:ident { $( $(#[$doc:meta])* $variant:ident = $value:literal, )+ }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        pub enum $name {
            $( $(#[$doc])* #[serde(rename = $value)] $variant, )+
        }

        impl $name {
            /// Every value, so each counter series can be created at 0.
            pub const ALL: [$name; [$($value),+].len()] = [$($name::$variant),+];

            /// The label value.
            pub fn as_str(self) -> &'static str {
                match self {
                    $( $name::$variant => $value, )+
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl EncodeLabelValue for $name {
            fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> fmt::Result {
                fmt::Write::write_str(encoder, self.as_str())
            }
        }
    };
}

label_values! {
    /// How a run of a job over one image ended (label `result`).
    pub enum RunResult {
        /// The run finished and stored what it should.
        Success = "success",
        /// The run failed (or was cancelled); nothing it wrote counts as a finished backup.
        Failure = "failure",
    }
}

label_values! {
    /// What a job creates and prunes (label `kind`).
    pub enum ArtifactKind {
        /// An RBD snapshot the job made.
        Snapshot = "snapshot",
        /// What a job stored elsewhere: an exported object (or VM bundle) or a Longhorn backup.
        Backup = "backup",
    }
}

/// The bytes one run moved, as the copy reports them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunBytes {
    /// Bytes read from the source.
    pub read: u64,
    /// Bytes written to the destination (after compression, where there is any).
    pub written: u64,
    /// Bytes not copied: holes, zero extents, blocks unchanged since the previous backup.
    pub skipped: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct JobLabels {
    job: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ImageLabels {
    job: String,
    image: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RunLabels {
    job: String,
    result: RunResult,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ArtifactLabels {
    job: String,
    kind: ArtifactKind,
}

/// A gauge holding a float (timestamps, ratios).
type FloatGauge = Gauge<f64, AtomicU64>;

/// The constructor of every duration histogram: a plain `fn` so the family's type can be named.
type HistogramConstructor = fn() -> Histogram;

fn run_duration_histogram() -> Histogram {
    Histogram::new(RUN_DURATION_BUCKETS_SECONDS)
}

/// One update of the metrics, as a run in a worker process reports it to its service
/// ([`Metrics::forwarding`] makes them, [`Metrics::apply`] replays them): each variant is the
/// call of the [`Metrics`] method of the same name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "update", rename_all = "kebab-case")]
pub enum MetricEvent {
    /// [`Metrics::register_image`].
    RegisterImage {
        /// The job.
        job: String,
        /// The image (or VM).
        image: String,
    },
    /// [`Metrics::forget_image`].
    ForgetImage {
        /// The job.
        job: String,
        /// The image (or VM).
        image: String,
    },
    /// [`Metrics::run_started`].
    RunStarted {
        /// The job.
        job: String,
        /// The image (or VM).
        image: String,
    },
    /// [`Metrics::progress`].
    Progress {
        /// The job.
        job: String,
        /// The image (or VM).
        image: String,
        /// Done, 0 to 1.
        ratio: f64,
    },
    /// [`Metrics::run_finished`].
    RunFinished {
        /// The job.
        job: String,
        /// The image (or VM).
        image: String,
        /// How it ended.
        result: RunResult,
        /// Its wall time.
        seconds: f64,
        /// What it moved.
        bytes: RunBytes,
    },
    /// [`Metrics::run_abandoned`].
    RunAbandoned {
        /// The job.
        job: String,
        /// The image (or VM).
        image: String,
    },
    /// [`Metrics::done_elsewhere`].
    DoneElsewhere {
        /// The job.
        job: String,
        /// The image (or VM).
        image: String,
    },
    /// [`Metrics::skipped_locked`].
    SkippedLocked {
        /// The job.
        job: String,
        /// The image (or VM).
        image: String,
    },
    /// [`Metrics::skipped_overlap`].
    SkippedOverlap {
        /// The job.
        job: String,
    },
    /// [`Metrics::created`].
    Created {
        /// The job.
        job: String,
        /// What it created.
        kind: ArtifactKind,
    },
    /// [`Metrics::pruned`].
    Pruned {
        /// The job.
        job: String,
        /// What it removed.
        kind: ArtifactKind,
        /// How many.
        n: u64,
    },
    /// [`Metrics::set_last_success`].
    LastSuccess {
        /// The job.
        job: String,
        /// The image (or VM).
        image: String,
        /// Seconds since the Unix epoch.
        unix_seconds: f64,
    },
}

/// Where a forwarding registry sends each update.
struct Forward(Box<dyn Fn(MetricEvent) + Send + Sync>);

impl fmt::Debug for Forward {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Forward")
    }
}

/// The metrics of one `diskferry serve` process. Cheap to update from many tasks at once
/// (`&self` everywhere; share it in an `Arc`); [`Metrics::render`] writes the text format.
#[derive(Debug)]
pub struct Metrics {
    /// Set in a worker process: every update is also sent to the service.
    forward: Option<Forward>,
    registry: Registry,
    runs: Family<RunLabels, Counter>,
    last_success: Family<ImageLabels, FloatGauge>,
    duration: Family<JobLabels, Histogram, HistogramConstructor>,
    read_bytes: Family<JobLabels, Counter>,
    written_bytes: Family<JobLabels, Counter>,
    skipped_bytes: Family<JobLabels, Counter>,
    created: Family<ArtifactLabels, Counter>,
    pruned: Family<ArtifactLabels, Counter>,
    skipped_locked: Family<JobLabels, Counter>,
    skipped_overlap: Family<JobLabels, Counter>,
    done_elsewhere: Family<JobLabels, Counter>,
    in_flight: Family<ImageLabels, Gauge>,
    progress: Family<ImageLabels, FloatGauge>,
}

impl Metrics {
    /// Creates the registry with every series of the configured (job name, image) pairs at 0.
    /// An image is named as the configuration names it (e.g. `rbd/vm1-os`, or a VM disk
    /// group's name). A job whose images are not known yet (a selector) can be added with
    /// [`Metrics::register_job`], and images found later with [`Metrics::register_image`].
    pub fn new<J, I>(pairs: impl IntoIterator<Item = (J, I)>) -> Self
    where
        J: AsRef<str>,
        I: AsRef<str>,
    {
        let metrics = Self::empty();
        for (job, image) in pairs {
            metrics.register_image(job.as_ref(), image.as_ref());
        }
        metrics
    }

    /// An empty registry that also hands every update to `forward`, as it happens: the
    /// registry of a run in a worker process, whose service [`Metrics::apply`]s each update to
    /// its own.
    pub fn forwarding(forward: impl Fn(MetricEvent) + Send + Sync + 'static) -> Self {
        Self {
            forward: Some(Forward(Box::new(forward))),
            ..Self::empty()
        }
    }

    /// Makes the update `event` (one a forwarding registry sent).
    pub fn apply(&self, event: MetricEvent) {
        match event {
            MetricEvent::RegisterImage { job, image } => self.register_image(&job, &image),
            MetricEvent::ForgetImage { job, image } => self.forget_image(&job, &image),
            MetricEvent::RunStarted { job, image } => self.run_started(&job, &image),
            MetricEvent::Progress { job, image, ratio } => self.progress(&job, &image, ratio),
            MetricEvent::RunFinished {
                job,
                image,
                result,
                seconds,
                bytes,
            } => {
                let duration = Duration::try_from_secs_f64(seconds).unwrap_or_default();
                self.run_finished(&job, &image, result, duration, bytes)
            }
            MetricEvent::RunAbandoned { job, image } => self.run_abandoned(&job, &image),
            MetricEvent::DoneElsewhere { job, image } => self.done_elsewhere(&job, &image),
            MetricEvent::SkippedLocked { job, image } => self.skipped_locked(&job, &image),
            MetricEvent::SkippedOverlap { job } => self.skipped_overlap(&job),
            MetricEvent::Created { job, kind } => self.created(&job, kind),
            MetricEvent::Pruned { job, kind, n } => self.pruned(&job, kind, n),
            MetricEvent::LastSuccess {
                job,
                image,
                unix_seconds,
            } => self.set_last_success(&job, &image, unix_seconds),
        }
    }

    /// Sends the update `event` makes to the service, in a forwarding registry.
    fn forward(&self, event: impl FnOnce() -> MetricEvent) {
        if let Some(Forward(forward)) = &self.forward {
            forward(event());
        }
    }

    fn empty() -> Self {
        let mut registry = Registry::default();
        // Counters are registered without `_total`: the encoder appends it.
        let runs = register(
            &mut registry,
            "diskferry_runs",
            "Runs of a job over one image, by result",
        );
        let last_success = register(
            &mut registry,
            "diskferry_last_success_timestamp_seconds",
            "Unix time of the last successful run of a job over an image (0: none on record)",
        );
        let read_bytes = register(
            &mut registry,
            "diskferry_read_bytes",
            "Bytes read from sources by finished runs",
        );
        let written_bytes = register(
            &mut registry,
            "diskferry_written_bytes",
            "Bytes written to destinations by finished runs",
        );
        let skipped_bytes = register(
            &mut registry,
            "diskferry_skipped_bytes",
            "Bytes finished runs did not copy: holes, zeros, blocks unchanged since the previous backup",
        );
        let created = register(
            &mut registry,
            "diskferry_artifacts_created",
            "RBD snapshots and backups (objects, VM bundles, Longhorn backups) a job created",
        );
        let pruned = register(
            &mut registry,
            "diskferry_artifacts_pruned",
            "RBD snapshots and backups a job removed by its retention policy",
        );
        let skipped_locked = register(
            &mut registry,
            "diskferry_runs_skipped_locked",
            "Runs skipped because another instance holds the lock of the job and image",
        );
        let skipped_overlap = register(
            &mut registry,
            "diskferry_runs_skipped_overlap",
            "Scheduled runs of a job skipped because its previous run was still going in this instance",
        );
        let done_elsewhere = register(
            &mut registry,
            "diskferry_runs_done_elsewhere",
            "Runs of a job and image found already done for their tick (by another instance), so not run again",
        );
        let in_flight = register(
            &mut registry,
            "diskferry_runs_in_flight",
            "Runs of a job over an image in progress in this instance",
        );
        let progress = register(
            &mut registry,
            "diskferry_run_progress_ratio",
            "Progress (0 to 1) of the running or, when none runs, the last run of a job over an image",
        );
        // The one family whose series are not `Default`: histograms need their buckets.
        let duration = Family::new_with_constructor(run_duration_histogram as HistogramConstructor);
        registry.register(
            "diskferry_run_duration_seconds",
            "Wall time of finished runs of a job over one image",
            Family::clone(&duration),
        );
        Self {
            forward: None,
            registry,
            runs,
            last_success,
            duration,
            read_bytes,
            written_bytes,
            skipped_bytes,
            created,
            pruned,
            skipped_locked,
            skipped_overlap,
            done_elsewhere,
            in_flight,
            progress,
        }
    }

    /// Creates every per-job series of `job` at 0 (idempotent: existing values are kept).
    pub fn register_job(&self, job: &str) {
        let labels = job_labels(job);
        for result in RunResult::ALL {
            create(&self.runs, &run_labels(job, result));
        }
        create(&self.duration, &labels);
        create(&self.read_bytes, &labels);
        create(&self.written_bytes, &labels);
        create(&self.skipped_bytes, &labels);
        for kind in ArtifactKind::ALL {
            create(&self.created, &artifact_labels(job, kind));
            create(&self.pruned, &artifact_labels(job, kind));
        }
        create(&self.skipped_locked, &labels);
        create(&self.skipped_overlap, &labels);
        create(&self.done_elsewhere, &labels);
    }

    /// Creates every series of `job` and of (`job`, `image`) at 0 (idempotent), for an image
    /// a selector found after start-up.
    pub fn register_image(&self, job: &str, image: &str) {
        self.forward(|| MetricEvent::RegisterImage {
            job: job.to_owned(),
            image: image.to_owned(),
        });
        self.create_image_series(job, image);
    }

    /// [`Metrics::register_image`]'s series, without forwarding (other updates that create
    /// them are forwarded themselves).
    fn create_image_series(&self, job: &str, image: &str) {
        self.register_job(job);
        let labels = image_labels(job, image);
        create(&self.last_success, &labels);
        create(&self.in_flight, &labels);
        create(&self.progress, &labels);
    }

    /// Removes the per-image series of (`job`, `image`), for an image that no longer belongs
    /// to the job (deleted, or no longer matched by its selector), so series do not pile up.
    pub fn forget_image(&self, job: &str, image: &str) {
        self.forward(|| MetricEvent::ForgetImage {
            job: job.to_owned(),
            image: image.to_owned(),
        });
        let labels = image_labels(job, image);
        self.last_success.remove(&labels);
        self.in_flight.remove(&labels);
        self.progress.remove(&labels);
    }

    /// A run of `job` over `image` started: one more in flight, progress 0.
    pub fn run_started(&self, job: &str, image: &str) {
        self.forward(|| MetricEvent::RunStarted {
            job: job.to_owned(),
            image: image.to_owned(),
        });
        self.create_image_series(job, image);
        let labels = image_labels(job, image);
        self.in_flight.get_or_create(&labels).inc();
        self.progress.get_or_create(&labels).set(0.0);
    }

    /// The running run of `job` over `image` has done `ratio` (0 to 1; values outside are
    /// clamped, NaN is ignored) of its work.
    pub fn progress(&self, job: &str, image: &str, ratio: f64) {
        if ratio.is_nan() {
            return;
        }
        self.forward(|| MetricEvent::Progress {
            job: job.to_owned(),
            image: image.to_owned(),
            ratio,
        });
        self.progress
            .get_or_create(&image_labels(job, image))
            .set(ratio.clamp(0.0, 1.0));
    }

    /// A run of `job` over `image` ended after `duration`, having moved `bytes`. Counts it by
    /// result, observes its duration, leaves progress at 1 after a success (where a failure
    /// stopped otherwise), and after a success sets the last-success time to now.
    pub fn run_finished(
        &self,
        job: &str,
        image: &str,
        result: RunResult,
        duration: Duration,
        bytes: RunBytes,
    ) {
        self.forward(|| MetricEvent::RunFinished {
            job: job.to_owned(),
            image: image.to_owned(),
            result,
            seconds: duration.as_secs_f64(),
            bytes,
        });
        self.create_image_series(job, image);
        let job_labels = job_labels(job);
        let labels = image_labels(job, image);
        self.runs.get_or_create(&run_labels(job, result)).inc();
        self.duration
            .get_or_create(&job_labels)
            .observe(duration.as_secs_f64());
        self.read_bytes
            .get_or_create(&job_labels)
            .inc_by(bytes.read);
        self.written_bytes
            .get_or_create(&job_labels)
            .inc_by(bytes.written);
        self.skipped_bytes
            .get_or_create(&job_labels)
            .inc_by(bytes.skipped);
        self.leave_flight(&labels);
        if result == RunResult::Success {
            self.progress.get_or_create(&labels).set(1.0);
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default();
            self.raise_last_success(job, image, now.as_secs_f64());
        }
    }

    /// A run of `job` over `image` ended without a result of its own (its worker process
    /// died): no longer in flight; the failure is counted with its job's ([`Metrics::
    /// run_finished`] by the scheduler).
    pub fn run_abandoned(&self, job: &str, image: &str) {
        self.forward(|| MetricEvent::RunAbandoned {
            job: job.to_owned(),
            image: image.to_owned(),
        });
        self.leave_flight(&image_labels(job, image));
    }

    /// One run of `labels` fewer in flight; never below 0, even if a caller reports an end
    /// without a start.
    fn leave_flight(&self, labels: &ImageLabels) {
        let in_flight = self.in_flight.get_or_create(labels);
        if in_flight.get() > 0 {
            in_flight.dec();
        }
    }

    /// [`Metrics::run_finished`] for a run that failed having moved nothing (before its work,
    /// or as a whole), after `duration`.
    pub fn run_failed(&self, job: &str, image: &str, duration: Duration) {
        self.run_finished(
            job,
            image,
            RunResult::Failure,
            duration,
            RunBytes::default(),
        );
    }

    /// A run of `job` over `image` found its tick already done (by another instance): counted
    /// per job, as [`Metrics::skipped_locked`].
    pub fn done_elsewhere(&self, job: &str, image: &str) {
        self.forward(|| MetricEvent::DoneElsewhere {
            job: job.to_owned(),
            image: image.to_owned(),
        });
        self.done_elsewhere.get_or_create(&job_labels(job)).inc();
    }

    /// A run of `job` was skipped because another instance holds the lock of (`job`, `image`).
    /// Counted per job: which image was contended is not worth a series per image.
    pub fn skipped_locked(&self, job: &str, image: &str) {
        self.forward(|| MetricEvent::SkippedLocked {
            job: job.to_owned(),
            image: image.to_owned(),
        });
        self.skipped_locked.get_or_create(&job_labels(job)).inc();
    }

    /// A tick of `job`'s schedule came while its previous run was still going in this
    /// instance, and was skipped.
    pub fn skipped_overlap(&self, job: &str) {
        self.forward(|| MetricEvent::SkippedOverlap {
            job: job.to_owned(),
        });
        self.skipped_overlap.get_or_create(&job_labels(job)).inc();
    }

    /// The last-success time of (`job`, `image`) in seconds since the Unix epoch; `None`
    /// when none is on record (the gauge is 0) or the pair is unknown.
    pub fn last_success_seconds(&self, job: &str, image: &str) -> Option<f64> {
        let seconds = self.last_success.get(&image_labels(job, image))?.get();
        (seconds > 0.0).then_some(seconds)
    }

    /// The progress (0 to 1) of the run of `job` over `image` in progress in this instance;
    /// `None` when none is.
    pub fn in_flight_progress(&self, job: &str, image: &str) -> Option<f64> {
        let labels = image_labels(job, image);
        if self.in_flight.get(&labels)?.get() <= 0 {
            return None;
        }
        Some(self.progress.get(&labels).map_or(0.0, |p| p.get()))
    }

    /// `job` created one snapshot or backup.
    pub fn created(&self, job: &str, kind: ArtifactKind) {
        self.forward(|| MetricEvent::Created {
            job: job.to_owned(),
            kind,
        });
        self.created
            .get_or_create(&artifact_labels(job, kind))
            .inc();
    }

    /// `job`'s retention removed `n` snapshots or backups.
    pub fn pruned(&self, job: &str, kind: ArtifactKind, n: u64) {
        self.forward(|| MetricEvent::Pruned {
            job: job.to_owned(),
            kind,
            n,
        });
        self.pruned
            .get_or_create(&artifact_labels(job, kind))
            .inc_by(n);
    }

    /// Sets the last-success time of (`job`, `image`), in seconds since the Unix epoch: at
    /// start-up from what the job stored, later by [`Metrics::run_finished`]. The gauge never
    /// goes back, so a late restore cannot hide a newer success.
    pub fn set_last_success(&self, job: &str, image: &str, unix_seconds: f64) {
        self.forward(|| MetricEvent::LastSuccess {
            job: job.to_owned(),
            image: image.to_owned(),
            unix_seconds,
        });
        self.raise_last_success(job, image, unix_seconds);
    }

    /// [`Metrics::set_last_success`] without forwarding ([`Metrics::run_finished`] sets it
    /// on both sides).
    fn raise_last_success(&self, job: &str, image: &str, unix_seconds: f64) {
        if !unix_seconds.is_finite() {
            return;
        }
        let gauge = self.last_success.get_or_create(&image_labels(job, image));
        if unix_seconds > gauge.get() {
            gauge.set(unix_seconds);
        }
    }

    /// Renders every series in the Prometheus text format ([`CONTENT_TYPE`]).
    pub fn render(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail; the encoder returns fmt::Error only when the
        // writer does.
        prometheus_client::encoding::prometheus_text::encode(&mut text, &self.registry)
            .expect("formatting metrics into a String cannot fail");
        text
    }
}

/// Registers a new metric (family) under `name` and returns the handle that updates it.
fn register<M: Metric + Clone + Default>(registry: &mut Registry, name: &str, help: &str) -> M {
    let metric = M::default();
    registry.register(name, help, metric.clone());
    metric
}

/// Creates the series of `labels` in `family` at 0, or leaves it as it is.
fn create<S, M, C>(family: &Family<S, M, C>, labels: &S)
where
    S: Clone + Hash + Eq,
    C: MetricConstructor<M>,
{
    // The guard only holds the family's read lock; the series stays.
    drop(family.get_or_create(labels));
}

fn job_labels(job: &str) -> JobLabels {
    JobLabels {
        job: job.to_owned(),
    }
}

fn image_labels(job: &str, image: &str) -> ImageLabels {
    ImageLabels {
        job: job.to_owned(),
        image: image.to_owned(),
    }
}

fn run_labels(job: &str, result: RunResult) -> RunLabels {
    RunLabels {
        job: job.to_owned(),
        result,
    }
}

fn artifact_labels(job: &str, kind: ArtifactKind) -> ArtifactLabels {
    ArtifactLabels {
        job: job.to_owned(),
        kind,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::io::Write as _;
    use std::process::{Command, Stdio};

    /// One sample line: metric name and its labels, sorted by name.
    type SeriesKey = (String, Vec<(String, String)>);

    /// What a scrape sees: every sample, and the `# TYPE` of every family.
    #[derive(Debug, Default)]
    struct Scrape {
        samples: BTreeMap<SeriesKey, f64>,
        types: BTreeMap<String, String>,
    }

    impl Scrape {
        fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
            let mut labels: Vec<(String, String)> = labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            labels.sort();
            self.samples.get(&(name.to_owned(), labels)).copied()
        }

        #[track_caller]
        fn get(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
            self.value(name, labels)
                .unwrap_or_else(|| panic!("no series {name}{labels:?} in the scrape"))
        }
    }

    /// Parses the text format as Prometheus reads it: `# TYPE` lines and samples
    /// `name{label="value",...} value`, with `\\`, `\"` and `\n` escapes in label values.
    fn parse(text: &str) -> Scrape {
        let mut scrape = Scrape::default();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').expect("TYPE line has a type");
                scrape.types.insert(name.to_owned(), kind.to_owned());
                continue;
            }
            if line.starts_with('#') || line.is_empty() {
                continue;
            }
            let (series, value) = line.rsplit_once(' ').expect("sample line has a value");
            let value: f64 = match value {
                "+Inf" => f64::INFINITY,
                v => v
                    .parse()
                    .unwrap_or_else(|_| panic!("bad value in {line:?}")),
            };
            let (name, mut labels) = match series.split_once('{') {
                None => (series.to_owned(), Vec::new()),
                Some((name, rest)) => (name.to_owned(), parse_labels(rest, line)),
            };
            labels.sort();
            let previous = scrape.samples.insert((name, labels), value);
            assert!(previous.is_none(), "duplicate series: {line}");
        }
        scrape
    }

    fn parse_labels(rest: &str, line: &str) -> Vec<(String, String)> {
        let mut labels = Vec::new();
        let mut chars = rest.chars();
        loop {
            let mut key = String::new();
            for c in chars.by_ref() {
                match c {
                    '=' => break,
                    '}' if key.is_empty() => return labels,
                    c => key.push(c),
                }
            }
            assert_eq!(
                chars.next(),
                Some('"'),
                "label value not quoted in {line:?}"
            );
            let mut value = String::new();
            while let Some(c) = chars.next() {
                match c {
                    '"' => break,
                    '\\' => match chars.next() {
                        Some('n') => value.push('\n'),
                        Some(c @ ('\\' | '"')) => value.push(c),
                        other => panic!("bad escape {other:?} in {line:?}"),
                    },
                    c => value.push(c),
                }
            }
            labels.push((key, value));
            match chars.next() {
                Some(',') => continue,
                Some('}') => return labels,
                other => panic!("unexpected {other:?} after a label in {line:?}"),
            }
        }
    }

    const PAIRS: [(&str, &str); 3] = [
        ("nightly", "rbd/vm1-os"),
        ("nightly", "rbd/vm1-data"),
        ("hourly", "rbd/vm1-os"),
    ];

    fn now_seconds() -> f64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs_f64()
    }

    #[test]
    fn every_series_exists_at_zero_for_every_configured_job_and_image() {
        let scrape = parse(&Metrics::new(PAIRS).render());
        for job in ["nightly", "hourly"] {
            for result in ["success", "failure"] {
                assert_eq!(
                    scrape.get("diskferry_runs_total", &[("job", job), ("result", result)]),
                    0.0
                );
            }
            for name in [
                "diskferry_read_bytes_total",
                "diskferry_written_bytes_total",
                "diskferry_skipped_bytes_total",
                "diskferry_runs_skipped_locked_total",
                "diskferry_runs_skipped_overlap_total",
                "diskferry_runs_done_elsewhere_total",
                "diskferry_run_duration_seconds_count",
                "diskferry_run_duration_seconds_sum",
            ] {
                assert_eq!(scrape.get(name, &[("job", job)]), 0.0, "{name}");
            }
            for kind in ["snapshot", "backup"] {
                for name in [
                    "diskferry_artifacts_created_total",
                    "diskferry_artifacts_pruned_total",
                ] {
                    assert_eq!(scrape.get(name, &[("job", job), ("kind", kind)]), 0.0);
                }
            }
        }
        for (job, image) in PAIRS {
            for name in [
                "diskferry_last_success_timestamp_seconds",
                "diskferry_runs_in_flight",
                "diskferry_run_progress_ratio",
            ] {
                assert_eq!(scrape.get(name, &[("job", job), ("image", image)]), 0.0);
            }
        }
        // Per-image series only for configured pairs: no (hourly, vm1-data).
        assert_eq!(
            scrape.value(
                "diskferry_runs_in_flight",
                &[("job", "hourly"), ("image", "rbd/vm1-data")]
            ),
            None
        );
    }

    #[test]
    fn families_have_the_documented_types() {
        let scrape = parse(&Metrics::new(PAIRS).render());
        let expected = [
            ("diskferry_runs_total", "counter"),
            ("diskferry_last_success_timestamp_seconds", "gauge"),
            ("diskferry_run_duration_seconds", "histogram"),
            ("diskferry_read_bytes_total", "counter"),
            ("diskferry_written_bytes_total", "counter"),
            ("diskferry_skipped_bytes_total", "counter"),
            ("diskferry_artifacts_created_total", "counter"),
            ("diskferry_artifacts_pruned_total", "counter"),
            ("diskferry_runs_skipped_locked_total", "counter"),
            ("diskferry_runs_skipped_overlap_total", "counter"),
            ("diskferry_runs_done_elsewhere_total", "counter"),
            ("diskferry_runs_in_flight", "gauge"),
            ("diskferry_run_progress_ratio", "gauge"),
        ];
        let expected: BTreeMap<String, String> = expected
            .iter()
            .map(|(n, t)| (n.to_string(), t.to_string()))
            .collect();
        assert_eq!(scrape.types, expected);
    }

    #[test]
    fn the_getters_read_in_flight_progress_last_success_and_overlap_skips() {
        let metrics = Metrics::new(PAIRS);
        assert_eq!(metrics.in_flight_progress("nightly", "rbd/vm1-os"), None);
        assert_eq!(metrics.last_success_seconds("nightly", "rbd/vm1-os"), None);
        assert_eq!(metrics.last_success_seconds("nightly", "rbd/unknown"), None);
        metrics.run_started("nightly", "rbd/vm1-os");
        metrics.progress("nightly", "rbd/vm1-os", 0.5);
        assert_eq!(
            metrics.in_flight_progress("nightly", "rbd/vm1-os"),
            Some(0.5)
        );
        metrics.run_finished(
            "nightly",
            "rbd/vm1-os",
            RunResult::Success,
            Duration::from_secs(1),
            RunBytes::default(),
        );
        assert_eq!(metrics.in_flight_progress("nightly", "rbd/vm1-os"), None);
        assert!(metrics
            .last_success_seconds("nightly", "rbd/vm1-os")
            .is_some_and(|t| t > 0.0));
        metrics.skipped_overlap("hourly");
        metrics.skipped_overlap("hourly");
        let scrape = parse(&metrics.render());
        assert_eq!(
            scrape.get("diskferry_runs_skipped_overlap_total", &[("job", "hourly")]),
            2.0
        );
    }

    #[test]
    fn a_successful_run_is_counted_timed_and_sets_last_success() {
        let metrics = Metrics::new(PAIRS);
        let os = [("job", "nightly"), ("image", "rbd/vm1-os")];

        metrics.run_started("nightly", "rbd/vm1-os");
        metrics.progress("nightly", "rbd/vm1-os", 0.25);
        let scrape = parse(&metrics.render());
        assert_eq!(scrape.get("diskferry_runs_in_flight", &os), 1.0);
        assert_eq!(scrape.get("diskferry_run_progress_ratio", &os), 0.25);

        let before = now_seconds();
        let bytes = RunBytes {
            read: 3 << 20,
            written: 1 << 20,
            skipped: 5 << 20,
        };
        metrics.run_finished(
            "nightly",
            "rbd/vm1-os",
            RunResult::Success,
            Duration::from_secs(42),
            bytes,
        );
        let after = now_seconds();
        let scrape = parse(&metrics.render());
        let job = [("job", "nightly")];
        assert_eq!(
            scrape.get(
                "diskferry_runs_total",
                &[("job", "nightly"), ("result", "success")]
            ),
            1.0
        );
        assert_eq!(
            scrape.get(
                "diskferry_runs_total",
                &[("job", "nightly"), ("result", "failure")]
            ),
            0.0
        );
        assert_eq!(scrape.get("diskferry_read_bytes_total", &job), 3145728.0);
        assert_eq!(scrape.get("diskferry_written_bytes_total", &job), 1048576.0);
        assert_eq!(scrape.get("diskferry_skipped_bytes_total", &job), 5242880.0);
        assert_eq!(
            scrape.get("diskferry_run_duration_seconds_count", &job),
            1.0
        );
        assert_eq!(scrape.get("diskferry_run_duration_seconds_sum", &job), 42.0);
        let bucket = |le: &str| {
            scrape.get(
                "diskferry_run_duration_seconds_bucket",
                &[("job", "nightly"), ("le", le)],
            )
        };
        assert_eq!(bucket("30"), 0.0);
        assert_eq!(bucket("60"), 1.0);
        assert_eq!(bucket("+Inf"), 1.0);
        assert_eq!(scrape.get("diskferry_runs_in_flight", &os), 0.0);
        assert_eq!(scrape.get("diskferry_run_progress_ratio", &os), 1.0);
        let last = scrape.get("diskferry_last_success_timestamp_seconds", &os);
        assert!(
            (before..=after).contains(&last),
            "{before} <= {last} <= {after}"
        );
        // The other image of the job and the other job are untouched.
        let data = [("job", "nightly"), ("image", "rbd/vm1-data")];
        assert_eq!(
            scrape.get("diskferry_last_success_timestamp_seconds", &data),
            0.0
        );
        assert_eq!(
            scrape.get("diskferry_read_bytes_total", &[("job", "hourly")]),
            0.0
        );
    }

    #[test]
    fn a_failed_run_keeps_last_success_and_where_progress_stopped() {
        let metrics = Metrics::new(PAIRS);
        metrics.set_last_success("hourly", "rbd/vm1-os", 1_800_000_000.0);
        metrics.run_started("hourly", "rbd/vm1-os");
        metrics.progress("hourly", "rbd/vm1-os", 0.3);
        metrics.run_finished(
            "hourly",
            "rbd/vm1-os",
            RunResult::Failure,
            Duration::from_millis(1500),
            RunBytes::default(),
        );
        let scrape = parse(&metrics.render());
        let image = [("job", "hourly"), ("image", "rbd/vm1-os")];
        assert_eq!(
            scrape.get(
                "diskferry_runs_total",
                &[("job", "hourly"), ("result", "failure")]
            ),
            1.0
        );
        assert_eq!(
            scrape.get(
                "diskferry_runs_total",
                &[("job", "hourly"), ("result", "success")]
            ),
            0.0
        );
        assert_eq!(
            scrape.get("diskferry_last_success_timestamp_seconds", &image),
            1_800_000_000.0
        );
        assert_eq!(scrape.get("diskferry_run_progress_ratio", &image), 0.3);
        assert_eq!(scrape.get("diskferry_runs_in_flight", &image), 0.0);
    }

    #[test]
    fn progress_is_a_ratio_clamped_to_zero_and_one() {
        let metrics = Metrics::new(PAIRS);
        let image = [("job", "nightly"), ("image", "rbd/vm1-os")];
        let progress = |ratio: f64| {
            metrics.progress("nightly", "rbd/vm1-os", ratio);
            parse(&metrics.render()).get("diskferry_run_progress_ratio", &image)
        };
        assert_eq!(progress(1.5), 1.0);
        assert_eq!(progress(-0.2), 0.0);
        assert_eq!(progress(0.75), 0.75);
        assert_eq!(progress(f64::NAN), 0.75, "NaN is ignored");
    }

    #[test]
    fn last_success_restored_from_storage_never_goes_back() {
        let metrics = Metrics::new(PAIRS);
        let image = [("job", "nightly"), ("image", "rbd/vm1-data")];
        metrics.set_last_success("nightly", "rbd/vm1-data", 2_000_000_000.0);
        metrics.set_last_success("nightly", "rbd/vm1-data", 1_000_000_000.0);
        metrics.set_last_success("nightly", "rbd/vm1-data", f64::INFINITY);
        let scrape = parse(&metrics.render());
        assert_eq!(
            scrape.get("diskferry_last_success_timestamp_seconds", &image),
            2_000_000_000.0
        );
    }

    #[test]
    fn created_pruned_and_lock_skips_are_counted_per_job_and_kind() {
        let metrics = Metrics::new(PAIRS);
        metrics.created("nightly", ArtifactKind::Snapshot);
        metrics.created("nightly", ArtifactKind::Snapshot);
        metrics.created("nightly", ArtifactKind::Backup);
        metrics.pruned("nightly", ArtifactKind::Backup, 5);
        metrics.skipped_locked("hourly", "rbd/vm1-os");
        let scrape = parse(&metrics.render());
        let count =
            |name: &str, job: &str, kind: &str| scrape.get(name, &[("job", job), ("kind", kind)]);
        let created = "diskferry_artifacts_created_total";
        let pruned = "diskferry_artifacts_pruned_total";
        assert_eq!(count(created, "nightly", "snapshot"), 2.0);
        assert_eq!(count(created, "nightly", "backup"), 1.0);
        assert_eq!(count(pruned, "nightly", "backup"), 5.0);
        assert_eq!(count(pruned, "nightly", "snapshot"), 0.0);
        assert_eq!(count(created, "hourly", "snapshot"), 0.0);
        let skipped = "diskferry_runs_skipped_locked_total";
        assert_eq!(scrape.get(skipped, &[("job", "hourly")]), 1.0);
        assert_eq!(scrape.get(skipped, &[("job", "nightly")]), 0.0);
    }

    #[test]
    fn many_runs_add_no_series() {
        let metrics = Metrics::new(PAIRS);
        let series = parse(&metrics.render()).samples.len();
        for run in 0..200u32 {
            let (job, image) = PAIRS[run as usize % PAIRS.len()];
            metrics.run_started(job, image);
            metrics.progress(job, image, 0.5);
            let result = RunResult::ALL[run as usize % 2];
            let duration = Duration::from_secs(u64::from(run) * 97);
            metrics.run_finished(job, image, result, duration, RunBytes::default());
            metrics.created(job, ArtifactKind::Backup);
            metrics.pruned(job, ArtifactKind::Snapshot, 1);
            metrics.skipped_locked(job, image);
        }
        assert_eq!(parse(&metrics.render()).samples.len(), series);
    }

    #[test]
    fn images_found_later_get_series_and_forgotten_ones_lose_them() {
        let metrics = Metrics::new::<&str, &str>([]);
        metrics.register_job("selected");
        let scrape = parse(&metrics.render());
        assert_eq!(
            scrape.get(
                "diskferry_runs_total",
                &[("job", "selected"), ("result", "failure")]
            ),
            0.0
        );
        let image = [("job", "selected"), ("image", "rbd/found")];
        assert_eq!(scrape.value("diskferry_runs_in_flight", &image), None);

        metrics.register_image("selected", "rbd/found");
        let scrape = parse(&metrics.render());
        assert_eq!(scrape.get("diskferry_runs_in_flight", &image), 0.0);

        metrics.forget_image("selected", "rbd/found");
        let scrape = parse(&metrics.render());
        for name in [
            "diskferry_last_success_timestamp_seconds",
            "diskferry_runs_in_flight",
            "diskferry_run_progress_ratio",
        ] {
            assert_eq!(scrape.value(name, &image), None, "{name}");
        }
    }

    #[test]
    fn label_values_are_escaped() {
        let image = "pool/odd\"name\\with\nbreak";
        let metrics = Metrics::new([("job", image)]);
        let scrape = parse(&metrics.render());
        assert_eq!(
            scrape.get(
                "diskferry_runs_in_flight",
                &[("job", "job"), ("image", image)]
            ),
            0.0
        );
    }

    /// `promtool check metrics` (Debian's `prometheus` package, installed by
    /// scripts/install-deps) accepts the output: format and naming conventions.
    #[test]
    fn promtool_check_metrics_accepts_the_output() {
        let metrics = Metrics::new(PAIRS);
        metrics.run_started("nightly", "rbd/vm1-os");
        metrics.run_finished(
            "nightly",
            "rbd/vm1-os",
            RunResult::Success,
            Duration::from_secs(90),
            RunBytes {
                read: 1,
                written: 2,
                skipped: 3,
            },
        );
        metrics.created("nightly", ArtifactKind::Snapshot);
        metrics.pruned("hourly", ArtifactKind::Backup, 2);
        let text = metrics.render();

        let mut child = Command::new("promtool")
            .args(["check", "metrics"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run promtool ({e}): install Debian's prometheus package \
                     (scripts/install-deps does)"
                )
            });
        child
            .stdin
            .take()
            .expect("stdin is piped")
            .write_all(text.as_bytes())
            .expect("write the metrics to promtool");
        let output = child.wait_with_output().expect("wait for promtool");
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(
            output.status.success() && said.trim().is_empty(),
            "promtool check metrics: {}\n{said}\non:\n{text}",
            output.status
        );
    }

    #[test]
    fn updates_forwarded_and_applied_elsewhere_give_the_same_series() {
        let sent = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let forwarding = {
            let sent = std::sync::Arc::clone(&sent);
            Metrics::forwarding(move |event| sent.lock().unwrap().push(event))
        };
        // Every update, and none whose value depends on when it is applied (a success sets
        // the last-success time to the clock's).
        forwarding.register_image("j", "rbd/a");
        forwarding.run_started("j", "rbd/a");
        forwarding.progress("j", "rbd/a", 0.25);
        forwarding.created("j", ArtifactKind::Snapshot);
        forwarding.pruned("j", ArtifactKind::Backup, 3);
        forwarding.set_last_success("j", "rbd/b", 1_765_000_000.0);
        forwarding.skipped_locked("j", "rbd/c");
        forwarding.done_elsewhere("j", "rbd/c");
        forwarding.skipped_overlap("j");
        let bytes = RunBytes {
            read: 10,
            written: 7,
            skipped: 5,
        };
        forwarding.run_finished(
            "j",
            "rbd/a",
            RunResult::Failure,
            Duration::from_millis(1500),
            bytes,
        );
        forwarding.register_image("j", "rbd/gone");
        forwarding.forget_image("j", "rbd/gone");
        forwarding.run_started("j", "rbd/d");
        forwarding.run_abandoned("j", "rbd/d");

        let events = sent.lock().unwrap().clone();
        // One event per call: updates made inside others (a run's image series, a
        // success's time) are not sent twice.
        assert_eq!(events.len(), 14, "{events:?}");
        let applied = Metrics::new(std::iter::empty::<(&str, &str)>());
        for event in events {
            // Through the wire form, as a worker's line.
            let line = serde_json::to_string(&event).unwrap();
            applied.apply(serde_json::from_str(&line).unwrap());
        }
        // The same samples (a family's series are rendered in no fixed order).
        let scrape = parse(&applied.render());
        assert_eq!(scrape.samples, parse(&forwarding.render()).samples);
        assert_eq!(
            scrape.get("diskferry_read_bytes_total", &[("job", "j")]),
            10.0
        );
        assert_eq!(
            scrape.get(
                "diskferry_runs_total",
                &[("job", "j"), ("result", "failure")]
            ),
            1.0
        );
    }
}
