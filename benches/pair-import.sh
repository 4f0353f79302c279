#!/usr/bin/env bash
# Paired runs, for a ratio that survives a busy machine: `diskferry import FILE rbd:rbd/IMG`
# against `qemu-img convert -W -m 16 -f qcow2 -O raw FILE rbd:rbd/IMG`, PAIRS times, the tool
# that goes first alternating, the page cache dropped before each run (as root), each result
# checked by content (`diskferry digest` of the image against the qcow2's). Then `diskferry
# digest` of the qcow2 alone, three times (the digest's own cost). The source is
# compare-import.sh's: VIRTUAL_GIB virtual, DATA_MIB of mixed data, its all-zero chunks
# written as zero data.
#
# Usage: benches/pair-import.sh [VIRTUAL_GIB [DATA_MIB]]   (default 10 GiB, 1536 MiB)
# Env:   DISKFERRY (a release binary; default: builds one), PAIRS (6), WORKDIR (default:
#        mktemp; needs ~2 x DATA_MIB free; a source made there is used again), NICE (-10
#        when root; 0 = off).
# Output: a line per run, `TOOL WALL_S CPU_S STATUS` (CPU = user + sys), then the medians
# of the per-pair ratios.
set -euo pipefail
virtual_gib=${1:-10}
data_mib=${2:-1536}
pairs=${PAIRS:-6}
root=$(cd "$(dirname "$0")/.." && pwd)
. "$root/benches/bench-common.sh"
ensure_qemu_rbd || exit 1
eval "$("$root/scripts/dev-cluster" env)"
diskferry_release
bench_workdir
[[ -n "${WORKDIR:-}" ]] || trap 'rm -rf "$work"' EXIT
nice_level=${NICE:--10}
[[ $(id -u) -eq 0 ]] || nice_level=0
results=$work/pairs.txt
: >"$results"

src=$work/pair-import-${virtual_gib}g-${data_mib}m.qcow2
if [[ ! -f $src ]]; then
    python3 "$root/benches/import_helpers.py" make-raw "$work/src.raw" "$virtual_gib" "$data_mib" >"$work/src.raw.zeros"
    qemu-img convert -f raw -O qcow2 "$work/src.raw" "$src"
    cmds=()
    while read -r off; do cmds+=(-c "write -q -P 0 $off 4M"); done <"$work/src.raw.zeros"
    ((${#cmds[@]} == 0)) || qemu-io -f qcow2 "${cmds[@]}" "$src" >/dev/null
    rm -f "$work/src.raw" "$work/src.raw.zeros"
fi
src_digest=$("$DISKFERRY" digest --no-progress "$src" | awk '{print $1}')

drop_caches() {
    sync
    [[ $(id -u) -ne 0 ]] || echo 3 >/proc/sys/vm/drop_caches
}
# run_one TOOL: one import into a new image, timed, checked, removed.
run_one() {
    local tool=$1 img=pair-import-$$-$RANDOM status got
    drop_caches
    local cmd=("$DISKFERRY" import --no-progress "$src" "rbd:rbd/$img")
    [[ $tool == diskferry ]] ||
        cmd=(qemu-img convert -W -m 16 -f qcow2 -O raw "$src" "rbd:rbd/$img:conf=$CEPH_CONF")
    if /usr/bin/time -f "%e %U %S" -o "$work/time" nice -n "$nice_level" "${cmd[@]}" >/dev/null 2>"$work/err"; then
        got=$("$DISKFERRY" digest --no-progress "rbd:rbd/$img" | awk '{print $1}')
        [[ $got == "$src_digest" ]] && status=ok || status=WRONG
    else
        status=failed
        tail -3 "$work/err" >&2
    fi
    read -r wall user sys <"$work/time"
    echo "$tool $wall $(echo "$user + $sys" | bc -l) $status" | tee -a "$results"
    rbd rm --no-progress "rbd/$img" >/dev/null 2>&1 || true
}
for ((i = 1; i <= pairs; i++)); do
    if ((i % 2)); then run_one diskferry; run_one qemu-img-W16; else run_one qemu-img-W16; run_one diskferry; fi
done
for _ in 1 2 3; do
    drop_caches
    /usr/bin/time -f "%e %U %S" -o "$work/time" nice -n "$nice_level" "$DISKFERRY" digest --no-progress "$src" >/dev/null
    read -r wall user sys <"$work/time"
    echo "digest $wall $(echo "$user + $sys" | bc -l) ok" | tee -a "$results"
done
python3 - "$results" <<'EOF'
import statistics, sys
rows = [line.split() for line in open(sys.argv[1])]
df = [(float(r[1]), float(r[2])) for r in rows if r[0] == "diskferry"]
qi = [(float(r[1]), float(r[2])) for r in rows if r[0] == "qemu-img-W16"]
dg = [float(r[2]) for r in rows if r[0] == "digest"]
wall = [a[0] / b[0] for a, b in zip(df, qi)]
extra = [a[1] - b[1] for a, b in zip(df, qi)]
print(f"wall diskferry / qemu-img per pair: median {statistics.median(wall):.2f} "
      f"({', '.join(f'{x:.2f}' for x in wall)})")
print(f"client CPU diskferry - qemu-img per pair: median {statistics.median(extra):+.2f} s; "
      f"diskferry digest alone: median {statistics.median(dg):.2f} s")
if any(r[3] != "ok" for r in rows):
    sys.exit("a run failed or was WRONG")
EOF
