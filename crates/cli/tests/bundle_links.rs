//! The files of a directory VM bundle are names from inside it, not paths the user gave: a
//! symbolic link planted as a disk file or as the manifest is not followed out of the bundle
//! by `import-vm` (nor is a FIFO opened, which would block it forever), and `export-vm` writes
//! nothing through one. The bundle directory itself may be a link. On the live cluster,
//! through the real binary.

// Not every helper is used here.
#[allow(dead_code)]
mod common;

use common::{diskferry, ok, run};

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use diskferry::DigestAlgorithm;
use diskferry_integration_tests::{
    pattern, pool, rbd_export, reference_digest_with, unique, ImageGuard, TEST_POOL,
};

const MIB: usize = 1 << 20;
/// How long an import-vm of a 1 MiB bundle may take before it is taken to hang.
const IMPORT_PATIENCE: Duration = Duration::from_secs(60);

/// A bundle directory `work/bundle` with one raw disk `os.raw` holding `content`, its
/// manifest, and `work/bundle-link`, a link to the directory (which the user may give).
fn bundle(work: &Path, content: &[u8]) -> (PathBuf, PathBuf) {
    let dir = work.join("bundle");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("os.raw"), content).unwrap();
    let manifest = serde_json::json!({
        "kind": "diskferry-vm-bundle",
        "version": 1,
        "name": "vm",
        "labels": {},
        "created": "2026-12-07T01:30:00Z",
        "consistency": "crash-consistent",
        "digest_algorithm": "sha256-of-1MiB-block-sha256s",
        "disks": [{
            "role": "os",
            "object": "os.raw",
            "source": "rbd:rbd/vm-os@snap",
            "format": "raw",
            "compression": "none",
            "size": content.len(),
            "object_size": content.len(),
            // A manifest made the old way, before BLAKE3: it keeps verifying.
            "digest": reference_digest_with(DigestAlgorithm::Sha256Blocks, content),
        }],
    });
    std::fs::write(dir.join("manifest.json"), manifest.to_string()).unwrap();
    let link = work.join("bundle-link");
    std::os::unix::fs::symlink(&dir, &link).unwrap();
    (dir, link)
}

/// A work directory holding a [`bundle`] of one 1 MiB disk and `outside`, a directory for
/// what planted links point to; and a guard for the images a test makes.
struct Setup {
    /// Removes the directory when dropped.
    _work: tempfile::TempDir,
    outside: PathBuf,
    /// The bundle directory.
    dir: PathBuf,
    /// The link to it, as the user gives it.
    given: PathBuf,
    content: Vec<u8>,
    guard: ImageGuard,
}

impl Setup {
    fn new(seed: u64) -> Setup {
        let work = tempfile::tempdir().unwrap();
        let outside = work.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        let content = pattern(seed, MIB);
        let (dir, given) = bundle(work.path(), &content);
        Setup {
            _work: work,
            outside,
            dir,
            given,
            content,
            guard: ImageGuard::new(&pool()),
        }
    }
}

/// Moves `dir/name` to `outside/name` and plants a link to it in its place.
fn plant_link(dir: &Path, outside: &Path, name: &str) {
    std::fs::rename(dir.join(name), outside.join(name)).unwrap();
    std::os::unix::fs::symlink(outside.join(name), dir.join(name)).unwrap();
}

/// Undoes [`plant_link`].
fn unplant_link(dir: &Path, outside: &Path, name: &str) {
    std::fs::remove_file(dir.join(name)).unwrap();
    std::fs::rename(outside.join(name), dir.join(name)).unwrap();
}

/// `diskferry import-vm BUNDLE/ --pool TEST_POOL --prefix PREFIX`, killed if it takes longer
/// than [`IMPORT_PATIENCE`] (then `None`).
fn import_vm(bundle: &Path, prefix: &str) -> Option<Output> {
    let mut child = diskferry()
        .args(["import-vm", &format!("{}/", bundle.display())])
        .args(["--pool", TEST_POOL, "--prefix", prefix])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run diskferry");
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > IMPORT_PATIENCE {
            child.kill().unwrap();
            child.wait().unwrap();
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Some(child.wait_with_output().unwrap())
}

fn image_exists(name: &str) -> bool {
    rbd::Image::open(&pool(), name, rbd::OpenMode::ReadOnly).is_ok()
}

/// Asserts that `out` is a refusal (exit 1) naming `file` and saying `words`.
fn assert_refused(out: Option<Output>, file: &Path, words: &str) {
    let out = out.unwrap_or_else(|| panic!("import-vm hung on {}", file.display()));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&file.display().to_string()) && err.contains(words),
        "no {} and {words:?} in: {err}",
        file.display()
    );
}

#[test]
fn import_vm_does_not_follow_links_planted_in_a_directory_bundle() {
    // `_work` is bound, not left to `..`: the directory lives until the test ends.
    let Setup {
        _work,
        outside,
        dir,
        given,
        content,
        mut guard,
    } = Setup::new(151);

    // A disk file, then the manifest, moved out of the bundle and linked back in: with a
    // manifest that matches, a followed link would import what it points to.
    for name in ["os.raw", "manifest.json"] {
        let prefix = unique("links-vm");
        let image = guard.add(format!("{prefix}-os"));
        plant_link(&dir, &outside, name);
        assert_refused(
            import_vm(&given, &prefix),
            &given.join(name),
            "symbolic link",
        );
        assert!(!image_exists(&image), "{name}: {image} was made");
        unplant_link(&dir, &outside, name);
    }

    // A FIFO as a disk file is no disk, and opening it must not wait for a writer.
    let fifo = dir.join("os.raw");
    std::fs::rename(&fifo, outside.join("os.raw")).unwrap();
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    let prefix = unique("links-vm");
    guard.add(format!("{prefix}-os"));
    assert_refused(
        import_vm(&given, &prefix),
        &given.join("os.raw"),
        "not a regular file",
    );
    std::fs::remove_file(&fifo).unwrap();
    std::fs::rename(outside.join("os.raw"), &fifo).unwrap();

    // The bundle directory itself, given by the user, may be a link.
    let prefix = unique("links-vm");
    let image = guard.add(format!("{prefix}-os"));
    let out = import_vm(&given, &prefix).expect("import-vm hung");
    ok(&out);
    assert!(rbd_export(&image) == content, "{image} differs");
}

#[test]
fn export_vm_writes_nothing_through_links_planted_in_a_directory_bundle() {
    let Setup {
        _work,
        outside,
        dir,
        given,
        mut guard,
        ..
    } = Setup::new(152);
    let source = unique("links-vm-src");
    guard.add(source.clone());
    // The source image: the bundle's disk imported.
    ok(&run(&[
        "import",
        &dir.join("os.raw").display().to_string(),
        &format!("rbd:{TEST_POOL}/{source}"),
        "--format",
        "raw",
    ]));
    std::fs::remove_file(dir.join("os.raw")).unwrap();
    std::fs::remove_file(dir.join("manifest.json")).unwrap();
    let victim = b"not the bundle's".to_vec();

    for name in ["os.raw", "manifest.json"] {
        // A link to an existing file outside, and one to a file not there yet.
        for target in ["victim", "planted"] {
            let target = outside.join(target);
            if target.ends_with("victim") {
                std::fs::write(&target, &victim).unwrap();
            }
            std::os::unix::fs::symlink(&target, dir.join(name)).unwrap();
            for force in [false, true] {
                let mut args = vec![
                    "export-vm".to_string(),
                    "--disk".into(),
                    format!("os=rbd:{TEST_POOL}/{source}"),
                    "--format".into(),
                    "raw".into(),
                    given.display().to_string(),
                ];
                if force {
                    args.push("--force".into());
                }
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                let out = run(&args);
                let err = String::from_utf8_lossy(&out.stderr);
                assert!(!out.status.success(), "{name} -> {target:?}: {err}");
                assert!(err.contains("symbolic link"), "{name}: {err}");
                assert!(
                    dir.join(name).symlink_metadata().unwrap().is_symlink(),
                    "{name}: the link was replaced"
                );
            }
            assert!(!outside.join("planted").exists(), "{name}: written through");
            assert_eq!(std::fs::read(outside.join("victim")).unwrap(), victim);
            std::fs::remove_file(dir.join(name)).unwrap();
        }
    }
}
