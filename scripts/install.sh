#!/usr/bin/env bash
# Install scx_phase from this tree: the binary, the hint library, its C
# header, a pkg-config file and the systemd unit.
#
#   scripts/install.sh [--prefix DIR] [--destdir DIR] [--unit-dir DIR]
#                      [--sysconfdir DIR] [--no-build]
#
#   --prefix DIR    where it lives (default /usr/local): DIR/bin/scx_phase,
#                   DIR/lib/libscx_phase.so, DIR/include/scx_phase.h,
#                   DIR/lib/pkgconfig/scx_phase.pc
#   --destdir DIR   stage under DIR instead of / (for packaging); the files
#                   still name --prefix (default: none)
#   --unit-dir DIR  where scx_phase.service goes (default PREFIX/lib/systemd/system,
#                   which systemd reads for /usr and /usr/local)
#   --sysconfdir DIR  where default/scx_phase, the unit's flags, goes (default
#                   /etc); written only if missing
#   --no-build      install what target/release holds (default: build first)
#
# A C program then builds with
#   cc prog.c $(pkg-config --cflags --libs scx_phase)
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
prefix=/usr/local destdir="" build=1 unit_dir="" sysconfdir=/etc
die() { echo "install.sh: $*" >&2; exit 1; }

while [ $# -gt 0 ]; do
    case "$1" in
        --prefix) [ $# -ge 2 ] || die "--prefix needs a folder"; prefix=$2; shift 2 ;;
        --destdir) [ $# -ge 2 ] || die "--destdir needs a folder"; destdir=$2; shift 2 ;;
        --unit-dir) [ $# -ge 2 ] || die "--unit-dir needs a folder"; unit_dir=$2; shift 2 ;;
        --sysconfdir) [ $# -ge 2 ] || die "--sysconfdir needs a folder"; sysconfdir=$2; shift 2 ;;
        --no-build) build=0; shift ;;
        -h|--help) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown option $1 (try --help)" ;;
    esac
done
case "$prefix" in /*) ;; *) die "--prefix must be an absolute path, not $prefix" ;; esac
unit_dir=${unit_dir:-$prefix/lib/systemd/system}
for d in "$unit_dir" "$sysconfdir"; do
    case "$d" in /*) ;; *) die "--unit-dir and --sysconfdir must be absolute paths, not $d" ;; esac
done

if [ "$build" -eq 1 ]; then
    (cd "$root" && cargo build --release --quiet)
fi
bin="$root/target/release/scx_phase" lib="$root/target/release/libscx_phase.so"
for f in "$bin" "$lib"; do
    [ -f "$f" ] || die "$f is missing: build first (cargo build --release)"
done
version=$("$bin" --version | awk '{print $2}')

stage="$destdir$prefix"
install -d "$stage/bin" "$stage/lib/pkgconfig" "$stage/include"
install -m 0755 "$bin" "$stage/bin/scx_phase"
install -m 0755 "$lib" "$stage/lib/libscx_phase.so"
install -m 0644 "$root/include/scx_phase.h" "$stage/include/scx_phase.h"
cat >"$stage/lib/pkgconfig/scx_phase.pc" <<PC
prefix=$prefix
libdir=\${prefix}/lib
includedir=\${prefix}/include

Name: scx_phase
Description: Hint the scx_phase scheduler with a training thread's phase
Version: $version
Libs: -L\${libdir} -Wl,-rpath,\${libdir} -lscx_phase
Cflags: -I\${includedir}
PC
env_file=$sysconfdir/default/scx_phase
install -d "$destdir$unit_dir" "$destdir$sysconfdir/default"
sed -e "s|@bindir@|$prefix/bin|g" -e "s|/etc/default/scx_phase|$env_file|g" \
    "$root/deploy/systemd/scx_phase.service" >"$destdir$unit_dir/scx_phase.service"
chmod 0644 "$destdir$unit_dir/scx_phase.service"
# The operator's flags are theirs: never overwritten.
[ -e "$destdir$env_file" ] ||
    install -m 0644 "$root/deploy/systemd/scx_phase.default" "$destdir$env_file"
echo "installed scx_phase $version under $stage, its unit in $destdir$unit_dir"
