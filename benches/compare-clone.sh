#!/usr/bin/env bash
# Clone time against the parent's size, in one bench run on the local cluster: runs the
# criterion bench clone_time (20 clones of a protected snapshot of a 1 GiB and of a 100 GiB
# parent, v1 and v2) and prints the median time per 20 clones and the ratio 100 GiB / 1 GiB
# per format (target: under 1.5).
#
# Usage: benches/compare-clone.sh
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
eval "$("$root/scripts/dev-cluster" env)"
cd "$root"
out=$(cargo bench -p diskferry-benches --bench clone_time 2>&1) || { echo "$out" >&2; exit 1; }
echo "$out" | grep -E '^clone_20|time:' || true
python3 - "$out" <<'PY'
import re, sys
unit = {"ns": 1e-6, "µs": 1e-3, "us": 1e-3, "ms": 1.0, "s": 1000.0}
med = {}
for m in re.finditer(r"clone_20/(v\d)/(\d+GiB)\s+time:\s*\[\s*[\d.]+ \S+\s+([\d.]+) (\S+)", sys.argv[1]):
    med[(m.group(1), m.group(2))] = float(m.group(3)) * unit[m.group(4)]
for fmt in ("v1", "v2"):
    small, big = med[(fmt, "1GiB")], med[(fmt, "100GiB")]
    print(f"{fmt}: 20 clones: 1 GiB parent {small:.0f} ms, 100 GiB parent {big:.0f} ms "
          f"({small / 20:.1f} / {big / 20:.1f} ms per clone); ratio 100 GiB / 1 GiB = {big / small:.2f} (target < 1.5)")
PY
