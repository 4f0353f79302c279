# Sourced by the compare-*.sh benchmarks (bash) once they have set `root` (the repository).

# Sets `target` (the cargo target directory) and DISKFERRY: the binary the caller gave, else a
# release build of this tree (built here). Extra arguments run before cargo (e.g. nice -n 19).
diskferry_release() {
    target=${CARGO_TARGET_DIR:-$root/target}
    if [[ -z "${DISKFERRY:-}" ]]; then
        "$@" cargo build --release -q -p diskferry-cli --manifest-path "$root/Cargo.toml"
        DISKFERRY=$target/release/diskferry
    fi
}

# Sets `work`: $WORKDIR (created if missing) when given, else a new temporary directory. The
# caller removes a temporary one when it is done (its cleanup trap).
bench_workdir() {
    if [[ -n "${WORKDIR:-}" ]]; then
        work=$WORKDIR
        mkdir -p "$work"
    else
        work=$(mktemp -d)
    fi
}

# qemu-img reads and writes rbd: only with Debian's qemu-block-extra of the same version as
# qemu-utils (10.0.2 from bookworm-backports on this machine). Installs it when missing (as
# root), from the backports suite when qemu-utils came from there; fails saying why.
# (qemu-img --help lists module formats whether installed or not: dpkg is asked instead.)
ensure_qemu_rbd() {
    local qemu_version release=()
    qemu_has_rbd() {
        [[ $(dpkg-query -W -f '${Status} ${Version}' qemu-block-extra 2>/dev/null) == \
            "install ok installed $(dpkg-query -W -f '${Version}' qemu-utils)" ]]
    }
    qemu_has_rbd && return 0
    if [[ $(id -u) -ne 0 ]]; then
        echo "qemu-img lacks rbd support: install qemu-block-extra (as root)" >&2
        return 1
    fi
    qemu_version=$(dpkg-query -W -f '${Version}' qemu-utils)
    if [[ $qemu_version == *bpo* ]]; then
        . "$root/benches/debian-backports.sh"
        ensure_debian_backports || return 1
        release=(-t "$(. /etc/os-release && echo "$VERSION_CODENAME")-backports")
    fi
    echo "installing qemu-block-extra=$qemu_version ..." >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${release[@]}" \
        "qemu-block-extra=$qemu_version" >/dev/null || {
        echo "could not install qemu-block-extra=$qemu_version (needed for qemu-img rbd:)" >&2
        return 1
    }
    qemu_has_rbd || {
        echo "qemu-block-extra is installed but qemu-img still lists no rbd format" >&2
        return 1
    }
}
