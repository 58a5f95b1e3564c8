#!/usr/bin/env bash
# Run a command inside a VM with a sched_ext kernel and return its exit code.
#
#   scripts/vm.sh [--cpus N] [--nodes K] [--mem MiB] [--timeout SECS]
#                 [--boot-timeout SECS] [--systemd] [--kernel WHICH] -- COMMAND...
#
# The VM sees the host's root read-only and this project read-write at the
# same path, so COMMAND can be any host binary (tests, bpftool, python3).
# It boots under TCG: KVM fails in the kernel decompressor on these hosts.
# A VM that dies, hangs before reaching userspace (--boot-timeout,
# default 30 s; a normal boot takes 5-10 s), or boots with a vCPU that runs
# nothing (vm-init checks each), is retried, up to 3 boots in all, and
# says so. Multi-threaded TCG hangs in early boot now and then,
# more often with more vCPUs than host cores. With --systemd the host's
# systemd boots the VM (over a tmpfs overlay of the host's root) and
# COMMAND runs as a unit after basic.target (default: a plain init).
# --kernel newest (default), oldest, or a version of trixie-backports'
# kernels (scripts/vm-kernel.sh), or 6.12, the LTS floor, built from
# Debian's source (scripts/vm-kernel-build.sh).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cpus=2 nodes=1 mem=2048 timeout=1200 boot_timeout=30 attempts=3 init_args="" which=newest

usage() { sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
die() { echo "vm: $*" >&2; exit 1; }

while [ $# -gt 0 ]; do
    case "$1" in
        --cpus) cpus=$2; shift 2 ;;
        --nodes) nodes=$2; shift 2 ;;
        --mem) mem=$2; shift 2 ;;
        --timeout) timeout=$2; shift 2 ;;
        --boot-timeout) boot_timeout=$2; shift 2 ;;
        --systemd) init_args=" scx_vm.systemd=1"; shift ;;
        --kernel) which=$2; shift 2 ;;
        --) shift; break ;;
        -h|--help) usage ;;
        *) die "unknown option $1 (try --help)" ;;
    esac
done
[ $# -gt 0 ] || usage
[ "$nodes" -ge 1 ] && [ "$cpus" -ge "$nodes" ] && [ $((cpus % nodes)) -eq 0 ] ||
    die "--cpus ($cpus) must be a positive multiple of --nodes ($nodes)"
command -v qemu-system-x86_64 >/dev/null || die "qemu-system-x86_64 missing (run scripts/setup.sh)"
[ -x /bin/busybox ] || die "busybox missing (run scripts/setup.sh)"

kernel=$("$root/scripts/vm-kernel.sh" "$which")

# The initramfs: static busybox, the 9p modules, the kernel config, our init.
initrd="$kernel/initramfs.cpio.gz"
if [ ! -f "$initrd" ] || [ "$root/scripts/vm-init" -nt "$initrd" ] || [ "$kernel/ok" -nt "$initrd" ]; then
    stage=$(mktemp -d)
    mkdir -p "$stage"/{bin,proc,sys,dev,newroot,modules}
    cp /bin/busybox "$stage/bin/busybox"
    # A kernel built with everything in (6.12) has no modules.
    find "$kernel/modules" -name '*.ko' -exec cp {} "$stage/modules/" \;
    cp "$kernel/config" "$stage/config"
    cp "$root/scripts/vm-init" "$stage/init"
    chmod +x "$stage/init"
    (cd "$stage" && find . | cpio -o -H newc --quiet | gzip -1) >"$initrd.tmp"
    mv "$initrd.tmp" "$initrd"
    rm -rf "$stage"
fi

numa=()
if [ "$nodes" -gt 1 ]; then
    per_cpu=$((cpus / nodes)) per_mem=$((mem / nodes))
    mem=$((per_mem * nodes))
    for ((n = 0; n < nodes; n++)); do
        numa+=(-object "memory-backend-ram,id=mem$n,size=${per_mem}M"
               -numa "node,nodeid=$n,cpus=$((n * per_cpu))-$((n * per_cpu + per_cpu - 1)),memdev=mem$n")
    done
fi

xfer=$(mktemp -d)
trap 'rm -rf "$xfer"' EXIT
echo "$root" >"$xfer/project"
{
    echo "export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    echo "export HOME=/tmp TERM=dumb LANG=C.UTF-8"
    # Pass through only the variables meant for the test programs.
    env | grep -E '^(SCX_[A-Z0-9_]*|RUST_BACKTRACE|RUST_LOG)=' | while IFS= read -r kv; do
        printf 'export %q\n' "$kv"
    done
    printf 'cd %q || exit 125\n' "$PWD"
    printf 'exec'
    printf ' %q' "$@"
    printf '\n'
} >"$xfer/cmd"

# Boot once. Returns COMMAND's exit code, or 124 if the whole run timed
# out, or 125 if the guest never reached userspace (a boot that hangs, as
# multi-threaded TCG sometimes does) or died before COMMAND finished.
boot() {
    rm -f "$xfer/started" "$xfer/rc" "$xfer/dmesg"
    # Nehalem, not max: TCG emulates AVX slowly, and with max glibc's
    # string functions and torch pick AVX2 code. Measured in one A/B of 7
    # VM tests: torch 6-10x the samples/s, attach 2.9 s against 3.6 s,
    # the 7 tests 336 s against 415 s.
    qemu-system-x86_64 \
        -accel tcg,thread=multi -cpu Nehalem -smp "$cpus" -m "${mem}M" "${numa[@]}" \
        -kernel "$kernel/vmlinuz" -initrd "$initrd" \
        -append "console=ttyS0 quiet loglevel=4 panic=-1 mitigations=off$init_args" \
        -nodefaults -display none -no-reboot \
        -chardev stdio,id=con,signal=on -serial chardev:con \
        -virtfs "local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap" \
        -virtfs "local,path=$root,mount_tag=project,security_model=none,multidevs=remap" \
        -virtfs "local,path=$xfer,mount_tag=xfer,security_model=none" \
        </dev/null &
    local qemu=$! t=0 why=""
    while kill -0 "$qemu" 2>/dev/null; do
        if [ ! -f "$xfer/started" ] && [ "$t" -ge "$boot_timeout" ]; then
            why="hung"
        elif [ "$t" -ge "$timeout" ]; then
            why="timeout"
        fi
        if [ -n "$why" ]; then
            kill "$qemu" 2>/dev/null
            sleep 2
            kill -9 "$qemu" 2>/dev/null
            break
        fi
        sleep 1
        t=$((t + 1))
    done
    wait "$qemu" 2>/dev/null
    if [ -f "$xfer/rc" ]; then
        [ -z "${VM_KEEP_DMESG:-}" ] || cp "$xfer/dmesg" "$VM_KEEP_DMESG"
        return "$(cat "$xfer/rc")"
    fi
    if [ "$why" = timeout ]; then
        echo "vm: timed out after ${timeout}s while running the command" >&2
        return 124
    fi
    if [ "$why" = hung ]; then
        echo "vm: the VM reached no userspace in ${boot_timeout}s (a hung boot); killed it" >&2
    else
        echo "vm: the VM died after ${t}s before the command finished" >&2
    fi
    return 125
}

for ((attempt = 1; attempt <= attempts; attempt++)); do
    set +e
    boot
    rc=$?
    set -e
    if [ "$rc" -ne 125 ]; then
        exit "$rc"
    fi
    [ "$attempt" -eq "$attempts" ] || echo "vm: retrying (boot $((attempt + 1)) of $attempts)" >&2
done
die "the VM failed $attempts times before the command finished; giving up"
