#!/usr/bin/env bash
# Benchmarks of `diskferry serve` and `diskferry run` (issue 14, "Speed and memory"), on the
# running dev cluster (never restarted here):
#  1. idle serve: a configuration of jobs whose next run is months away; VmRSS / VmHWM from
#     /proc after start and IDLE_SECONDS later, and the CPU-seconds (utime + stime of
#     /proc/PID/stat) spent in between;
#  2. an export job (S3 target, qcow2, no compression) over N_IMAGES images of VIRT_MIB virtual
#     with DATA_MIB of random data: `diskferry run` at concurrency 1 and at concurrency 2,
#     against the sum of the same work done one image at a time with the CLI. The job
#     snapshots each image first, so the CLI side does too: `diskferry snap create
#     rbd:rbd/IMG@SNAP` then `diskferry export rbd:rbd/IMG@SNAP s3://...`, both timed and summed
#     (process start, cluster connection and the snapshot counted on both sides);
#  3. a longhorn-backup job over LH_IMAGES images of LH_VIRT_MIB with LH_DATA_MIB of random
#     data: the first (full) run, then a run one day later (`--now`) with nothing changed
#     (retention, keep-daily 7, removes nothing), then one an hour after that (nothing
#     changed; keep-daily removes the previous run's backup of the same day: the cost of a
#     removal, Longhorn's deletion lock and GC). LH_PAIRS such runs per concurrency in
#     LH_CONCURRENCY, back to back, each on its own target prefix and job (so each first
#     run is full);
#  4. peak RSS: GNU time's %M of every `diskferry run`, and, for serve running the
#     concurrency-2 export job through POST /jobs/NAME/run, the VmHWM of the service and the
#     largest VmHWM of its worker process (sampled every 0.5 s while it runs). Serve's CPU
#     is its own plus its reaped workers' (utime + stime + cutime + cstime).
# Each repetition runs CLI, c1, c2 in turn (every other repetition in the reverse order), so
# the ratios compare runs made back to back. Wall and client CPU (user + sys, GNU time).
#
# Usage: benches/serve-bench.sh    (environment: DISKFERRY=binary (default: the release
#        build), REPS=1, N_IMAGES=20, VIRT_MIB=64, DATA_MIB=32, LH_IMAGES=3, LH_VIRT_MIB=256,
#        LH_DATA_MIB=128, LH_PAIRS=1, LH_CONCURRENCY="1", IDLE_SECONDS=60, NICE=5,
#        SECTIONS="1 2 3 4": the parts to run; 4 needs 1)
# e.g. the Longhorn part alone at sizes a user has:
#   SECTIONS=3 LH_IMAGES=2 LH_VIRT_MIB=4096 LH_DATA_MIB=1024 LH_PAIRS=2 LH_CONCURRENCY="1 2" \
#     NICE=19 benches/serve-bench.sh
# Everything made here (images, snapshots, lock objects, bucket, temp files) is named after the
# script's PID and removed at exit; the serve process it starts is stopped by its PID.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
bin=${DISKFERRY:-$repo/target/release/diskferry}
reps=${REPS:-1}
n_images=${N_IMAGES:-20}
virt_mib=${VIRT_MIB:-64}
data_mib=${DATA_MIB:-32}
lh_images=${LH_IMAGES:-3}
lh_virt_mib=${LH_VIRT_MIB:-256}
lh_data_mib=${LH_DATA_MIB:-128}
idle_seconds=${IDLE_SECONDS:-60}
niceness=${NICE:-5}
lh_pairs=${LH_PAIRS:-1}
lh_concurrency=${LH_CONCURRENCY:-1}
sections=" ${SECTIONS:-1 2 3 4} "
section() { [[ $sections == *" $1 "* ]]; }
section 1 || ! section 4 || { echo "section 4 needs section 1 (the idle serve)" >&2; exit 1; }
section 2 || n_images=0
section 3 || lh_images=0
eval "$("$repo/scripts/dev-cluster" env)"
[[ -x $bin ]] || { echo "no diskferry binary at $bin" >&2; exit 1; }

tag="sb$$"
bucket="bench-serve-$$"
port=$((20000 + $$ % 10000))
work=$(mktemp -d "/tmp/serve-bench-$$.XXXX")
serve_pid=
images=()
cleanup() {
  if [[ -n $serve_pid ]]; then
    kill -TERM "$serve_pid" 2>/dev/null || true
    wait "$serve_pid" 2>/dev/null || true
  fi
  local img
  for img in "${images[@]}"; do
    rbd snap purge --no-progress "rbd/$img" >/dev/null 2>&1 || true
    rbd rm --no-progress "rbd/$img" >/dev/null 2>&1 || true
  done
  # The runs' RADOS lock objects (diskferry.lock.JOB.POOL/IMAGE) stay in the lock pool.
  local obj
  for obj in $(rados -p rbd ls 2>/dev/null | grep "^diskferry\.lock\.$tag-" || true); do
    rados -p rbd rm "$obj" 2>/dev/null || true
  done
  python3 - "$bucket" <<'PY' || true
import os, sys, boto3
s3 = boto3.resource("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"])
b = s3.Bucket(sys.argv[1])
try:
    b.objects.all().delete(); b.delete()
except Exception as e:
    if "NoSuchBucket" not in str(e): raise
PY
  rm -rf "$work"
}
trap cleanup EXIT

make_image() { # make_image NAME VIRT_MIB DATA_MIB: DATA_MIB random at the start, then a hole
  images+=("$1")
  head -c "$(($3 << 20))" /dev/urandom | rbd import --no-progress - "rbd/$1"
  rbd resize --no-progress --size "${2}M" "rbd/$1" >/dev/null
}
echo "# $(date -u +%FT%TZ) binary $bin; load: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "# creating $n_images images of $virt_mib MiB ($data_mib MiB data), $lh_images of $lh_virt_mib MiB ($lh_data_mib MiB data)"
python3 -c "import boto3,os; boto3.client('s3', endpoint_url=os.environ['AWS_ENDPOINT_URL']).create_bucket(Bucket='$bucket')"
exp_list=()
lh_list=()
for i in $(seq -w 1 "$n_images"); do
  make_image "$tag-e$i" "$virt_mib" "$data_mib"
  exp_list+=("\"rbd:rbd/$tag-e$i\"")
done
for i in $(seq 1 "$lh_images"); do
  make_image "$tag-l$i" "$lh_virt_mib" "$lh_data_mib"
  lh_list+=("\"rbd:rbd/$tag-l$i\"")
done

head -c 24 /dev/urandom | base64 >"$work/token"
chmod 600 "$work/token"
token=$(cat "$work/token")
config="$work/serve.toml"
# Schedules on the 1st of January at 00:00: far from any run of this script, so serve idles.
export_job() { # export_job NAME CONCURRENCY
  cat <<EOF
[[jobs]]
name = "$1"
kind = "export"
schedule = "0 0 1 1 *"
target = "s3://$bucket/export/"
concurrency = $2
images = [$(IFS=,; echo "${exp_list[*]}")]
EOF
}
{
  cat <<EOF
time-zone = "UTC"
[http]
listen = "127.0.0.1:$port"
token-file = "$work/token"
[locks]
pool = "rbd"
EOF
  if section 2; then
    export_job "$tag-c1" 1
    export_job "$tag-c2" 2
  fi
  section 3 || lh_concurrency=
  for c in $lh_concurrency; do
    for p in $(seq 1 "$lh_pairs"); do
      cat <<EOF
[[jobs]]
name = "$tag-lh-c$c-p$p"
kind = "longhorn-backup"
schedule = "0 0 1 1 *"
target = "s3://$bucket@us-east-1/lh-c$c-p$p/"
concurrency = $c
images = [$(IFS=,; echo "${lh_list[*]}")]
EOF
    done
  done
} >"$config"
"$bin" serve --check --config "$config" >/dev/null

timed() { # timed OUT_FILE CMD...: appends "wall user sys maxrss_kib" of CMD to OUT_FILE
  local t="$work/time"
  nice -n "$niceness" /usr/bin/time -f "%e %U %S %M" -o "$t" "${@:2}" >/dev/null
  cat "$t" >>"$1"
}
sum_times() { # sum_times FILE: "wall cpu maxrss_mib" over its lines (sums; the largest RSS)
  awk '{w += $1; c += $2 + $3; if ($4 > m) m = $4} END {printf "%.2f %.2f %.0f\n", w, c, m / 1024}' "$1"
}
show() { printf '%-44s wall %7.2f s  cpu %7.2f s  peak RSS %5.0f MiB\n' "$1" "$2" "$3" "$4"; }

# ---- 1. idle serve -------------------------------------------------------------------------
clk=$(getconf CLK_TCK)
# Its own CPU and that of its children it has waited for (serve's workers).
cpu_ticks() { awk '{print $14 + $15 + $16 + $17}' "/proc/$1/stat"; }
vm() { awk -v k="$2:" '$1 == k {printf "%.1f", $2 / 1024}' "/proc/$1/status"; }
if section 1; then
nice -n "$niceness" "$bin" serve -q --config "$config" 2>"$work/serve.log" &
serve_pid=$!
for _ in $(seq 150); do
  curl -fsS "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break
  sleep 0.2
done
rss0=$(vm "$serve_pid" VmRSS)
hwm0=$(vm "$serve_pid" VmHWM)
t0=$(cpu_ticks "$serve_pid")
sleep "$idle_seconds"
rss1=$(vm "$serve_pid" VmRSS)
hwm1=$(vm "$serve_pid" VmHWM)
t1=$(cpu_ticks "$serve_pid")
idle_cpu=$(awk -v a="$t0" -v b="$t1" -v c="$clk" 'BEGIN {printf "%.2f", (b - a) / c}')
echo "idle serve: after start VmRSS $rss0 MiB (VmHWM $hwm0); after ${idle_seconds} s VmRSS $rss1 MiB (VmHWM $hwm1); CPU over ${idle_seconds} s: $idle_cpu s; start-up CPU $(awk -v a="$t0" -v c="$clk" 'BEGIN {printf "%.2f", a / c}') s (target RSS <= 30 MiB, CPU ~ 0)"
fi

# ---- 2. export job vs the CLI one image at a time ------------------------------------------
hour=0
now=
next_now() { # sets $now to a distinct run time per run (it names the snapshots and objects);
  # not through $(...): its subshell would not keep the count
  hour=$((hour + 1))
  now=$(printf '2026-12-%02dT%02d:00:00Z' $((1 + hour / 24)) $((hour % 24)))
}
run_cli() { # run_cli REP
  local out="$work/cli.$1" i snap="bench.cli$1" w c m
  : >"$out"
  for i in $(seq -w 1 "$n_images"); do
    timed "$out" "$bin" snap create -q "rbd:rbd/$tag-e$i@$snap"
    timed "$out" "$bin" export -q "rbd:rbd/$tag-e$i@$snap" "s3://$bucket/cli$1/$tag-e$i.qcow2"
  done
  read -r w c m < <(sum_times "$out")
  echo "$w $c $m" >"$work/r.cli.$1"
  show "rep $1 CLI snap create + export, x$n_images" "$w" "$c" "$m"
}
run_job() { # run_job REP c1|c2
  local out="$work/$2.$1" w c m
  : >"$out"
  next_now
  timed "$out" "$bin" run -q --config "$config" --now "$now" "$tag-$2"
  read -r w c m < <(sum_times "$out")
  echo "$w $c $m" >"$work/r.$2.$1"
  show "rep $1 run, concurrency ${2#c}" "$w" "$c" "$m"
}
section 2 || reps=0
for rep in $(seq 1 "$reps"); do
  if ((rep % 2)); then
    run_cli "$rep"; run_job "$rep" c1; run_job "$rep" c2
  else
    run_job "$rep" c2; run_job "$rep" c1; run_cli "$rep"
  fi
  read -r cw cc _ <"$work/r.cli.$rep"
  read -r w1 c1 _ <"$work/r.c1.$rep"
  read -r w2 c2 _ <"$work/r.c2.$rep"
  awk -v r="$rep" -v cw="$cw" -v cc="$cc" -v w1="$w1" -v c1="$c1" -v w2="$w2" -v c2="$c2" 'BEGIN {
    printf "rep %d: c1 / CLI sum: wall %.2f (target <= 1.1), CPU %.2f; c2 / c1: wall %.2f (target <= 1.0), CPU %.2f\n",
      r, w1 / cw, c1 / cc, w2 / w1, c2 / c1 }'
done

# ---- 3. longhorn-backup: full, then nothing changed -----------------------------------------
day_now() { # day_now DAY HOUR: a run time in January 2027 (after section 2's December times)
  now=$(printf '2027-01-%02dT%02d:00:00Z' "$1" "$2")
}
lh_day=0
if section 3; then
  for c in $lh_concurrency; do
    for p in $(seq 1 "$lh_pairs"); do
      job="$tag-lh-c$c-p$p"
      lh_day=$((lh_day + 2))
      for kind in full unchanged removing; do
        case $kind in
          full) day_now "$lh_day" 2 ;;
          unchanged) day_now $((lh_day + 1)) 2 ;;
          removing) day_now $((lh_day + 1)) 3 ;;
        esac
        : >"$work/lh.$kind"
        timed "$work/lh.$kind" "$bin" run -q --config "$config" --now "$now" "$job"
        read -r w cpu m < <(sum_times "$work/lh.$kind")
        echo "$w $cpu $m" >"$work/r.lh.$c.$p.$kind"
        show "longhorn c$c pair $p: $kind ($lh_images images)" "$w" "$cpu" "$m"
      done
      read -r fw fc _ <"$work/r.lh.$c.$p.full"
      read -r uw uc _ <"$work/r.lh.$c.$p.unchanged"
      read -r rw rc _ <"$work/r.lh.$c.$p.removing"
      awk -v c="$c" -v p="$p" -v fw="$fw" -v fc="$fc" -v uw="$uw" -v uc="$uc" -v rw="$rw" -v rc="$rc" 'BEGIN {
        printf "longhorn c%d pair %d: unchanged / full wall %.3f (target <= 0.1), CPU %.3f; unchanged with a removal / full wall %.3f, CPU %.3f\n",
          c, p, uw / fw, uc / fc, rw / fw, rc / fc }'
    done
  done
  echo "backup cfgs and lock files per Longhorn target (a backup per image and run, one fewer after the removing run; no lock):"
  python3 - "$bucket" <<'PY'
import collections, os, sys, boto3
s3 = boto3.resource("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"])
count = collections.Counter()
for o in s3.Bucket(sys.argv[1]).objects.all():
    top = o.key.split("/")[0]
    if top.startswith("lh") and "/backups/backup_" in o.key:
        count[top + " backups"] += 1
    if top.startswith("lh") and "/locks/" in o.key:
        count[top + " LOCKS LEFT"] += 1
for k, v in sorted(count.items()):
    print(f"  {k}: {v}")
PY
fi

# ---- 4. serve running the concurrency-2 export job -----------------------------------------
if section 4; then
runs_of() { # the job's diskferry_runs_total (one per image run), every result
  curl -fsS "http://127.0.0.1:$port/metrics" |
    awk -v j="job=\"$1\"" 'index($0, "diskferry_runs_total{") == 1 && index($0, j) {s += $NF} END {print s + 0}'
}
start=$(date +%s.%N)
curl -fsS -X POST -H "Authorization: Bearer $token" "http://127.0.0.1:$port/jobs/$tag-c2/run" >/dev/null
worker_hwm=0
until (($(runs_of "$tag-c2") >= n_images)); do
  for child in $(pgrep -P "$serve_pid" || true); do
    h=$(vm "$child" VmHWM 2>/dev/null || true)
    if [[ -n $h ]]; then
      worker_hwm=$(awk -v a="$worker_hwm" -v b="$h" 'BEGIN {print (b > a) ? b : a}')
    fi
  done
  sleep 0.5
done
end=$(date +%s.%N)
t2=$(cpu_ticks "$serve_pid")
awk -v s="$start" -v e="$end" -v a="$t1" -v b="$t2" -v c="$clk" -v h="$(vm "$serve_pid" VmHWM)" \
  -v r="$(vm "$serve_pid" VmRSS)" -v w="$worker_hwm" 'BEGIN {
  printf "serve ran concurrency 2 (POST): wall %.1f s (0.5 s polls), CPU %.2f s (with its worker), service VmHWM %s MiB, VmRSS after %s MiB; worker VmHWM %s MiB (sampled)\n",
    e - s, (b - a) / c, h, r, w }'
echo "objects written, per prefix (each run must have written one per image; a run that skipped would be missing):"
python3 - "$bucket" <<'PY'
import collections, os, sys, boto3
s3 = boto3.resource("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"])
count = collections.Counter()
for o in s3.Bucket(sys.argv[1]).objects.all():
    parts = o.key.split("/")
    if parts[0] == "lh":
        count["lh/" + "/".join(parts[1:3]) + " (Longhorn files)"] += 1
    else:
        count["/".join(parts[:2]) + " .../" + parts[-1].split(".")[0][:11] + "*"] += 1
for k, v in sorted(count.items()):
    print(f"  {k}: {v}")
PY
echo "peak RSS targets: <= $((256 + 64)) MiB with 1 image in flight, <= $((256 + 2 * 64)) MiB with 2"
echo "serve log (last lines):"
tail -5 "$work/serve.log" || true
fi
echo "# $(date -u +%FT%TZ) load: $(cut -d' ' -f1-3 /proc/loadavg)"
