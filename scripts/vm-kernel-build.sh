#!/usr/bin/env bash
# Build the LTS kernel the VM tests the floor on: Linux 6.12 with sched_ext,
# from Debian's linux-source-6.12 (bookworm-backports). No Debian 6.12
# binary has sched_ext (Debian enabled it from 6.14), while RHEL 10,
# Fedora and Arch ship 6.12 with it. Prints the cache folder, laid out as
# scripts/vm-kernel.sh's: vmlinuz, config, version, an empty modules/.
#
#   scripts/vm-kernel-build.sh
#
# Everything the VM needs is built in: x86_64 defconfig and kvm_guest.config,
# then sched_ext, BPF and BTF, 9p, NUMA, cgroups, PSI, zram, overlayfs and
# namespaces. About 14 minutes on 2 cores. The cache lives outside the
# checkout ($SCX_PHASE_KERNEL_CACHE, default ~/.cache/scx_phase), so that
# every clone on a machine shares one build. A folder of prebuilt kernels
# ($SCX_PHASE_KERNEL_SEED, default ../shared/kernels beside the checkout)
# is used instead of building when it holds one built from the same
# source version and configured with every option below.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
die() { echo "vm-kernel-build: $*" >&2; exit 1; }
base=${SCX_PHASE_KERNEL_CACHE:-${XDG_CACHE_HOME:-${HOME:-/root}/.cache}/scx_phase}
cache=$base/kernel-6.12
seeds=${SCX_PHASE_KERNEL_SEED:-$root/../shared/kernels}

# Options turned on over defconfig; each must survive olddefconfig.
OPTS="SCHED_CLASS_EXT BPF BPF_SYSCALL BPF_JIT BPF_JIT_ALWAYS_ON BPF_EVENTS
 DEBUG_INFO DEBUG_INFO_DWARF5 DEBUG_INFO_BTF PREEMPT_DYNAMIC PREEMPT_RCU
 NET_9P NET_9P_VIRTIO 9P_FS 9P_FS_POSIX_ACL VIRTIO VIRTIO_PCI VIRTIO_CONSOLE
 NUMA X86_64_ACPI_NUMA ACPI_NUMA SCHED_MC SMP CGROUPS CGROUP_BPF CGROUP_SCHED
 MEMCG PSI USER_NS PID_NS NET_NS UTS_NS IPC_NS ZRAM ZSMALLOC CRYPTO_LZ4
 CRYPTO_LZO SECCOMP SECCOMP_FILTER OVERLAY_FS FUSE_FS SCHEDSTATS FTRACE
 FUNCTION_TRACER DYNAMIC_FTRACE KPROBES KPROBE_EVENTS PERF_EVENTS IKCONFIG
 IKCONFIG_PROC BLK_DEV_INITRD TMPFS DEVTMPFS DEVTMPFS_MOUNT"

# Whether config file $1 has every option.
has_opts() {
    local o
    for o in $OPTS; do grep -q "^CONFIG_$o=y" "$1" || return 1; done
}

[ -f "$cache/ok" ] && { echo "$cache"; exit 0; }

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && apt-get download -q linux-source-6.12 >/dev/null 2>&1) ||
    die "apt-get download linux-source-6.12 failed (bookworm-backports: run scripts/setup.sh)"
debver=$(dpkg-deb -f "$tmp"/linux-source-6.12_*.deb Version)
upstream=${debver%%-*}

install_kernel() { # vmlinuz config version
    rm -rf "$cache"
    mkdir -p "$cache/modules"
    cp "$1" "$cache/vmlinuz"
    cp "$2" "$cache/config"
    echo "$3" >"$cache/version"
    echo "linux-source-6.12 $debver" >"$cache/ok"
}

for seed in "$seeds"/linux-"$upstream"-*/; do
    [ -f "$seed/bzImage" ] && [ -f "$seed/config" ] || continue
    # Its checksum file holds the hash, with or without the name.
    if [ -f "$seed/bzImage.sha256" ] &&
        [ "$(sha256sum "$seed/bzImage" | cut -d' ' -f1)" != "$(cut -d' ' -f1 "$seed/bzImage.sha256")" ]; then
        continue
    fi
    has_opts "$seed/config" || continue
    echo "vm-kernel-build: using the prebuilt $upstream in $seed" >&2
    install_kernel "$seed/bzImage" "$seed/config" "$upstream"
    echo "$cache"
    exit 0
done

for t in make gcc flex bison bc pahole; do
    command -v "$t" >/dev/null || die "$t missing (run scripts/setup.sh)"
done
echo "vm-kernel-build: building Linux $upstream with sched_ext (about 14 minutes on 2 cores)" >&2
dpkg-deb -x "$tmp"/linux-source-6.12_*.deb "$tmp/x"
tar -xf "$tmp"/x/usr/src/linux-source-6.12.tar.* -C "$tmp"
cd "$tmp/linux-source-6.12"
make -s x86_64_defconfig
make -s kvm_guest.config
for o in $OPTS; do scripts/config -e "$o"; done
# No modules: the VM's init loads none for this kernel.
scripts/config -d DEBUG_INFO_REDUCED -d MODULES -d DRM -d SOUND -d WLAN -d WIRELESS \
    -d USB_SUPPORT -d INPUT_MOUSE -d HID
make -s olddefconfig
has_opts .config || die "the configuration lost an option it needs (see has_opts)"
t0=$(date +%s)
make -s -j"$(nproc)" bzImage >"$tmp/build.log" 2>&1 || { tail -n 20 "$tmp/build.log" >&2; die "the build failed"; }
echo "vm-kernel-build: built in $(( ($(date +%s) - t0) / 60 )) min" >&2
install_kernel arch/x86/boot/bzImage .config "$(make -s kernelrelease)"
echo "$cache"
