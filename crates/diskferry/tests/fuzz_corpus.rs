//! Replays the cargo-fuzz corpora of diskferry's parsers (`fuzz/corpus/{address,manifest,
//! serve_config,raw_zst}`) through `diskferry::fuzzing` on the stable toolchain: none may
//! panic, seeds named `bad-*` must be refused and the other seeds accepted; each `regress-*`
//! file (an input that once crashed a fuzz target) replays the fix.

#[path = "../../../fuzz/replay/corpus.rs"]
mod replay;

use diskferry::fuzzing;
use replay::replay;

#[test]
fn address_corpus_replays() {
    replay("address", |data| fuzzing::address(data) > 0);
}

#[test]
fn manifest_corpus_replays() {
    replay("manifest", fuzzing::manifest);
}

#[test]
fn serve_config_corpus_replays_and_the_documented_example_is_valid() {
    assert!(replay("serve_config", fuzzing::serve_config) >= 3);
}

#[test]
fn raw_zst_corpus_replays() {
    replay("raw_zst", |data| fuzzing::raw_zst(data).is_some());
}
