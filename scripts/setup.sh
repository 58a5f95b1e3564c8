#!/usr/bin/env bash
# Install everything the build, the tests and the VM need on a fresh Debian
# bookworm machine. Idempotent: when all is there it only checks.
set -euo pipefail

LIST=/etc/apt/sources.list.d/scx-phase.sources
PIN=/etc/apt/preferences.d/scx-phase

# From bookworm's own suites.
PKGS=(clang-19 llvm-19 libelf-dev zlib1g-dev pkg-config libhwloc-dev libudev-dev
      busybox-static cpio xz-utils zstd stress-ng linux-perf python3 jq
      gnuplot-nox
      python3-torch
      podman crun conmon golang-github-containers-common
      systemd prometheus python3-setuptools python3-wheel python3-venv curl
      # Building the 6.12 test kernel (scripts/vm-kernel-build.sh).
      make gcc flex bison bc libssl-dev dwarves)
# Python tools from PyPI, pinned, in a virtualenv of this checkout
# (.cache/py): the offline schema check of deploy/kubernetes/, and MLflow
# for scx_phase.mlflow's tests. It sees the system's packages too, so that
# its python runs Debian's torch beside MLflow.
PYPI=(kubernetes-validate==1.37.0 mlflow-skinny==3.18.0)
VENV_PINS="system-site-packages ${PYPI[*]}"
# From bookworm-backports: bpftool 7.5 (BTF-typed dumps) and a QEMU that
# matches the image's qemu-utils, which already comes from there.
BACKPORTS=(bpftool qemu-system-x86)

# Extra suites get a low pin, so nothing installed is upgraded from them:
# their packages come only when asked for by name (or, for the VM kernel,
# downloaded without installing).
add_suites() {
    cat >"$LIST" <<'SRC'
Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm-backports trixie-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
    cat >"$PIN" <<'PINS'
Package: *
Pin: release n=bookworm-backports
Pin-Priority: 100

Package: *
Pin: release n=trixie-backports
Pin-Priority: 1
PINS
}

installed() {
    dpkg-query -W -f='${Status} ${Version}\n' "$1" 2>/dev/null | grep -q "^install ok installed${2:-}"
}

main() {
    local missing=() bp_missing=()
    for p in "${PKGS[@]}"; do installed "$p" || missing+=("$p"); done
    for p in "${BACKPORTS[@]}"; do installed "$p" '.*bpo' || bp_missing+=("$p"); done
    if [ ${#missing[@]} -eq 0 ] && [ ${#bp_missing[@]} -eq 0 ] && [ -f "$LIST" ] && [ -f "$PIN" ]; then
        echo "setup: all packages present"
        return 0
    fi
    if [ "$(id -u)" -ne 0 ]; then
        echo "setup: missing packages (${missing[*]} ${bp_missing[*]}); run as root to install them" >&2
        exit 1
    fi
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

# The virtualenv is made, or remade when the pins change; by whoever runs
# setup (root is not needed for it).
python_tools() {
    local root venv
    root=$(cd "$(dirname "$0")/.." && pwd)
    venv="$root/.cache/py"
    if [ "$(cat "$venv/pins" 2>/dev/null)" = "$VENV_PINS" ]; then
        return 0
    fi
    echo "setup: installing ${PYPI[*]} into .cache/py"
    rm -rf "$venv"
    /usr/bin/python3 -m venv --system-site-packages "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "${PYPI[@]}"
    echo "$VENV_PINS" >"$venv/pins"
}

main "$@"
python_tools
