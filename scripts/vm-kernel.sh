#!/usr/bin/env bash
# Fetch the newest Debian trixie-backports kernel that has sched_ext and
# cache it, with its config and the modules the VM loads at boot, in
# .cache/vm/kernel/. Prints the cache folder. Needs the suites added by
# scripts/setup.sh.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cache="$root/.cache/vm/kernel"

# Load order matters: each module needs the ones before it. 9p mounts the
# host; zram gives the memory tests swap, so that reclaim can take
# anonymous memory the way it does on a real host; overlay gives
# vm.sh --systemd a writable root.
modules="fs/netfs/netfs net/9p/9pnet net/9p/9pnet_virtio fs/9p/9p lib/lz4/lz4hc_compress drivers/block/zram/zram fs/overlayfs/overlay"

# The cache is good if it was made for this module list.
if [ -f "$cache/ok" ] && [ "$(cat "$cache/ok")" = "$modules" ]; then
    echo "$cache"
    exit 0
fi

die() { echo "vm-kernel: $*" >&2; exit 1; }

# Newest linux-binary-<ver>-amd64 (not -cloud/-rt) that trixie-backports has.
pkg=$(apt-cache search --names-only '^linux-binary-[0-9.]+\+deb[0-9]+-amd64$' |
      awk '{print $1}' | sed 's/^linux-binary-//; s/-amd64$//' | sort -V |
      while read -r v; do
          apt-cache policy "linux-binary-$v-amd64" | grep -q trixie-backports && echo "$v"
      done | tail -n 1)
[ -n "$pkg" ] || die "no linux-binary-*-amd64 in trixie-backports (run scripts/setup.sh)"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && apt-get download -q "linux-binary-$pkg-amd64" "linux-base-$pkg-amd64" \
    "linux-modules-$pkg-amd64" >/dev/null 2>&1) || die "apt-get download of kernel $pkg failed"
mkdir -p "$tmp/x"
for deb in "$tmp"/linux-binary-*.deb "$tmp"/linux-base-*.deb; do dpkg-deb -x "$deb" "$tmp/x"; done
# The modules package is ~100 MB; unpack only what the VM loads.
# A module built in is not in the package: tar's complaint about it is
# ignored, and the loop below checks every module.
pats=()
for m in $modules; do pats+=("*/$m.ko*"); done
dpkg-deb --fsys-tarfile "$tmp"/linux-modules-*.deb |
    tar -x -C "$tmp/x" --wildcards "${pats[@]}" 2>/dev/null || true

kdir=$(echo "$tmp"/x/usr/lib/modules/*)
kver=$(basename "$kdir")
[ -f "$kdir/vmlinuz" ] || die "kernel $kver: no vmlinuz"
[ -f "$kdir/config" ] || die "kernel $kver: no config"
grep -q '^CONFIG_SCHED_CLASS_EXT=y' "$kdir/config" || die "kernel $kver lacks CONFIG_SCHED_CLASS_EXT"
grep -q '^CONFIG_NUMA=y' "$kdir/config" || die "kernel $kver lacks CONFIG_NUMA"

rm -rf "$cache"
mkdir -p "$cache/modules"
cp "$kdir/vmlinuz" "$kdir/config" "$cache/"
echo "$kver" >"$cache/version"
n=0
for m in $modules; do
    n=$((n + 1))
    src="$kdir/kernel/$m.ko.xz"
    if [ -f "$src" ]; then
        xz -dc "$src" >"$cache/modules/$n-$(basename "$m").ko"
    elif ! grep -q "kernel/$m.ko" "$kdir/modules.builtin"; then
        die "kernel $kver: module $m is neither built in nor shipped"
    fi
done
echo "$modules" >"$cache/ok"
echo "$cache"
