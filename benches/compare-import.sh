#!/usr/bin/env bash
# Side by side, in one run on the local cluster: importing one qcow2 into a new RBD image with
#   diskferry-file     diskferry import FILE rbd:rbd/IMG
#   qemu-img-W16       qemu-img convert -W -m 16 -f qcow2 -O raw FILE rbd:rbd/IMG
#   qemu-img           qemu-img convert -f qcow2 -O raw FILE rbd:rbd/IMG
#   qemu-img+rbd-imp   qemu-img convert -O raw FILE TMP.raw; rbd import TMP.raw rbd/IMG
#   migration-file     rbd migration prepare --import-only (qcow source, file stream);
#                      rbd migration execute; rbd migration commit
#   diskferry-s3       diskferry import s3://BUCKET/KEY rbd:rbd/IMG   (the same qcow2 in RGW)
#   migration-s3       the migration with the qcow source on an s3 stream
# and, in the same run, two ceilings: `rbd bench --io-type write --io-size 4M --io-threads 16
# --io-pattern seq` on a new image over the qcow2's allocated bytes, and a parallel ranged
# download of the RGW object (curl --parallel and boto3 threads, 8 MiB ranges x 8; the faster
# counts). Both ceilings are measured before and after the tools and averaged.
#
# The source: VIRTUAL_GIB virtual, DATA_MIB of 4 MiB chunks spread evenly, cycling over random,
# text, half zero/half random, structured binary, random, and all-zero chunks (written into
# the qcow2 as allocated zero clusters with qemu-io). The qcow2 is written by
# `qemu-img convert -O qcow2` (uncompressed, 64 KiB clusters). Then, as extra rows: diskferry
# and the file-stream migration on a deflate-compressed copy (qemu-img convert -c), and
# diskferry's peak RSS on a BIG_GIB virtual image with the same data.
#
# Every tool's result is checked by content: `diskferry digest rbd:rbd/IMG` against the digest
# of the source qcow2 (computed once). A tool that exits 0 with the wrong content is reported
# as WRONG, and counts as failed. Each image is removed right after its check.
#
# Usage: benches/compare-import.sh [VIRTUAL_GIB [DATA_MIB]]   (default 10 GiB, 1536 MiB)
# Env:   DISKFERRY (a release binary; default: builds one), BIG_GIB (100; 0 skips),
#        COMPRESSED (1; 0 skips the deflate rows), WORKDIR (default: mktemp; needs ~2 x
#        DATA_MIB free), NICE (-10 when root; 0 = off), KEEP_RESULTS (a file to copy the
#        raw results to), BASELINE (an earlier diskferry binary: its file and S3 imports are
#        timed right after the new ones, rows baseline-file and baseline-s3, and compared).
# Every row also records client CPU seconds (user + sys of all its processes).
set -euo pipefail

virtual_gib=${1:-10}
data_mib=${2:-1536}
big_gib=${BIG_GIB:-100}
compressed=${COMPRESSED:-1}
root=$(cd "$(dirname "$0")/.." && pwd)
helpers=$root/benches/import_helpers.py

# ---------------------------------------------------------------- dependencies
. "$root/benches/bench-common.sh"
ensure_qemu_rbd || exit 1
if [[ ! -x /usr/bin/time ]]; then
    [[ $(id -u) -eq 0 ]] || { echo "GNU time is needed (apt-get install time)" >&2; exit 1; }
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq time >/dev/null
fi
for tool in qemu-io curl rbd; do
    command -v "$tool" >/dev/null || { echo "$tool is needed" >&2; exit 1; }
done
python=${PYTHON:-python3}
"$python" -c 'import boto3' 2>/dev/null || "$python" -m pip install -q boto3

eval "$("$root/scripts/dev-cluster" env)"
diskferry_release
bench_workdir
tag=$$
bucket=bench-import-$tag
images=()
cleanup() {
    for img in "${images[@]}"; do
        rbd migration abort --no-progress "rbd/$img" >/dev/null 2>&1 || true
        rbd rm --no-progress "rbd/$img" >/dev/null 2>&1 || true
    done
    "$python" "$helpers" rmbucket "$bucket" >/dev/null 2>&1 || true
    if [[ -n "${WORKDIR:-}" ]]; then
        rm -f "$work"/*.raw "$work"/*.qcow2 "$work/curl.cfg" # curl.cfg holds the S3 keys
    else
        rm -rf "$work"
    fi
}
trap cleanup EXIT

nice_level=${NICE:--10}
[[ $(id -u) -eq 0 ]] || nice_level=0
results=$work/results
: >"$results"
note() { echo "$*" >&2; }

# ---------------------------------------------------------------- the sources
# make_qcow2 VIRTUAL_GIB RAW QCOW2 [qemu-img convert flags]: the raw file, then the qcow2 with
# the all-zero chunks written as allocated zero clusters.
make_qcow2() {
    local vgib=$1 raw=$2 out=$3
    shift 3
    [[ -f $raw.zeros ]] || "$python" "$helpers" make-raw "$raw" "$vgib" "$data_mib" >"$raw.zeros"
    qemu-img convert -f raw -O qcow2 "$@" "$raw" "$out"
    local cmds=()
    while read -r off; do cmds+=(-c "write -q -P 0 $off 4M"); done <"$raw.zeros"
    ((${#cmds[@]} == 0)) || qemu-io -f qcow2 "${cmds[@]}" "$out" >/dev/null
    qemu-img check -q "$out"
}
digest() { "$DISKFERRY" digest --no-progress "$1" | awk '{print $1}'; }

note "preparing the source: ${virtual_gib} GiB virtual, ${data_mib} MiB mixed data ..."
make_qcow2 "$virtual_gib" "$work/src.raw" "$work/img.qcow2"
src_digest=$(digest "$work/img.qcow2")
raw_digest=$(digest "$work/src.raw")
# allocated = clusters with data in the qcow2 (zero-data clusters included)
allocated=$(qemu-img map -f qcow2 --output=json "$work/img.qcow2" | "$python" -c '
import json, sys
print(sum(e["length"] for e in json.load(sys.stdin) if e["data"]))')
note "source digest $src_digest; allocated $allocated bytes; qcow2 $(stat -c %s "$work/img.qcow2") bytes"
[[ $src_digest == "$raw_digest" ]] || { note "qcow2 and raw digests differ"; exit 1; }
"$python" "$helpers" mkbucket "$bucket"
"$python" "$helpers" upload "$work/img.qcow2" "s3://$bucket/img.qcow2"
s3_url=$AWS_ENDPOINT_URL/$bucket/img.qcow2
if ((compressed)); then
    note "preparing the deflate-compressed copy ..."
    make_qcow2 "$virtual_gib" "$work/src.raw" "$work/img-deflate.qcow2" -c
    c_digest=$(digest "$work/img-deflate.qcow2")
    [[ $c_digest == "$src_digest" ]] || { note "compressed qcow2 digest differs"; exit 1; }
fi
rm -f "$work/src.raw"

# ---------------------------------------------------------------- measuring
# measure NAME IMAGE COMMAND...: runs the command under GNU time, then checks rbd/IMAGE's
# content against the source; appends "NAME wall rss_kib status" to the results and removes
# the image. status: ok, WRONG (exit 0, wrong content) or exit=N.
measure() {
    local name=$1 img=$2 status
    shift 2
    images+=("$img")
    sync
    note "running $name ..."
    if /usr/bin/time -f "%e %M %U %S" -o "$work/time" nice -n "$nice_level" "$@" >"$work/$name.out" 2>&1; then
        local got
        got=$(digest "rbd:rbd/$img" 2>>"$work/$name.out" || echo none)
        if [[ $got == "$src_digest" ]]; then status=ok; else status=WRONG; fi
    else
        status=exit=$?
        tail -5 "$work/$name.out" >&2
    fi
    read -r wall rss user sys < <(tail -1 "$work/time")
    echo "$name $wall $rss $status $(echo "$user + $sys" | bc -l)" >>"$results"
    printf '  %-22s %8.2f s %6d MiB RSS  %s  cpu %s+%s s\n' "$name" "$wall" $((rss / 1024)) "$status" "$user" "$sys" >&2
    rbd migration abort --no-progress "rbd/$img" >/dev/null 2>&1 || true
    rbd rm --no-progress "rbd/$img" >/dev/null 2>&1 || true
}
migrate() { # migrate SPEC IMAGE
    rbd migration prepare --import-only --source-spec "$1" "rbd/$2" &&
        rbd migration execute --no-progress "rbd/$2" &&
        rbd migration commit --no-progress "rbd/$2"
}
export -f migrate
file_spec() { printf '{"type":"qcow","stream":{"type":"file","file_path":"%s"}}' "$1"; }
s3_spec=$(printf '{"type":"qcow","stream":{"type":"s3","url":"%s","access_key":"%s","secret_key":"%s"}}' \
    "$s3_url" "$AWS_ACCESS_KEY_ID" "$AWS_SECRET_ACCESS_KEY")
rbd_target() { echo "rbd:rbd/$1:conf=$CEPH_CONF"; }

# The write ceiling: rbd bench on a new image, over the allocated bytes (rounded up to 4 MiB).
bench_mib=$(((allocated + (4 << 20) - 1) >> 20 >> 2 << 2))
rbd_ceiling() {
    local img=bench-import-ceiling-$tag
    images+=("$img")
    rbd create --size "${virtual_gib}G" "rbd/$img"
    local out
    out=$(nice -n "$nice_level" rbd bench --io-type write --io-size 4M --io-threads 16 --io-pattern seq \
        --io-total "${bench_mib}M" "rbd/$img" 2>&1 | awk '/elapsed:/ {print}')
    rbd rm --no-progress "rbd/$img" >/dev/null 2>&1
    "$python" - "$out" <<'PY'
import re, sys
m = re.search(r"bytes/sec:\s*([\d.]+)\s*(\w+)/s", sys.argv[1])
value, unit = float(m.group(1)), m.group(2)
print(f"{value * {'B': 1 / 2**20, 'KiB': 1 / 1024, 'MiB': 1, 'GiB': 1024}[unit]:.1f}")
PY
}
"$python" "$helpers" curl-config "s3://$bucket/img.qcow2" $((8 << 20)) "$work/curl.cfg" >/dev/null
object_bytes=$(stat -c %s "$work/img.qcow2")
download_ceiling() {
    local t0 t1 curl_mibs boto_mibs
    t0=$(date +%s.%N)
    nice -n "$nice_level" curl -s -S --parallel --parallel-max 8 -K "$work/curl.cfg" >&2
    t1=$(date +%s.%N)
    curl_mibs=$("$python" -c "print(f'{$object_bytes / 2**20 / ($t1 - $t0):.1f}')")
    boto_mibs=$(nice -n "$nice_level" "$python" "$helpers" download-ceiling "s3://$bucket/img.qcow2" $((8 << 20)) 8)
    echo "$curl_mibs $boto_mibs"
}

note "ceilings (before) ..."
echo "rbd-bench-before $(rbd_ceiling)" >>"$results"
echo "download-before $(download_ceiling)" >>"$results"
tail -2 "$results" >&2

measure diskferry-file "df-file-$tag" "$DISKFERRY" import --no-progress --json "$work/img.qcow2" "rbd:rbd/df-file-$tag"
cp "$work/diskferry-file.out" "$work/diskferry-file.json"
[[ -z "${BASELINE:-}" ]] || measure baseline-file "base-file-$tag" "$BASELINE" import --no-progress "$work/img.qcow2" "rbd:rbd/base-file-$tag"
measure qemu-img-W16 "qi-w16-$tag" qemu-img convert -W -m 16 -f qcow2 -O raw "$work/img.qcow2" "$(rbd_target "qi-w16-$tag")"
measure qemu-img "qi-plain-$tag" qemu-img convert -f qcow2 -O raw "$work/img.qcow2" "$(rbd_target "qi-plain-$tag")"
measure qemu-img+rbd-import "qi-imp-$tag" bash -c '
    set -e
    qemu-img convert -f qcow2 -O raw "$1" "$2"
    rbd import --no-progress "$2" "rbd/$3"
    rm -f "$2"' _ "$work/img.qcow2" "$work/tmp.raw" "qi-imp-$tag"
rm -f "$work/tmp.raw"
measure migration-file "mig-file-$tag" bash -c 'migrate "$1" "$2"' _ "$(file_spec "$work/img.qcow2")" "mig-file-$tag"
measure diskferry-s3 "df-s3-$tag" "$DISKFERRY" import --no-progress --json "s3://$bucket/img.qcow2" "rbd:rbd/df-s3-$tag"
cp "$work/diskferry-s3.out" "$work/diskferry-s3.json"
[[ -z "${BASELINE:-}" ]] || measure baseline-s3 "base-s3-$tag" "$BASELINE" import --no-progress "s3://$bucket/img.qcow2" "rbd:rbd/base-s3-$tag"
measure migration-s3 "mig-s3-$tag" bash -c 'migrate "$1" "$2"' _ "$s3_spec" "mig-s3-$tag"

note "ceilings (after) ..."
echo "rbd-bench-after $(rbd_ceiling)" >>"$results"
echo "download-after $(download_ceiling)" >>"$results"
tail -2 "$results" >&2

if ((compressed)); then
    measure diskferry-file-deflate "df-defl-$tag" "$DISKFERRY" import --no-progress "$work/img-deflate.qcow2" "rbd:rbd/df-defl-$tag"
    measure migration-file-deflate "mig-defl-$tag" bash -c 'migrate "$1" "$2"' _ "$(file_spec "$work/img-deflate.qcow2")" "mig-defl-$tag"
    rm -f "$work/img-deflate.qcow2"
fi
if ((big_gib > 0)); then
    note "preparing the ${big_gib} GiB image with the same data ..."
    rm -f "$work/big.raw.zeros"
    make_qcow2 "$big_gib" "$work/big.raw" "$work/big.qcow2"
    rm -f "$work/big.raw"
    src_digest=$(digest "$work/big.qcow2")
    measure "diskferry-file-${big_gib}g" "df-big-$tag" "$DISKFERRY" import --no-progress "$work/big.qcow2" "rbd:rbd/df-big-$tag"
    rm -f "$work/big.qcow2"
fi
[[ -z "${KEEP_RESULTS:-}" ]] || cp "$results" "$KEEP_RESULTS"

# ---------------------------------------------------------------- the table
"$python" - "$results" "$work/diskferry-file.json" "$virtual_gib" "$data_mib" "$allocated" "$object_bytes" \
    "$(nproc)" "$(cut -d' ' -f1-3 /proc/loadavg)" "$big_gib" <<'PY'
import json, sys
path, df_json, vgib, dmib, allocated, obj, cores, load, big = sys.argv[1:10]
allocated, obj = int(allocated), int(obj)
MIB = 2**20
rows, ceil = {}, {}
for line in open(path):
    f = line.split()
    if f[0].startswith(("rbd-bench-", "download-")):
        ceil[f[0]] = [float(x) for x in f[1:]]
    else:
        rows[f[0]] = (float(f[1]), int(f[2]) // 1024, f[3], float(f[4]))
report = json.loads(open(df_json).read())
rbd_ceiling = (ceil["rbd-bench-before"][0] + ceil["rbd-bench-after"][0]) / 2
dl = [max(v) for k, v in ceil.items() if k.startswith("download-")]
dl_ceiling = sum(dl) / len(dl)
print(f"Source: {vgib} GiB virtual qcow2 (uncompressed, 64 KiB clusters), {dmib} MiB of 4 MiB "
      f"chunks; allocated {allocated / MIB:.0f} MiB (diskferry read {report['bytes_read'] / MIB:.0f} MiB, "
      f"wrote {report['bytes_written'] / MIB:.0f} MiB); object {obj / MIB:.0f} MiB. "
      f"{cores} vCPUs shared with the cluster, load {load}.\n")
print(f"Ceilings: rbd bench write 4M x16 on {allocated / MIB:.0f} MiB: before {ceil['rbd-bench-before'][0]}, "
      f"after {ceil['rbd-bench-after'][0]} MiB/s (mean {rbd_ceiling:.1f}); ranged download 8 MiB x8 "
      f"(curl, boto3): before {ceil['download-before']}, after {ceil['download-after']} MiB/s "
      f"(mean of the faster {dl_ceiling:.1f}).\n")
print("| tool | wall s | MiB/s of allocated | CPU s | CPU s / GiB allocated | peak RSS MiB | content |")
print("|---|---:|---:|---:|---:|---:|---|")
for name, (wall, rss, status, cpu) in rows.items():
    print(f"| {name} | {wall:.2f} | {allocated / MIB / wall:.0f} | {cpu:.2f} | {cpu / (allocated / 2**30):.2f} | {rss} | {status} |")
print()
def r(a, b):
    return rows[a][0] / rows[b][0]
def ok(name):
    return rows[name][2] == "ok"
df = rows["diskferry-file"][0]
print(f"- diskferry / qemu-img -W -m 16 = {r('diskferry-file', 'qemu-img-W16'):.2f} (target <= 0.75)")
print(f"- diskferry / qemu-img = {r('diskferry-file', 'qemu-img'):.2f} (target <= 0.5)")
print(f"- diskferry / qemu-img + rbd import = {r('diskferry-file', 'qemu-img+rbd-import'):.2f}; "
      f"/ migration (file) = {r('diskferry-file', 'migration-file'):.2f}")
tput = allocated / MIB / df
print(f"- diskferry file: {tput:.0f} MiB/s of allocated = {tput / rbd_ceiling:.2f} of the rbd bench ceiling (target >= 0.9)")
s3 = allocated / MIB / rows["diskferry-s3"][0]
floor = min(rbd_ceiling, dl_ceiling * allocated / obj)
print(f"- diskferry s3: {s3:.0f} MiB/s of allocated = {s3 / floor:.2f} of min(rbd bench, download "
      f"ceiling) (target >= 0.8); migration-s3 / diskferry-s3 time = {r('migration-s3', 'diskferry-s3'):.1f}")
for kind in ("file", "s3"):
    if f"baseline-{kind}" in rows:
        print(f"- {kind}: new / baseline wall = {r(f'diskferry-{kind}', f'baseline-{kind}'):.2f}, CPU = "
              f"{rows[f'diskferry-{kind}'][3] / rows[f'baseline-{kind}'][3]:.2f}")
for name, (wall, rss, status, cpu) in rows.items():
    if name.startswith("diskferry"):
        print(f"- {name}: peak RSS {rss} MiB (target <= 256), content {status}")
PY
