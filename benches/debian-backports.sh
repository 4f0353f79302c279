# Sourced by the compare-*.sh benchmarks (bash). Names no package host: the backports suite
# is added from the Debian source apt on this machine already uses.

# Makes CODENAME-backports (this machine's Debian release) available to apt, from the same
# source as the release itself. Does nothing when a backports suite is configured already.
# Needs root; fails, saying why, when apt has no source for the release.
ensure_debian_backports() {
    local codename site list
    codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
    [[ -n $codename ]] || { echo "/etc/os-release names no Debian release" >&2; return 1; }
    if grep -rqs "^[^#]*\b${codename}-backports\b" /etc/apt/sources.list /etc/apt/sources.list.d/; then
        return 0
    fi
    # Every configured binary index as "deb RELEASE SITE"; the release's own source wins.
    site=$(apt-get indextargets --format '$(TARGET_OF) $(RELEASE) $(SITE)' |
        awk -v release="$codename" '$1 == "deb" && $2 == release { print $3; exit }')
    [[ -n $site ]] || {
        echo "apt has no source for $codename: configure one, then run this again" >&2
        return 1
    }
    list=/etc/apt/sources.list.d/${codename}-backports.list
    echo "deb $site ${codename}-backports main" >"$list"
    echo "added ${codename}-backports from $site to $list" >&2
}
