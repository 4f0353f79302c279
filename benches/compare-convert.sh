#!/usr/bin/env bash
# Side by side: `diskferry convert` against `qemu-img convert -O qcow2` on the same raw file,
# for none, deflate (-c) and zstd (-c -o compression_type=zstd), in one run. Every output is
# checked with `qemu-img compare` against the source. Prints wall times and the ratio
# diskferry/qemu-img (lower is better).
#
# Usage: benches/compare-convert.sh [SIZE_MIB]   (default 1024)
# Env:   DISKFERRY=path to a release binary (default: builds one), WORKDIR (default: mktemp).
set -euo pipefail

size_mib=${1:-1024}
root=$(cd "$(dirname "$0")/.." && pwd)
target=${CARGO_TARGET_DIR:-$root/target}
if [[ -z "${DISKFERRY:-}" ]]; then
    cargo build --release -q -p diskferry-cli --manifest-path "$root/Cargo.toml"
    DISKFERRY=$target/release/diskferry
fi
work=${WORKDIR:-$(mktemp -d)}
trap 'rm -rf "$work"' EXIT

# Source: per 16 MiB: 6 MiB random, 6 MiB text, 2 MiB zeros, 2 MiB hole. Built once by
# concatenating pieces (fast), then holes punched by truncate/seek.
src=$work/src.raw
python3 - "$src" "$size_mib" <<'PY'
import os, sys
path, size_mib = sys.argv[1], int(sys.argv[2])
rnd = os.urandom(6 << 20)
line = b"diskferry moves VM disks between qcow2, RBD and S3; sparse, parallel, verified.\n"
text = (line * ((6 << 20) // len(line) + 1))[: 6 << 20]
zeros = bytes(2 << 20)
with open(path, "wb") as f:
    for i in range(size_mib // 16):
        # Vary the random part a little so blocks are not identical.
        f.write(rnd[i % 4096:] + rnd[:i % 4096])
        f.write(text)
        f.write(zeros)
        f.seek(2 << 20, 1)
    f.truncate(size_mib << 20)
PY

secs() { date +%s.%N; }
timeit() { # prints elapsed seconds of "$@"
    local t0 t1
    t0=$(secs)
    "$@" >/dev/null 2>&1
    t1=$(secs)
    echo "$t1 - $t0" | bc -l
}

printf "source: %d MiB raw (random/text/zeros/holes), cores: %s\n" "$size_mib" "$(nproc)"
printf "%-8s %12s %12s %8s %10s %10s\n" mode diskferry_s qemu-img_s ratio df_size qi_size
for mode in none deflate zstd; do
    case $mode in
        none) df_args=(-c none); qi_args=() ;;
        deflate) df_args=(-c deflate); qi_args=(-c) ;;
        zstd) df_args=(-c zstd); qi_args=(-c -o compression_type=zstd) ;;
    esac
    sync
    t_df=$(timeit "$DISKFERRY" convert "${df_args[@]}" --force "$src" "$work/df.qcow2")
    sync
    rm -f "$work/qi.qcow2"
    t_qi=$(timeit qemu-img convert -f raw -O qcow2 "${qi_args[@]}" "$src" "$work/qi.qcow2")
    qemu-img compare -q "$src" "$work/df.qcow2"
    qemu-img compare -q "$src" "$work/qi.qcow2"
    qemu-img check -q "$work/df.qcow2"
    ratio=$(echo "$t_df / $t_qi" | bc -l)
    printf "%-8s %12.2f %12.2f %8.2f %10s %10s\n" "$mode" "$t_df" "$t_qi" "$ratio" \
        "$(stat -c %s "$work/df.qcow2")" "$(stat -c %s "$work/qi.qcow2")"
done
