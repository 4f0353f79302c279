#!/usr/bin/env bash
# Client CPU-seconds per GiB moved (issue 13), for every job beside its anchor and, with
# BASELINE, beside an earlier diskferry binary (issue 12's before/after), in one run: each
# repetition runs the variants of a job back to back (new, baseline, extra, anchor), so load
# from the rest of the machine falls on all of them alike. Jobs and their anchors:
#   import-file   diskferry import FILE.qcow2 rbd:rbd/IMG   | qemu-img convert -W -m 16 -O raw
#   import-s3     diskferry import s3://B/K.qcow2 rbd:...   | curl --parallel 8 ranged GET of the
#                 object to /dev/null (the download half alone; add import-file's anchor for
#                 the write half)
#   export-none   diskferry export rbd:rbd/SRC s3://B/K      | plain-upload of diskferry's own
#   export-zstd   ... --compress zstd                          output bytes (benches/plain_upload.rs)
#   lh-backup     diskferry longhorn backup rbd:rbd/SRC@s1 (a new volume each run: full)
#   lh-restore    diskferry longhorn restore of that backup into a new RBD image
#   convert-none  diskferry convert -c none --no-sync RAW   | qemu-img convert -O qcow2
#   convert-zstd  diskferry convert -c zstd --no-sync RAW   | qemu-img convert -c zstd
#   digest        diskferry digest FILE.qcow2 (the verification's own cost; no anchor)
# "Moved" is the source's data (the qcow2's allocated clusters), the same for every job.
# Imports are checked once (first repetition) with `diskferry digest rbd:...`.
#
# Usage: benches/compare-cpu.sh [VIRTUAL_GIB [DATA_MIB]]   (default 4 GiB, 512 MiB)
# Env:   DISKFERRY (release binary; default: builds one), BASELINE (an earlier binary),
#        EXTRA_NAME + EXTRA_ENV (a third diskferry variant: the new binary with extra
#        environment: one VAR=VALUE, the value may hold spaces, e.g. EXTRA_NAME=zc
#        EXTRA_ENV="CEPH_ARGS=--rbd_disable_zero_copy_writes=false --rbd_cache_max_dirty=0"),
#        JOBS (default: all of the above), REPEAT (3), WORKDIR (default: mktemp), NICE (19),
#        PLAIN_UPLOAD (binary; default: builds the plain-upload example), RESULTS (copy of the
#        raw results), PART (8M) and PARTS (4) for export and plain upload.
set -euo pipefail

virtual_gib=${1:-4}
data_mib=${2:-512}
repeat=${REPEAT:-3}
jobs_wanted=${JOBS:-import-file import-s3 export-none export-zstd lh-backup lh-restore convert-none convert-zstd digest}
nice_level=${NICE:-19}
part=${PART:-8M}
parts=${PARTS:-4}
root=$(cd "$(dirname "$0")/.." && pwd)
helpers=$root/benches/import_helpers.py
target=${CARGO_TARGET_DIR:-$root/target}
python=${PYTHON:-python3}
eval "$("$root/scripts/dev-cluster" env)"
. "$root/benches/bench-common.sh"
diskferry_release nice -n 19
if [[ " $jobs_wanted " == *" export-"* && -z "${PLAIN_UPLOAD:-}" ]]; then
    nice -n 19 cargo build --release -q -p diskferry-benches --example plain-upload --manifest-path "$root/Cargo.toml"
    PLAIN_UPLOAD=$target/release/examples/plain-upload
fi
base=${BASELINE:-}
extra_name=${EXTRA_NAME:-}
extra_env=${EXTRA_ENV:-}
part_bytes=$(numfmt --from=iec "${part%iB}")

bench_workdir
tag=$$
bucket=bench-cpu-$tag
src_image=bench-cpu-src-$tag
images=("$src_image")
drop() { # drop IMAGE...: its snapshots, then the image; quietly, missing or not
    local img
    for img in "$@"; do
        rbd snap purge --no-progress "rbd/$img" >/dev/null 2>&1 || true
        rbd rm --no-progress "rbd/$img" >/dev/null 2>&1 || true
    done
}
cleanup() {
    drop "${images[@]}"
    "$python" "$helpers" rmbucket "$bucket" >/dev/null 2>&1 || true
    rm -f "$work"/*.raw "$work"/*.raw.zeros "$work"/*.qcow2 "$work/curl.cfg" "$work/time"
    [[ -n "${WORKDIR:-}" ]] || rm -rf "$work"
}
trap cleanup EXIT
note() { echo "$*" >&2; }
results=$work/results
: >"$results"

# ---------------------------------------------------------------- the source
note "source: ${virtual_gib} GiB virtual, ${data_mib} MiB mixed data (benches/import_helpers.py make-raw) ..."
"$python" "$helpers" make-raw "$work/src.raw" "$virtual_gib" "$data_mib" >"$work/src.raw.zeros"
qemu-img convert -f raw -O qcow2 "$work/src.raw" "$work/img.qcow2"
cmds=()
while read -r off; do cmds+=(-c "write -q -P 0 $off 4M"); done <"$work/src.raw.zeros"
((${#cmds[@]} == 0)) || qemu-io -f qcow2 "${cmds[@]}" "$work/img.qcow2" >/dev/null
allocated=$(qemu-img map -f qcow2 --output=json "$work/img.qcow2" | "$python" -c '
import json, sys
print(sum(e["length"] for e in json.load(sys.stdin) if e["data"]))')
digest() { "$DISKFERRY" digest --no-progress "$1" | awk '{print $1}'; }
src_digest=$(digest "$work/img.qcow2")
"$python" "$helpers" mkbucket "$bucket"
"$python" "$helpers" upload "$work/img.qcow2" "s3://$bucket/img.qcow2"
"$python" "$helpers" curl-config "s3://$bucket/img.qcow2" $((8 << 20)) "$work/curl.cfg" >/dev/null
"$DISKFERRY" import --no-progress "$work/img.qcow2" "rbd:rbd/$src_image" >/dev/null
rbd snap create --no-progress "rbd/$src_image@s1"
note "allocated $allocated bytes; digest $src_digest"

# ---------------------------------------------------------------- measuring
# run JOB VARIANT REP COMMAND...: appends "JOB VARIANT REP wall user sys rss_kib".
run() {
    local job=$1 variant=$2 rep=$3
    shift 3
    sync
    if ! /usr/bin/time -f "%e %U %S %M" -o "$work/time" nice -n "$nice_level" "$@" >"$work/out" 2>&1; then
        note "$job $variant failed:"
        tail -5 "$work/out" >&2
        exit 1
    fi
    local t
    t=$(tail -1 "$work/time")
    echo "$job $variant $rep $t" >>"$results"
    printf '  %-13s %-10s rep %d: wall %s user %s sys %s rss %s KiB\n' "$job" "$variant" "$rep" $t >&2
}
# The diskferry variants: NAME BINARY [env...]
variants=("new $DISKFERRY")
[[ -z $base ]] || variants+=("old $base")
[[ -z $extra_name ]] || variants+=("$extra_name $DISKFERRY $extra_env")
check_rbd() { # check_rbd IMAGE VARIANT: content of rbd/IMAGE against the source
    local got
    got=$(digest "rbd:rbd/$1")
    [[ $got == "$src_digest" ]] || { note "rbd/$1 ($2): digest $got, want $src_digest"; exit 1; }
}
s3rm() { "$python" - "$bucket" "$1" <<'PY'
import os, sys, boto3
s3 = boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"])
for page in s3.get_paginator("list_objects_v2").paginate(Bucket=sys.argv[1], Prefix=sys.argv[2]):
    for o in page.get("Contents", []):
        s3.delete_object(Bucket=sys.argv[1], Key=o["Key"])
PY
}

lh_target() { echo "s3://$bucket@us-east-1/lh-$1/"; }
for ((rep = 1; rep <= repeat; rep++)); do
    for job in $jobs_wanted; do
        for v in "${variants[@]}"; do
            read -r name bin envs <<<"$v"
            img=bench-cpu-$tag-$name-$rep
            envcmd=(env)
            [[ -z ${envs:-} ]] || envcmd+=("$envs")
            case $job in
                import-file | import-s3)
                    src=$work/img.qcow2
                    [[ $job == import-file ]] || src=s3://$bucket/img.qcow2
                    images+=("$img")
                    run "$job" "$name" "$rep" "${envcmd[@]}" "$bin" import --no-progress "$src" "rbd:rbd/$img"
                    ((rep > 1)) || check_rbd "$img" "$name"
                    drop "$img" ;;
                export-none | export-zstd)
                    args=(--part-size "$part" --jobs "$parts" --no-progress)
                    [[ $job == export-none ]] || args+=(--compress zstd)
                    run "$job" "$name" "$rep" "${envcmd[@]}" "$bin" export "${args[@]}" "rbd:rbd/$src_image@s1" "s3://$bucket/$job-$name.qcow2"
                    if [[ $name == new && ! -f $work/$job.qcow2 ]]; then
                        "$python" "$root/benches/export_helpers.py" download "s3://$bucket/$job-$name.qcow2" "$work/$job.qcow2"
                        qemu-img compare -q -f qcow2 -F qcow2 "$work/$job.qcow2" "$work/img.qcow2"
                    fi
                    s3rm "$job-$name.qcow2" ;;
                lh-backup)
                    s3rm "lh-$name/"
                    run "$job" "$name" "$rep" "${envcmd[@]}" "$bin" longhorn backup --json "rbd:rbd/$src_image@s1" "$(lh_target "$name")" \
                        --volume vol --name full ;;
                lh-restore)
                    [[ " $jobs_wanted " == *" lh-backup "* ]] || { note "lh-restore needs lh-backup"; exit 1; }
                    images+=("$img")
                    run "$job" "$name" "$rep" "${envcmd[@]}" "$bin" longhorn restore --json --volume vol "$(lh_target "$name")" "rbd:rbd/$img"
                    ((rep > 1)) || check_rbd "$img" "$name"
                    drop "$img" ;;
                convert-none | convert-zstd)
                    rm -f "$work/out.qcow2"
                    run "$job" "$name" "$rep" "${envcmd[@]}" "$bin" convert --no-sync -c "${job#convert-}" "$work/src.raw" "$work/out.qcow2"
                    ((rep > 1)) || qemu-img compare -q -f raw -F qcow2 "$work/src.raw" "$work/out.qcow2"
                    rm -f "$work/out.qcow2" ;;
                digest)
                    run "$job" "$name" "$rep" "${envcmd[@]}" "$bin" digest --no-progress "$work/img.qcow2" ;;
            esac
        done
        # The anchor, right after the diskferry variants of the same repetition.
        img=bench-cpu-$tag-anchor-$rep
        case $job in
            import-file)
                images+=("$img")
                run "$job" anchor "$rep" qemu-img convert -W -m 16 -f qcow2 -O raw "$work/img.qcow2" "rbd:rbd/$img:conf=$CEPH_CONF"
                ((rep > 1)) || check_rbd "$img" anchor
                drop "$img" ;;
            import-s3)
                run "$job" anchor "$rep" curl -s -S --parallel --parallel-max 8 -K "$work/curl.cfg" ;;
            export-none | export-zstd)
                cat "$work/$job.qcow2" >/dev/null
                run "$job" anchor "$rep" "$PLAIN_UPLOAD" "$work/$job.qcow2" "s3://$bucket/$job-plain" "$part_bytes" "$parts"
                s3rm "$job-plain" ;;
            convert-none | convert-zstd)
                qargs=()
                [[ $job == convert-none ]] || qargs=(-c -o compression_type=zstd)
                rm -f "$work/out.qcow2"
                run "$job" anchor "$rep" qemu-img convert -f raw -O qcow2 "${qargs[@]}" "$work/src.raw" "$work/out.qcow2"
                rm -f "$work/out.qcow2" ;;
        esac
    done
done
[[ -z "${RESULTS:-}" ]] || cp "$results" "$RESULTS"

# ---------------------------------------------------------------- the table
"$python" - "$results" "$allocated" "$virtual_gib" "$data_mib" "$(nproc)" "$(cut -d' ' -f1-3 /proc/loadavg)" "$nice_level" <<'PY'
import statistics, sys
from collections import defaultdict
path, allocated, vgib, dmib, cores, load, nice = sys.argv[1:8]
gib = int(allocated) / 2**30
runs = defaultdict(dict)  # (job, variant) -> rep -> (wall, cpu, rss)
for line in open(path):
    job, variant, rep, wall, user, sys_, rss = line.split()
    runs[(job, variant)][int(rep)] = (float(wall), float(user) + float(sys_), int(rss) // 1024)
jobs = list(dict.fromkeys(j for j, _ in runs))
variants = list(dict.fromkeys(v for _, v in runs))
med = lambda xs: statistics.median(xs)
print(f"Source {vgib} GiB virtual, {dmib} MiB data, {int(allocated) / 2**20:.0f} MiB allocated "
      f"(= moved); {cores} vCPUs shared with the cluster and other builds; load at the end {load}; "
      f"nice {nice}. Medians of {max(len(r) for r in runs.values())} repetitions.\n")
print("| job | variant | wall s (each) | CPU s (each) | CPU s / GiB moved | peak RSS MiB |")
print("|---|---|---|---|---:|---:|")
for job in jobs:
    for v in variants:
        r = runs.get((job, v))
        if not r:
            continue
        walls = [r[k][0] for k in sorted(r)]
        cpus = [r[k][1] for k in sorted(r)]
        print(f"| {job} | {v} | {med(walls):.2f} ({' '.join(f'{w:.2f}' for w in walls)}) | "
              f"{med(cpus):.2f} ({' '.join(f'{c:.2f}' for c in cpus)}) | {med(cpus) / gib:.2f} | "
              f"{max(x[2] for x in r.values())} |")
print()
print("Paired ratios (per repetition, then the median): wall, CPU.\n")
print("| job | pair | wall ratios | median | CPU ratios | median |")
print("|---|---|---|---:|---|---:|")
for job in jobs:
    pairs = [("new", v) for v in variants if v != "new"] + \
            [(v, "anchor") for v in variants if v not in ("new", "anchor")]
    for a, b in pairs:
        ra, rb = runs.get((job, a)), runs.get((job, b))
        if not ra or not rb:
            continue
        reps = sorted(set(ra) & set(rb))
        w = [ra[k][0] / rb[k][0] for k in reps]
        c = [ra[k][1] / rb[k][1] for k in reps]
        print(f"| {job} | {a} / {b} | {' '.join(f'{x:.2f}' for x in w)} | {med(w):.2f} | "
              f"{' '.join(f'{x:.2f}' for x in c)} | {med(c):.2f} |")
PY
