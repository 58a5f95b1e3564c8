#!/usr/bin/env bash
# Build the Python package (python/) as a wheel that bundles
# libscx_phase.so, for `pip install` on hosts and in images.
#
#   scripts/wheel.sh [--out DIR] [--no-build]
#
#   --out DIR    where the wheel goes (default target/wheels)
#   --no-build   use what target/release holds (default: cargo build first)
#
# Prints the wheel's path. Then: pip install target/wheels/scx_phase-*.whl
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
out="$root/target/wheels" build=1
die() { echo "wheel.sh: $*" >&2; exit 1; }

while [ $# -gt 0 ]; do
    case "$1" in
        --out) [ $# -ge 2 ] || die "--out needs a folder"; out=$2; shift 2 ;;
        --no-build) build=0; shift ;;
        -h|--help) sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown option $1 (try --help)" ;;
    esac
done

if [ "$build" -eq 1 ]; then
    (cd "$root" && cargo build --release --quiet)
fi
lib="$root/target/release/libscx_phase.so"
[ -f "$lib" ] || die "$lib is missing: build first (cargo build --release)"

# Debian's setuptools and wheel, offline: no build isolation. A copy of the
# package, so that the build's leftovers stay out of the checkout.
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
cp -r "$root/python" "$stage/python"
rm -rf "$stage/python/build" "$stage"/python/*.egg-info
mkdir -p "$out"
SCX_PHASE_LIB="$lib" /usr/bin/python3 -m pip wheel --quiet --no-deps --no-build-isolation \
    --wheel-dir "$stage/wheels" "$stage/python" >&2 || die "pip wheel failed"
whl=$(ls "$stage"/wheels/scx_phase-*.whl)
cp "$whl" "$out/"
echo "$out/$(basename "$whl")"
