//! The `diskferry` binary's image management against the live cluster: `clone` all or
//! nothing.

mod common;

use std::path::PathBuf;
use std::process::{Command, Output};

use common::{diskferry, run};
use diskferry_integration_tests::{ceph_conf, pool, unique, ImageGuard, TEST_POOL};
use rbd::{CreateOptions, Image, OpenMode};

const MIB: u64 = 1 << 20;

/// `rbd:rbd/NAME[@SNAP]`.
fn addr(name: &str) -> String {
    format!("rbd:{TEST_POOL}/{name}")
}

fn image_exists(name: &str) -> bool {
    rbd::list(&pool()).unwrap().iter().any(|n| n == name)
}

/// A new guarded image of 8 MiB with a snapshot `base`, the parent of the clones.
fn parent(guard: &mut ImageGuard, prefix: &str) -> String {
    let name = guard.add(unique(prefix));
    rbd::create(&pool(), &name, 8 * MIB, &CreateOptions::default()).unwrap();
    Image::open(&pool(), &name, OpenMode::ReadWrite)
        .unwrap()
        .snap_create("base")
        .unwrap();
    name
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
    let ioctx = pool();
    let mut guard = ImageGuard::new(&ioctx);
    let base = parent(&mut guard, "cli-clone-all");
    let existing = guard.add(unique("cli-clone-exists"));
    rbd::create(&ioctx, &existing, MIB, &CreateOptions::default()).unwrap();
    let new = guard.add(unique("cli-clone-new"));

    let parent = addr(&format!("{base}@base"));
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
    let ioctx = pool();
    let mut guard = ImageGuard::new(&ioctx);
    let base = parent(&mut guard, "cli-clone-midway");
    let allowed = guard.add(unique("cli-clone-ok"));
    let denied = guard.add(unique("cli-clone-denied"));
    let client = RestrictedClient::new(&allowed);

    // The first clone is allowed, the second is refused by cephx: a failure after the checks.
    let out = diskferry()
        .arg("clone")
        .args(client.args())
        .arg(addr(&format!("{base}@base")))
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
