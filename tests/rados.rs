//! librados wrapper against the live cluster: connect, pools, error kinds, timeouts.

use std::time::{Duration, Instant};

use diskferry_integration_tests::{ceph_conf, cluster, cluster_config, pool, TEST_POOL};
use rados::{Cluster, ClusterConfig, ErrorKind, IoCtx, Lock, LockError};

#[test]
fn connects_and_lists_the_rbd_pool() {
    let pools = cluster().pools().expect("list pools");
    assert!(pools.iter().any(|p| p == TEST_POOL), "pools: {pools:?}");
}

#[test]
fn connects_through_ceph_conf_environment_like_the_rbd_cli() {
    // conf_file None: librados searches CEPH_CONF, as `rbd` does.
    let config = ClusterConfig {
        conf_file: None,
        ..ClusterConfig::default()
    };
    std::env::set_var("CEPH_CONF", ceph_conf());
    let cluster = Cluster::connect(&config).expect("connect via CEPH_CONF");
    assert!(cluster.pools().unwrap().iter().any(|p| p == TEST_POOL));
}

#[test]
fn missing_pool_is_not_found_and_named() {
    let err = cluster().ioctx("no-such-pool-xyz").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    assert!(err.to_string().contains("no-such-pool-xyz"), "{err}");
}

#[test]
fn unknown_client_id_is_refused() {
    let config = ClusterConfig {
        client_id: Some("nobody-here".into()),
        ..cluster_config()
    };
    let err = Cluster::connect(&config).unwrap_err();
    // cephx answers with ENOENT (no key for that entity) or EACCES/EPERM depending on where it
    // fails; either way the message names the client.
    assert!(
        matches!(
            err.kind(),
            ErrorKind::NotFound | ErrorKind::PermissionDenied
        ),
        "{err} ({:?})",
        err.kind()
    );
    assert!(err.to_string().contains("client.nobody-here"), "{err}");
}

#[test]
fn dead_monitor_port_fails_within_ten_seconds() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("ceph.conf");
    // Port 9 (discard) has nothing listening on 127.0.0.1 here.
    let keyring = std::fs::read_to_string(ceph_conf())
        .unwrap()
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("keyring")
                .map(|v| v.trim_start_matches([' ', '=']).trim().to_string())
        })
        .expect("the dev cluster's conf names its keyring");
    std::fs::write(
        &conf,
        format!("[global]\nmon_host = 127.0.0.1:9\nkeyring = {keyring}\n"),
    )
    .unwrap();
    let config = ClusterConfig {
        conf_file: Some(conf),
        use_ceph_args: false,
        ..ClusterConfig::default()
    };
    let start = Instant::now();
    let err = Cluster::connect(&config).unwrap_err();
    let elapsed = start.elapsed();
    assert!(elapsed < Duration::from_secs(10), "took {elapsed:?}: {err}");
    assert!(err.to_string().contains("connect as client.admin"), "{err}");
}

/// The lease of the lock tests: short, so a lapse is quick to wait for.
const TEST_LEASE: Duration = Duration::from_secs(2);

/// Removes a lock test's object (locking makes it) when dropped, with the `rados` CLI, an
/// oracle independent of our wrapper.
struct LockObject(String);

impl LockObject {
    fn new(prefix: &str) -> LockObject {
        LockObject(diskferry_integration_tests::unique(prefix))
    }

    /// Tries to take the lock `run` on this object through `ioctx`, as `cookie`.
    fn lock(&self, ioctx: &IoCtx, cookie: &str, lease: Duration) -> Result<Lock, LockError> {
        ioctx.lock_exclusive(&self.0, "run", cookie, "", lease)
    }
}

impl Drop for LockObject {
    fn drop(&mut self) {
        let conf = ceph_conf();
        let _ = std::process::Command::new("rados")
            .args(["--conf", &conf.to_string_lossy(), "-p", TEST_POOL, "rm"])
            .arg(&self.0)
            .output();
    }
}

/// Runs the `rados` CLI on the test pool (an oracle independent of our wrapper); its stdout.
fn rados_cli(args: &[&str]) -> String {
    let conf = ceph_conf();
    let mut all = vec![
        "--conf",
        conf.to_str().expect("a UTF-8 path"),
        "-p",
        TEST_POOL,
    ];
    all.extend_from_slice(args);
    String::from_utf8_lossy(&diskferry_integration_tests::run("rados", &all)).into_owned()
}

/// A second connection: another client instance, as another `serve` process has.
fn second_connection() -> Cluster {
    Cluster::connect(&cluster_config()).expect("connect a second client")
}

#[test]
fn an_exclusive_lock_refuses_other_cookies_and_other_connections() {
    let object = LockObject::new("lock-exclusive");
    let ioctx = pool();
    let lock = ioctx
        .lock_exclusive(&object.0, "run", "cookie-a", "test holder", TEST_LEASE)
        .expect("take a free lock");

    let other_cookie = object.lock(&ioctx, "cookie-b", TEST_LEASE);
    assert!(
        matches!(other_cookie, Err(LockError::HeldElsewhere { .. })),
        "{other_cookie:?}"
    );
    // The owner is (client instance, cookie): the same cookie from another process is
    // another owner.
    let elsewhere = second_connection().ioctx(TEST_POOL).unwrap();
    let same_cookie = object.lock(&elsewhere, "cookie-a", TEST_LEASE);
    assert!(
        matches!(same_cookie, Err(LockError::HeldElsewhere { .. })),
        "{same_cookie:?}"
    );
    // The same owner again: EEXIST, a kind of its own.
    let again = object.lock(&ioctx, "cookie-a", TEST_LEASE);
    match again {
        Err(err @ LockError::AlreadyHeld { .. }) => {
            assert!(err.to_string().contains(&object.0), "{err}")
        }
        other => panic!("expected AlreadyHeld, got {other:?}"),
    }
    // Another lock name on the same object is another lock.
    let other_name = ioctx
        .lock_exclusive(&object.0, "other", "cookie-b", "", TEST_LEASE)
        .expect("another lock name is free");

    let info = ioctx.lockers(&object.0, "run").unwrap();
    assert!(info.exclusive);
    assert_eq!(info.lockers.len(), 1, "{info:?}");
    assert_eq!(info.lockers[0].cookie, "cookie-a");
    assert!(info.lockers[0].client.starts_with("client."), "{info:?}");
    // The rados CLI sees the same holder and the description.
    let shown = rados_cli(&["lock", "info", &object.0, "run"]);
    assert!(
        shown.contains("\"cookie\":\"cookie-a\"") && shown.contains("test holder"),
        "{shown}"
    );
    lock.unlock().unwrap();
    other_name.unlock().unwrap();
}

#[test]
fn renewing_keeps_the_lock_past_its_first_lease() {
    let object = LockObject::new("lock-renew");
    let ioctx = pool();
    let lock = object.lock(&ioctx, "holder", TEST_LEASE).unwrap();
    let first_deadline = lock.lease_valid_until();
    let elsewhere = second_connection().ioctx(TEST_POOL).unwrap();
    let start = Instant::now();
    // Renew every half lease for two leases; the other instance never gets it.
    while start.elapsed() < 2 * TEST_LEASE {
        std::thread::sleep(TEST_LEASE / 2);
        lock.renew().expect("renew a lock still held");
        let taken = object.lock(&elsewhere, "intruder", TEST_LEASE);
        assert!(
            matches!(taken, Err(LockError::HeldElsewhere { .. })),
            "after {:?}: {taken:?}",
            start.elapsed()
        );
    }
    assert!(lock.lease_valid_until() > first_deadline + TEST_LEASE);
    lock.unlock().expect("unlock a renewed lock");
}

#[test]
fn a_lapsed_lease_lets_another_owner_take_over_and_the_old_holder_is_told() {
    let object = LockObject::new("lock-lapse");
    let ioctx = pool();
    let stale = object.lock(&ioctx, "crashed", TEST_LEASE).unwrap();
    let elsewhere = second_connection().ioctx(TEST_POOL).unwrap();
    // Before the lease ends: refused.
    assert!(matches!(
        object.lock(&elsewhere, "successor", TEST_LEASE),
        Err(LockError::HeldElsewhere { .. })
    ));
    std::thread::sleep(TEST_LEASE + Duration::from_millis(500));
    let successor = object
        .lock(&elsewhere, "successor", TEST_LEASE)
        .expect("take over after the lease lapsed");

    // The old holder cannot renew (MUST_RENEW answers ENOENT) nor release the new lock.
    match stale.renew() {
        Err(err @ LockError::Lost { .. }) => assert!(err.to_string().contains("lapsed"), "{err}"),
        other => panic!("expected Lost, got {other:?}"),
    }
    assert!(matches!(stale.unlock(), Err(LockError::Lost { .. })));
    let info = ioctx.lockers(&object.0, "run").unwrap();
    let cookies: Vec<&str> = info.lockers.iter().map(|l| l.cookie.as_str()).collect();
    assert_eq!(cookies, ["successor"]);
    successor.unlock().unwrap();
}

#[test]
fn unlock_frees_the_lock_at_once_and_drop_does_too() {
    let object = LockObject::new("lock-unlock");
    let ioctx = pool();
    let elsewhere = second_connection().ioctx(TEST_POOL).unwrap();
    let lock = object
        .lock(&ioctx, "first", Duration::from_secs(600))
        .unwrap();
    lock.unlock().expect("unlock");
    assert!(ioctx.lockers(&object.0, "run").unwrap().lockers.is_empty());
    let second = object
        .lock(&elsewhere, "second", Duration::from_secs(600))
        .expect("free right after unlock, long before the lease would end");
    drop(second);
    let third = object
        .lock(&ioctx, "third", TEST_LEASE)
        .expect("free right after drop");
    third.unlock().unwrap();
}

#[test]
fn break_lock_removes_a_holder_and_its_unlock_then_says_lost() {
    let object = LockObject::new("lock-break");
    let ioctx = pool();
    let held = object
        .lock(&ioctx, "gone", Duration::from_secs(600))
        .unwrap();
    let elsewhere = second_connection().ioctx(TEST_POOL).unwrap();
    let info = elsewhere.lockers(&object.0, "run").unwrap();
    let holder = &info.lockers[0];
    elsewhere
        .break_lock(&object.0, "run", &holder.client, &holder.cookie)
        .expect("break the lock");
    let err = elsewhere
        .break_lock(&object.0, "run", &holder.client, &holder.cookie)
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    let taken = object
        .lock(&elsewhere, "operator", TEST_LEASE)
        .expect("free after break");
    assert!(matches!(held.unlock(), Err(LockError::Lost { .. })));
    taken.unlock().unwrap();
}

#[test]
fn a_lease_shorter_than_the_minimum_is_refused_and_the_lockers_of_a_missing_object_are_not_found() {
    let object = LockObject::new("lock-short");
    let ioctx = pool();
    for lease in [Duration::ZERO, Duration::from_millis(999)] {
        match object.lock(&ioctx, "c", lease) {
            Err(LockError::Rados(err)) => {
                assert_eq!(err.kind(), ErrorKind::InvalidArgument);
                assert!(err.to_string().contains("too short"), "{err}");
            }
            other => panic!("{lease:?}: {other:?}"),
        }
    }
    assert!(rados::MIN_LEASE <= Duration::from_secs(1));
    let err = ioctx.lockers(&object.0, "run").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
}

#[test]
fn a_lapsed_lease_cannot_be_renewed_even_when_nobody_took_the_lock() {
    let object = LockObject::new("lock-late");
    let ioctx = pool();
    let late = object.lock(&ioctx, "late", TEST_LEASE).unwrap();
    std::thread::sleep(TEST_LEASE + Duration::from_millis(500));
    // A lapsed holder is no longer listed, and a late renew does not take the lock afresh.
    assert!(ioctx.lockers(&object.0, "run").unwrap().lockers.is_empty());
    assert!(matches!(late.renew(), Err(LockError::Lost { .. })));
    assert!(ioctx.lockers(&object.0, "run").unwrap().lockers.is_empty());
    drop(late);
    // The object the lock made stays, empty, after the lock is gone.
    assert!(rados_cli(&["stat", &object.0]).contains("size 0"));
}
