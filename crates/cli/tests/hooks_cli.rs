//! `--pre`/`--post` of `longhorn backup` and `export-vm` on the live cluster, through the real
//! binary: the order pre → snapshot → post (each hook records which snapshots exist when it
//! runs), a failed `pre` takes no snapshot and stores nothing, a failed `post` fails the
//! command and leaves no snapshot or bundle, a hook past its timeout is killed.

mod common;

use std::path::Path;

use common::{ok, run};
use diskferry_integration_tests::{ceph_conf, pattern, pool, purge_image, unique, TEST_POOL};

const MIB: usize = 1 << 20;

/// An image of the test pool with 4 MiB of data, imported through the binary.
fn image_with_data(dir: &Path, prefix: &str) -> String {
    let name = unique(prefix);
    let src = dir.join(format!("{name}.raw"));
    std::fs::write(&src, pattern(7, 4 * MIB)).unwrap();
    ok(&run(&[
        "import",
        "-f",
        "raw",
        src.to_str().unwrap(),
        &format!("rbd:{TEST_POOL}/{name}"),
    ]));
    name
}

/// A hook that appends `word` and the image's snapshots and the pool's groups to `log`.
fn recorder(word: &str, image: &str, log: &Path) -> String {
    let conf = ceph_conf();
    let conf = conf.display();
    let log = log.display();
    format!(
        "echo {word} >> {log}; rbd --conf {conf} snap ls --all {TEST_POOL}/{image} >> {log}; \
         rbd --conf {conf} group ls {TEST_POOL} >> {log}"
    )
}

/// Runs `args` with recording `--pre` and `--post` hooks on `image` and `--json`: the report.
fn run_recorded(args: &[&str], image: &str, log: &Path) -> serde_json::Value {
    let (pre, post) = (recorder("pre", image, log), recorder("post", image, log));
    let mut args = args.to_vec();
    args.extend(["--pre", &pre, "--post", &post, "--json"]);
    ok(&run(&args))
}

/// The part of `log` from the line `word` to the next hook's line.
fn section<'a>(log: &'a str, word: &str) -> &'a str {
    let start = log
        .find(&format!("{word}\n"))
        .unwrap_or_else(|| panic!("no {word} in {log}"));
    let rest = &log[start + word.len() + 1..];
    let end = rest.find("post\n").unwrap_or(rest.len());
    &rest[..end]
}

/// The hooks' `log` shows pre first, with no `name_prefix` snapshot (or group) yet, then post,
/// with it there.
fn assert_snapshot_only_between_hooks(log: &Path, name_prefix: &str) {
    let text = std::fs::read_to_string(log).unwrap();
    assert!(
        !section(&text, "pre").contains(name_prefix),
        "{name_prefix}… existed before pre: {text}"
    );
    assert!(
        section(&text, "post").contains(name_prefix),
        "{name_prefix}… did not exist when post ran: {text}"
    );
    assert!(text.find("pre\n") < text.find("post\n"), "{text}");
}

fn snapshots(image: &str) -> Vec<String> {
    diskferry_integration_tests::snapshot_names(image)
}

#[test]
fn longhorn_backup_runs_pre_snapshot_post_and_a_failed_pre_stores_nothing() {
    let work = tempfile::tempdir().unwrap();
    let image = image_with_data(work.path(), "hooks-lh");
    let target_dir = work.path().join("target");
    std::fs::create_dir(&target_dir).unwrap();
    let target = format!("vfs://{}/", target_dir.display());
    let log = work.path().join("log");
    let source = format!("rbd:{TEST_POOL}/{image}");

    let report = run_recorded(
        &[
            "longhorn", "backup", &source, &target, "--volume", "hookvol",
        ],
        &image,
        &log,
    );
    assert_snapshot_only_between_hooks(&log, "diskferry-backup-");
    assert_eq!(report["new_blocks"], 2, "{report}");
    assert!(snapshots(&image).is_empty(), "{:?}", snapshots(&image));

    // A failing pre: no snapshot, no new backup, post not run, the hook named.
    let marker = work.path().join("post-ran");
    let out = run(&[
        "longhorn",
        "backup",
        &source,
        &target,
        "--volume",
        "hookvol",
        "--name",
        "never",
        "--pre",
        "exit 7",
        "--post",
        &format!("touch {}", marker.display()),
    ]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("pre hook"), "{stderr}");
    assert!(!marker.exists(), "post ran after a failed pre");
    assert!(snapshots(&image).is_empty());
    let listing = ok(&run(&[
        "longhorn", "ls", &target, "--volume", "hookvol", "--json",
    ]));
    assert!(
        !listing.to_string().contains("\"never\""),
        "a backup was stored after a failed pre: {listing}"
    );

    // Hooks need a snapshot to wrap: a snapshot given as the source is refused.
    let out = run(&[
        "longhorn",
        "backup",
        &format!("{source}@nothing"),
        &target,
        "--volume",
        "hookvol",
        "--pre",
        "true",
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("hooks run around the snapshot"));
    purge_image(&pool(), &image);
}

#[test]
fn export_vm_hooks_wrap_the_group_snapshot_and_a_failed_post_leaves_nothing() {
    let work = tempfile::tempdir().unwrap();
    let os = image_with_data(work.path(), "hooks-vm-os");
    let data = image_with_data(work.path(), "hooks-vm-data");
    let log = work.path().join("log");
    let bundle = work.path().join("bundle");
    let disks = [
        format!("os=rbd:{TEST_POOL}/{os}"),
        format!("data=rbd:{TEST_POOL}/{data}"),
    ];

    let report = run_recorded(
        &[
            "export-vm",
            "--disk",
            &disks[0],
            "--disk",
            &disks[1],
            bundle.to_str().unwrap(),
            "--name",
            "hooked",
        ],
        &os,
        &log,
    );
    assert_snapshot_only_between_hooks(&log, "diskferry-export-vm-");
    assert_eq!(report["disks"].as_array().unwrap().len(), 2, "{report}");
    assert!(bundle.join("manifest.json").exists());

    // A failing post: the command fails, no manifest, no group or snapshot left.
    let second = work.path().join("second");
    let out = run(&[
        "export-vm",
        "--disk",
        &disks[0],
        "--disk",
        &disks[1],
        second.to_str().unwrap(),
        "--name",
        "hooked",
        "--post",
        "exit 1",
    ]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("post hook"), "{stderr}");
    assert!(!second.join("manifest.json").exists());
    assert!(snapshots(&os).is_empty(), "{:?}", snapshots(&os));
    let conf = ceph_conf();
    let groups = diskferry_integration_tests::run(
        "rbd",
        &["--conf", &conf.to_string_lossy(), "group", "ls", TEST_POOL],
    );
    assert!(
        !String::from_utf8_lossy(&groups).contains("diskferry-export-vm-"),
        "a group was left: {}",
        String::from_utf8_lossy(&groups)
    );

    // A hook past its timeout is killed and fails the command.
    let started = std::time::Instant::now();
    let out = run(&[
        "export-vm",
        "--disk",
        &disks[0],
        second.to_str().unwrap(),
        "--name",
        "hooked",
        "--pre",
        "sleep 60",
        "--hook-timeout",
        "1",
    ]);
    assert!(!out.status.success());
    assert!(started.elapsed().as_secs() < 30);
    assert!(String::from_utf8_lossy(&out.stderr).contains("timeout"));
    purge_image(&pool(), &os);
    purge_image(&pool(), &data);
}
