//! The `diskferry` binary's import against the live cluster: JSON report, refusal without
//! `--force`, Ctrl-C (SIGINT) during an import removing the partial image, and a killed
//! import leaving nothing under the final name.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{diskferry, ok, run};
use diskferry_integration_tests::{pattern, pool, unique, ImageGuard, TEST_POOL};

const MIB: usize = 1 << 20;

fn image_exists(name: &str) -> bool {
    rbd::list(&pool()).unwrap().iter().any(|n| n == name)
}

/// The working images of an import into `name` (written under a temporary name).
fn working_images(name: &str) -> Vec<String> {
    let prefix = format!("{name}{}", diskferry::sinks::WORKING_NAME_INFIX);
    let mut images = rbd::list(&pool()).unwrap();
    images.retain(|n| n.starts_with(&prefix));
    images
}

/// Starts `diskferry import RAW rbd:TEST_POOL/NAME` and waits until its working image exists
/// with its writer recorded, i.e. until it is in the middle of the copy.
fn start_import(raw: &std::path::Path, name: &str) -> std::process::Child {
    let mut child = diskferry()
        .arg("import")
        .arg(raw)
        .arg(format!("rbd:{TEST_POOL}/{name}"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let recorded = |image: &String| {
        rbd::Image::open(&pool(), image, rbd::OpenMode::ReadOnly)
            .and_then(|i| i.metadata_get(diskferry::sinks::METADATA_WRITER))
            .is_ok_and(|writer| writer.is_some())
    };
    while !working_images(name).iter().any(recorded) {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the import never created its working image"
        );
        if let Some(status) = child.try_wait().unwrap() {
            panic!("import ended before it could be interrupted: {status}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child
}

/// The string field `field` of a JSON report.
fn string_field<'a>(json: &'a serde_json::Value, field: &str) -> &'a str {
    json[field]
        .as_str()
        .unwrap_or_else(|| panic!("no string field {field} in {json}"))
}

#[test]
fn import_prints_a_json_report_and_refuses_to_overwrite_without_force() {
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("disk.raw");
    let mut content = vec![0u8; 16 * MIB];
    content[4 * MIB..5 * MIB].copy_from_slice(&pattern(5, MIB));
    std::fs::write(&raw, &content).unwrap();
    let ioctx = pool();
    let mut guard = ImageGuard::new(&ioctx);
    let name = guard.add(unique("cli-imp"));
    let target = format!("rbd:{TEST_POOL}/{name}");
    let raw = raw.to_str().unwrap();

    let report = ok(&run(&["import", "--json", raw, &target]));
    assert_eq!(string_field(&report, "source_format"), "raw");
    assert_eq!(report["size"], 16 * MIB as u64);
    assert_eq!(report["bytes_written"], MIB as u64);

    let digest = ok(&run(&["digest", "--json", &target]));
    assert_eq!(
        string_field(&digest, "digest"),
        string_field(&report, "digest")
    );

    let out = run(&["import", raw, &target]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&target) && stderr.contains("--force"),
        "{stderr}"
    );

    ok(&run(&["import", "--force", raw, &target]));
}

#[test]
fn sigint_during_import_removes_the_partial_image() {
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("big.raw");
    std::fs::write(&raw, pattern(6, 256 * MIB)).unwrap();
    let ioctx = pool();
    let mut guard = ImageGuard::new(&ioctx);
    let name = guard.add(unique("cli-int"));
    let child = start_import(&raw, &name);
    assert!(
        !image_exists(&name),
        "the final name must not hold an unfinished image"
    );
    let pid = child.id().to_string();
    assert!(Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .unwrap()
        .success());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "an interrupted import must fail: {stderr}"
    );
    assert!(stderr.contains("interrupted"), "{stderr}");
    assert!(
        !image_exists(&name),
        "the partial image {name} was left behind"
    );
    assert_eq!(working_images(&name), Vec::<String>::new());
}

#[test]
fn a_killed_import_leaves_nothing_under_the_final_name() {
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("big.raw");
    std::fs::write(&raw, pattern(7, 64 * MIB)).unwrap();
    let ioctx = pool();
    let mut guard = ImageGuard::new(&ioctx);
    let name = guard.add(unique("cli-kill"));
    let mut child = start_import(&raw, &name);
    child.kill().unwrap(); // SIGKILL: no cleanup can run.
    child.wait().unwrap();
    // What was left is under a name that says it is unfinished, never under the final one.
    assert!(!image_exists(&name), "a killed import left {name}");
    let left = working_images(&name);
    assert_eq!(left.len(), 1, "{left:?}");
    for image in left {
        guard.add(image);
    }
    // A new import of the same name is not blocked by the leftover...
    std::fs::write(&raw, pattern(7, 8 * MIB)).unwrap();
    let target = format!("rbd:{TEST_POOL}/{name}");
    ok(&run(&["import", raw.to_str().unwrap(), &target]));
    assert!(image_exists(&name));
    // ... and it removed the leftover of the killed process (same host, pid gone).
    assert_eq!(working_images(&name), Vec::<String>::new());
}

#[test]
fn an_empty_image_can_be_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.img");
    std::fs::write(&empty, b"").unwrap();
    let ioctx = pool();
    let mut guard = ImageGuard::new(&ioctx);
    let name = guard.add(unique("cli-empty"));
    let spec = format!("rbd:{TEST_POOL}/{name}");
    ok(&run(&["import", empty.to_str().unwrap(), &spec]));
    // librbd's diff_iterate aborted the process on a zero-size image.
    for args in [
        vec!["digest", spec.as_str()],
        vec!["verify", spec.as_str(), empty.to_str().unwrap()],
    ] {
        let out = diskferry().args(&args).output().unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {:?} {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// A finished image is never taken for a killed import's working image, whatever its name
/// (a user's helper reported one lost: the finished image kept its writer record, so once
/// renamed to a working image's name, the next import of its base name removed it). Such
/// names are refused as destinations too.
#[test]
fn a_finished_image_under_a_working_name_is_never_removed_and_such_names_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("disk.raw");
    std::fs::write(&raw, pattern(11, 4 * MIB)).unwrap();
    let ioctx = pool();
    let mut guard = ImageGuard::new(&ioctx);
    let name = guard.add(unique("cli-wname"));
    let target = format!("rbd:{TEST_POOL}/{name}");

    // A working image's name as a destination: a bad address (status 2), nothing made.
    let reserved = format!("{name}{}1-1", diskferry::sinks::WORKING_NAME_INFIX);
    let out = run(&[
        "import",
        raw.to_str().unwrap(),
        &format!("rbd:{TEST_POOL}/{reserved}"),
    ]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("working images"),
        "{out:?}"
    );
    assert!(!image_exists(&reserved));
    let out = run(&[
        "clone",
        &format!("{target}@s"),
        &format!("rbd:{TEST_POOL}/{reserved}"),
    ]);
    assert_eq!(out.status.code(), Some(2), "clone: {out:?}");

    // A finished import renamed to the name a killed import of this host would leave (its
    // pid gone, this place's tag).
    ok(&run(&["import", raw.to_str().unwrap(), &target]));
    let tag = objstore::Writer::current().place_tag();
    let renamed = guard.add(format!(
        "{name}{}999999-1700000000000-{tag}",
        diskferry::sinks::WORKING_NAME_INFIX
    ));
    rbd::rename(&ioctx, &name, &renamed).unwrap();
    ok(&run(&["import", raw.to_str().unwrap(), &target]));
    assert!(image_exists(&renamed), "the next import removed {renamed}");
    let listed = ok(&run(&["cleanup", "--dry-run", "--json", &target]));
    assert!(
        !listed.to_string().contains("would-remove"),
        "cleanup would remove it: {listed}"
    );
    assert!(image_exists(&renamed));
}

/// Image options librbd would refuse are refused before anything is done, as bad arguments
/// (status 2), naming the option's value.
#[test]
fn bad_image_options_are_bad_arguments() {
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("disk.raw");
    std::fs::write(&raw, pattern(12, MIB)).unwrap();
    let name = unique("cli-badopt");
    for (flags, named) in [
        (["--object-size", "1000"], "1000"),
        (["--features", "bogus"], "bogus"),
    ] {
        let mut args = vec!["import"];
        args.extend(flags);
        let target = format!("rbd:{TEST_POOL}/{name}");
        args.extend([raw.to_str().unwrap(), target.as_str()]);
        let out = run(&args);
        assert_eq!(out.status.code(), Some(2), "{flags:?}: {out:?}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(named),
            "{flags:?}: {out:?}"
        );
        assert!(!image_exists(&name));
    }
}
