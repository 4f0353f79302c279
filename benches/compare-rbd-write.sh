#!/usr/bin/env bash
# Side by side, in one run on the local cluster: diskferry's asynchronous RBD writes
# (criterion bench rbd_write: 4 MiB x 16 in flight, sequential overwrite of the image)
# against `rbd bench --io-type write --io-size 4M --io-threads 16 --io-pattern seq` on an
# image of the same size, also overwritten. Prints both throughputs and the ratio.
#
# Usage: benches/compare-rbd-write.sh [IMAGE_MIB]   (default 1024)
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
size_mib=${1:-1024}
eval "$("$repo/scripts/dev-cluster" env)"

image="bench-rbd-cli-$$"
cleanup() { rbd rm --no-progress "rbd/$image" >/dev/null 2>&1 || true; }
trap cleanup EXIT

rbd create --size "${size_mib}M" "rbd/$image"
bench_rbd() {
  rbd bench --io-type write --io-size 4M --io-threads 16 --io-pattern seq \
    --io-total "${size_mib}M" "rbd/$image" 2>&1 | awk '/elapsed:/ {print}'
}
to_mibs() {
  # `elapsed: 2  ops: 256  ops/sec: 120.4  bytes/sec: 505 MiB/s` -> 505.0
  python3 - "$1" <<'PY'
import re, sys
m = re.search(r"bytes/sec:\s*([\d.]+)\s*(\w+)/s", sys.argv[1])
value, unit = float(m.group(1)), m.group(2)
scale = {"B": 1 / 2**20, "KiB": 1 / 1024, "MiB": 1, "GiB": 1024}[unit]
print(f"{value * scale:.1f}")
PY
}
bench_rbd >/dev/null   # allocate every object once, as criterion's warm-up does
rbd_before=$(to_mibs "$(bench_rbd)")
cd "$repo"
out=$(DISKFERRY_BENCH_IMAGE_MIB="$size_mib" cargo bench -p diskferry-benches --bench rbd_write 2>&1)
echo "$out" | grep -E 'thrpt|time:' || true
ours_mibs=$(python3 - "$out" <<'PY'
import re, sys
m = re.search(r"thrpt:\s*\[\s*[\d.]+ \w+/s\s+([\d.]+) (\w+)/s", sys.argv[1])
value, unit = float(m.group(1)), m.group(2)
scale = {"KiB": 1 / 1024, "MiB": 1, "GiB": 1024}[unit]
print(f"{value * scale:.1f}")
PY
)
# A second rbd bench after ours, so a change in machine load during the run hits both sides.
rbd_after=$(to_mibs "$(bench_rbd)")
cleanup
rbd_mibs=$(python3 -c "print(f'{($rbd_before + $rbd_after) / 2:.1f}')")
echo "rbd bench runs (before, after): ${rbd_before}, ${rbd_after} MiB/s"
ratio=$(python3 -c "print(f'{$ours_mibs / $rbd_mibs:.2f}')")
echo "rbd bench write (4M x16, seq, ${size_mib} MiB): ${rbd_mibs} MiB/s"
echo "diskferry rbd_write (4M x16, seq, ${size_mib} MiB): ${ours_mibs} MiB/s (criterion median)"
echo "ratio diskferry / rbd bench: ${ratio}"
