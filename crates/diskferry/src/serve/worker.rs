//! The runs of `diskferry serve` in worker processes.
//!
//! The service ([`crate::serve::service`]) schedules, serves HTTP and keeps the metrics; each
//! run of a job, and the start-up work on the cluster, happens in a worker process that
//! [`Workers`] starts from a [`WorkerCommand`] (the CLI's hidden `serve-worker` subcommand,
//! which calls [`run_worker`]). Why:
//! - **Memory between runs.** Only a worker loads Ceph's client libraries, connects to the
//!   cluster and holds the buffers of a copy; when the run ends, all of it goes with the
//!   process, and the idle service keeps only its own few MiB (BENCHMARKS.md, "Session 12").
//! - **A crash fails one run, not the service.** A worker that dies (an abort inside librados,
//!   the OOM killer) is a failed run: its started images leave flight, the scheduler counts
//!   a failure per image of the job, the service goes on, and the next run of each image
//!   removes what the dead one left (RELIABILITY.md, "Found and fixed (session 12)").
//!
//! The protocol, on the worker's standard input and output (its standard error is the
//! service's, so its log lines go where the service's go):
//! - the service writes one line: the [`WorkerRequest`] as JSON, with the configuration's text
//!   (the file is not read again: a worker runs the configuration its service validated);
//! - the worker writes one JSON [`WorkerMessage`] per line: every update of the metrics as it
//!   happens (progress at most every [`PROGRESS_INTERVAL`] per image), then one final message
//!   (the run's report, what start-up found, or why the task could not run);
//! - the service writes [`CANCEL_LINE`] to stop the run gracefully (shutdown). End of input
//!   without it means the service is gone (killed): the worker stops the same way, removing
//!   what its run had made, and releases its locks.

use std::collections::HashMap;
use std::ffi::OsString;
use std::io::{BufRead, Read, Write};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use futures::FutureExt;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio_util::sync::CancellationToken;

use crate::serve::config::{Config, Job};
use crate::serve::metrics::{MetricEvent, Metrics};
use crate::serve::runner::{RunError, RunReport, RunTime, Runner};
use crate::serve::scheduler::Execute;
use crate::serve::service::{prepare, Startup};

/// The longest task line a worker reads (the configuration's text is most of it: a file
/// of many jobs is a few hundred KiB).
pub const MAX_REQUEST_BYTES: u64 = 16 << 20;

/// The line the service writes to a worker's input to stop its run.
pub const CANCEL_LINE: &str = "cancel";

/// A worker reports the progress of an image at most this often (the service's gauges and
/// `/jobs` need no more; a fast copy reports positions thousands of times a second).
pub const PROGRESS_INTERVAL: Duration = Duration::from_millis(200);

/// How long a worker may take to exit after its final message before it is killed.
pub const WORKER_EXIT_GRACE: Duration = Duration::from_secs(30);

/// How the service starts a worker: the program with the arguments that select the worker
/// task, and the configuration the worker is handed.
#[derive(Debug, Clone)]
pub struct WorkerCommand {
    /// The program (the CLI: its own executable, as `/proc/self/exe`, which still runs the
    /// service's binary after a package upgrade has replaced or removed the file).
    pub program: PathBuf,
    /// The name the worker is started under (its `argv[0]`, what `ps` shows); `None`: the
    /// program's.
    pub arg0: Option<OsString>,
    /// Its arguments (the CLI: its log options and `serve-worker`).
    pub args: Vec<OsString>,
    /// The text of the configuration file, as the service read and validated it.
    pub config: String,
    /// The file's name, for the configuration's messages.
    pub origin: String,
}

/// What a worker is asked to do: the first line of its input, as JSON.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkerRequest {
    /// The configuration's text.
    pub config: String,
    /// The configuration file's name.
    pub origin: String,
    /// The task.
    pub task: WorkerTask,
}

/// A worker's task.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "task", rename_all = "kebab-case")]
pub enum WorkerTask {
    /// The service's start-up work on the cluster ([`prepare`]).
    Prepare,
    /// One run of `job` as of `at` ([`Runner::run_job`]).
    Run {
        /// The job's name.
        job: String,
        /// The run's time.
        at: RunTime,
    },
}

/// One line of a worker's output, as JSON.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "message", rename_all = "kebab-case")]
pub enum WorkerMessage {
    /// An update of the metrics.
    Metric(MetricEvent),
    /// The start-up work is done (final).
    Prepared {
        /// What it found.
        startup: Startup,
    },
    /// The run ended (final).
    Report {
        /// What it did, image by image.
        report: RunReport,
    },
    /// The task could not be done at all (final).
    Failed {
        /// Why.
        reason: String,
    },
}

/// Why a worker could not take its task.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// The request line could not be read.
    #[error("serve-worker: cannot read its task from standard input: {0}")]
    Input(#[source] std::io::Error),
    /// No request came (this command is started by `diskferry serve`, not by people).
    #[error("serve-worker: no task on standard input (diskferry serve starts this command)")]
    NoRequest,
    /// The request line is not a request.
    #[error(
        "serve-worker: standard input holds no task (diskferry serve starts this command): {0}"
    )]
    Request(#[source] serde_json::Error),
}

/// The worker's side: reads the request from `input`, does the task, writes the messages to
/// `output`. `cancel` stops the run (the CLI cancels it on SIGTERM and SIGINT); a
/// [`CANCEL_LINE`] or the end of `input` cancels it too. `input` is read on a thread of its
/// own, which never keeps the process from exiting. The task's own failures are reported in
/// a [`WorkerMessage::Failed`], not returned.
pub async fn run_worker(
    input: impl BufRead + Send + 'static,
    output: impl Write + Send + 'static,
    cancel: CancellationToken,
) -> Result<(), WorkerError> {
    let (first, rest) = tokio::sync::oneshot::channel();
    let watch = cancel.clone();
    std::thread::Builder::new()
        .name("serve-worker-input".into())
        .spawn(move || read_input(input, first, watch))
        .map_err(WorkerError::Input)?;
    let request = match rest.await {
        Ok(Ok(Some(line))) => line,
        Ok(Ok(None)) | Err(_) => return Err(WorkerError::NoRequest),
        Ok(Err(e)) => return Err(WorkerError::Input(e)),
    };
    let request: WorkerRequest = serde_json::from_str(&request).map_err(WorkerError::Request)?;
    let output = Output::new(output, cancel.clone());
    let final_message = task(request, &output, cancel).await;
    output.send(&final_message);
    Ok(())
}

/// Reads the request line into `first`, then watches for [`CANCEL_LINE`] or the end.
fn read_input(
    mut input: impl BufRead,
    first: tokio::sync::oneshot::Sender<std::io::Result<Option<String>>>,
    cancel: CancellationToken,
) {
    let mut line = String::new();
    let request = match (&mut input)
        .take(MAX_REQUEST_BYTES + 1)
        .read_line(&mut line)
    {
        Ok(0) => Ok(None),
        Ok(n) if n as u64 > MAX_REQUEST_BYTES => Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!(
                "the task line is longer than {} MiB",
                MAX_REQUEST_BYTES >> 20
            ),
        )),
        Ok(_) => Ok(Some(std::mem::take(&mut line))),
        Err(e) => Err(e),
    };
    let requested = matches!(request, Ok(Some(_)));
    let _ = first.send(request);
    if !requested {
        return;
    }
    loop {
        line.clear();
        match input.read_line(&mut line) {
            Ok(0) | Err(_) => break,
            Ok(_) if line.trim() == CANCEL_LINE => break,
            Ok(_) => {}
        }
    }
    cancel.cancel();
}

/// The worker's output: one JSON message per line, flushed at once. A write that fails (the
/// service is gone) cancels the run.
#[derive(Clone)]
struct Output {
    writer: Arc<Mutex<Box<dyn Write + Send>>>,
    cancel: CancellationToken,
}

impl Output {
    fn new(writer: impl Write + Send + 'static, cancel: CancellationToken) -> Self {
        Self {
            writer: Arc::new(Mutex::new(Box::new(writer))),
            cancel,
        }
    }

    fn send(&self, message: &WorkerMessage) {
        let line = json_line(message);
        let mut writer = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        if writer
            .write_all(&line)
            .and_then(|()| writer.flush())
            .is_err()
        {
            self.cancel.cancel();
        }
    }
}

/// Does the task of `request`; its final message.
async fn task(request: WorkerRequest, output: &Output, cancel: CancellationToken) -> WorkerMessage {
    let config = match Config::parse(&request.config, &request.origin) {
        Ok(config) => config,
        Err(e) => {
            return WorkerMessage::Failed {
                reason: e.to_string(),
            }
        }
    };
    let metrics = Arc::new(forwarding_metrics(output.clone()));
    let runner = Runner::from_config(&config, metrics).with_cancel(cancel);
    match request.task {
        WorkerTask::Prepare => WorkerMessage::Prepared {
            startup: prepare(&config, &runner).await,
        },
        WorkerTask::Run { job, at } => match config.jobs.iter().find(|j| j.name == job) {
            None => WorkerMessage::Failed {
                reason: format!("job {job}: not in the configuration {}", request.origin),
            },
            Some(job) => match runner.run_job(job, at).await {
                Ok(report) => WorkerMessage::Report { report },
                Err(e) => WorkerMessage::Failed {
                    reason: e.to_string(),
                },
            },
        },
    }
}

/// Metrics that send every update to `output`, progress at most every
/// [`PROGRESS_INTERVAL`] per image.
fn forwarding_metrics(output: Output) -> Metrics {
    let last_progress: Mutex<HashMap<(String, String), Instant>> = Mutex::new(HashMap::new());
    Metrics::forwarding(move |event| {
        if let MetricEvent::Progress { job, image, .. } = &event {
            let mut last = last_progress.lock().unwrap_or_else(PoisonError::into_inner);
            let now = Instant::now();
            match last.get(&(job.clone(), image.clone())) {
                Some(at) if now.duration_since(*at) < PROGRESS_INTERVAL => return,
                _ => {
                    last.insert((job.clone(), image.clone()), now);
                }
            }
        }
        output.send(&WorkerMessage::Metric(event));
    })
}

/// The service's side: runs each job, and the start-up work, in a worker process of
/// `command`, and applies the workers' metric updates to its own registry.
#[derive(Debug)]
pub struct Workers {
    command: WorkerCommand,
    metrics: Arc<Metrics>,
    cancel: CancellationToken,
    /// [`WORKER_EXIT_GRACE`] (shorter in tests).
    exit_grace: Duration,
}

/// The runs a worker started and has not finished: if it dies, they are no longer in flight
/// (their failure is counted with the run's, by the scheduler).
#[derive(Debug, Default)]
struct Unfinished(std::collections::BTreeSet<(String, String)>);

impl Unfinished {
    fn track(&mut self, event: &MetricEvent) {
        match event {
            MetricEvent::RunStarted { job, image } => {
                self.0.insert((job.clone(), image.clone()));
            }
            MetricEvent::RunFinished { job, image, .. } => {
                self.0.remove(&(job.clone(), image.clone()));
            }
            _ => {}
        }
    }

    /// Takes every unfinished run out of flight.
    fn abandon_all(self, metrics: &Metrics) {
        for (job, image) in self.0 {
            metrics.run_abandoned(&job, &image);
        }
    }
}

impl Workers {
    /// Workers of `command`, updating `metrics`.
    pub fn new(command: WorkerCommand, metrics: Arc<Metrics>) -> Self {
        Self {
            command,
            metrics,
            cancel: CancellationToken::new(),
            exit_grace: WORKER_EXIT_GRACE,
        }
    }

    /// The start-up work, in a worker. A worker that fails leaves a warning and no units (each
    /// job's runs find theirs).
    pub async fn prepare(&self) -> Startup {
        let reason = match self.call(WorkerTask::Prepare).await {
            Ok(WorkerMessage::Prepared { startup }) => return startup,
            Ok(other) => final_reason(&other),
            Err(reason) => reason,
        };
        Startup {
            warnings: vec![format!(
                "the start-up work (leftovers, last successes) failed: {reason}"
            )],
            ..Startup::default()
        }
    }

    /// Runs `job` as of `at` in a worker.
    async fn run_job(&self, job: &Job, at: RunTime) -> Result<RunReport, RunError> {
        let worker_failed = |reason: String| RunError::Worker {
            job: job.name.clone(),
            reason,
        };
        let task = WorkerTask::Run {
            job: job.name.clone(),
            at,
        };
        match self.call(task).await.map_err(worker_failed)? {
            WorkerMessage::Report { report } => Ok(report),
            other => Err(worker_failed(final_reason(&other))),
        }
    }

    /// Starts a worker on `task`, applies its metric updates, and returns its final message.
    async fn call(&self, task: WorkerTask) -> Result<WorkerMessage, String> {
        let program = self.command.program.display();
        let mut command = tokio::process::Command::new(&self.command.program);
        if let Some(arg0) = &self.command.arg0 {
            command.arg0(arg0);
        }
        let mut child = command
            .args(&self.command.args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            // A worker still running when the service gives up on it (the stop deadline) dies
            // with it, as an in-process run would.
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot start a worker process ({program}): {e}"))?;
        let (Some(mut input), Some(output)) = (child.stdin.take(), child.stdout.take()) else {
            return Err("the worker process has no standard input or output".into());
        };
        let request = WorkerRequest {
            config: self.command.config.clone(),
            origin: self.command.origin.clone(),
            task,
        };
        let line = json_line(&request);
        // A worker that cannot read its task says why on its standard error and ends.
        let _ = input.write_all(&line).await;
        let _ = input.flush().await;
        let mut input = Some(input);
        let mut lines = BufReader::new(output).lines();
        let mut unfinished = Unfinished::default();
        let mut final_message = None;
        let mut cancel_sent = false;
        loop {
            tokio::select! {
                line = lines.next_line() => match line {
                    Ok(Some(line)) => match serde_json::from_str::<WorkerMessage>(&line) {
                        Ok(WorkerMessage::Metric(event)) => {
                            unfinished.track(&event);
                            self.metrics.apply(event);
                        }
                        Ok(message) => {
                            final_message = Some(message);
                            break;
                        }
                        Err(e) => tracing::warn!("a worker process wrote a line that is not a message ({e}): {line:.200}"),
                    },
                    Ok(None) | Err(_) => break,
                },
                () = self.cancel.cancelled(), if !cancel_sent && input.is_some() => {
                    cancel_sent = true;
                    if let Some(writer) = input.as_mut() {
                        // Kept open after it: its end would also mean "the service is gone".
                        let _ = writer.write_all(format!("{CANCEL_LINE}\n").as_bytes()).await;
                        let _ = writer.flush().await;
                    }
                }
            }
        }
        // The task is done or the worker ended: end of input lets its reader end.
        drop(input);
        match final_message {
            Some(message) => {
                // The run is over; a worker that does not exit (a hang in the client
                // library's shutdown) must not hold the job as running.
                if tokio::time::timeout(self.exit_grace, child.wait())
                    .await
                    .is_err()
                {
                    tracing::warn!(
                        "a worker process did not exit {:?} after its report: killed",
                        self.exit_grace
                    );
                    let _ = child.kill().await;
                }
                Ok(message)
            }
            None => {
                let status = child.wait().await;
                unfinished.abandon_all(&self.metrics);
                Err(match status {
                    Ok(status) => format!("its worker process ended without a report ({status})"),
                    Err(e) => format!("its worker process ended without a report: {e}"),
                })
            }
        }
    }
}

/// `value` as one line of JSON, as both ends of the protocol write.
fn json_line(value: &impl Serialize) -> Vec<u8> {
    let mut line = serde_json::to_vec(value).expect("the protocol's types serialize");
    line.push(b'\n');
    line
}

/// What a final message that is not the expected one says.
fn final_reason(message: &WorkerMessage) -> String {
    match message {
        WorkerMessage::Failed { reason } => reason.clone(),
        other => format!("the worker process answered with an unexpected {other:?}"),
    }
}

impl Execute for Workers {
    fn run<'a>(&'a self, job: &'a Job, at: RunTime) -> BoxFuture<'a, Result<RunReport, RunError>> {
        self.run_job(job, at).boxed()
    }

    fn cancel(&self) {
        self.cancel.cancel();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::serve::runner::ImageOutcome;

    const CONFIG: &str = "time-zone = \"UTC\"\n[locks]\npool = \"rbd\"\n\
                          [[jobs]]\nname = \"snaps\"\nkind = \"snapshot\"\n\
                          schedule = \"0 2 * * *\"\nimages = [\"rbd:rbd/a\"]\n";

    fn job() -> Job {
        Config::parse(CONFIG, "test.toml").unwrap().jobs.remove(0)
    }

    fn at() -> RunTime {
        crate::serve::runner::parse_run_time("2026-12-07T02:00:00Z").unwrap()
    }

    /// A writer the test reads back.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Captured {
        fn messages(&self) -> Vec<WorkerMessage> {
            String::from_utf8(self.0.lock().unwrap().clone())
                .unwrap()
                .lines()
                .map(|line| serde_json::from_str(line).unwrap())
                .collect()
        }
    }

    async fn worker_on(input: &str) -> (Result<(), WorkerError>, Vec<WorkerMessage>) {
        let output = Captured::default();
        let input = std::io::Cursor::new(input.as_bytes().to_vec());
        let result = run_worker(input, output.clone(), CancellationToken::new()).await;
        (result, output.messages())
    }

    fn request(config: &str, task: WorkerTask) -> String {
        let request = WorkerRequest {
            config: config.to_string(),
            origin: "serve.toml".to_string(),
            task,
        };
        format!("{}\n", serde_json::to_string(&request).unwrap())
    }

    #[tokio::test]
    async fn a_worker_without_a_task_or_with_a_garbled_one_says_so_and_does_nothing() {
        let (result, messages) = worker_on("").await;
        assert!(matches!(result, Err(WorkerError::NoRequest)), "{result:?}");
        assert!(messages.is_empty());
        let (result, messages) = worker_on("{\"task\": 42}\n").await;
        assert!(matches!(result, Err(WorkerError::Request(_))), "{result:?}");
        assert!(messages.is_empty());
        let huge = "x".repeat(MAX_REQUEST_BYTES as usize + 10);
        let (result, messages) = worker_on(&huge).await;
        let Err(WorkerError::Input(e)) = &result else {
            panic!("{result:?}")
        };
        assert!(e.to_string().contains("longer than 16 MiB"), "{e}");
        assert!(messages.is_empty());
    }

    #[tokio::test]
    async fn a_worker_reports_a_job_it_cannot_run_and_a_configuration_it_cannot_read() {
        let task = WorkerTask::Run {
            job: "nosuch".into(),
            at: at(),
        };
        let (result, messages) = worker_on(&request(CONFIG, task.clone())).await;
        result.unwrap();
        let [WorkerMessage::Failed { reason }] = &messages[..] else {
            panic!("{messages:?}")
        };
        assert!(
            reason.contains("nosuch") && reason.contains("serve.toml"),
            "{reason}"
        );
        let (result, messages) = worker_on(&request("jobs = 3\n", task)).await;
        result.unwrap();
        let [WorkerMessage::Failed { reason }] = &messages[..] else {
            panic!("{messages:?}")
        };
        assert!(reason.contains("serve.toml"), "{reason}");
    }

    #[test]
    fn a_worker_sends_progress_at_most_every_interval_and_every_other_update() {
        let output = Captured::default();
        let metrics = forwarding_metrics(Output::new(output.clone(), CancellationToken::new()));
        metrics.run_started("snaps", "rbd/a");
        for step in 0..1000 {
            metrics.progress("snaps", "rbd/a", f64::from(step) / 1000.0);
            metrics.progress("snaps", "rbd/b", f64::from(step) / 1000.0);
        }
        metrics.created("snaps", crate::serve::metrics::ArtifactKind::Snapshot);
        let messages = output.messages();
        let progress = |image: &str| {
            messages
                .iter()
                .filter(|m| matches!(m, WorkerMessage::Metric(MetricEvent::Progress { image: i, .. }) if i == image))
                .count()
        };
        // A thousand updates in far less than an interval: the first of each image goes.
        assert_eq!(
            (progress("rbd/a"), progress("rbd/b")),
            (1, 1),
            "{messages:?}"
        );
        assert_eq!(messages.len(), 4, "{messages:?}");
    }

    /// Service-side workers whose program is `sh -c SCRIPT` (a stand-in for the CLI: these
    /// tests are of the protocol and of what the service does with a worker's end).
    fn workers(script: &str) -> (Workers, Arc<Metrics>) {
        let metrics = Arc::new(Metrics::new([("snaps", "rbd/a")]));
        let command = WorkerCommand {
            program: "sh".into(),
            arg0: None,
            args: vec!["-c".into(), script.into()],
            config: CONFIG.into(),
            origin: "serve.toml".into(),
        };
        (Workers::new(command, Arc::clone(&metrics)), metrics)
    }

    fn line(message: &WorkerMessage) -> String {
        serde_json::to_string(message).unwrap()
    }

    fn report(outcome: ImageOutcome) -> WorkerMessage {
        let mut image = crate::serve::runner::ImageReport::new("rbd/a".into());
        image.outcome = outcome;
        WorkerMessage::Report {
            report: RunReport {
                job: "snaps".into(),
                time: at().to_rfc3339(),
                images: vec![image],
            },
        }
    }

    fn started() -> WorkerMessage {
        WorkerMessage::Metric(MetricEvent::RunStarted {
            job: "snaps".into(),
            image: "rbd/a".into(),
        })
    }

    fn runs(metrics: &Metrics, result: &str) -> String {
        let text = metrics.render();
        let wanted = format!("diskferry_runs_total{{job=\"snaps\",result=\"{result}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&wanted))
            .unwrap_or_else(|| panic!("no {wanted} in {text}"))
            .to_string()
    }

    #[tokio::test]
    async fn the_service_applies_a_workers_updates_and_returns_its_report() {
        let created = WorkerMessage::Metric(MetricEvent::Created {
            job: "snaps".into(),
            kind: crate::serve::metrics::ArtifactKind::Snapshot,
        });
        let script = format!(
            "read task; case \"$task\" in *'\"job\":\"snaps\"'*) ;; *) exit 3;; esac; \
             echo '{}'; echo '{}'",
            line(&created),
            line(&report(ImageOutcome::Success))
        );
        let (workers, metrics) = workers(&script);
        let report = workers.run_job(&job(), at()).await.unwrap();
        assert_eq!(report.images[0].outcome, ImageOutcome::Success);
        assert!(metrics
            .render()
            .contains("diskferry_artifacts_created_total{job=\"snaps\",kind=\"snapshot\"} 1"));
    }

    #[tokio::test]
    async fn a_worker_that_dies_fails_its_run_and_its_started_images_leave_flight() {
        let script = format!("read task; echo '{}'; kill -9 $$", line(&started()));
        let (workers, metrics) = workers(&script);
        let error = workers.run_job(&job(), at()).await.unwrap_err();
        let text = error.to_string();
        assert!(
            text.contains("snaps") && text.contains("without a report") && text.contains("9"),
            "{text}"
        );
        // Counted by the scheduler with the run's failure (one per image of the job).
        assert_eq!(runs(&metrics, "failure"), "0");
        assert_eq!(metrics.in_flight_progress("snaps", "rbd/a"), None);
        // The next run goes on.
        let script = format!("read task; echo '{}'", line(&report(ImageOutcome::Success)));
        let (workers, _) = self::workers(&script);
        workers.run_job(&job(), at()).await.unwrap();
    }

    #[tokio::test]
    async fn cancel_reaches_the_worker_as_a_line_and_its_report_comes_back() {
        // The worker reports cancelled images once it reads the cancel line.
        let script = format!(
            "read task; echo '{}'; read line; [ \"$line\" = {CANCEL_LINE} ] || exit 4; echo '{}'",
            line(&started()),
            line(&report(ImageOutcome::Cancelled))
        );
        let (workers, metrics) = workers(&script);
        let workers = Arc::new(workers);
        let running = tokio::spawn({
            let workers = Arc::clone(&workers);
            async move { workers.run_job(&job(), at()).await }
        });
        let waited = Instant::now();
        while metrics.in_flight_progress("snaps", "rbd/a").is_none() {
            assert!(waited.elapsed() < Duration::from_secs(10), "never started");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Execute::cancel(&*workers);
        let report = running.await.unwrap().unwrap();
        assert_eq!(report.images[0].outcome, ImageOutcome::Cancelled);
    }

    #[tokio::test]
    async fn a_worker_that_hangs_after_its_report_is_killed_and_the_run_ends() {
        // `exec`: the worker itself hangs (not a child of it).
        let script = format!(
            "read task; echo '{}'; exec sleep 600",
            line(&report(ImageOutcome::Success))
        );
        let (mut workers, _) = workers(&script);
        workers.exit_grace = Duration::from_millis(200);
        let started = Instant::now();
        let report = workers.run_job(&job(), at()).await.unwrap();
        assert_eq!(report.images[0].outcome, ImageOutcome::Success);
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{:?}",
            started.elapsed()
        );
    }

    #[tokio::test]
    async fn start_up_work_that_fails_is_a_warning() {
        let (workers, _) = workers("read task; echo oops >&2; exit 1");
        let startup = workers.prepare().await;
        assert!(startup.jobs.is_empty());
        assert!(
            startup.warnings[0].contains("without a report (exit status: 1)"),
            "{:?}",
            startup.warnings
        );
    }
}
