//! `diskferry serve --config FILE`: runs the configuration's jobs on their schedules, with
//! the HTTP API (`/metrics`, `/healthz`, `/jobs`, `POST /jobs/NAME/run`), until SIGTERM or
//! SIGINT; `--check` only validates the configuration and prints each job's next run times.
//! `diskferry run --config FILE JOB` runs one job once in the foreground, and
//! `diskferry prune --config FILE [JOB] --dry-run` shows what its retention would remove.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use diskferry::serve::config::{CheckReport, Config, ConfigError, Job, Problem, CHECK_RUNS};
use diskferry::serve::metrics::Metrics;
use diskferry::serve::runner::{
    clock_now, parse_run_time, prune_plans, ImageOutcome, PrunePlan, RunReport, RunTime, Runner,
};
use diskferry::serve::service::{Daemon, DaemonOptions, DEFAULT_STOP_DEADLINE};
use diskferry::serve::worker::{run_worker, WorkerCommand};
use serde::Serialize;

use super::CommandError;
use crate::logs::Verbosity;
use crate::ui::{self, OutputArgs};

/// Arguments of `serve`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Without --check, serve runs until SIGTERM or SIGINT: at each tick of a \
job's schedule (in the job's time zone) it runs the job as `diskferry run` would, as of the \
tick, so that several instances on one configuration name their snapshots alike and share the \
work through the RADOS locks. A tick that comes while the job still runs is skipped and counted \
(diskferry_runs_skipped_overlap_total); ticks missed while the process could not run are not \
replayed. At start it reads each image's last success back from the job's snapshots. The HTTP \
API listens on http.listen (default 127.0.0.1:9750): /metrics and /healthz without a token, \
/jobs and POST /jobs/NAME/run with the bearer token of http.token-file. On SIGTERM or SIGINT \
no new run starts, runs in progress are cancelled (a running pre hook is killed with its children; a post hook runs to its end or its timeout) and waited \
for up to --stop-deadline, then serve exits with 143 (SIGTERM) or 130 (SIGINT); a second \
signal exits at once. -v logs each run's start and end."
)]
pub struct Args {
    /// The configuration file (TOML; docs/serve.example.toml shows every field).
    #[arg(long, value_name = "FILE")]
    pub config: PathBuf,
    /// Validate the configuration and print each job with its next 3 run times (in its zone
    /// and in UTC), then exit: 0 when it is valid, 1 when not (every problem is listed).
    #[arg(long)]
    pub check: bool,
    /// With --check: the configuration alone (syntax, fields, schedules, names), not the
    /// files, token and target directories it names, as `promtool check config
    /// --syntax-only` does: for checking a configuration away from where it will run (CI, a
    /// container's file before it is mounted).
    #[arg(long, requires = "check")]
    pub syntax_only: bool,
    /// On SIGTERM or SIGINT, how long to wait for the runs in progress to stop (they release
    /// their locks) before exiting anyway (their locks then lapse after the lease). Below
    /// the 30 s Kubernetes grants before SIGKILL by default.
    #[arg(long, value_name = "SECONDS", default_value_t = DEFAULT_STOP_DEADLINE.as_secs())]
    pub stop_deadline: u64,
    #[command(flatten)]
    output: OutputArgs,
}

/// `--check --json` of a valid configuration.
#[derive(Serialize)]
struct Valid<'a> {
    valid: bool,
    #[serde(flatten)]
    report: &'a CheckReport,
}

/// `--check --json` of a configuration that was refused.
#[derive(Serialize)]
struct Invalid {
    file: String,
    valid: bool,
    problems: Vec<Problem>,
}

/// Runs `serve`, its workers logging as `verbosity` says.
pub async fn run(args: Args, verbosity: Verbosity) -> Result<(), CommandError> {
    let origin = args.config.display().to_string();
    // --check also refuses what the service or its first run would fail on from here
    // (files, token, local target directories), each by its field, unless --syntax-only.
    let loaded = Config::load_text(&args.config).and_then(|(config, text)| {
        let problems = if args.check && !args.syntax_only {
            config.start_problems()
        } else {
            Vec::new()
        };
        if problems.is_empty() {
            Ok((config, text))
        } else {
            Err(ConfigError::Invalid {
                origin: origin.clone(),
                problems,
            })
        }
    });
    let (config, text) = match loaded {
        Ok(loaded) => loaded,
        Err(err) => {
            if args.check && args.output.json {
                let invalid = Invalid {
                    file: origin,
                    valid: false,
                    problems: err.problems(),
                };
                args.output.print(&invalid, String::new)?;
            }
            return Err(err.into());
        }
    };
    if !args.check {
        let exe = std::env::current_exe()?;
        let workers = WorkerCommand {
            program: if Path::new(SELF_EXE).exists() {
                PathBuf::from(SELF_EXE)
            } else {
                exe.clone()
            },
            arg0: Some(exe.into_os_string()),
            args: verbosity
                .args()
                .into_iter()
                .chain([WORKER_SUBCOMMAND.to_string()])
                .map(Into::into)
                .collect(),
            config: text,
            origin: origin.clone(),
        };
        let stop_deadline = Duration::from_secs(args.stop_deadline);
        return serve(&config, &origin, stop_deadline, workers).await;
    }
    let report = config.check_report(&origin, SystemTime::now(), CHECK_RUNS);
    let valid = Valid {
        valid: true,
        report: &report,
    };
    args.output.print(&valid, || human(&report))
}

/// `serve` ended because a signal stopped it (main turns this into 130 or 143).
#[derive(Debug, thiserror::Error)]
#[error("serve stopped{}", abandoned_note(*.abandoned))]
struct ServeStopped {
    abandoned: usize,
}

/// What [`ServeStopped`] says of the runs abandoned at the stop deadline (none: nothing).
fn abandoned_note(abandoned: usize) -> String {
    match abandoned {
        0 => String::new(),
        1 => ": 1 run still going after the stop deadline was abandoned (its lock lapses after \
              the lease)"
            .to_string(),
        n => format!(
            ": {n} runs still going after the stop deadline were abandoned (their locks lapse \
             after the lease)"
        ),
    }
}

/// This process's executable, even once its file was replaced or removed (Linux).
const SELF_EXE: &str = "/proc/self/exe";

/// The hidden subcommand of serve's worker processes.
const WORKER_SUBCOMMAND: &str = "serve-worker";

/// Runs the service until SIGTERM or SIGINT, then stops it within `stop_deadline`; its runs
/// in worker processes of `workers`.
async fn serve(
    config: &Config,
    origin: &str,
    stop_deadline: Duration,
    workers: WorkerCommand,
) -> Result<(), CommandError> {
    // Before anything else, so a signal during start-up stops the service at once.
    let stop = ui::cancel_on_signal();
    let options = DaemonOptions {
        stop_deadline,
        ..DaemonOptions::default()
    };
    // The start-up work (leftovers, last successes) waits for the cluster; a signal meanwhile
    // stops it (its worker is killed: what it did is whole, what it did not is done at the
    // next start).
    let daemon = tokio::select! {
        started = Daemon::start(config, options, workers) => started?,
        () = stop.cancelled() => return Err(ServeStopped { abandoned: 0 }.into()),
    };
    let addr = daemon.local_addr()?;
    let startup = daemon.startup();
    eprintln!(
        "diskferry serve: {origin}: {} job{}, HTTP API on http://{addr} (/metrics, /healthz{})",
        startup.jobs.len(),
        if startup.jobs.len() == 1 { "" } else { "s" },
        if config.http.token_file.is_some() {
            ", /jobs and POST /jobs/NAME/run with the token"
        } else {
            "; no token file, so no /jobs"
        }
    );
    for warning in &startup.warnings {
        eprintln!("diskferry serve: warning: {warning}");
    }
    for job in &startup.jobs {
        let next = job
            .next_run
            .map_or_else(|| "never".to_string(), |t| t.to_rfc3339());
        eprintln!(
            "diskferry serve: job {}: {} image{}, {} with a last success on record, {} leftover{} of killed runs removed; next run {next}",
            job.name,
            job.images,
            if job.images == 1 { "" } else { "s" },
            job.restored,
            job.cleaned,
            if job.cleaned == 1 { "" } else { "s" }
        );
    }
    let stopped = daemon.run(stop).await;
    Err(ServeStopped {
        abandoned: stopped.abandoned,
    }
    .into())
}

/// The report for people.
fn human(report: &CheckReport) -> String {
    let mut lines = vec![format!(
        "{}: valid, {} job{}",
        report.file,
        report.jobs.len(),
        if report.jobs.len() == 1 { "" } else { "s" }
    )];
    lines.push(format!(
        "http: {}{}",
        report.http.listen,
        match &report.http.token_file {
            Some(file) => format!(", token in {}", file.display()),
            None => " (no token file: only /metrics and /healthz)".to_string(),
        }
    ));
    lines.push(format!(
        "locks: pool {}, lease {} s",
        report.lock_pool, report.lease_seconds
    ));
    for job in &report.jobs {
        lines.push(String::new());
        lines.push(format!("job {} ({})", job.name, job.kind));
        lines.push(format!("  images:      {}", job.images));
        if let Some(target) = &job.target {
            lines.push(format!("  target:      {target}"));
        }
        lines.push(format!(
            "  schedule:    {} ({})",
            job.schedule, job.time_zone
        ));
        lines.push(format!("  retention:   {}", job.retention));
        lines.push(format!("  concurrency: {}", job.concurrency));
        for (i, run) in job.next_runs.iter().enumerate() {
            let label = if i == 0 {
                "  next runs:   "
            } else {
                "               "
            };
            lines.push(format!("{label}{}", run.shown));
        }
    }
    lines.join("\n")
}

/// Arguments of `run`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Each image is locked in the configuration's lock pool, so runs of \
the same job elsewhere (serve instances, other timers) never work on an image at once; an image \
locked elsewhere is skipped and said so, as is one another instance already did at this run \
time. Ctrl-C or SIGTERM stops the run cleanly (copies aborted, nothing partial left). Exit \
status: 0 when no image failed (skipped ones included), 130/143 after a signal, 1 otherwise."
)]
pub struct RunArgs {
    /// The configuration file (TOML; docs/serve.example.toml shows every field).
    #[arg(long, value_name = "FILE")]
    pub config: PathBuf,
    /// The job to run.
    pub job: String,
    /// The run's time instead of the clock's (RFC 3339, e.g. 2026-12-06T02:00:00Z): names the
    /// snapshots and is the "now" of retention. For tests and replays.
    #[arg(long, value_name = "TIME", value_parser = parse_run_time)]
    pub now: Option<RunTime>,
    #[command(flatten)]
    output: OutputArgs,
}

/// Arguments of `prune`.
#[derive(Debug, clap::Args)]
pub struct PruneArgs {
    /// The configuration file.
    #[arg(long, value_name = "FILE")]
    pub config: PathBuf,
    /// Only this job (default: every job).
    pub job: Option<String>,
    /// Print what would be removed and why each survivor is kept, and remove nothing. Required:
    /// runs (`diskferry run`) apply retention themselves.
    #[arg(long, required = true)]
    pub dry_run: bool,
    /// Retention as of this time instead of the clock's (RFC 3339).
    #[arg(long, value_name = "TIME", value_parser = parse_run_time)]
    pub now: Option<RunTime>,
    #[command(flatten)]
    output: OutputArgs,
}

/// A job named on the command line that the configuration does not have.
#[derive(Debug, thiserror::Error)]
#[error("{file} has no job named {job:?} (its jobs: {known})")]
struct UnknownJob {
    file: String,
    job: String,
    known: String,
}

/// A run in which some image failed or that was cancelled; the report has been printed.
#[derive(Debug, thiserror::Error)]
#[error(
    "job {job}: {failed} of {total} {} failed, {cancelled} cancelled",
    if *.total == 1 { "image" } else { "images" }
)]
struct RunFailed {
    job: String,
    failed: usize,
    cancelled: usize,
    total: usize,
}

/// The job named `name` in `config`.
fn find_job<'a>(config: &'a Config, origin: &str, name: &str) -> Result<&'a Job, UnknownJob> {
    config.job(name).ok_or_else(|| UnknownJob {
        file: origin.to_string(),
        job: name.to_string(),
        known: config
            .jobs
            .iter()
            .map(|j| j.name.as_str())
            .collect::<Vec<_>>()
            .join(", "),
    })
}

/// Runs `run`.
pub async fn run_job(args: RunArgs) -> Result<(), CommandError> {
    let origin = args.config.display().to_string();
    let config = Config::load(&args.config)?;
    let job = find_job(&config, &origin, &args.job)?;
    let metrics = Arc::new(Metrics::new(std::iter::empty::<(&str, &str)>()));
    // Ctrl-C or SIGTERM stops the run cleanly: copies abort, images not started are
    // reported cancelled, and the exit status is that of the signal.
    let runner = Runner::from_config(&config, metrics)
        .with_cancel(ui::cancel_on_signal())
        .reporting_failures_itself();
    let now = args.now.unwrap_or_else(clock_now);
    let report = runner.run_job(job, now).await?;
    args.output.print(&report, || human_run(&report))?;
    if report.success() {
        Ok(())
    } else {
        Err(RunFailed {
            job: report.job.clone(),
            failed: report.count(ImageOutcome::Failed),
            cancelled: report.count(ImageOutcome::Cancelled),
            total: report.images.len(),
        }
        .into())
    }
}

/// The run report for people.
fn human_run(report: &RunReport) -> String {
    let mut lines = Vec::new();
    for image in &report.images {
        let line = match image.outcome {
            ImageOutcome::Success => format!(
                "{}: snapshot {}{}, {} pruned, {} kept",
                image.image,
                image.snapshot.as_deref().unwrap_or("-"),
                match &image.stored {
                    Some(stored) => format!(", stored {stored}"),
                    None => String::new(),
                },
                image.pruned.len() + image.stored_pruned.len(),
                image.kept.len() + image.stored_kept.len()
            ),
            ImageOutcome::SkippedLocked => format!(
                "{}: skipped, another instance holds its lock (not a failure)",
                image.image
            ),
            ImageOutcome::DoneElsewhere => format!(
                "{}: done elsewhere, {} already exists (not a failure)",
                image.image,
                image.snapshot.as_deref().unwrap_or("this run's snapshot")
            ),
            ImageOutcome::Cancelled => format!("{}: cancelled", image.image),
            ImageOutcome::Failed => format!(
                "{}: FAILED: {}",
                image.image,
                image.error.as_deref().unwrap_or("unknown error")
            ),
        };
        lines.push(line);
        for name in image.pruned.iter().chain(&image.stored_pruned) {
            lines.push(format!("  pruned {name}"));
        }
        for warning in &image.warnings {
            lines.push(format!("  warning: {warning}"));
        }
    }
    lines.push(format!(
        "job {} at {}: {} succeeded, {} skipped (locked elsewhere), {} done elsewhere, \
         {} cancelled, {} failed",
        report.job,
        report.time,
        report.count(ImageOutcome::Success),
        report.count(ImageOutcome::SkippedLocked),
        report.count(ImageOutcome::DoneElsewhere),
        report.count(ImageOutcome::Cancelled),
        report.count(ImageOutcome::Failed)
    ));
    lines.join("\n")
}

/// One job in `prune --dry-run --json`.
#[derive(Debug, Serialize)]
struct JobPlan {
    job: String,
    retention: String,
    images: Vec<PrunePlan>,
}

/// Runs `prune --dry-run`.
pub async fn prune(args: PruneArgs) -> Result<(), CommandError> {
    let origin = args.config.display().to_string();
    let config = Config::load(&args.config)?;
    let jobs: Vec<&Job> = match &args.job {
        Some(name) => vec![find_job(&config, &origin, name)?],
        None => config.jobs.iter().collect(),
    };
    let ctx = config.context();
    let now = args.now.unwrap_or_else(clock_now);
    let mut plans = Vec::new();
    for job in jobs {
        plans.push(JobPlan {
            job: job.name.clone(),
            retention: job.retention.to_string(),
            images: prune_plans(&ctx, job, now).await?,
        });
    }
    args.output.print(&plans, || human_prune(&plans))
}

/// The retention plan for people.
fn human_prune(plans: &[JobPlan]) -> String {
    let mut lines = Vec::new();
    for plan in plans {
        lines.push(format!("job {} ({}), dry run:", plan.job, plan.retention));
        for image in &plan.images {
            lines.push(format!(
                "  {}: {} snapshot{} kept, {} would be removed; {} stored kept, {} would be \
                 removed",
                image.image,
                image.keep.len(),
                if image.keep.len() == 1 { "" } else { "s" },
                image.remove.len(),
                image.stored_keep.len(),
                image.stored_remove.len()
            ));
            let kept = image.keep.iter().chain(&image.stored_keep);
            for kept in kept {
                lines.push(format!(
                    "    keep   {} ({})",
                    kept.snapshot,
                    kept.reasons.join(", ")
                ));
            }
            for name in image.remove.iter().chain(&image.stored_remove) {
                lines.push(format!("    remove {name}"));
            }
        }
    }
    lines.join("\n")
}

/// `diskferry serve-worker`: one task of a `serve` process (diskferry::serve::worker). SIGTERM
/// and SIGINT stop its run as the service's cancel line does.
pub async fn worker() -> Result<(), CommandError> {
    let cancel = ui::cancel_on_signal();
    run_worker(
        std::io::BufReader::new(std::io::stdin()),
        std::io::stdout(),
        cancel,
    )
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_are_spelt_in_the_singular_for_one() {
        assert_eq!(ServeStopped { abandoned: 0 }.to_string(), "serve stopped");
        assert_eq!(
            ServeStopped { abandoned: 1 }.to_string(),
            "serve stopped: 1 run still going after the stop deadline was abandoned (its lock \
             lapses after the lease)"
        );
        assert!(ServeStopped { abandoned: 2 }.to_string().starts_with(
            "serve stopped: 2 runs still going after the stop deadline were abandoned"
        ));
        let failed = |failed, total| {
            RunFailed {
                job: "nightly".into(),
                failed,
                cancelled: 0,
                total,
            }
            .to_string()
        };
        assert_eq!(
            failed(1, 1),
            "job nightly: 1 of 1 image failed, 0 cancelled"
        );
        assert_eq!(
            failed(1, 2),
            "job nightly: 1 of 2 images failed, 0 cancelled"
        );
    }
}
