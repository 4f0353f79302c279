//! No credential ever leaves the `diskferry` process: the S3 secret key and session token,
//! the Ceph key, the serve API token, a URL's password and a pre-signed URL's signature are
//! never in stdout (`--json` included), stderr (logs at every level, the SDK's and the HTTP
//! and TLS stacks' own at trace too, and errors) or `/proc/PID/cmdline` of the process and its
//! children, when they are given through the environment or a file. Each job runs for real
//! on the live cluster and its RGW, with a user whose keys are distinctive.

// Not every helper is used here.
#[allow(dead_code)]
mod common;

use common::{diskferry, ok};

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use diskferry_integration_tests::{
    ceph_conf, pattern, pool, s3_config, unique, ImageGuard, TEST_POOL,
};
use objstore::{S3Config, S3Store};

const MIB: usize = 1 << 20;

/// Every log target at trace, the SDK's and HTTP/TLS stacks' named too (so not held back).
const ALL_TRACE: &str = "trace,aws=trace,aws_sigv4=trace,aws_smithy_runtime=trace,\
aws_smithy_http_client=trace,hyper=trace,hyper_util=trace,h2=trace,rustls=trace,tower=trace";

/// The start of the hook's command line (see [`serve_config`]).
const HOOK: &str = "/bin/sleep 0.5";

/// Lines of a failed command's stderr shown.
const FAILURE_LINES: usize = 40;

/// How often the watcher reads `/proc/PID/cmdline` while the process runs.
const CMDLINE_POLL: Duration = Duration::from_millis(5);

/// An RGW user made for this test alone, with distinctive keys; removed on drop.
struct User {
    uid: String,
    access: String,
    secret: String,
}

impl User {
    fn create() -> Self {
        let tag = unique("sec").replace('-', "");
        let user = Self {
            uid: format!("diskferry-secrets-{tag}"),
            access: format!("DFSECRETSACCESS{tag}").to_uppercase(),
            secret: format!("dfSecretKey{tag}NeverPrinted0x5ec7e7"),
        };
        radosgw_admin(&[
            "user",
            "create",
            "--uid",
            &user.uid,
            "--display-name",
            "diskferry secrets test",
            "--access-key",
            &user.access,
            "--secret-key",
            &user.secret,
        ]);
        user
    }

    fn config(&self) -> S3Config {
        let mut config = s3_config();
        config.access_key_id = Some(self.access.clone());
        config.secret_access_key = Some(self.secret.clone());
        config
    }

    /// `diskferry` with this user's keys in the environment.
    fn diskferry(&self) -> Command {
        let mut cmd = diskferry();
        cmd.env("AWS_ACCESS_KEY_ID", &self.access)
            .env("AWS_SECRET_ACCESS_KEY", &self.secret)
            .env_remove("AWS_SESSION_TOKEN")
            .env_remove("RUST_LOG");
        cmd
    }
}

impl Drop for User {
    fn drop(&mut self) {
        let _ = Command::new("radosgw-admin")
            .args(["-c", &ceph_conf().to_string_lossy()])
            .args(["user", "rm", "--purge-data", "--uid", &self.uid])
            .output();
    }
}

fn radosgw_admin(args: &[&str]) {
    let out = Command::new("radosgw-admin")
        .args(["-c", &ceph_conf().to_string_lossy()])
        .args(args)
        .output()
        .expect("run radosgw-admin");
    assert!(
        out.status.success(),
        "radosgw-admin {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// What a process printed and every command line it and its children had while it ran.
struct Watched {
    output: Output,
    cmdlines: BTreeSet<String>,
}

impl Watched {
    fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.output.stdout).into_owned()
    }

    fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.output.stderr).into_owned()
    }

    /// Asserts that none of `secrets` is in stdout, stderr or any command line.
    fn assert_clean(&self, what: &str, secrets: &[&str]) {
        let (stdout, stderr) = (self.stdout(), self.stderr());
        for secret in secrets {
            assert!(!secret.is_empty());
            assert!(
                !stdout.contains(secret),
                "{what}: {secret:?} on stdout:\n{stdout}"
            );
            assert!(
                !stderr.contains(secret),
                "{what}: {secret:?} on stderr:\n{stderr}"
            );
            for line in &self.cmdlines {
                assert!(
                    !line.contains(secret),
                    "{what}: {secret:?} in a command line: {line}"
                );
            }
        }
        assert!(
            !self.cmdlines.is_empty(),
            "{what}: no command line was read"
        );
    }

    fn assert_success(&self, what: &str) {
        let stderr = self.stderr();
        // In a trace log, the lines that say why.
        let mut why: Vec<&str> = stderr
            .lines()
            .filter(|l| {
                l.starts_with("diskferry")
                    || l.contains(" WARN ")
                    || l.contains(" ERROR ")
                    || l.contains("panicked")
            })
            .take(FAILURE_LINES)
            .collect();
        if why.is_empty() {
            // A crash or a panic says none of those: its last lines then.
            let lines: Vec<&str> = stderr.lines().collect();
            why = lines[lines.len().saturating_sub(FAILURE_LINES)..].to_vec();
        }
        if !self.output.status.success() {
            let kept = std::env::temp_dir().join(format!(
                "secrets_cli-{}-{}.stderr",
                std::process::id(),
                what.replace(' ', "-")
            ));
            let _ = std::fs::write(&kept, stderr.as_bytes());
            let _ = std::fs::write(kept.with_extension("stdout"), &self.output.stdout);
            panic!(
                "{what} failed ({}; its whole stderr is in {}):\n{}",
                self.output.status,
                kept.display(),
                why.join("\n")
            );
        }
    }
}

/// The command lines of `pid` and of its descendants, as far as they can be read. Children
/// are found by their parent pid in `/proc/*/stat` (`/proc/PID/task/TID/children` is not in
/// every kernel).
fn cmdlines(pid: u32, into: &mut BTreeSet<String>) {
    let mut family = vec![pid];
    let procs: Vec<(u32, u32)> = std::fs::read_dir("/proc")
        .map(|dir| {
            dir.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
                .filter_map(|p| Some((p, parent_pid(p)?)))
                .collect()
        })
        .unwrap_or_default();
    let mut i = 0;
    while i < family.len() {
        let parent = family[i];
        family.extend(
            procs
                .iter()
                .filter(|(_, pp)| *pp == parent)
                .map(|(p, _)| *p),
        );
        i += 1;
    }
    for p in family {
        if let Ok(raw) = std::fs::read(format!("/proc/{p}/cmdline")) {
            if !raw.is_empty() {
                into.insert(String::from_utf8_lossy(&raw).replace('\0', " "));
            }
        }
    }
}

/// The parent pid of `pid`: the field after the parenthesised command in `/proc/PID/stat`.
fn parent_pid(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Runs `cmd`, reading the command lines of it and its children until it exits.
fn watch(mut cmd: Command) -> Watched {
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start diskferry");
    let pid = child.id();
    // Read once before anything else: a command that fails fast can be a zombie (whose
    // cmdline reads empty) by the time a thread starts on a loaded machine.
    let mut seen = BTreeSet::new();
    cmdlines(pid, &mut seen);
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let watcher = std::thread::spawn(move || loop {
        cmdlines(pid, &mut seen);
        if done_rx.recv_timeout(CMDLINE_POLL).is_ok() {
            return seen;
        }
    });
    let output = child.wait_with_output().expect("wait for diskferry");
    let _ = done_tx.send(());
    let cmdlines = watcher.join().expect("the watcher");
    Watched { output, cmdlines }
}

/// The client.admin key in the cluster's keyring.
fn admin_key() -> String {
    let conf = std::fs::read_to_string(ceph_conf()).unwrap();
    let keyring = conf
        .lines()
        .filter_map(|l| l.trim().strip_prefix("keyring"))
        .filter_map(|l| l.trim_start().strip_prefix('='))
        .map(str::trim)
        .next()
        .expect("the conf names the admin keyring");
    let text = std::fs::read_to_string(keyring).unwrap();
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("key"))
        .filter_map(|l| l.trim_start().strip_prefix('='))
        .map(|k| k.trim().to_owned())
        .next()
        .expect("a key in the admin keyring")
}

#[tokio::test(flavor = "multi_thread")]
async fn no_credential_is_printed_logged_or_on_a_command_line() {
    let user = User::create();
    let store = S3Store::from_config(&user.config()).unwrap();
    let bucket = unique("cli-secrets").to_lowercase();
    store.create_bucket(&bucket).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("disk.raw");
    let mut content = vec![0u8; 4 * MIB];
    content[MIB..2 * MIB].copy_from_slice(&pattern(47, MIB));
    std::fs::write(&raw, &content).unwrap();
    let raw = raw.to_str().unwrap();
    let mut guard = ImageGuard::new(&pool());
    let image = format!("rbd:{TEST_POOL}/{}", guard.add(unique("cli-secrets")));
    let copy = format!("rbd:{TEST_POOL}/{}", guard.add(unique("cli-secrets-copy")));
    let object = format!("s3://{bucket}/disk.raw");
    let secret = user.secret.as_str();

    // The Ceph key through CEPH_ARGS, everything logged.
    let ceph_key = admin_key();
    let mut cmd = user.diskferry();
    cmd.env("CEPH_ARGS", format!("--key {ceph_key}"))
        .env("RUST_LOG", ALL_TRACE)
        .args(["import", "--json", raw, &image]);
    let run = watch(cmd);
    run.assert_success("import with the Ceph key in CEPH_ARGS");
    run.assert_clean("import with the Ceph key in CEPH_ARGS", &[&ceph_key]);

    // A wrong Ceph key: refused, and the refusal does not repeat it.
    let wrong_ceph_key = "AQBsZWFrZWRrZXlOZXZlclByaW50ZWRYWFhYWFhYWA==";
    let mut cmd = user.diskferry();
    cmd.env("CEPH_ARGS", format!("--key {wrong_ceph_key}"))
        .args(["digest", "-vvv", "--json", &image]);
    let run = watch(cmd);
    assert!(!run.output.status.success(), "{}", run.stderr());
    run.assert_clean("digest with a wrong Ceph key", &[wrong_ceph_key]);

    // Export to S3 with every target at trace, the SDK's signing included.
    let mut cmd = user.diskferry();
    cmd.env("RUST_LOG", ALL_TRACE)
        .args(["export", "--json", &image, &object]);
    let run = watch(cmd);
    run.assert_success("export to S3");
    run.assert_clean("export to S3", &[secret]);
    assert!(
        run.stderr().contains("aws_smithy_runtime"),
        "the SDK's own logs were not on: {}",
        run.stderr()
    );

    // Import from S3 with -vvv, the keys from a credentials file given by AWS_PROFILE.
    let creds = dir.path().join("credentials");
    std::fs::write(
        &creds,
        format!(
            "[leaky]\naws_access_key_id = {}\naws_secret_access_key = {secret}\n",
            user.access
        ),
    )
    .unwrap();
    let mut cmd = diskferry();
    cmd.env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env_remove("RUST_LOG")
        .env("AWS_SHARED_CREDENTIALS_FILE", &creds)
        .env("AWS_CONFIG_FILE", dir.path().join("no-config"))
        .env("AWS_PROFILE", "leaky")
        .args(["import", "-vvv", "--json", &object, &copy]);
    let run = watch(cmd);
    run.assert_success("import from S3 with a credentials file");
    run.assert_clean("import from S3 with a credentials file", &[secret]);

    // A Longhorn backup to S3, logged at trace with --json.
    let snap = format!("{image}@secrets");
    ok(&user
        .diskferry()
        .args(["snap", "create", &snap])
        .output()
        .unwrap());
    let target = format!("s3://{bucket}@us-east-1/lh/");
    let mut cmd = user.diskferry();
    cmd.env("RUST_LOG", ALL_TRACE).args([
        "longhorn",
        "backup",
        "--json",
        &snap,
        &target,
        "--volume",
        "secrets-vol",
    ]);
    let run = watch(cmd);
    run.assert_success("longhorn backup");
    run.assert_clean("longhorn backup", &[secret]);

    // A wrong secret key and a session token: refused, and neither is repeated.
    let wrong = "dfWrongSecretNeverPrintedEither0x0bad5ec";
    let token = "dfSessionTokenNeverPrinted0xT0KENT0KENT0KEN";
    for (what, session) in [("a wrong secret", None), ("a session token", Some(token))] {
        let mut cmd = user.diskferry();
        cmd.env("AWS_SECRET_ACCESS_KEY", wrong)
            .env("RUST_LOG", ALL_TRACE)
            .args(["digest", "--json", &object]);
        if let Some(token) = session {
            cmd.env("AWS_SESSION_TOKEN", token);
        }
        let run = watch(cmd);
        assert!(!run.output.status.success(), "{what}: {}", run.stderr());
        assert!(
            run.stderr().contains("access denied"),
            "{what}: {}",
            run.stderr()
        );
        run.assert_clean(what, &[wrong, token]);
    }

    // A URL's password and a pre-signed URL's signature, through a variable: the shell
    // expands it, so it is on diskferry's command line by the user's choice; only the
    // output is checked here.
    let password = "dfUrlPasswordNeverPrinted";
    let signature = "df5e11ab1eSignatureNeverPrinted";
    let endpoint = user.config().endpoint.unwrap();
    let host = endpoint.trim_start_matches("http://").trim_end_matches('/');
    let url = format!(
        "http://alice:{password}@{host}/{bucket}/disk.raw?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Signature={signature}"
    );
    let out = user
        .diskferry()
        .env("RUST_LOG", ALL_TRACE)
        .args(["digest", "--json", &url])
        .output()
        .unwrap();
    assert!(!out.status.success());
    for text in [&out.stdout, &out.stderr] {
        let text = String::from_utf8_lossy(text);
        assert!(!text.contains(password), "{text}");
        assert!(!text.contains(signature), "{text}");
    }

    store.empty_and_delete_bucket(&bucket).await.unwrap();
}

/// A configuration whose API token is read from `token_file`, with one snapshot job on
/// `image` and a pre hook that runs [`HOOK`] (so the watcher sees a child).
fn serve_config(token_file: &Path, image: &str) -> String {
    format!(
        r#"time-zone = "UTC"
[http]
token-file = "{}"
[locks]
pool = "{TEST_POOL}"
[[jobs]]
name = "secret-snaps"
kind = "snapshot"
images = ["{image}"]
[jobs.hooks.pre]
command = ["/bin/sleep", "0.5"]
timeout-seconds = 10
"#,
        token_file.display()
    )
}

#[test]
fn the_api_token_is_never_printed_by_serve_check_or_run() {
    let token = "dfApiTokenNeverPrinted0xA9170KEN";
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("api-token");
    std::fs::write(&token_file, format!("{token}\n")).unwrap();
    // A token file open to others is refused, as ssh refuses such a private key.
    std::fs::set_permissions(
        &token_file,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    let mut guard = ImageGuard::new(&pool());
    let name = guard.add(unique("cli-secrets-run"));
    let image = format!("rbd:{TEST_POOL}/{name}");
    let raw = dir.path().join("disk.raw");
    std::fs::write(&raw, pattern(3, MIB)).unwrap();
    let raw = raw.to_str().unwrap();
    ok(&diskferry()
        .args(["import", "-q", raw, &image])
        .output()
        .unwrap());
    let config = dir.path().join("serve.toml");
    std::fs::write(&config, serve_config(&token_file, &image)).unwrap();
    let config = config.to_str().unwrap();

    for args in [
        vec!["serve", "--check", "--config", config],
        vec!["serve", "--check", "--json", "-vvv", "--config", config],
        vec!["run", "--json", "-vvv", "--config", config, "secret-snaps"],
    ] {
        let mut cmd = diskferry();
        cmd.env("RUST_LOG", ALL_TRACE).args(&args);
        let run = watch(cmd);
        run.assert_success(&args.join(" "));
        run.assert_clean(&args.join(" "), &[token]);
        // The run's hook was a child, and its command line was read too. (Only the first
        // run of a second runs it: another finds its snapshot made.)
        if args[0] == "run" {
            assert!(
                run.cmdlines.iter().any(|l| l.starts_with(HOOK)),
                "{:?}",
                run.cmdlines
            );
        }
    }
    // The guard removes the image with the snapshots the runs took.
}

/// How long `serve` may take to start listening.
const SERVE_START: Duration = Duration::from_secs(30);

/// One HTTP/1.1 request to `addr` with a bearer `token`; the answer's status line.
fn request(addr: &str, method: &str, path: &str, token: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).expect("connect to serve");
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\
         Content-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer.lines().next().unwrap_or_default().to_owned()
}

#[test]
fn serve_never_logs_its_token_or_one_presented_to_it() {
    let token = "dfServeTokenNeverPrinted0x5e7e";
    let wrong = "dfWrongServeTokenNeverPrinted0xbad";
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("api-token");
    std::fs::write(&token_file, format!("{token}\n")).unwrap();
    // A token file open to others is refused, as ssh refuses such a private key.
    std::fs::set_permissions(
        &token_file,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    let config = dir.path().join("serve.toml");
    std::fs::write(
        &config,
        format!(
            r#"time-zone = "UTC"
[http]
listen = "127.0.0.1:0"
token-file = "{}"
[locks]
pool = "{TEST_POOL}"
[[jobs]]
name = "yearly"
kind = "snapshot"
schedule = "@yearly"
images = ["rbd:{TEST_POOL}/{}"]
"#,
            token_file.display(),
            unique("cli-secrets-serve")
        ),
    )
    .unwrap();
    let log = dir.path().join("serve.log");
    let mut child = diskferry()
        .env("RUST_LOG", ALL_TRACE)
        .arg("serve")
        .arg("--config")
        .arg(&config)
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("start diskferry serve");
    let started = std::time::Instant::now();
    let addr = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if let Some(addr) = text
            .split("HTTP API on http://")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
        {
            break addr.to_owned();
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("serve ended before listening ({status})");
        }
        assert!(started.elapsed() < SERVE_START, "serve does not listen");
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut lines = BTreeSet::new();
    cmdlines(child.id(), &mut lines);
    assert!(request(&addr, "GET", "/jobs", token).contains(" 200 "));
    assert!(request(&addr, "GET", "/jobs", wrong).contains(" 401 "));
    assert!(request(&addr, "POST", "/jobs/yearly/run", wrong).contains(" 401 "));
    let stopped = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(stopped.success());
    let output = child.wait_with_output().unwrap();
    let run = Watched {
        output: Output {
            stderr: std::fs::read(&log).unwrap(),
            ..output
        },
        cmdlines: lines,
    };
    // (serve's log holds only its info and warnings, whatever RUST_LOG says.)
    run.assert_clean("serve", &[token, wrong]);
}
