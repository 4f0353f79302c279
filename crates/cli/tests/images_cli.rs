//! The `diskferry` binary's image management against the live cluster: `clone` all or
//! nothing, one JSON object per `snap`, `clone` and `flatten` command, and errors that say
//! which thing is missing or what is wrong.

mod common;

use std::path::PathBuf;
use std::process::{Command, Output};

use common::{diskferry, ok, run};
use diskferry_integration_tests::{ceph_conf, pool, unique, ImageGuard, TEST_POOL};
use rbd::{CreateOptions, Image, OpenMode};
use serde_json::json;

const MIB: u64 = 1 << 20;

/// `rbd:rbd/NAME[@SNAP]`.
fn addr(name: &str) -> String {
    format!("rbd:{TEST_POOL}/{name}")
}

fn image_exists(name: &str) -> bool {
    rbd::list(&pool()).unwrap().iter().any(|n| n == name)
}

/// An image of 8 MiB with a snapshot `base`, the parent of the clones, and names for new
/// images; all removed when dropped, the later names first.
struct Family {
    guard: ImageGuard,
    /// The parent image's name.
    base: String,
}

impl Family {
    fn new(prefix: &str) -> Self {
        let mut guard = ImageGuard::new(&pool());
        let base = guard.add(unique(prefix));
        rbd::create(&pool(), &base, 8 * MIB, &CreateOptions::default()).unwrap();
        Image::open(&pool(), &base, OpenMode::ReadWrite)
            .unwrap()
            .snap_create("base")
            .unwrap();
        Family { guard, base }
    }

    /// `rbd:rbd/BASE@base`.
    fn parent(&self) -> String {
        addr(&format!("{}@base", self.base))
    }

    /// A name for an image that the family removes.
    fn name(&mut self, prefix: &str) -> String {
        self.guard.add(unique(prefix))
    }
}

/// Asserts failure and returns stderr.
fn failed(out: &Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "diskferry succeeded: {stderr}");
    assert!(
        out.stdout.is_empty(),
        "a failure printed on stdout: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    stderr
}

#[test]
fn clone_refuses_existing_children_before_creating_any() {
    let mut family = Family::new("cli-clone-all");
    let existing = family.name("cli-clone-exists");
    rbd::create(&pool(), &existing, MIB, &CreateOptions::default()).unwrap();
    let new = family.name("cli-clone-new");
    let parent = family.parent();
    let out = run(&["clone", &parent, &addr(&new), &addr(&existing)]);
    let stderr = failed(&out);
    assert!(
        stderr.contains(&format!("{} already exists", addr(&existing))),
        "{stderr}"
    );
    assert!(
        !image_exists(&new),
        "{new} was cloned although {existing} was refused"
    );

    // The same command again fails the same way, not on the first child.
    let stderr = failed(&run(&["clone", &parent, &addr(&new), &addr(&existing)]));
    assert!(!stderr.contains(&new), "{stderr}");
}

/// A cephx client that may read the whole pool but create images only whose names start
/// with `prefix`; removed when dropped.
struct RestrictedClient {
    id: String,
    keyring: tempfile::NamedTempFile,
}

impl RestrictedClient {
    fn new(prefix: &str) -> Self {
        let id = unique("cli-clone-restricted");
        let keyring = tempfile::NamedTempFile::new().unwrap();
        // What a clone and a removal of a v2 clone touch, besides the new image's rbd_id.
        let mut caps = format!("allow r pool={TEST_POOL}");
        for object_prefix in [
            "rbd_header",
            "rbd_directory",
            "rbd_object_map",
            "rbd_children",
            "rbd_info",
            "rbd_trash",
            "rbd_mirroring",
            "rbd_data",
        ] {
            caps.push_str(&format!(
                ", allow rwx pool={TEST_POOL} object_prefix {object_prefix}"
            ));
        }
        caps.push_str(&format!(
            ", allow rwx pool={TEST_POOL} object_prefix rbd_id.{prefix}"
        ));
        let status = ceph()
            .args(["auth", "get-or-create", &format!("client.{id}")])
            .args(["mon", "profile rbd", "osd", &caps, "-o"])
            .arg(keyring.path())
            .status()
            .expect("run ceph auth");
        assert!(status.success(), "ceph auth get-or-create failed");
        RestrictedClient { id, keyring }
    }

    fn args(&self) -> Vec<String> {
        vec![
            "--id".into(),
            self.id.clone(),
            "--keyring".into(),
            self.keyring.path().to_string_lossy().into_owned(),
        ]
    }
}

impl Drop for RestrictedClient {
    fn drop(&mut self) {
        let _ = ceph()
            .args(["auth", "del", &format!("client.{}", self.id)])
            .status();
    }
}

fn ceph() -> Command {
    let mut cmd = Command::new("ceph");
    cmd.arg("--conf").arg::<PathBuf>(ceph_conf());
    cmd
}

#[test]
fn clone_failing_midway_removes_the_clones_it_made() {
    let mut family = Family::new("cli-clone-midway");
    let allowed = family.name("cli-clone-ok");
    let denied = family.name("cli-clone-denied");
    let client = RestrictedClient::new(&allowed);

    // The first clone is allowed, the second is refused by cephx: a failure after the checks.
    let out = diskferry()
        .arg("clone")
        .args(client.args())
        .arg(family.parent())
        .args([addr(&allowed), addr(&denied)])
        .output()
        .unwrap();
    let stderr = failed(&out);
    assert!(stderr.contains("permission denied"), "{stderr}");
    assert!(stderr.contains(&denied), "{stderr}");
    assert!(
        !stderr.contains("left behind"),
        "the clone made was not removed: {stderr}"
    );
    assert!(
        !image_exists(&allowed),
        "{allowed} is left although the clone of {denied} failed"
    );
    assert!(!image_exists(&denied));
}

#[test]
fn clone_json_names_the_parent_the_format_and_the_clones() {
    let mut family = Family::new("cli-clone-json");
    let a = family.name("cli-clone-json-a");
    let b = family.name("cli-clone-json-b");
    let parent = family.parent();
    let report = ok(&run(&["clone", "--json", &parent, &addr(&a), &addr(&b)]));
    assert_eq!(
        report,
        json!({"parent": parent, "format": 2, "children": [addr(&a), addr(&b)]})
    );
}

#[test]
fn snap_commands_print_one_json_object_each() {
    let family = Family::new("cli-snap-json");
    let name = family.base.clone();
    let snapshot = addr(&format!("{name}@s1"));
    for (command, action) in [
        ("create", "created"),
        ("protect", "protected"),
        ("unprotect", "unprotected"),
        ("rm", "removed"),
    ] {
        let report = ok(&run(&["snap", command, "--json", &snapshot]));
        assert_eq!(
            report,
            json!({"snapshot": snapshot, "action": action}),
            "snap {command}"
        );
    }
    let image = Image::open(&pool(), &name, OpenMode::ReadOnly).unwrap();
    let left: Vec<String> = image
        .snap_list()
        .unwrap()
        .into_iter()
        .map(|s| s.name)
        .collect();
    assert_eq!(left, ["base"]);
}

#[test]
fn flatten_json_names_the_image_and_its_former_parent() {
    let mut family = Family::new("cli-flatten");
    let child = family.name("cli-flatten-child");
    let parent = family.parent();
    ok(&run(&["clone", &parent, &addr(&child)]));
    let report = ok(&run(&["flatten", "--json", &addr(&child)]));
    assert_eq!(report, json!({"image": addr(&child), "parent": parent}));
    let image = Image::open(&pool(), &child, OpenMode::ReadOnly).unwrap();
    assert_eq!(image.parent().unwrap(), None);

    // Now it is no clone: flatten says so, in words.
    let stderr = failed(&run(&["flatten", &addr(&child)]));
    assert!(
        stderr.contains(&format!(
            "{} is not a clone; nothing to flatten",
            addr(&child)
        )),
        "{stderr}"
    );
    assert!(!stderr.contains("os error"), "{stderr}");
}

#[test]
fn errors_say_which_snapshot_is_missing_or_unprotected() {
    let mut family = Family::new("cli-snap-errors");
    let base = family.base.clone();
    let child = family.name("cli-snap-errors-child");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("x.qcow2");
    let out = out.to_str().unwrap();
    let nosnap = addr(&format!("{base}@nosnap"));

    let missing = format!("{TEST_POOL}/{base}@nosnap: no such snapshot");
    let stderr = failed(&run(&["export", &nosnap, out]));
    assert!(stderr.contains(&missing), "export: {stderr}");
    let stderr = failed(&run(&["snap", "rm", &nosnap]));
    assert!(stderr.contains(&missing), "snap rm: {stderr}");
    let stderr = failed(&run(&["clone", &nosnap, &addr(&child)]));
    assert!(
        stderr.contains("the parent snapshot does not exist"),
        "clone: {stderr}"
    );

    let stderr = failed(&run(&[
        "clone",
        "--clone-format",
        "v1",
        &family.parent(),
        &addr(&child),
    ]));
    assert!(
        stderr.contains(&format!(
            "snapshot {TEST_POOL}/{base}@base must be protected before a format-1 clone"
        )),
        "clone v1: {stderr}"
    );
    assert!(!image_exists(&child));
}
