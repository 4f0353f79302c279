//! The operator's kit checked by machine, since no Kubernetes cluster, container engine or
//! Grafana runs here: `deploy/` (Kubernetes manifests, Prometheus rules, Grafana dashboard),
//! `docker-compose.yml` and the guide `docs/kubevirt.md`.
//!
//! - Every Kubernetes manifest of `deploy/kubernetes/` and every YAML block of the guide
//!   validates offline against the Kubernetes schemas of [`KUBERNETES_VERSION`]
//!   (`kubernetes-validate`, strict: unknown fields are errors); the kinds it has no schema
//!   for must be the CRDs we expect, nothing else.
//! - The ServiceMonitor and PrometheusRule validate against the prometheus-operator's CRD
//!   schemas (npm `@kubernetes-models/prometheus-operator`), have the fields the operator
//!   needs, match the Service, and the PrometheusRule holds exactly `rules.yml`'s groups.
//! - `promtool check rules` and `promtool test rules` (a unit test of every alert) pass, and
//!   `promtool check config` on compose's Prometheus configuration.
//! - Every metric name in the rules and in the dashboard's queries is in a real scrape of
//!   `/metrics` from a running `diskferry serve` with the deployed configuration's jobs (see
//!   [`scrape_of_serve`]; `promtool check metrics` accepts it); the dashboard's queries parse
//!   as PromQL.
//! - `docker-compose.yml` validates against the compose specification's JSON schema
//!   (`check-jsonschema`'s vendored `compose-spec`), and the serve configurations of compose,
//!   of the ConfigMap and of the guide pass `diskferry serve --check`.
//! - The guide's command blocks marked `<!-- tested -->` run, in order, against the local
//!   cluster and RGW, and so does its
//!   `ceph auth get-or-create` line, whose user then snapshots, group-snapshots and locks.
//!
//! These two tests need the local cluster (`scripts/dev-cluster up`); the others need none.
//! Each validator is also shown a broken input, so a validator that accepts anything fails.
//! The tools come from scripts/install-deps (pip, npm and Debian's prometheus package).

/// The CLI tests' `diskferry` command with the cluster's environment (its other helpers
/// are not used here).
#[allow(dead_code)]
mod common;

use std::collections::BTreeSet;
use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use diskferry::serve::config::{Config, JobKind};
use diskferry_integration_tests::{
    ceph_conf, pattern, pool, s3_config, unique, ImageGuard, TEST_POOL,
};
use objstore::S3Store;
use serde_json::Value;

/// The Kubernetes version whose schemas the manifests are validated against.
const KUBERNETES_VERSION: &str = "1.32.0";

/// Kinds that are CRDs (no schema in the Kubernetes release): validated elsewhere
/// (prometheus-operator) or written from their projects' documentation (KubeVirt, CDI).
const CRD_KINDS: [&str; 4] = [
    "ServiceMonitor",
    "PrometheusRule",
    "VirtualMachine",
    "DataVolume",
];

/// Where scripts/install-deps puts the npm packages of these checks.
const NODE_MODULES: &str = "target/deploy-kit/node_modules";

/// The path of the serve configuration inside the containers.
const SERVE_CONFIG_IN_CONTAINER: &str = "/etc/diskferry/serve.toml";

/// The guide's markers before the fenced blocks the test runs.
const MARK_COMMANDS: &str = "<!-- tested -->";
const MARK_SERVE_CONFIG: &str = "<!-- tested: serve-config -->";
const MARK_CEPH_USER: &str = "<!-- tested: ceph-user -->";

/// The Ceph user the guide creates (replaced by a unique one in the test).
const GUIDE_CEPH_USER: &str = " client.diskferry ";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("the repository root")
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(repo().join(rel)).unwrap_or_else(|e| panic!("read {rel}: {e}"))
}

/// Runs a tool; a missing tool fails with the way to install it.
fn tool(program: &str, args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut child = Command::new(program)
        .args(args)
        .current_dir(repo())
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {program} ({e}): scripts/install-deps installs it"));
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .expect("stdin is piped")
            .write_all(input)
            .expect("write stdin");
    }
    child.wait_with_output().expect("wait for the tool")
}

fn said(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[track_caller]
fn assert_ok(out: &Output, what: &str) -> String {
    let text = said(out);
    assert!(out.status.success(), "{what}: {}\n{text}", out.status);
    text
}

/// The YAML documents of a file (or of `text`) as JSON, through PyYAML.
fn yaml(path: &Path) -> Vec<Value> {
    let helper = repo().join("crates/cli/tests/deploy_kit/yaml2json.py");
    let out = tool(
        "python3",
        &[&helper.to_string_lossy(), &path.to_string_lossy()],
        None,
    );
    let json = assert_ok(&out, &format!("parse {} as YAML", path.display()));
    serde_json::from_str(&json).expect("yaml2json prints JSON")
}

/// The fenced blocks of `lang` in the guide right after a line that is `marker`.
fn marked_blocks(guide: &str, marker: &str, lang: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut lines = guide.lines();
    while let Some(line) = lines.next() {
        if line.trim() != marker {
            continue;
        }
        let fence = lines.next().unwrap_or_default();
        assert_eq!(fence.trim(), format!("```{lang}"), "after {marker}");
        let body: Vec<&str> = lines.by_ref().take_while(|l| l.trim() != "```").collect();
        blocks.push(body.join("\n") + "\n");
    }
    blocks
}

/// Every fenced block of `lang` in the guide.
fn all_blocks(guide: &str, lang: &str) -> Vec<String> {
    let open = format!("```{lang}");
    let mut blocks = Vec::new();
    let mut lines = guide.lines();
    while let Some(line) = lines.next() {
        if line.trim() == open {
            let body: Vec<&str> = lines.by_ref().take_while(|l| l.trim() != "```").collect();
            blocks.push(body.join("\n") + "\n");
        }
    }
    blocks
}

// ---------------------------------------------------------------------------------------------
// Kubernetes schemas

/// What `kubernetes-validate` said about one file: resources that passed, kinds without a
/// schema, and errors.
#[derive(Debug, Default)]
struct Validation {
    passed: usize,
    no_schema: Vec<String>,
    errors: Vec<String>,
}

fn kubernetes_validate(file: &Path) -> Validation {
    let out = tool(
        "kubernetes-validate",
        &[
            "--strict",
            "--kubernetes-version",
            KUBERNETES_VERSION,
            &file.to_string_lossy(),
        ],
        None,
    );
    let mut validation = Validation::default();
    for line in said(&out).lines() {
        if line.contains(" passed for resource ") {
            validation.passed += 1;
        } else if let Some(rest) = line.split("Couldn't find schema for kind ").nth(1) {
            validation.no_schema.push(
                rest.split_whitespace()
                    .next()
                    .unwrap_or_default()
                    .to_string(),
            );
        } else if !line.trim().is_empty() {
            validation.errors.push(line.to_string());
        }
    }
    if !out.status.success() && validation.errors.is_empty() {
        validation
            .errors
            .push(format!("exit status {}", out.status));
    }
    validation
}

#[track_caller]
fn assert_valid(file: &Path, what: &str) -> Validation {
    let validation = kubernetes_validate(file);
    assert!(
        validation.errors.is_empty(),
        "{what} against Kubernetes {KUBERNETES_VERSION}: {:#?}",
        validation.errors
    );
    for kind in &validation.no_schema {
        assert!(
            CRD_KINDS.contains(&kind.as_str()),
            "{what}: no schema for kind {kind}, which is not one of the expected CRDs"
        );
    }
    validation
}

#[test]
fn kubernetes_manifests_and_the_guides_yaml_validate_against_the_kubernetes_schemas() {
    let dir = repo().join("deploy/kubernetes");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    let mut passed = 0;
    let mut no_schema = BTreeSet::new();
    for file in &files {
        let v = assert_valid(file, &file.display().to_string());
        passed += v.passed;
        no_schema.extend(v.no_schema);
    }
    // Namespace, ConfigMap, Secret, Deployment + PDB, Service, CronJob, SA + Role + Binding.
    assert_eq!(passed, 10, "resources validated in {files:?}");
    assert_eq!(
        no_schema,
        BTreeSet::from(["PrometheusRule".to_string(), "ServiceMonitor".to_string()])
    );

    // The guide's YAML: the core kinds validate, the CRDs are KubeVirt's and CDI's.
    let guide = read("docs/kubevirt.md");
    let blocks = all_blocks(&guide, "yaml");
    assert!(
        blocks.len() >= 4,
        "the guide has {} YAML blocks",
        blocks.len()
    );
    let tmp = tempfile::tempdir().unwrap();
    let mut guide_passed = 0;
    for (i, block) in blocks.iter().enumerate() {
        let file = tmp.path().join(format!("guide-{i}.yaml"));
        std::fs::write(&file, block).unwrap();
        guide_passed += assert_valid(
            &file,
            &format!("YAML block {i} of docs/kubevirt.md\n{block}"),
        )
        .passed;
    }
    // PV, PVC (section 1), Secret (CDI), StorageClass and PVC (Longhorn).
    assert!(
        guide_passed >= 5,
        "only {guide_passed} guide resources validated"
    );

    // The validator does reject: a replica count that is not a number, an unknown field.
    let deployment = read("deploy/kubernetes/deployment.yaml");
    for (from, to) in [
        ("replicas: 2", "replicas: two"),
        ("readOnlyRootFilesystem: true", "readOnlyRootFS: true"),
    ] {
        assert!(deployment.contains(from));
        let file = tmp.path().join("broken.yaml");
        std::fs::write(&file, deployment.replacen(from, to, 1)).unwrap();
        assert!(
            !kubernetes_validate(&file).errors.is_empty(),
            "kubernetes-validate accepted {to:?}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// prometheus-operator resources

fn validate_crs(resources: &[Value]) -> Output {
    let script = repo().join("crates/cli/tests/deploy_kit/validate_crs.mjs");
    let modules = repo().join(NODE_MODULES);
    assert!(
        modules
            .join("@kubernetes-models/prometheus-operator")
            .is_dir(),
        "{} has no @kubernetes-models/prometheus-operator: run scripts/install-deps",
        modules.display()
    );
    let input = serde_json::to_vec(resources).unwrap();
    tool(
        "node",
        &[&script.to_string_lossy(), &modules.to_string_lossy()],
        Some(&input),
    )
}

fn kind<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind}"))
}

#[test]
fn service_monitor_and_prometheus_rule_validate_against_the_operators_crd_schemas() {
    let docs = yaml(&repo().join("deploy/kubernetes/monitoring.yaml"));
    let out = validate_crs(&docs);
    let text = assert_ok(&out, "CRD schema validation of monitoring.yaml");
    assert!(text.contains("ok ServiceMonitor/diskferry"), "{text}");
    assert!(text.contains("ok PrometheusRule/diskferry"), "{text}");

    // The schema does reject: an alert without expr, a `for` that is no duration.
    let rule = kind(&docs, "PrometheusRule").clone();
    let mut no_expr = rule.clone();
    no_expr["spec"]["groups"][1]["rules"][0]
        .as_object_mut()
        .unwrap()
        .remove("expr");
    let mut bad_for = rule.clone();
    bad_for["spec"]["groups"][1]["rules"][1]["for"] = Value::from("a while");
    for broken in [no_expr, bad_for] {
        let out = validate_crs(&[broken]);
        assert!(!out.status.success(), "accepted: {}", said(&out));
    }

    // What the operator needs, checked explicitly (its schemas let unknown fields through).
    let monitor = kind(&docs, "ServiceMonitor");
    let service = &yaml(&repo().join("deploy/kubernetes/service.yaml"))[0];
    let selector = monitor["spec"]["selector"]["matchLabels"]
        .as_object()
        .expect("ServiceMonitor spec.selector.matchLabels");
    for (key, value) in selector {
        assert_eq!(&service["metadata"]["labels"][key], value, "label {key}");
    }
    assert_eq!(
        monitor["spec"]["namespaceSelector"]["matchNames"][0],
        service["metadata"]["namespace"]
    );
    let endpoint = &monitor["spec"]["endpoints"][0];
    assert_eq!(endpoint["port"], service["spec"]["ports"][0]["name"]);
    assert_eq!(endpoint["path"], "/metrics");
    // The metrics' own `job` label must survive the scrape.
    assert_eq!(endpoint["honorLabels"], true);

    let groups = rule["spec"]["groups"].as_array().expect("spec.groups");
    for group in groups {
        assert!(group["name"].is_string(), "a group without name");
        for r in group["rules"].as_array().expect("rules") {
            assert!(r["expr"].is_string(), "a rule without expr: {r}");
            assert!(
                r["alert"].is_string() ^ r["record"].is_string(),
                "a rule needs exactly one of alert and record: {r}"
            );
        }
    }
    // The PrometheusRule is rules.yml, group for group.
    let rules = &yaml(&repo().join("deploy/prometheus/rules.yml"))[0];
    assert_eq!(&rule["spec"]["groups"], &rules["groups"]);
}

// ---------------------------------------------------------------------------------------------
// promtool

fn alert_names(rules: &Value) -> BTreeSet<String> {
    rules["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap().iter())
        .filter_map(|r| r["alert"].as_str().map(str::to_string))
        .collect()
}

#[test]
fn rules_pass_promtool_check_and_a_unit_test_of_every_alert() {
    let out = tool(
        "promtool",
        &["check", "rules", "deploy/prometheus/rules.yml"],
        None,
    );
    assert_ok(&out, "promtool check rules");

    let out = tool(
        "promtool",
        &["test", "rules", "deploy/prometheus/rules_test.yml"],
        None,
    );
    assert_ok(&out, "promtool test rules");

    // Each alert has a test case that expects it to fire.
    let rules = &yaml(&repo().join("deploy/prometheus/rules.yml"))[0];
    let tests = &yaml(&repo().join("deploy/prometheus/rules_test.yml"))[0];
    let firing: BTreeSet<String> = tests["tests"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|t| t["alert_rule_test"].as_array().unwrap().iter())
        .filter(|a| a["exp_alerts"].as_array().is_some_and(|e| !e.is_empty()))
        .map(|a| a["alertname"].as_str().unwrap().to_string())
        .collect();
    let alerts = alert_names(rules);
    assert_eq!(alerts.len(), 5, "{alerts:?}");
    assert_eq!(firing, alerts, "alerts without a firing test case");

    // compose's Prometheus configuration, with its rule file where promtool can find it.
    let tmp = tempfile::tempdir().unwrap();
    let rules_copy = tmp.path().join("rules.yml");
    std::fs::copy(repo().join("deploy/prometheus/rules.yml"), &rules_copy).unwrap();
    let config = read("deploy/prometheus/prometheus.yml");
    assert!(config.contains("/etc/prometheus/rules.yml"));
    let config_copy = tmp.path().join("prometheus.yml");
    std::fs::write(
        &config_copy,
        config.replace("/etc/prometheus/rules.yml", &rules_copy.to_string_lossy()),
    )
    .unwrap();
    let out = tool(
        "promtool",
        &["check", "config", &config_copy.to_string_lossy()],
        None,
    );
    assert_ok(&out, "promtool check config");
}

// ---------------------------------------------------------------------------------------------
// Metric names

/// The metric names (`diskferry_…`, not the `diskferry:…` recording rules) in a query.
fn metric_names(query: &str, into: &mut BTreeSet<String>) {
    let bytes = query.as_bytes();
    let ident = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b == b':';
    let mut i = 0;
    while let Some(at) = query[i..].find("diskferry_") {
        let start = i + at;
        let mut end = start;
        while end < bytes.len() && ident(bytes[end]) {
            end += 1;
        }
        if start == 0 || !ident(bytes[start - 1]) {
            into.insert(query[start..end].to_string());
        }
        i = end;
    }
}

/// Every query of the dashboard: panel targets and template variables.
fn dashboard_queries(dashboard: &Value) -> Vec<String> {
    let mut queries = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            queries.push(target["expr"].as_str().unwrap().to_string());
        }
    }
    for var in dashboard["templating"]["list"].as_array().unwrap() {
        if let Some(q) = var["query"]["query"].as_str() {
            queries.push(q.to_string());
        }
    }
    queries
}

/// How long `serve` may take to answer `/metrics` after it starts.
const SERVE_START_TIMEOUT: Duration = Duration::from_secs(30);

/// Stops (SIGKILL) and reaps a child process when dropped, also when the test panics.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `GET PATH` on 127.0.0.1:`port` (HTTP/1.0, so the body ends with the connection): the
/// body of a 200 answer, or `None`.
fn http_get(port: u16, path: &str) -> Option<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").as_bytes())
        .ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).ok()?;
    let (head, body) = answer.split_once("\r\n\r\n")?;
    (head.split_whitespace().nth(1) == Some("200")).then(|| body.to_string())
}

/// A real `/metrics` scrape of a running `diskferry serve` (on the local cluster) whose jobs
/// are those of the Deployment's ConfigMap: the same names and kinds, over one test image
/// each (the ConfigMap's selectors would pick the cluster's images; the metric names do not
/// depend on which), on schedules that do not come during the test.
fn scrape_of_serve(image: &str, target_dir: &Path) -> String {
    let tmp = tempfile::tempdir().unwrap();
    let deployed = tmp.path().join("deployed.toml");
    std::fs::write(&deployed, configmap_serve_toml()).unwrap();
    let deployed = Config::load(&deployed).expect("the ConfigMap's serve.toml loads");
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut config = format!(
        "time-zone = \"UTC\"\n[http]\nlisten = \"127.0.0.1:{port}\"\n[locks]\npool = \"{TEST_POOL}\"\n"
    );
    for job in &deployed.jobs {
        let kind = job.kind();
        config.push_str(&format!(
            "[[jobs]]\nname = \"{}\"\nkind = \"{}\"\nschedule = \"0 3 1 1 *\"\n\
             images = [\"rbd:{TEST_POOL}/{image}\"]\n",
            job.name,
            kind.name()
        ));
        if kind == JobKind::Export {
            config.push_str(&format!("target = \"{}/\"\n", target_dir.display()));
        }
    }
    let file = tmp.path().join("serve.toml");
    std::fs::write(&file, &config).unwrap();
    let child = common::diskferry()
        .args(["serve", "--config", &file.to_string_lossy()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start diskferry serve");
    let mut serve = ChildGuard(child);
    let started = Instant::now();
    loop {
        if let Some(body) = http_get(port, "/metrics") {
            return body;
        }
        if let Some(status) = serve.0.try_wait().unwrap() {
            panic!("diskferry serve exited with {status} on:\n{config}");
        }
        assert!(
            started.elapsed() < SERVE_START_TIMEOUT,
            "diskferry serve did not answer /metrics on port {port} within {SERVE_START_TIMEOUT:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn every_metric_in_the_rules_and_the_dashboard_is_in_a_scrape_of_serve() {
    let mut guard = ImageGuard::new(&pool());
    let image = guard.add(unique("kit-metrics"));
    rbd::create(&pool(), &image, 16 << 20, &rbd::CreateOptions::default()).unwrap();
    let exports = tempfile::tempdir().unwrap();
    let scrape = scrape_of_serve(&image, exports.path());
    // What Prometheus reads: promtool accepts the scrape.
    let out = tool("promtool", &["check", "metrics"], Some(scrape.as_bytes()));
    assert_ok(&out, "promtool check metrics on the scrape");
    let scraped: BTreeSet<String> = scrape
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| l.split(['{', ' ']).next().unwrap().to_string())
        .collect();

    let rules = &yaml(&repo().join("deploy/prometheus/rules.yml"))[0];
    let mut used = BTreeSet::new();
    for group in rules["groups"].as_array().unwrap() {
        for rule in group["rules"].as_array().unwrap() {
            metric_names(rule["expr"].as_str().unwrap(), &mut used);
        }
    }
    let dashboard: Value = serde_json::from_str(&read("deploy/grafana/diskferry.json")).unwrap();
    let queries = dashboard_queries(&dashboard);
    for query in &queries {
        metric_names(query, &mut used);
    }
    assert!(used.len() >= 10, "{used:?}");
    let missing: Vec<&String> = used.difference(&scraped).collect();
    assert!(
        missing.is_empty(),
        "used but not in the scrape: {missing:?}\nscrape:\n{scrape}"
    );

    // The dashboard's queries are PromQL (Grafana's variables given values), as promtool
    // parses recording rules.
    let mut rules_file = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, query) in queries.iter().enumerate() {
        if query.starts_with("label_values(") {
            continue;
        }
        let query = query
            .replace("$__interval", "5m")
            .replace("$__rate_interval", "5m")
            .replace("$job", ".*");
        rules_file.push_str(&format!(
            "      - record: dashboard:query_{i}\n        expr: {}\n",
            serde_json::to_string(&query).unwrap()
        ));
    }
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("dashboard-queries.yml");
    std::fs::write(&file, &rules_file).unwrap();
    let out = tool(
        "promtool",
        &["check", "rules", &file.to_string_lossy()],
        None,
    );
    assert_ok(
        &out,
        &format!("the dashboard's queries as PromQL:\n{rules_file}"),
    );
}

// ---------------------------------------------------------------------------------------------
// Compose and serve configurations

/// The ConfigMap's `serve.toml`.
fn configmap_serve_toml() -> String {
    let docs = yaml(&repo().join("deploy/kubernetes/config.yaml"));
    docs[0]["data"]["serve.toml"]
        .as_str()
        .expect("the ConfigMap has serve.toml")
        .to_string()
}

fn serve_check(file: &Path, what: &str) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_diskferry"))
        // The files and directories it names exist in the container, not here.
        .args([
            "serve",
            "--check",
            "--syntax-only",
            "--config",
            &file.to_string_lossy(),
        ])
        .stdin(Stdio::null())
        .output()
        .expect("run diskferry");
    assert_ok(&out, &format!("diskferry serve --check on {what}"))
}

#[test]
fn compose_file_follows_the_compose_spec_and_every_serve_configuration_checks() {
    let out = tool(
        "check-jsonschema",
        &[
            "--builtin-schema",
            "vendor.compose-spec",
            "docker-compose.yml",
        ],
        None,
    );
    assert_ok(&out, "docker-compose.yml against the compose specification");

    let compose = yaml(&repo().join("docker-compose.yml")).remove(0);
    // The schema does reject: an unknown service key.
    let tmp = tempfile::tempdir().unwrap();
    let mut broken = compose.clone();
    broken["services"]["diskferry"]["restart_policy"] = Value::from("always");
    let broken_file = tmp.path().join("broken-compose.json");
    std::fs::write(&broken_file, serde_json::to_vec(&broken).unwrap()).unwrap();
    let out = tool(
        "check-jsonschema",
        &[
            "--builtin-schema",
            "vendor.compose-spec",
            &broken_file.to_string_lossy(),
        ],
        None,
    );
    assert!(!out.status.success(), "accepted: {}", said(&out));

    // Compose keeps the cluster and gains serve, Prometheus and Grafana, each file it mounts
    // from deploy/ exists, and serve's configuration checks.
    let services = compose["services"].as_object().unwrap();
    for name in [
        "bootstrap",
        "mon",
        "mgr",
        "osd",
        "rgw",
        "setup",
        "diskferry",
        "prometheus",
        "grafana",
    ] {
        assert!(services.contains_key(name), "no service {name}");
    }
    let mut serve_config = None;
    for (name, service) in services {
        for volume in service["volumes"].as_array().into_iter().flatten() {
            let volume = volume.as_str().unwrap();
            let host = volume.split(':').next().unwrap();
            if host.starts_with("./deploy/") {
                assert!(repo().join(host).exists(), "{name} mounts a missing {host}");
            }
            if volume.split(':').nth(1) == Some(SERVE_CONFIG_IN_CONTAINER) {
                serve_config = Some(repo().join(host));
            }
        }
    }
    let serve = &services["diskferry"];
    assert_eq!(
        serve["command"],
        serde_json::json!(["serve", "--config", SERVE_CONFIG_IN_CONTAINER])
    );
    let serve_config = serve_config.expect("compose mounts a serve configuration");
    let text = serve_check(&serve_config, "compose's serve configuration");
    assert!(text.contains("valid, 2 jobs"), "{text}");

    // The ConfigMap's configuration; the CronJob runs one of its jobs.
    let file = tmp.path().join("configmap-serve.toml");
    std::fs::write(&file, configmap_serve_toml()).unwrap();
    let text = serve_check(&file, "the ConfigMap's serve.toml");
    let cronjob = &yaml(&repo().join("deploy/kubernetes/cronjob.yaml"))[0];
    let args = &cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["args"];
    assert_eq!(args[0], "run");
    let job = args[3].as_str().unwrap();
    assert!(
        text.contains(&format!("job {job} (")),
        "{job} not in:\n{text}"
    );

    // The guide's configuration.
    let guide = read("docs/kubevirt.md");
    let blocks = marked_blocks(&guide, MARK_SERVE_CONFIG, "toml");
    assert_eq!(blocks.len(), 1);
    let file = tmp.path().join("guide-serve.toml");
    std::fs::write(&file, &blocks[0]).unwrap();
    let text = serve_check(&file, "the guide's serve configuration");
    assert!(text.contains("valid, 3 jobs"), "{text}");
}

// ---------------------------------------------------------------------------------------------
// The guide's commands, on the local cluster

/// Removes a Ceph user when dropped.
struct CephUserGuard(String);

impl Drop for CephUserGuard {
    fn drop(&mut self) {
        let _ = Command::new("ceph")
            .args([
                "--conf",
                &ceph_conf().to_string_lossy(),
                "auth",
                "del",
                &self.0,
            ])
            .stdin(Stdio::null())
            .output();
    }
}

/// `bash -c SCRIPT` in `dir` with the cluster's environment, `diskferry` on PATH and `vars`.
fn bash(script: &str, dir: &Path, vars: &[(&str, String)]) -> Output {
    let bin = Path::new(env!("CARGO_BIN_EXE_diskferry")).parent().unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut cmd = Command::new("bash");
    // The environment the CLI tests give diskferry: the cluster's Ceph and S3.
    for (key, value) in common::diskferry().get_envs() {
        match value {
            Some(value) => cmd.env(key, value),
            None => cmd.env_remove(key),
        };
    }
    cmd.arg("-c")
        .arg(format!("set -euo pipefail\n{script}"))
        .current_dir(dir)
        .env("PATH", path)
        .stdin(Stdio::null());
    for (key, value) in vars {
        cmd.env(key, value);
    }
    cmd.output().expect("run bash")
}

#[tokio::test(flavor = "multi_thread")]
async fn the_guides_commands_run_against_the_local_cluster() {
    let guide = read("docs/kubevirt.md");
    let blocks = marked_blocks(&guide, MARK_COMMANDS, "sh");
    // Golden and clones, export-vm, import-vm, Longhorn backup, Longhorn restore.
    assert_eq!(blocks.len(), 5, "tested command blocks: {blocks:#?}");

    let store = S3Store::from_config(&s3_config()).unwrap();
    let bucket = unique("kit-exports").to_lowercase();
    let lh_bucket = unique("kit-longhorn").to_lowercase();
    store.create_bucket(&bucket).await.unwrap();
    store.create_bucket(&lh_bucket).await.unwrap();

    let vm = unique("kit-vm");
    let golden = unique("kit-golden");
    let mut guard = ImageGuard::new(&pool());
    // Parents first: the guard removes in reverse order (and clones with their parents).
    guard.add(golden.clone());
    for suffix in [
        "os",
        "data",
        "restored-os",
        "restored-data",
        "os-from-longhorn",
    ] {
        guard.add(format!("{vm}-{suffix}"));
    }

    // A small golden qcow2, made with qemu-img.
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("golden.raw");
    let mut content = vec![0u8; 64 << 20];
    content[..6 << 20].copy_from_slice(&pattern(16, 6 << 20));
    content[40 << 20..41 << 20].copy_from_slice(&pattern(17, 1 << 20));
    std::fs::write(&raw, &content).unwrap();
    let qcow2 = dir.path().join("golden.qcow2");
    let mut convert: Vec<String> = "convert -f raw -O qcow2"
        .split(' ')
        .map(String::from)
        .collect();
    convert.extend([raw.display().to_string(), qcow2.display().to_string()]);
    let convert: Vec<&str> = convert.iter().map(String::as_str).collect();
    let out = tool("qemu-img", &convert, None);
    assert_ok(&out, "qemu-img convert");

    let vars = [
        ("POOL", TEST_POOL.to_string()),
        ("VM", vm.clone()),
        ("NS", "vms".to_string()),
        ("BUCKET", bucket.clone()),
        ("LH_BUCKET", lh_bucket.clone()),
        ("GOLDEN", golden.clone()),
        ("GOLDEN_SOURCE", qcow2.to_string_lossy().into_owned()),
    ];
    for (i, block) in blocks.iter().enumerate() {
        let out = bash(block, dir.path(), &vars);
        assert_ok(&out, &format!("the guide's command block {i}:\n{block}"));
    }
    // What the blocks made: the restored disks hold what was exported, the Longhorn round
    // trip gives the clone's content back.
    let digest = |image: &str| {
        let out = bash(
            &format!("diskferry digest --json rbd:$POOL/{image}"),
            dir.path(),
            &vars,
        );
        let json: Value = serde_json::from_slice(&assert_ok_stdout(&out, image)).unwrap();
        json["digest"].as_str().unwrap().to_string()
    };
    assert_eq!(
        digest(&format!("{vm}-restored-os")),
        digest(&format!("{vm}-os"))
    );
    assert_eq!(
        digest(&format!("{vm}-restored-data")),
        digest(&format!("{vm}-data"))
    );

    // The Ceph user line: its caps allow what diskferry does (snapshots, group snapshots,
    // RADOS locks in the lock pool).
    let ceph_blocks = marked_blocks(&guide, MARK_CEPH_USER, "sh");
    assert_eq!(ceph_blocks.len(), 1);
    assert!(ceph_blocks[0].contains(GUIDE_CEPH_USER));
    let user = unique("client.kit-diskferry");
    let _user_guard = CephUserGuard(user.clone());
    let block = ceph_blocks[0].replace(GUIDE_CEPH_USER, &format!(" {user} "));
    let out = bash(&block, dir.path(), &vars);
    assert_ok(&out, &format!("the guide's ceph auth line:\n{block}"));
    let keyring = dir.path().join("ceph.client.diskferry.keyring");
    assert!(keyring.is_file(), "the ceph auth line wrote no keyring");
    let id = user.trim_start_matches("client.");
    let config = format!(
        "time-zone = \"UTC\"\n[locks]\npool = \"{TEST_POOL}\"\n[ceph]\nkeyring = \"{}\"\nid = \"{id}\"\n\
         [[jobs]]\nname = \"kit-snaps\"\nkind = \"snapshot\"\nimages = [\"rbd:{TEST_POOL}/{vm}-data\"]\n",
        keyring.display()
    );
    std::fs::write(dir.path().join("user.toml"), config).unwrap();
    let as_user = format!(
        "diskferry snap create --id {id} --keyring ceph.client.diskferry.keyring \"rbd:$POOL/$VM-data@as-user\"\n\
         diskferry export-vm --id {id} --keyring ceph.client.diskferry.keyring \
           --disk data=\"rbd:$POOL/$VM-data\" \"$PWD/bundle/\"\n\
         diskferry run --config user.toml kit-snaps\n"
    );
    let out = bash(&as_user, dir.path(), &vars);
    assert_ok(
        &out,
        &format!("diskferry as the guide's Ceph user:\n{as_user}"),
    );
}

#[track_caller]
fn assert_ok_stdout(out: &Output, what: &str) -> Vec<u8> {
    assert_ok(out, what);
    out.stdout.clone()
}
