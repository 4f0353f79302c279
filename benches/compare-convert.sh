#!/usr/bin/env bash
# Side by side: `diskferry convert` against `qemu-img convert -O qcow2` on the same raw file,
# for none, deflate (-c) and zstd (-c -o compression_type=zstd), in one run. Every output is
# checked with `qemu-img compare` against the source (and ours with `qemu-img check`). Prints
# wall and CPU (user+sys) seconds and the ratios diskferry/qemu-img (lower is better).
#
# Durability must be the same on both sides: `qemu-img convert` opens its output with
# cache=unsafe by default and never flushes it, while `diskferry convert` ends with an
# fdatasync unless given --no-sync. Each mode is therefore timed twice:
#   flush=no   qemu-img as is,                    diskferry --no-sync  (both end in page cache)
#   flush=yes  qemu-img then `sync --data OUT`,   diskferry as is      (both end on disk)
#
# Usage: benches/compare-convert.sh [SIZE_MIB]   (default 1024)
# Env:   DISKFERRY=path to a release binary (default: builds one), WORKDIR (default: mktemp),
#        MODES (default "none deflate zstd"), FLUSH (default "no yes"), REPEAT (3: medians),
#        BASELINE=path to an earlier diskferry binary: timed in the same loop, alternating
#        with the other two, and compared with DISKFERRY in four more columns (wall and CPU
#        seconds of the baseline, and DISKFERRY / baseline for each).
set -euo pipefail

size_mib=${1:-1024}
root=$(cd "$(dirname "$0")/.." && pwd)
. "$root/benches/bench-common.sh"
diskferry_release
bench_workdir
[[ -n "${WORKDIR:-}" ]] || trap 'rm -rf "$work"' EXIT

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

# Both tools run at the same raised priority (when root) so that other load on a shared
# machine disturbs them less; NICE=0 turns that off.
nice_level=${NICE:--10}
[[ $(id -u) -eq 0 ]] || nice_level=0

# Each pair is timed REPEAT times, alternating the tools; the table shows medians (runs of
# under a second on shared cores vary by tens of percent) and, at the end of each row, every
# wall time.
repeat=${REPEAT:-3}
median() { printf "%s\n" "$@" | sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

# Runs "$@", prints "wall_seconds cpu_seconds" (cpu = user + sys, all threads).
timeit() {
    /usr/bin/time -f "%e %U %S" -o "$work/time" nice -n "$nice_level" "$@" >/dev/null 2>&1
    awk '{ printf "%s %.2f\n", $1, $2 + $3 }' "$work/time"
}

printf "source: %d MiB raw (random/text/zeros/holes), cores: %s, load: %s, nice: %s\n" \
    "$size_mib" "$(nproc)" "$(cut -d' ' -f1-3 /proc/loadavg)" "$nice_level"
base=${BASELINE:-}
printf "%-8s %-5s %8s %8s %10s %8s %8s %9s %11s %11s" \
    mode flush df_wall qi_wall wall_ratio df_cpu qi_cpu cpu_ratio df_bytes qi_bytes
[[ -z $base ]] || printf " %9s %8s %12s %11s" base_wall base_cpu wall_vs_base cpu_vs_base
printf "\n"
for mode in ${MODES:-none deflate zstd}; do
    case $mode in
        none) df_args=(-c none); qi_args=() ;;
        deflate) df_args=(-c deflate); qi_args=(-c) ;;
        zstd) df_args=(-c zstd); qi_args=(-c -o compression_type=zstd) ;;
    esac
    for flush in ${FLUSH:-no yes}; do
        if [[ $flush == yes ]]; then df_sync=(); else df_sync=(--no-sync); fi
        wdf=() cdf=() wqi=() cqi=() wb=() cb=()
        for ((rep = 0; rep < repeat; rep++)); do
            # Each tool starts with no output file and no dirty pages left by the previous run.
            rm -f "$work/df.qcow2" "$work/qi.qcow2" "$work/base.qcow2"
            sync
            read -r w c < <(timeit "$DISKFERRY" convert "${df_args[@]}" "${df_sync[@]}" \
                "$src" "$work/df.qcow2")
            wdf+=("$w") cdf+=("$c")
            sync
            if [[ -n $base ]]; then
                read -r w c < <(timeit "$base" convert "${df_args[@]}" "${df_sync[@]}" \
                    "$src" "$work/base.qcow2")
                wb+=("$w") cb+=("$c")
                sync
                qemu-img compare -q "$src" "$work/base.qcow2"
            fi
            if [[ $flush == yes ]]; then
                read -r w c < <(timeit bash -c 'qemu-img convert "$@" && sync --data "${!#}"' \
                    bash -f raw -O qcow2 "${qi_args[@]}" "$src" "$work/qi.qcow2")
            else
                read -r w c < <(timeit qemu-img convert -f raw -O qcow2 "${qi_args[@]}" \
                    "$src" "$work/qi.qcow2")
            fi
            wqi+=("$w") cqi+=("$c")
            sync
            qemu-img compare -q "$src" "$work/df.qcow2"
            qemu-img compare -q "$src" "$work/qi.qcow2"
            qemu-img check -q "$work/df.qcow2"
        done
        w_df=$(median "${wdf[@]}") c_df=$(median "${cdf[@]}")
        w_qi=$(median "${wqi[@]}") c_qi=$(median "${cqi[@]}")
        printf "%-8s %-5s %8.2f %8.2f %10.2f %8.2f %8.2f %9.2f %11s %11s" \
            "$mode" "$flush" "$w_df" "$w_qi" "$(echo "$w_df / $w_qi" | bc -l)" "$c_df" "$c_qi" \
            "$(echo "$c_df / $c_qi" | bc -l)" \
            "$(stat -c %s "$work/df.qcow2")" "$(stat -c %s "$work/qi.qcow2")"
        if [[ -n $base ]]; then
            w_b=$(median "${wb[@]}") c_b=$(median "${cb[@]}")
            printf " %9.2f %8.2f %12.2f %11.2f   df %s / base %s / qi %s\n" \
                "$w_b" "$c_b" "$(echo "$w_df / $w_b" | bc -l)" "$(echo "$c_df / $c_b" | bc -l)" \
                "${wdf[*]}" "${wb[*]}" "${wqi[*]}"
        else
            printf "   df %s / qi %s\n" "${wdf[*]}" "${wqi[*]}"
        fi
    done
done
printf "load after: %s\n" "$(cut -d' ' -f1-3 /proc/loadavg)"
