//! The committed corpus of a fuzz target, for the stable replay tests of the crates the targets
//! exercise (each includes this file with `#[path]`, so CI replays every corpus without
//! nightly).

use std::path::{Path, PathBuf};

/// Every file of `fuzz/corpus/<target>/` as `(file name, bytes)`, sorted by name. Panics if
/// the directory is missing or empty: a target without seeds is a mistake.
pub fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target);
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.is_file())
        .map(|path: PathBuf| {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            let data = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            (name, data)
        })
        .collect();
    files.sort();
    assert!(!files.is_empty(), "empty corpus {}", dir.display());
    files
}

/// Name prefixes of seeds that carry no expected answer: crash regressions and the inputs
/// libFuzzer found (see [`replay`]).
#[allow(dead_code)] // Only the crates that use `replay` read it.
const ONLY_REPLAYED: [&str; 2] = ["regress-", "fuzz-"];

/// Runs `accepts` on every file of `fuzz/corpus/<target>/` (none may panic) and checks the
/// naming rule of the seeds: `bad-*` must be refused, `regress-*` (inputs that once crashed
/// the target) and `fuzz-*` (inputs libFuzzer found and its corpus minimisation kept for their
/// coverage, which may or may not be valid) only replay, every other seed must be accepted.
/// Returns how many seeds were accepted.
#[allow(dead_code)] // Not every crate's replay test uses the naming rule.
pub fn replay(target: &str, accepts: impl Fn(&[u8]) -> bool) -> usize {
    let mut accepted = 0;
    for (name, data) in corpus(target) {
        let ok = accepts(&data);
        if name.starts_with("bad-") {
            assert!(!ok, "{target}/{name}: a bad seed was accepted");
        } else if !ONLY_REPLAYED.iter().any(|prefix| name.starts_with(prefix)) {
            assert!(ok, "{target}/{name}: a good seed was refused");
        }
        accepted += usize::from(ok);
    }
    accepted
}
