use std::time::UNIX_EPOCH;

use chrono::TimeZone;

use super::*;

/// A configuration using every field.
const FULL: &str = r#"
time-zone = "Europe/Berlin"

[http]
listen = "0.0.0.0:9999"
token-file = "/etc/diskferry/token"

[locks]
pool = "locks"
lease-seconds = 30

[ceph]
conf = "/etc/ceph/ceph.conf"
keyring = "/etc/ceph/ceph.client.diskferry.keyring"
id = "diskferry"

[s3]
endpoint = "https://rgw.example.org"
region = "eu-central-1"
profile = "backup"
credentials-file = "/etc/diskferry/aws-credentials"
config-file = "/etc/diskferry/aws-config"
ca-bundle = "/etc/diskferry/ca.pem"

[[jobs]]
name = "snaps"
kind = "snapshot"
schedule = "*/15 * * * *"
time-zone = "America/New_York"
images = ["rbd:rbd/a", "rbd:other/b"]
labels = { team = "web", "app.tier" = "db" }
concurrency = 4
[jobs.retention]
keep-last = 3
keep-hourly = 24
keep-within = "2d"

[[jobs]]
name = "nightly"
kind = "export"
target = "s3://backups/diskferry/"
format = "qcow2"
compression = "zstd"
[[jobs.vms]]
name = "web1"
disks = ["os=rbd:rbd/web1-os", "data=rbd:rbd/web1-data"]
[[jobs.vms]]
name = "web2"
disks = ["os=rbd:rbd/web2-os"]
[jobs.hooks]
pre = { command = ["virtctl", "fsfreeze", "web1"], timeout-seconds = 20 }
post = { command = ["virtctl", "fsunfreeze", "web1"] }

[[jobs]]
name = "to-dir"
kind = "export"
target = "/srv/exports"
format = "raw.zst"
images = ["rbd:rbd/c"]

[[jobs]]
name = "longhorn-1"
kind = "longhorn-backup"
schedule = "@weekly"
target = "s3://lh@us-east-1/store/"
compression = "gzip"
[[jobs.select]]
pool = "rbd"
pattern = "vm-*"
metadata-key = "diskferry.jobs"
[[jobs.select]]
pool = "ssd"
metadata-key = "diskferry.jobs"
"#;

/// The smallest valid configuration.
const MINIMAL: &str = r#"
time-zone = "UTC"
[locks]
pool = "rbd"
[[jobs]]
name = "nightly"
kind = "snapshot"
images = ["rbd:rbd/vm"]
"#;

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(text, "serve.toml")
}

/// The problems of a configuration that must be refused.
fn problems(text: &str) -> Vec<Problem> {
    match parse(text) {
        Ok(_) => panic!("accepted:\n{text}"),
        Err(e) => e.problems(),
    }
}

/// Asserts that `text` is refused with a problem at `path` whose message contains `needle`,
/// and that the error's message names both.
fn refused(text: &str, path: &str, needle: &str) {
    let err = parse(text).expect_err("must be refused");
    let shown = err.to_string();
    assert!(
        shown.starts_with("serve.toml"),
        "the message names the file: {shown}"
    );
    assert!(
        err.problems()
            .iter()
            .any(|p| p.path == path && p.message.contains(needle)),
        "expected {path}: …{needle}…, got: {shown}"
    );
    assert!(shown.contains(path), "{shown}");
}

/// MINIMAL with `extra` keys inserted into its job (after `kind`).
fn job_with(extra: &str) -> String {
    MINIMAL.replace(
        "kind = \"snapshot\"\n",
        &format!("kind = \"snapshot\"\n{extra}\n"),
    )
}

/// MINIMAL with `tables` (`[jobs.retention]`, `[jobs.hooks]`, …) after its job's keys.
fn job_tables(tables: &str) -> String {
    format!("{MINIMAL}{tables}\n")
}

/// An export job with `body` (its kind, images and target given unless `body` replaces them).
fn export_job(body: &str) -> String {
    format!("time-zone = \"UTC\"\n[locks]\npool = \"rbd\"\n[[jobs]]\nname = \"x\"\nkind = \"export\"\n{body}\n")
}

#[test]
fn a_full_configuration_is_read_field_by_field() {
    let config = parse(FULL).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.http.listen, "0.0.0.0:9999".parse().unwrap());
    assert_eq!(
        config.http.token_file.as_deref(),
        Some(Path::new("/etc/diskferry/token"))
    );
    assert_eq!(config.locks.pool, "locks");
    assert_eq!(config.locks.lease, Duration::from_secs(30));
    assert_eq!(config.ceph.id.as_deref(), Some("diskferry"));
    assert_eq!(config.s3.profile.as_deref(), Some("backup"));
    assert_eq!(config.jobs.len(), 4);

    let snaps = config.job("snaps").unwrap();
    assert_eq!(snaps.kind(), JobKind::Snapshot);
    assert_eq!(snaps.time_zone(), Tz::America__New_York);
    assert_eq!(snaps.schedule.expression(), "*/15 * * * *");
    assert_eq!(snaps.concurrency, 4);
    assert_eq!(snaps.retention.keep_last, Count::Limit(3));
    assert_eq!(snaps.retention.keep_hourly, Count::Limit(24));
    assert_eq!(snaps.labels.get("app.tier").map(String::as_str), Some("db"));
    match &snaps.images {
        ImageSet::List(images) => {
            let shown: Vec<String> = images.iter().map(ToString::to_string).collect();
            assert_eq!(shown, ["rbd:rbd/a", "rbd:other/b"]);
        }
        other => panic!("{other:?}"),
    }

    let nightly = config.job("nightly").unwrap();
    // The file's zone, the default schedule and the default retention.
    assert_eq!(nightly.time_zone(), Tz::Europe__Berlin);
    assert_eq!(nightly.schedule.expression(), DEFAULT_SCHEDULE);
    assert_eq!(
        nightly.retention.keep_daily,
        Count::Limit(DEFAULT_KEEP_DAILY)
    );
    assert_eq!(nightly.concurrency, DEFAULT_CONCURRENCY);
    match &nightly.action {
        Action::Export(e) => {
            assert_eq!(e.target.to_string(), "s3://backups/diskferry/");
            assert_eq!(e.format, ObjectFormat::Qcow2);
            assert_eq!(e.compression, ClusterCompression::Zstd);
        }
        other => panic!("{other:?}"),
    }
    match &nightly.images {
        ImageSet::Vms(vms) => {
            assert_eq!(vms.len(), 2);
            assert_eq!(vms[0].name, "web1");
            let roles: Vec<&str> = vms[0].disks.iter().map(|d| d.role.as_str()).collect();
            assert_eq!(roles, ["os", "data"], "the disks keep the file's order");
            assert_eq!(vms[0].disks[1].image.to_string(), "rbd:rbd/web1-data");
        }
        other => panic!("{other:?}"),
    }
    let pre = nightly.hooks.pre.as_ref().unwrap();
    assert_eq!(pre.command, ["virtctl", "fsfreeze", "web1"]);
    assert_eq!(pre.timeout, Duration::from_secs(20));
    assert_eq!(
        nightly.hooks.post.as_ref().unwrap().timeout,
        DEFAULT_HOOK_TIMEOUT
    );

    match &config.job("to-dir").unwrap().action {
        Action::Export(e) => {
            assert_eq!(e.target, Bundle::Dir("/srv/exports".into()));
            assert_eq!(e.format, ObjectFormat::RawZstd);
            assert_eq!(e.compression, ClusterCompression::None);
        }
        other => panic!("{other:?}"),
    }

    let longhorn = config.job("longhorn-1").unwrap();
    match &longhorn.action {
        Action::LonghornBackup(l) => {
            assert_eq!(l.target.url, "s3://lh@us-east-1/store/");
            assert_eq!(l.compression, LonghornCompression::Gzip);
        }
        other => panic!("{other:?}"),
    }
    match &longhorn.images {
        ImageSet::Select(s) => {
            assert_eq!(s.len(), 2);
            assert_eq!(s[0].pool, "rbd");
            assert_eq!(s[0].pattern.as_ref().unwrap().as_str(), "vm-*");
            assert!(s[1].pattern.is_none());
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_minimal_configuration_takes_the_defaults() {
    let config = parse(MINIMAL).unwrap();
    assert_eq!(
        config.http.listen,
        SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), DEFAULT_HTTP_PORT)
    );
    assert_eq!(config.http.token_file, None);
    assert_eq!(config.locks.lease, DEFAULT_LEASE);
    let job = &config.jobs[0];
    assert_eq!(job.schedule.expression(), "0 2 * * *");
    assert_eq!(
        job.retention,
        Policy {
            keep_daily: Count::Limit(7),
            ..Policy::default()
        }
    );
    assert_eq!(job.hooks, Hooks::default());
    assert!(job.labels.is_empty());
}

#[test]
fn the_example_in_docs_is_valid() {
    let text = include_str!("../../../../docs/serve.example.toml");
    let config = Config::parse(text, "docs/serve.example.toml").unwrap_or_else(|e| panic!("{e}"));
    let kinds: Vec<JobKind> = config.jobs.iter().map(Job::kind).collect();
    assert_eq!(
        kinds,
        [JobKind::Snapshot, JobKind::Export, JobKind::LonghornBackup]
    );
}

#[test]
fn the_check_report_shows_the_next_runs_in_the_zone_and_in_utc() {
    let config = parse(MINIMAL.replace("\"UTC\"", "\"Europe/Berlin\"").as_str()).unwrap();
    // 2026-12-06 12:00 UTC: the next 02:00 in Berlin (CET, +01:00) is 01:00 UTC.
    let now = Utc.with_ymd_and_hms(2026, 12, 6, 12, 0, 0).unwrap();
    let now = UNIX_EPOCH + Duration::from_secs(now.timestamp().try_into().unwrap());
    let report = config.check_report("serve.toml", now, CHECK_RUNS);
    let job = &report.jobs[0];
    assert_eq!(
        (job.name.as_str(), job.kind),
        ("nightly", JobKind::Snapshot)
    );
    assert_eq!(job.images, "rbd:rbd/vm");
    assert_eq!(job.time_zone, "Europe/Berlin");
    assert_eq!(job.retention, "keep 7 daily snapshots");
    let utc: Vec<&str> = job.next_runs.iter().map(|r| r.utc.as_str()).collect();
    assert_eq!(
        utc,
        [
            "2026-12-07T01:00:00Z",
            "2026-12-08T01:00:00Z",
            "2026-12-09T01:00:00Z"
        ]
    );
    assert_eq!(job.next_runs[0].local, "2026-12-07T02:00:00+01:00");
    assert_eq!(
        job.next_runs[0].shown,
        "2026-12-07 02:00:00 CET (2026-12-07 01:00 UTC)"
    );
}

#[test]
fn snapshot_names_carry_the_job_and_the_time_and_read_back() {
    let config = parse(MINIMAL).unwrap();
    let job = &config.jobs[0];
    let at = Utc.with_ymd_and_hms(2026, 12, 6, 2, 0, 0).unwrap();
    let name = job.snapshot_name(at);
    assert_eq!(name, "diskferry.nightly.20261206T020000Z");
    assert_eq!(job.snapshot_time(&name), Some(at));
    for foreign in [
        "diskferry.nightly-2.20261206T020000Z",
        "diskferry.other.20261206T020000Z",
        "diskferry.nightly.20261206T020000",
        "diskferry.nightly.20261306T020000Z",
        "diskferry-export-123",
        "nightly.20261206T020000Z",
        "diskferry.nightly.20261206T020000Z.x",
    ] {
        assert_eq!(job.snapshot_time(foreign), None, "{foreign}");
    }
}

#[test]
fn selectors_match_names_and_job_lists_in_metadata() {
    let config = parse(FULL).unwrap();
    let ImageSet::Select(selectors) = &config.job("longhorn-1").unwrap().images else {
        panic!("a selector job");
    };
    let both = &selectors[0];
    assert!(both.matches_name("vm-1") && !both.matches_name("db-1"));
    assert!(both.lists_job(Some("nightly, longhorn-1"), "longhorn-1"));
    assert!(both.lists_job(Some("longhorn-1 weekly"), "longhorn-1"));
    assert!(!both.lists_job(Some("longhorn-10"), "longhorn-1"));
    assert!(!both.lists_job(None, "longhorn-1"));
    let by_key = &selectors[1];
    assert!(by_key.matches_name("anything"));
    let text = both.to_string();
    assert!(
        text.contains("pool rbd") && text.contains("vm-*") && text.contains("diskferry.jobs"),
        "{text}"
    );
}

#[test]
fn the_context_takes_the_files_ceph_and_s3_settings() {
    let config = parse(FULL).unwrap();
    let ctx = config.context();
    let s3 = ctx.s3_config();
    assert_eq!(s3.endpoint.as_deref(), Some("https://rgw.example.org"));
    assert_eq!(s3.region, "eu-central-1");
    assert_eq!(s3.profile(), "backup");
    assert_eq!(
        s3.ca_bundle.as_deref(),
        Some(Path::new("/etc/diskferry/ca.pem"))
    );
}

#[test]
fn unreadable_files_are_listed_by_field() {
    let config = parse(FULL).unwrap();
    let paths: Vec<String> = config
        .start_problems()
        .into_iter()
        .map(|p| p.path)
        .collect();
    assert!(paths.contains(&"http.token-file".to_string()), "{paths:?}");
    assert!(paths.contains(&"s3.ca-bundle".to_string()), "{paths:?}");
    assert!(parse(MINIMAL).unwrap().start_problems().is_empty());
}

// One test per kind of mistake.

#[test]
fn toml_syntax_errors_give_the_line() {
    let err = parse("[locks\npool = 1").unwrap_err();
    match &err {
        ConfigError::Syntax { line, .. } => assert_eq!(*line, Some(1), "{err}"),
        other => panic!("{other}"),
    }
    assert!(err.to_string().starts_with("serve.toml (line 1"), "{err}");
}

#[test]
fn unknown_fields_are_refused_with_their_path() {
    refused(
        &format!("listen = 1\n{MINIMAL}"),
        "listen",
        "unknown field `listen`",
    );
    refused(
        &MINIMAL.replace("pool = \"rbd\"", "pool = \"rbd\"\nlease = 3"),
        "locks.lease",
        "unknown field `lease`, expected `pool` or `lease-seconds`",
    );
    refused(
        &job_with("imgaes = []"),
        "jobs[0].imgaes",
        "unknown field `imgaes`",
    );
    let err = parse(&job_tables("[jobs.retention]\nkeep-dayly = 7")).unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("jobs[0].retention.keep-dayly: unknown field"),
        "{text}"
    );
    // The line of the unknown field is named too.
    assert!(text.contains("line 10"), "{text}");
}

#[test]
fn values_of_the_wrong_type_are_refused_with_their_path() {
    refused(
        &job_with("concurrency = \"two\""),
        "jobs[0].concurrency",
        "expected u64",
    );
    refused(
        &MINIMAL.replace("\"snapshot\"", "\"backup\""),
        "jobs[0].kind",
        "unknown variant `backup`",
    );
    refused(
        &job_tables("[jobs.retention]\nkeep-daily = -1"),
        "jobs[0].retention.keep-daily",
        "\"unlimited\"",
    );
}

#[test]
fn a_job_needs_a_time_zone_and_a_valid_one() {
    refused(
        &MINIMAL.replace("time-zone = \"UTC\"", ""),
        "jobs.nightly.time-zone",
        "no local zone is assumed",
    );
    refused(
        &job_with("time-zone = \"Europe/Berln\""),
        "jobs.nightly.time-zone",
        "unknown time zone \"Europe/Berln\"",
    );
    refused(&MINIMAL.replace("\"UTC\"", "\"CEST\""), "time-zone", "IANA");
}

#[test]
fn a_bad_schedule_names_the_field_and_the_cron_field() {
    refused(
        &job_with("schedule = \"0 25 * * *\""),
        "jobs.nightly.schedule",
        "hour field \"25\"",
    );
    refused(
        &job_with("schedule = \"@reboot\""),
        "jobs.nightly.schedule",
        "not a known nickname",
    );
}

#[test]
fn job_names_must_be_safe_and_unique() {
    for bad in ["Nightly", "a.b", "a_b", "-a", "a-", "", &"a".repeat(64)] {
        refused(
            &MINIMAL.replace("name = \"nightly\"", &format!("name = {bad:?}")),
            "jobs[0].name",
            "lowercase letters, digits and '-'",
        );
    }
    let twice = format!(
        "{MINIMAL}[[jobs]]\nname = \"nightly\"\nkind = \"snapshot\"\nimages = [\"rbd:rbd/b\"]\n"
    );
    refused(&twice, "jobs[1].name", "also the name of jobs[0]");
}

#[test]
fn a_job_gives_exactly_one_way_of_choosing_images() {
    refused(
        &MINIMAL.replace("images = [\"rbd:rbd/vm\"]", ""),
        "jobs.nightly",
        "none is given",
    );
    refused(
        &job_tables("[[jobs.select]]\npool = \"rbd\"\npattern = \"*\""),
        "jobs.nightly",
        "images and select are given",
    );
    refused(
        &MINIMAL.replace("[\"rbd:rbd/vm\"]", "[]"),
        "jobs.nightly.images",
        "empty",
    );
}

#[test]
fn images_are_rbd_heads_with_a_pool_listed_once() {
    for (image, needle) in [
        ("rbd:rbd/vm@snap", "names a snapshot"),
        ("rbd:vm", "names no pool"),
        ("s3://bucket/key", "expected an RBD address"),
        ("rbd:rbd/", "must not be empty"),
    ] {
        refused(
            &MINIMAL.replace("rbd:rbd/vm", image),
            "jobs.nightly.images[0]",
            needle,
        );
    }
    refused(
        &MINIMAL.replace("[\"rbd:rbd/vm\"]", "[\"rbd:rbd/vm\", \"rbd:rbd/vm\"]"),
        "jobs.nightly.images[1]",
        "listed twice",
    );
}

#[test]
fn vm_groups_need_names_roles_and_disks() {
    let vms = |body: &str| {
        MINIMAL.replace(
            "images = [\"rbd:rbd/vm\"]",
            &format!("[[jobs.vms]]\n{body}"),
        )
    };
    refused(
        &vms("name = \"web 1\"\ndisks = [\"os=rbd:rbd/a\"]"),
        "jobs.nightly.vms[0].name",
        "VM name \"web 1\"",
    );
    refused(
        &vms("name = \"web1\"\ndisks = []"),
        "jobs.nightly.vms[0].disks",
        "empty",
    );
    refused(
        &vms("name = \"web1\"\ndisks = [\"rbd:rbd/a\"]"),
        "jobs.nightly.vms[0].disks[0]",
        "ROLE=rbd:POOL/IMAGE",
    );
    refused(
        &vms("name = \"web1\"\ndisks = [\"os=rbd:rbd/a\", \"os=rbd:rbd/b\"]"),
        "jobs.nightly.vms[0].disks[1]",
        "role \"os\" is given twice",
    );
    refused(
        &vms("name = \"web1\"\ndisks = [\"os=rbd:rbd/a\"]\n[[jobs.vms]]\nname = \"web2\"\ndisks = [\"os=rbd:rbd/a\"]"),
        "jobs.nightly.vms[1].disks[0]",
        "listed twice",
    );
}

#[test]
fn selectors_need_a_pool_and_a_criterion() {
    let select = |body: &str| {
        MINIMAL.replace(
            "images = [\"rbd:rbd/vm\"]",
            &format!("[[jobs.select]]\n{body}"),
        )
    };
    refused(
        &select("pool = \"rbd\""),
        "jobs.nightly.select[0]",
        "would pick every image",
    );
    refused(
        &select("pool = \"rbd\"\npattern = \"vm-[\""),
        "jobs.nightly.select[0].pattern",
        "\"vm-[\" is not a valid glob pattern (at character 4): write * for any characters",
    );
    // In our words, not the glob crate's.
    let problems = problems(&select("pool = \"rbd\"\npattern = \"vm-[\""));
    assert!(
        !problems[0].message.contains("Pattern syntax error"),
        "{problems:?}"
    );
    refused(
        &select("pool = \"rbd\"\npattern = \"rbd/vm-*\""),
        "jobs.nightly.select[0].pattern",
        "image names only",
    );
    refused(
        &select("pool = \"\"\nmetadata-key = \"diskferry.jobs\""),
        "jobs.nightly.select[0].pool",
        "empty",
    );
    refused(
        &select("pool = \"rbd\"\nmetadata-key = \" \""),
        "jobs.nightly.select[0].metadata-key",
        "empty",
    );
}

#[test]
fn concurrency_and_label_keys_are_checked() {
    for n in ["0", "65"] {
        refused(
            &job_with(&format!("concurrency = {n}")),
            "jobs.nightly.concurrency",
            "out of range",
        );
    }
    refused(
        &job_with("labels = { \"a/b\" = \"c\" }"),
        "jobs.nightly.labels.a/b",
        "label key \"a/b\"",
    );
}

#[test]
fn hooks_need_a_command_and_a_sane_timeout() {
    refused(
        &job_tables("[jobs.hooks]\npre = { command = [] }"),
        "jobs.nightly.hooks.pre.command",
        "empty",
    );
    refused(
        &job_tables("[jobs.hooks]\npost = { command = [\"true\"], timeout-seconds = 0 }"),
        "jobs.nightly.hooks.post.timeout-seconds",
        "out of range",
    );
    refused(
        &job_tables("[jobs.hooks]\npre = { command = \"virtctl fsfreeze\" }"),
        "jobs[0].hooks.pre.command",
        "expected a sequence",
    );
}

#[test]
fn a_retention_table_without_a_rule_is_refused() {
    refused(
        &job_tables("[jobs.retention]"),
        "jobs.nightly.retention",
        "no keep rule",
    );
    refused(
        &job_tables("[jobs.retention]\nkeep-daily = 0"),
        "jobs.nightly.retention",
        "no keep rule",
    );
    assert!(parse(&job_tables("[jobs.retention]\nkeep-last = \"unlimited\"")).is_ok());
}

#[test]
fn settings_of_another_kind_are_refused() {
    refused(
        &job_with("target = \"s3://b/p/\""),
        "jobs.nightly.target",
        "a snapshot job has no target",
    );
    refused(
        &job_with("compression = \"zstd\""),
        "jobs.nightly.compression",
        "a snapshot job has no compression",
    );
    let longhorn = MINIMAL.replace(
        "kind = \"snapshot\"",
        "kind = \"longhorn-backup\"\ntarget = \"vfs:///srv/lh/\"\nformat = \"qcow2\"",
    );
    refused(
        &longhorn,
        "jobs.nightly.format",
        "a longhorn-backup job has no format",
    );
}

#[test]
fn export_targets_formats_and_compression_are_checked() {
    let images = "images = [\"rbd:rbd/a\"]";
    refused(&export_job(images), "jobs.x.target", "missing");
    refused(
        &export_job(&format!("{images}\ntarget = \"exports/\"")),
        "jobs.x.target",
        "relative directory",
    );
    refused(
        &export_job(&format!("{images}\ntarget = \"rbd:rbd/b\"")),
        "jobs.x.target",
        "S3 prefix",
    );
    refused(
        &export_job(&format!("{images}\ntarget = \"/srv/x\"\nformat = \"vmdk\"")),
        "jobs.x.format",
        "give qcow2, raw or raw.zst",
    );
    refused(
        &export_job(&format!(
            "{images}\ntarget = \"/srv/x\"\ncompression = \"lz4\""
        )),
        "jobs.x.compression",
        "none, deflate or zstd",
    );
    refused(
        &export_job(&format!(
            "{images}\ntarget = \"/srv/x\"\nformat = \"raw\"\ncompression = \"zstd\""
        )),
        "jobs.x.compression",
        "uncompressed",
    );
}

#[test]
fn longhorn_targets_and_compression_are_checked() {
    let job = |extra: &str| {
        MINIMAL.replace(
            "kind = \"snapshot\"",
            &format!("kind = \"longhorn-backup\"\n{extra}"),
        )
    };
    refused(&job(""), "jobs.nightly.target", "vfs:///DIR/");
    refused(
        &job("target = \"ftp://x/y\""),
        "jobs.nightly.target",
        "invalid backup target",
    );
    refused(
        &job("target = \"vfs:///srv/lh/\"\ncompression = \"zstd\""),
        "jobs.nightly.compression",
        "lz4, gzip or none",
    );
}

#[test]
fn global_settings_are_checked() {
    refused(
        &MINIMAL.replace("[locks]\npool = \"rbd\"", ""),
        "locks",
        "missing",
    );
    refused(
        &MINIMAL.replace("pool = \"rbd\"", "pool = \"rbd\"\nlease-seconds = 2"),
        "locks.lease-seconds",
        "out of range",
    );
    refused(
        &MINIMAL.replace("pool = \"rbd\"", "pool = \"\""),
        "locks.pool",
        "empty",
    );
    refused(
        &format!("{MINIMAL}[http]\nlisten = \"localhost\"\n"),
        "http.listen",
        "not an address and port",
    );
    refused(
        &format!("{MINIMAL}[http]\ntoken-file = \"token\"\n"),
        "http.token-file",
        "relative path",
    );
    refused(
        &format!("{MINIMAL}[ceph]\nid = \"client.admin\"\n"),
        "ceph.id",
        "without \"client.\"",
    );
    refused(
        &format!("{MINIMAL}[s3]\nendpoint = \"rgw:7480\"\n"),
        "s3.endpoint",
        "http:// or https://",
    );
    let no_jobs = MINIMAL.split("[[jobs]]").next().unwrap();
    refused(no_jobs, "jobs", "no job");
}

#[test]
fn every_problem_is_reported_at_once() {
    let text = job_with("schedule = \"61 * * * *\"\nconcurrency = 0")
        .replace("pool = \"rbd\"", "pool = \"\"");
    let found = problems(&text);
    let paths: Vec<&str> = found.iter().map(|p| p.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "locks.pool",
            "jobs.nightly.schedule",
            "jobs.nightly.concurrency"
        ]
    );
    let shown = parse(&text).unwrap_err().to_string();
    assert!(
        shown.starts_with("serve.toml: 3 problems:\n  locks.pool: "),
        "{shown}"
    );
}

#[test]
fn an_unusable_token_file_is_reported_as_the_service_would_refuse_it() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    let text = format!("{MINIMAL}[http]\ntoken-file = \"{}\"\n", token.display());
    let write = |contents: &str, mode: u32| {
        std::fs::write(&token, contents).unwrap();
        std::fs::set_permissions(&token, std::fs::Permissions::from_mode(mode)).unwrap();
    };
    for (contents, mode, expected) in [
        ("", 0o600, "empty"),
        ("short", 0o600, "16"),
        ("0123456789abcdef0123", 0o644, "chmod 600"),
    ] {
        write(contents, mode);
        let problems = parse(&text).unwrap().start_problems();
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(problems[0].path, "http.token-file");
        assert!(problems[0].message.contains(expected), "{problems:?}");
    }
    write("0123456789abcdef0123", 0o600);
    assert!(parse(&text).unwrap().start_problems().is_empty());
    std::fs::remove_file(&token).unwrap();
    let problems = parse(&text).unwrap().start_problems();
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(problems[0].message.contains("cannot read"), "{problems:?}");
}

#[test]
fn a_local_target_the_first_run_would_fail_on_is_reported_by_field() {
    let dir = tempfile::tempdir().unwrap();
    let a_file = dir.path().join("a-file");
    std::fs::write(&a_file, "x").unwrap();
    let export = |target: &Path| {
        format!(
            "time-zone = \"UTC\"\nlocks = {{ pool = \"rbd\" }}\n[[jobs]]\nname = \"nightly\"\n\
             kind = \"export\"\nimages = [\"rbd:rbd/vm\"]\ntarget = \"{}\"\n\
             [[jobs]]\nname = \"weekly\"\nkind = \"longhorn-backup\"\n\
             images = [\"rbd:rbd/vm\"]\ntarget = \"vfs://{}/\"\n",
            target.display(),
            target.display()
        )
    };
    let missing = dir.path().join("missing");
    for (target, problem) in [
        (&a_file, "is not a directory"),
        (&missing, "does not exist"),
    ] {
        let problems = parse(&export(target)).unwrap().start_problems();
        let shown: Vec<String> = problems.iter().map(ToString::to_string).collect();
        let expected = [
            format!("jobs.nightly.target: {} {problem}", target.display()),
            format!("jobs.weekly.target: {} {problem}", target.display()),
        ];
        assert_eq!(shown.len(), expected.len(), "{shown:?}");
        for (shown, expected) in shown.iter().zip(&expected) {
            assert!(shown.starts_with(expected), "{shown:?}, not {expected:?}");
        }
    }
    assert!(parse(&export(dir.path()))
        .unwrap()
        .start_problems()
        .is_empty());
    // S3 targets are not looked at (that needs the network; the first run says).
    assert!(parse(&MINIMAL.replace(
        "kind = \"snapshot\"",
        "kind = \"export\"\ntarget = \"s3://bucket/prefix/\""
    ))
    .unwrap()
    .start_problems()
    .is_empty());
}

#[test]
fn a_target_directory_that_cannot_be_written_is_reported() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("read-only");
    std::fs::create_dir(&target).unwrap();
    std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o555)).unwrap();
    let text = MINIMAL.replace(
        "kind = \"snapshot\"",
        &format!("kind = \"export\"\ntarget = \"{}\"", target.display()),
    );
    let problems = parse(&text).unwrap().start_problems();
    // Root writes into a read-only directory all the same: then there is nothing to find.
    let writable = std::fs::File::create(target.join("probe")).is_ok();
    let _ = std::fs::remove_file(target.join("probe"));
    if writable {
        assert!(problems.is_empty(), "{problems:?}");
    } else {
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(problems[0].path, "jobs.nightly.target");
        assert!(
            problems[0].message.contains("is not writable by this user"),
            "{problems:?}"
        );
    }
    assert_eq!(std::fs::read_dir(&target).unwrap().count(), 0, "probe left");
}

#[test]
fn schedule_errors_are_in_our_words_with_the_field() {
    for (schedule, expected) in [
        (
            "0 25 * * *",
            "cron expression \"0 25 * * *\": hour field \"25\" is not valid: an hour is 0-23, \
             written as numbers, lists (1,15), ranges (1-5), steps (*/15) or *",
        ),
        (
            "0 2 * 13 *",
            "cron expression \"0 2 * 13 *\": month field \"13\" is not valid: a month is 1-12 \
             or JAN-DEC, written as numbers, lists (1,15), ranges (1-5), steps (*/15) or *",
        ),
        ("every", "cron expression \"every\" has 1 field: expected 5"),
        (
            "0 2 * * * * *",
            "cron expression \"0 2 * * * * *\" has 7 fields: expected 5",
        ),
    ] {
        let problems = problems(&job_with(&format!("schedule = {schedule:?}")));
        let problem = problems
            .iter()
            .find(|p| p.path == "jobs.nightly.schedule")
            .unwrap_or_else(|| panic!("{problems:?}"));
        assert!(
            problem.message.starts_with(expected),
            "{schedule}: {}",
            problem.message
        );
        for leaked in ["error:", "Component", "out of bounds", "(s)"] {
            assert!(!problem.message.contains(leaked), "{}", problem.message);
        }
    }
}
