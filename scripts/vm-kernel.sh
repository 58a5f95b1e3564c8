#!/usr/bin/env bash
# Fetch a Debian trixie-backports kernel that has sched_ext and cache it,
# with its config and the modules the VM loads at boot. Prints the cache
# folder. Needs the suites added by scripts/setup.sh.
#
#   scripts/vm-kernel.sh [newest|oldest|6.12|VERSION]
#
# newest (the default) goes in .cache/vm/kernel/; the oldest that suite
# carries (the fleet's lagging kernels), or a VERSION like 7.0.13+deb13,
# in .cache/vm/kernel-VERSION/. 6.12, the LTS floor, has no Debian binary
# with sched_ext: scripts/vm-kernel-build.sh builds it.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
which=${1:-newest}
die() { echo "vm-kernel: $*" >&2; exit 1; }

# Every linux-binary-<ver>-amd64 (not -cloud/-rt) of trixie-backports, oldest first.
versions() {
    apt-cache search --names-only '^linux-binary-[0-9.]+\+deb[0-9]+-amd64$' |
        awk '{print $1}' | sed 's/^linux-binary-//; s/-amd64$//' | sort -V |
        while read -r v; do
            apt-cache policy "linux-binary-$v-amd64" | grep -q trixie-backports && echo "$v"
        done
}

[ "$which" != 6.12 ] || exec "$root/scripts/vm-kernel-build.sh"

case "$which" in
    newest) cache="$root/.cache/vm/kernel" ;;
    *) cache="$root/.cache/vm/kernel-$which" ;;
esac

# Load order matters: each module needs the ones before it. 9p mounts the
# host; zram gives the memory tests swap, so that reclaim can take
# anonymous memory the way it does on a real host; overlay gives
# vm.sh --systemd a writable root.
modules="fs/netfs/netfs net/9p/9pnet net/9p/9pnet_virtio fs/9p/9p lib/lz4/lz4_compress lib/lz4/lz4hc_compress drivers/block/zram/zram fs/overlayfs/overlay"

# "oldest" resolves to a version, so that its cache has a stable name.
if [ "$which" = oldest ]; then
    which=$(versions | sed -n 1p)
    [ -n "$which" ] || die "no linux-binary-*-amd64 in trixie-backports (run scripts/setup.sh)"
    cache="$root/.cache/vm/kernel-$which"
fi

# The cache is good if it was made for this module list.
if [ -f "$cache/ok" ] && [ "$(cat "$cache/ok")" = "$modules" ]; then
    echo "$cache"
    exit 0
fi

case "$which" in
    newest) pkg=$(versions | tail -n 1) ;;
    *) pkg=$(versions | grep -Fx "$which" || true) ;;
esac
[ -n "$pkg" ] || die "no linux-binary-$which-amd64 in trixie-backports (run scripts/setup.sh)"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && apt-get download -q "linux-binary-$pkg-amd64" >/dev/null 2>&1) ||
    die "apt-get download of kernel $pkg failed"
# The newest kernels list their base and modules packages in the index;
# for older ones the index keeps only the signed binary, and the other two
# are fetched from the same pool by their names (the binary says which
# version), over the same mirror apt uses.
for part in base modules; do
    name="linux-$part-$pkg-amd64"
    if apt-cache policy "$name" | grep -q trixie-backports; then
        (cd "$tmp" && apt-get download -q "$name" >/dev/null 2>&1) || die "apt-get download of $name failed"
    else
        debver=$(dpkg-deb -f "$tmp"/linux-binary-*.deb Version)
        url="http://deb.debian.org/debian/pool/main/l/linux/${name}_${debver}_amd64.deb"
        curl -fsSL -o "$tmp/${name}_${debver}_amd64.deb" "$url" || die "cannot fetch $url"
    fi
done
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
# Kernels before 7.2 keep these in /boot, named by version.
vmlinuz=$kdir/vmlinuz config=$kdir/config
[ -f "$vmlinuz" ] || vmlinuz=$tmp/x/boot/vmlinuz-$kver
[ -f "$config" ] || config=$tmp/x/boot/config-$kver
[ -f "$vmlinuz" ] || die "kernel $kver: no vmlinuz"
[ -f "$config" ] || die "kernel $kver: no config"
grep -q '^CONFIG_SCHED_CLASS_EXT=y' "$config" || die "kernel $kver lacks CONFIG_SCHED_CLASS_EXT"
grep -q '^CONFIG_NUMA=y' "$config" || die "kernel $kver lacks CONFIG_NUMA"

rm -rf "$cache"
mkdir -p "$cache/modules"
cp "$vmlinuz" "$cache/vmlinuz"
cp "$config" "$cache/config"
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
