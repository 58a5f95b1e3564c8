#!/usr/bin/env bash
# Install everything the build, the tests and the VM need on a fresh Debian
# bookworm machine. Idempotent: a second run only checks.
set -euo pipefail

need_root() {
    if [ "$(id -u)" -ne 0 ]; then
        echo "setup.sh: must run as root (apt-get install)" >&2
        exit 1
    fi
}

# Extra suites get a low pin so that nothing already installed is upgraded
# from them; we ask for their packages by name only.
add_suites() {
    local list=/etc/apt/sources.list.d/scx-phase.sources
    local pin=/etc/apt/preferences.d/scx-phase
    if [ ! -f "$list" ]; then
        cat >"$list" <<'SRC'
Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm-backports trixie-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
    fi
    if [ ! -f "$pin" ]; then
        cat >"$pin" <<'PIN'
Package: *
Pin: release n=bookworm-backports
Pin-Priority: 100

Package: *
Pin: release n=trixie-backports
Pin-Priority: 1

    fi
}

# From bookworm-backports: bpftool 7.5 (BTF-typed dumps) and a QEMU that
# matches the image's qemu-utils, which already comes from there.
BACKPORTS=(bpftool qemu-system-x86)
PKGS=(clang-19 llvm-19 libelf-dev zlib1g-dev pkg-config libhwloc-dev
      busybox-static cpio xz-utils zstd
      stress-ng linux-perf python3 jq)

main() {
    local missing=()
    for p in "${PKGS[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
    done
    local bp_missing=()
    for p in "${BACKPORTS[@]}"; do
        dpkg-query -W -f='${Status} ${Version}' "$p" 2>/dev/null | grep -q 'install ok installed.*bpo' || bp_missing+=("$p")
    done
    if [ ${#missing[@]} -eq 0 ] && [ ${#bp_missing[@]} -eq 0 ]; then
        echo "setup: all packages present"
        return 0
    fi
    need_root
    add_suites
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    if [ ${#missing[@]} -gt 0 ]; then
        echo "setup: installing ${missing[*]}"
        apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    fi
    if [ ${#bp_missing[@]} -gt 0 ]; then
        echo "setup: installing ${bp_missing[*]} from bookworm-backports"
        apt-get install -y -qq --no-install-recommends -t bookworm-backports "${bp_missing[@]}" >/dev/null
    fi
}

main "$@"
