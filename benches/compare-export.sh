#!/usr/bin/env bash
# Side by side on the local cluster: `diskferry export` RBD → RGW (qcow2 uncompressed, and
# zstd clusters) against the pipelines people use today:
#   P1  rbd export → raw file; qemu-img convert -O qcow2 → qcow2 file; boto3 multipart upload
#   P2  qemu-img convert rbd:POOL/IMAGE → qcow2 file; boto3 multipart upload
# and against a plain multipart upload of diskferry's own output bytes (same part size, same
# parts in flight): once with the same Rust client stack (benches/plain_upload.rs), once with
# boto3. Every pipeline uploads with the same part size and concurrency.
#
# For each run: wall seconds, peak RSS of the whole pipeline (max over its processes), and
# scratch bytes written to local file systems (ru_oublock × 512 of the pipeline's
# processes, as GNU time reports it). Then diskferry's peak RSS with default settings on
# images of each size in BIG_GIB (GiB virtual) with the same data. Outputs are checked: each object is
# downloaded and `qemu-img compare`d with the image, and `qemu-img check`ed.
#
# Usage: benches/compare-export.sh [VIRTUAL_GIB [DATA_MIB]]   (default 10 GiB, 1536 MiB)
# Env:   DISKFERRY (a release binary; default: builds one), PART (8M, diskferry's default), JOBS (4),
#        BIG_GIB ("10 100"; "0" skips), WORKDIR (default: mktemp; must have room
#        for the pipelines' scratch files, 2 × DATA_MIB + 8 GiB), NICE (-10 when root; 0 = off),
#        BASELINE (an earlier diskferry binary: timed right after the new one, rows
#        baseline-none and baseline-zstd, and compared), PLAIN_UPLOAD (a built plain-upload
#        example; default: builds it). Every row also records client CPU
#        seconds (user + sys of all its processes).
set -euo pipefail

virtual_gib=${1:-10}
data_mib=${2:-1536}
part=${PART:-8M}
jobs=${JOBS:-4}
big_gib=${BIG_GIB:-10 100}
root=$(cd "$(dirname "$0")/.." && pwd)
helpers=$root/benches/export_helpers.py

# ---------------------------------------------------------------- dependencies
. "$root/benches/bench-common.sh"
ensure_qemu_rbd || exit 1
python=${PYTHON:-python3}
if ! "$python" -c 'import boto3' 2>/dev/null; then
    "$python" -m pip install -q boto3
fi
/usr/bin/python3 -c 'import rbd' 2>/dev/null || {
    echo "the system python3 needs python3-rbd (apt-get install python3-rbd)" >&2
    exit 1
}
[[ -x /usr/bin/time ]] || {
    echo "GNU time is needed (apt-get install time)" >&2
    exit 1
}

eval "$("$root/scripts/dev-cluster" env)"
target=${CARGO_TARGET_DIR:-$root/target}
if [[ -n "${PLAIN_UPLOAD:-}" ]]; then
    plain_upload=$PLAIN_UPLOAD
else
    cargo build --release -q -p diskferry-benches --example plain-upload --manifest-path "$root/Cargo.toml"
    plain_upload=$target/release/examples/plain-upload
fi
diskferry_release
part_bytes=$(numfmt --from=iec "${part%iB}")

bench_workdir
image=bench-export-$$
bucket=bench-export-$$
cleanup() {
    rbd rm --no-progress "rbd/$image" >/dev/null 2>&1 || true
    for gib in $big_gib; do rbd rm --no-progress "rbd/bench-export-big-$$-$gib" >/dev/null 2>&1 || true; done
    "$python" "$helpers" rmbucket "$bucket" >/dev/null 2>&1 || true
    [[ -n "${WORKDIR:-}" ]] || rm -rf "$work"
}
trap cleanup EXIT

nice_level=${NICE:--10}
[[ $(id -u) -eq 0 ]] || nice_level=0

# ---------------------------------------------------------------- the source
echo "preparing rbd/$image: ${virtual_gib} GiB virtual, ${data_mib} MiB mixed data ..." >&2
rbd create --size "${virtual_gib}G" "rbd/$image"
/usr/bin/python3 "$helpers" write-image rbd "$image" "$virtual_gib" "$data_mib"
"$python" "$helpers" mkbucket "$bucket"
rbd_spec="rbd:rbd/$image:conf=$CEPH_CONF"

# measure NAME COMMAND...: runs it under GNU time; appends "NAME wall rss_kib scratch_bytes".
results=$work/results
: >"$results"
measure() {
    local name=$1
    shift
    sync
    /usr/bin/time -f "%e %M %O %U %S" -o "$work/time" nice -n "$nice_level" "$@" >"$work/$name.out" 2>&1 || {
        echo "$name failed:" >&2
        cat "$work/$name.out" >&2
        exit 1
    }
    read -r wall rss blocks user sys <"$work/time"
    echo "$name $wall $rss $((blocks * 512)) $(echo "$user + $sys" | bc -l)" >>"$results"
    printf '%-22s %8.2f s %8d MiB RSS %12d scratch bytes\n' "$name" "$wall" $((rss / 1024)) $((blocks * 512)) >&2
}

upload() { "$python" "$helpers" upload "$1" "$2" "$part_bytes" "$jobs"; }

# The rbd export pipeline writes the data twice to scratch (a sparse raw file, then the
# qcow2 file): make sure the host keeps room for it and for the cluster's own growth (a full
# host disk crashes the OSD).
need_scratch() {
    local need_kib=$(((data_mib << 10) * 2 + (8 << 20)))
    local free_kib
    free_kib=$(df -k --output=avail "$work" | tail -1)
    if ((free_kib < need_kib)); then
        echo "not enough room in $work for the rbd export pipeline: $((free_kib >> 20)) GiB free, $((need_kib >> 20)) GiB needed (2 x data + 8 GiB for the cluster)" >&2
        exit 1
    fi
}
export -f upload
export python helpers part_bytes jobs

# ---------------------------------------------------------------- the runs
for mode in none zstd; do
    case $mode in
        none) df_args=() qi_args=() ;;
        zstd) df_args=(--compress zstd) qi_args=(-c -o compression_type=zstd) ;;
    esac
    measure "diskferry-$mode" "$DISKFERRY" export "rbd:rbd/$image" "s3://$bucket/df-$mode.qcow2" \
        --part-size "$part" --jobs "$jobs" --no-progress "${df_args[@]}"
    "$python" "$helpers" download "s3://$bucket/df-$mode.qcow2" "$work/df.qcow2"
    if [[ -n "${BASELINE:-}" ]]; then
        measure "baseline-$mode" "$BASELINE" export "rbd:rbd/$image" "s3://$bucket/base-$mode.qcow2" \
            --part-size "$part" --jobs "$jobs" --no-progress "${df_args[@]}"
        "$python" "$helpers" rm "s3://$bucket/base-$mode.qcow2"
    fi
    # The cluster's OSD file only grows: every object is deleted as soon as it is measured.
    "$python" "$helpers" rm "s3://$bucket/df-$mode.qcow2"
    need_scratch
    measure "p1-rbd-export-$mode" bash -c '
        set -e
        rbd export --no-progress "rbd/$1" "$2/p1.raw"
        qemu-img convert -f raw -O qcow2 '"${qi_args[*]}"' "$2/p1.raw" "$2/p1.qcow2"
        rm -f "$2/p1.raw"
        upload "$2/p1.qcow2" "s3://$3/p1-$4.qcow2"
        rm -f "$2/p1.qcow2"' _ "$image" "$work" "$bucket" "$mode"
    "$python" "$helpers" rm "s3://$bucket/p1-$mode.qcow2"
    measure "p2-qemu-img-rbd-$mode" bash -c '
        set -e
        qemu-img convert -f raw -O qcow2 '"${qi_args[*]}"' "$1" "$2/p2.qcow2"
        upload "$2/p2.qcow2" "s3://$3/p2-$4.qcow2"
        rm -f "$2/p2.qcow2"' _ "$rbd_spec" "$work" "$bucket" "$mode"
    "$python" "$helpers" rm "s3://$bucket/p2-$mode.qcow2"

    # The same output bytes, uploaded plainly (the file is read from the page cache).
    cat "$work/df.qcow2" >/dev/null
    measure "plain-rust-$mode" "$plain_upload" "$work/df.qcow2" "s3://$bucket/plain-rust-$mode" "$part_bytes" "$jobs"
    "$python" "$helpers" rm "s3://$bucket/plain-rust-$mode"
    measure "plain-boto3-$mode" bash -c 'upload "$1" "$2"' _ "$work/df.qcow2" "s3://$bucket/plain-boto3-$mode"
    "$python" "$helpers" rm "s3://$bucket/plain-boto3-$mode"

    # Check diskferry's object against the image itself.
    qemu-img check -q "$work/df.qcow2"
    qemu-img compare -q -f qcow2 -F raw "$work/df.qcow2" "$rbd_spec"
    echo "df-$mode.qcow2 checked: $(stat -c %s "$work/df.qcow2") bytes; qemu-img compare: identical to the image" >&2
    stat -c "size-$mode %s" "$work/df.qcow2" >>"$results"
    rm -f "$work/df.qcow2"
done

rbd rm --no-progress "rbd/$image" >/dev/null
for gib in $big_gib; do
    ((gib > 0)) || continue
    big=bench-export-big-$$-$gib
    echo "preparing rbd/$big: ${gib} GiB virtual, the same ${data_mib} MiB, for diskferry alone ..." >&2
    rbd create --size "${gib}G" "rbd/$big"
    /usr/bin/python3 "$helpers" write-image rbd "$big" "$gib" "$data_mib"
    measure "diskferry-none-${gib}g" "$DISKFERRY" export "rbd:rbd/$big" "s3://$bucket/big.qcow2" --no-progress
    "$python" "$helpers" rm "s3://$bucket/big.qcow2"
    measure "diskferry-zstd-${gib}g" "$DISKFERRY" export "rbd:rbd/$big" "s3://$bucket/big-zstd.qcow2" --compress zstd --no-progress
    "$python" "$helpers" rm "s3://$bucket/big-zstd.qcow2"
    rbd rm --no-progress "rbd/$big" >/dev/null
done

# ---------------------------------------------------------------- the table
"$python" - "$results" "$virtual_gib" "$data_mib" "$part" "$jobs" "$(nproc)" "$(cut -d' ' -f1-3 /proc/loadavg)" <<'PY'
import sys
path, vgib, dmib, part, jobs, cores, load = sys.argv[1:8]
rows, sizes = {}, {}
for line in open(path):
    f = line.split()
    if f[0].startswith("size-"):
        sizes[f[0][5:]] = int(f[1])
    else:
        rows[f[0]] = (float(f[1]), int(f[2]) // 1024, int(f[3]), float(f[4]))
print(f"Source: {vgib} GiB virtual, {dmib} MiB mixed data (random, text, half-zero, binary); "
      f"part size {part}, {jobs} parts in flight; {cores} vCPUs shared with the cluster, load {load}.\n")
print("| run | wall s | CPU s | peak RSS MiB | scratch bytes written |")
print("|---|---:|---:|---:|---:|")
for name, (wall, rss, scratch, cpu) in rows.items():
    print(f"| {name} | {wall:.2f} | {cpu:.2f} | {rss} | {scratch} |")
print()
for mode in ("none", "zstd"):
    df = rows[f"diskferry-{mode}"][0]
    best_name, best = min(((n, rows[n][0]) for n in rows if n.startswith(("p1-", "p2-")) and n.endswith(mode)), key=lambda x: x[1])
    plain = min(rows[f"plain-rust-{mode}"][0], rows[f"plain-boto3-{mode}"][0])
    print(f"- {mode}: object {sizes.get(mode, 0)} bytes; diskferry / best pipeline ({best_name}) = "
          f"{df / best:.2f} (target ≤ 0.75); diskferry / plain upload of the same bytes = "
          f"{df / plain:.2f} (target ≤ 1.15); diskferry scratch bytes = {rows[f'diskferry-{mode}'][2]}")
    if f"baseline-{mode}" in rows:
        b = rows[f"baseline-{mode}"]
        print(f"- {mode}: new / baseline wall = {df / b[0]:.2f}, CPU = {rows[f'diskferry-{mode}'][3] / b[3]:.2f}")
big = [n for n in rows if n.startswith("diskferry-") and n.endswith("g")]
for n in big:
    print(f"- {n}: peak RSS {rows[n][1]} MiB (target ≤ 256), wall {rows[n][0]:.2f} s")
PY
