#!/bin/sh
# Runs one fuzz target with the limits recorded in RELIABILITY.md ("Fuzzing"):
#
#   cargo +nightly fuzz build [--features diskferry TARGET]   # in fuzz/ (ASan, release + debug asserts)
#   fuzz/run.sh TARGET [libFuzzer options]   # e.g. -max_total_time=600 -runs=10000000
#
# New inputs go to target/work-corpus/TARGET (not committed); the committed seeds and
# regressions in corpus/TARGET are read too. Crashes land in artifacts/TARGET/: minimise one
# (`-minimize_crash=1 -runs=10000 FILE`), fix the parser, and add it to corpus/TARGET/ as
# `regress-*`, which `cargo test` replays on stable.
#
# Memory limits: -malloc_limit_mb is the largest single allocation the reader may make for
# any input (its documented caps plus slack); -rss_limit_mb is that working set plus the
# sanitizer's overhead, with ASan's quarantine held to QUARANTINE_MB so that it cannot hide
# or fake a leak of input-sized memory. FUZZ_BIN overrides where the binaries are
# (default: what `cargo fuzz build` made).
set -eu

here=$(cd "$(dirname "$0")" && pwd)
target=${1:?usage: fuzz/run.sh TARGET [libFuzzer options]}
shift
bin=${FUZZ_BIN:-$here/target/x86_64-unknown-linux-gnu/release}/$target
QUARANTINE_MB=16
extra=

case $target in
    # qcow2: one header cluster at most is read for the header.
    header) max_len=4096 malloc_mb=64 rss_mb=256 ;;
    # qcow2 image: L1 table <= 32 MiB (MAX_L1_BYTES), one L2 table (<= 2 MiB cluster),
    # reads in flight <= 4 MiB (the fuzz entry point's ReadOptions), zstd window <= 4 MiB.
    mapping) max_len=262144 malloc_mb=64 rss_mb=512 ;;
    # One 64 KiB cluster out, zstd window <= 4 MiB (ZSTD_MAX_WINDOW_LOG).
    decompress_deflate | decompress_zstd) max_len=81920 malloc_mb=16 rss_mb=256 ;;
    # Longhorn metadata files: JSON of a few KiB (a 64 GiB volume's backup cfg is ~3 MiB).
    volume_cfg | lock_file) max_len=16384 malloc_mb=16 rss_mb=256 ;;
    backup_cfg) max_len=65536 malloc_mb=16 rss_mb=256 ;;
    # Longhorn block: output <= the block size (2 MiB here; MAX_BLOCK_SIZE 64 MiB in general).
    block_decode) max_len=131072 malloc_mb=16 rss_mb=256 ;;
    # Addresses and the serve configuration: text a user types or writes.
    address) max_len=1024 malloc_mb=16 rss_mb=256 ;;
    serve_config) max_len=16384 malloc_mb=16 rss_mb=256 ;;
    # The VM bundle manifest: a JSON document of a few KiB.
    manifest) max_len=16384 malloc_mb=16 rss_mb=256 ;;
    # raw.zst: 4 MiB pieces, two in each channel, plus the decoder's window; libzstd caps
    # the window at 128 MiB by default (window log 27) and the reader does not lower it.
    # -detect_leaks=0: the reader decompresses on a thread of its own, which ends only after
    # the source is dropped, so LeakSanitizer saw its thread-locals (tokio's parker, 136
    # bytes) as leaked when an input ended in an error; nothing is leaked once it exits.
    raw_zst) max_len=65536 malloc_mb=160 rss_mb=768 extra=-detect_leaks=0 ;;
    *) echo "fuzz/run.sh: unknown target $target" >&2; exit 2 ;;
esac

work=$here/target/work-corpus/$target
artifacts=$here/artifacts/$target
mkdir -p "$work" "$artifacts"
export ASAN_OPTIONS="${ASAN_OPTIONS:-}${ASAN_OPTIONS:+:}quarantine_size_mb=$QUARANTINE_MB"
exec "$bin" -max_len=$max_len -malloc_limit_mb=$malloc_mb -rss_limit_mb=$rss_mb \
    -print_final_stats=1 -artifact_prefix="$artifacts/" $extra "$@" "$work" "$here/corpus/$target"
