//! Replays the cargo-fuzz corpora of the Longhorn parsers (`fuzz/corpus/{volume_cfg,
//! backup_cfg,lock_file,block_decode}`) through `longhorn::fuzzing` on the stable toolchain:
//! none may panic, seeds named `bad-*` must be refused and the other seeds (among them files
//! Longhorn's Go code wrote, `go-*`) accepted; each `regress-*` file (an input that once
//! crashed a fuzz target) replays the fix.

#[path = "../../../fuzz/replay/corpus.rs"]
mod replay;

use longhorn::fuzzing;
use replay::{corpus, replay};

/// How many seeds of `target` Longhorn's Go code wrote.
fn go_seeds(target: &str) -> usize {
    corpus(target)
        .iter()
        .filter(|(name, _)| name.starts_with("go-"))
        .count()
}

#[test]
fn volume_cfg_corpus_replays_and_go_files_are_accepted() {
    assert!(go_seeds("volume_cfg") >= 3, "the Go fixtures are missing");
    replay("volume_cfg", fuzzing::volume_cfg);
}

#[test]
fn backup_cfg_corpus_replays_and_go_files_are_accepted() {
    assert!(go_seeds("backup_cfg") >= 4, "the Go fixtures are missing");
    replay("backup_cfg", fuzzing::backup_cfg);
}

#[test]
fn lock_file_corpus_replays() {
    replay("lock_file", fuzzing::lock_file);
}

#[test]
fn block_decode_corpus_replays_and_go_blocks_decode() {
    assert!(
        go_seeds("block_decode") >= 4,
        "the Go-written blocks are missing"
    );
    replay("block_decode", fuzzing::block_decode);
}
