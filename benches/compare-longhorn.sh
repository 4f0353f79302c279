#!/usr/bin/env bash
# Longhorn backup benchmark on the local cluster (issue 6):
#  1. an RBD image of SIZE_MIB random (incompressible, nothing to dedup) data, snapshot s1;
#  2. `diskferry longhorn backup rbd:rbd/IMG@s1 s3://BUCKET@us-east-1/bench/` (full, lz4, 2 MiB);
#  3. snapshot s2 with nothing changed, `--since s1` incremental backup;
#  4. the machine's ceilings measured in the same run: lz4 + SHA-512 on all cores (criterion
#     bench longhorn_blocks, group longhorn_block_all_cores) and RGW PUT of 2 MiB objects at
#     the same concurrency (ignored test rgw_put_ceiling_2mib_objects);
#  5. prints throughputs and the ratios the issue asks for; deletes the image and the bucket.
#
# Usage: benches/compare-longhorn.sh [SIZE_MIB]   (default 10240 = 10 GiB, as the issue asks)
# The run writes about 2 x SIZE_MIB into the cluster (the image, then its backup in RGW) plus
# LH_CEILING_MIB (default 512) for the RGW ceiling; the dev cluster's sparse OSD file never
# shrinks (it grew by about the bytes written: 6.2 GB for 6.5 GB written here), so the script
# refuses to start without 1.25 x that + 8 GiB free on the host.
# Set DISKFERRY_CLUSTER_DIR for a cluster outside <repo>/target/dev-cluster.
# CLUSTER_CPUS=LIST (taskset syntax, e.g. 0) pins the cluster's four daemons to those CPUs and
# this script, with everything it runs, to the others, for the run; the daemons get every CPU
# back at exit. By default everything shares every CPU, as on a one-machine test host; the
# split stands for a deployment where the OSDs and RGW run on other hosts than the backup.
# Builds what it needs in release (one `cargo test --release --no-run`, see below).
# DISKFERRY=binary times that binary instead of the one built here; CEILINGS=0 skips the
# ceilings (and, with DISKFERRY set, the build). BASELINE=an earlier diskferry binary: a full
# backup of the same snapshot into a second volume, timed right after the new one, and
# compared (wall and client CPU, user + sys).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
size_mib=${1:-10240}
ceiling_mib=${LH_CEILING_MIB:-512}
export LH_CEILING_MIB=$ceiling_mib
eval "$("$repo/scripts/dev-cluster" env)"
pin_cluster() { # pin_cluster CPU_LIST: every thread of every daemon
  local pid
  for pid in "${cluster_pids[@]}"; do taskset -a -p -c "$1" "$pid" >/dev/null; done
}
all_cpus=0-$(($(nproc) - 1))
if [[ -n ${CLUSTER_CPUS:-} ]]; then
  cluster_dir=${DISKFERRY_CLUSTER_DIR:-$repo/target/dev-cluster}
  cluster_pids=()
  for daemon in mon.a mgr.x osd.0 rgw.a; do
    cluster_pids+=("$(cat "$cluster_dir/$daemon.pid")")
  done
  client_cpus=$(python3 - "$CLUSTER_CPUS" "$(nproc)" <<'PY'
import sys
taken = set()
for part in sys.argv[1].split(","):
    lo, _, hi = part.partition("-")
    taken.update(range(int(lo), int(hi or lo) + 1))
rest = [str(c) for c in range(int(sys.argv[2])) if c not in taken]
if not rest:
    sys.exit("CLUSTER_CPUS leaves no CPU for the backup")
print(",".join(rest))
PY
)
fi

written_mib=$((2 * size_mib + ceiling_mib))
need_kib=$(((written_mib * 5 / 4 + 8192) * 1024))
free_kib=$(df -k --output=avail / | tail -1)
if ((free_kib < need_kib)); then
  echo "not enough room: $((free_kib >> 20)) GiB free, $((need_kib >> 20)) GiB wanted for ${written_mib} MiB written into the cluster" >&2
  exit 1
fi

image="bench-lh-$$"
bucket="bench-lh-$$"
cleanup() {
  [[ -z ${CLUSTER_CPUS:-} ]] || pin_cluster "$all_cpus"
  rbd snap purge --no-progress "rbd/$image" >/dev/null 2>&1 || true
  rbd rm --no-progress "rbd/$image" >/dev/null 2>&1 || true
  python3 - "$bucket" <<'PY' || true
import os, sys, boto3
s3 = boto3.resource("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"])
b = s3.Bucket(sys.argv[1])
try:
    b.objects.all().delete(); b.delete()
except Exception as e:
    if "NoSuchBucket" not in str(e): raise
PY
}
trap cleanup EXIT
if [[ -n ${CLUSTER_CPUS:-} ]]; then
  pin_cluster "$CLUSTER_CPUS"
  taskset -p -c "$client_cpus" $$ >/dev/null
  echo "cluster pinned to CPUs $CLUSTER_CPUS, this run to CPUs $client_cpus"
fi

cd "$repo"
ceilings=${CEILINGS:-1}
if [[ $ceilings == 0 && -n ${DISKFERRY:-} ]]; then
  bin=$DISKFERRY
else
# One cargo invocation builds the three executables with the same feature set, so nothing is
# rebuilt between them (separate `cargo bench` / `cargo test -p …` runs would each unify
# features differently and recompile the diskferry crate on this slow machine).
build_json=$(cargo test --release --locked --no-run --message-format=json-render-diagnostics \
  -p diskferry-integration-tests --test longhorn \
  -p diskferry-cli --test longhorn_cli \
  -p diskferry-benches --bench longhorn_blocks)
executable() {
  echo "$build_json" | python3 -c "
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get('reason') == 'compiler-artifact' and m.get('executable') and m['target']['name'] == sys.argv[1]:
        print(m['executable'])" "$1" | tail -1
}
bin=$(executable diskferry)
codec_bench=$(executable longhorn_blocks)
ceiling_test=$(executable longhorn)
[[ -x $bin && -x $codec_bench && -x $ceiling_test ]] || { echo "build outputs not found" >&2; exit 1; }
bin=${DISKFERRY:-$bin}
fi
python3 -c "import boto3,os; boto3.client('s3', endpoint_url=os.environ['AWS_ENDPOINT_URL']).create_bucket(Bucket='$bucket')"

echo "filling rbd/$image with ${size_mib} MiB of random data"
head -c "$((size_mib * 1048576))" /dev/urandom | rbd import --no-progress - "rbd/$image"
rbd snap create --no-progress "rbd/$image@s1"
rbd snap create --no-progress "rbd/$image@s2"
target="s3://$bucket@us-east-1/bench/"

seconds() { python3 -c "import json,sys; print(json.load(sys.stdin)['seconds'])"; }
now() { date +%s.%N; }
# Both figures: the command's wall time (what a user waits for, with Longhorn's lock protocol:
# a fixed 2 s wait before any block moves, plus the cfg reads and writes) and the copy alone
# (the JSON's `seconds`). The targets are checked on the wall time.
cpu_file=$(mktemp)
cpu() { awk '{ printf "%.2f", $1 + $2 }' "$cpu_file"; }
t0=$(now)
full=$(/usr/bin/time -f "%U %S" -o "$cpu_file" "$bin" longhorn backup "rbd:rbd/$image@s1" "$target" --volume benchvol --name full --json)
t1=$(now)
full_cpu=$(cpu)
full_s=$(python3 -c "print($t1 - $t0)")
if [[ -n ${BASELINE:-} ]]; then
  b0=$(now)
  /usr/bin/time -f "%U %S" -o "$cpu_file" "$BASELINE" longhorn backup "rbd:rbd/$image@s1" "$target" --volume basevol --name full --json >/dev/null
  b1=$(now)
  python3 -c "print(f'full backup: new {$full_s:.2f} s wall, $full_cpu s CPU; baseline {$b1 - $b0:.2f} s wall, $(cpu) s CPU; new / baseline wall {$full_s / ($b1 - $b0):.2f}, CPU {$full_cpu / $(cpu):.2f}')"
  t1=$(now) # the incremental's wall time starts here
fi
inc=$("$bin" longhorn backup "rbd:rbd/$image@s2" "$target" --volume benchvol --name inc --since s1 --json)
t2=$(now)
inc_s=$(python3 -c "print($t2 - $t1)")
full_copy_s=$(echo "$full" | seconds)
inc_copy_s=$(echo "$inc" | seconds)
echo "$full" | python3 -c "import json,sys; r=json.load(sys.stdin); print('full:', {k: r[k] for k in ('new_blocks','reused_blocks','zero_blocks','bytes_uploaded','seconds')})"
echo "$inc" | python3 -c "import json,sys; r=json.load(sys.stdin); print('incremental:', {k: r[k] for k in ('new_blocks','kept_from_previous','bytes_read','seconds')})"

rm -f "$cpu_file"
if [[ $ceilings == 0 ]]; then
  python3 -c "print(f'full backup {$full_s:.2f} s wall ({$size_mib / $full_s:.1f} MiB/s), $full_cpu s CPU; unchanged incremental {$inc_s:.2f} s = {$inc_s / $full_s:.3f} of the full')"
  exit 0
fi
# Ceilings, after the backups so the cluster state is the same for both.
# `--bench` makes criterion measure (without it the binary only runs each bench once).
codec_out=$("$codec_bench" --bench longhorn_block_all_cores 2>&1)
echo "$codec_out" | grep -A2 "longhorn_block_all_cores" || true
codec_mibs=$(python3 - "$codec_out" <<'PY'
import re, sys
m = re.search(r"thrpt:\s*\[\s*[\d.]+ \w+/s\s+([\d.]+) (\w+)/s", sys.argv[1])
value, unit = float(m.group(1)), m.group(2)
print(f"{value * {'KiB': 1/1024, 'MiB': 1, 'GiB': 1024}[unit]:.1f}")
PY
)
put_out=$("$ceiling_test" --ignored --nocapture --exact rgw_put_ceiling_2mib_objects 2>&1)
echo "$put_out" | grep RGW_PUT_CEILING_MIBS
# The test harness may print "test NAME ... " on the same line, so take the word after the tag.
put_mibs=$(echo "$put_out" | awk '{for (i = 1; i < NF; i++) if ($i == "RGW_PUT_CEILING_MIBS") print $(i + 1)}')

python3 - "$size_mib" "$full_s" "$inc_s" "$codec_mibs" "$put_mibs" "$ceiling_mib" "$full_copy_s" "$inc_copy_s" <<'PY'
import sys
size, full_s, inc_s, codec, put, ceiling_mib, full_copy_s, inc_copy_s = map(float, sys.argv[1:])
backup = size / full_s
ceiling = min(codec, put)
print(f"image {size:.0f} MiB random (about {2 * size + ceiling_mib:.0f} MiB written into the cluster in this run)")
print(f"full backup {full_s:.2f} s wall = {backup:.1f} MiB/s (copy alone {full_copy_s:.2f} s = {size / full_copy_s:.1f} MiB/s)")
print(f"ceilings: lz4+SHA-512 all cores {codec:.1f} MiB/s, RGW PUT 2 MiB x16 {put:.1f} MiB/s -> {ceiling:.1f}")
print(f"ratio backup / ceiling: {backup / ceiling:.2f} (target >= 0.80)")
print(f"unchanged incremental {inc_s:.2f} s wall = {inc_s / full_s:.3f} of the full backup (target < 0.10; copy alone {inc_copy_s:.2f} s)")
PY
