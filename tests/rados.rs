//! librados wrapper against the live cluster: connect, pools, error kinds, timeouts.

use std::time::{Duration, Instant};

use diskferry_integration_tests::{ceph_conf, cluster, cluster_config, TEST_POOL};
use rados::{Cluster, ClusterConfig, ErrorKind};

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
