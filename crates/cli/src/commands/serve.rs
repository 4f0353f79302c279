//! `diskferry serve --config FILE`: scheduled jobs. For now only `--check`, which validates
//! the configuration and prints each job with its next run times; the scheduler comes next.

use std::path::PathBuf;
use std::time::SystemTime;

use diskferry::serve::config::{CheckReport, Config, Problem, CHECK_RUNS};
use serde::Serialize;

use super::CommandError;
use crate::ui::OutputArgs;

/// The exit status of `serve` without `--check` until the scheduler exists: that of a usage
/// error, so a supervisor does not restart it in a loop as it would after a crash.
const NOT_IMPLEMENTED_STATUS: i32 = 2;

/// Arguments of `serve`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Without --check, serve is not implemented yet: it validates the \
configuration, says so and exits with status 2."
)]
pub struct Args {
    /// The configuration file (TOML; docs/serve.example.toml shows every field).
    #[arg(long, value_name = "FILE")]
    pub config: PathBuf,
    /// Validate the configuration and print each job with its next 3 run times (in its zone
    /// and in UTC), then exit: 0 when it is valid, 1 when not (every problem is listed).
    #[arg(long)]
    pub check: bool,
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

/// Runs `serve`.
pub async fn run(args: Args) -> Result<(), CommandError> {
    let origin = args.config.display().to_string();
    let config = match Config::load(&args.config) {
        Ok(config) => config,
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
        eprintln!(
            "diskferry serve: not implemented yet (the configuration {origin} is valid; \
             `diskferry serve --check --config {origin}` shows its jobs)"
        );
        std::process::exit(NOT_IMPLEMENTED_STATUS);
    }
    let report = config.check_report(&origin, SystemTime::now(), CHECK_RUNS);
    let valid = Valid {
        valid: true,
        report: &report,
    };
    args.output.print(&valid, || human(&report))
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
    for warning in &report.warnings {
        lines.push(format!(
            "warning: {warning} (needed when the service starts)"
        ));
    }
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
