#!/usr/bin/env bash
# The demo: scx_phase scheduling a small contended workload.
#
# On a kernel with sched_ext it runs here (as root); elsewhere it boots the
# sched_ext VM (2 vCPUs in 2 NUMA nodes) and runs there. It shows the
# scheduler attaching, hints going into the pinned map (and out through
# bpftool), the per-phase stats table, and a clean detach with the
# kernel's exit reason.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
bin="$root/target/release/scx_phase"

inside() {
    say() {
        if [ -t 1 ]; then printf '\n\033[1m>> %s\033[0m\n' "$*"; else printf '\n>> %s\n' "$*"; fi
    }
    say "kernel $(uname -r), sched_ext state: $(cat /sys/kernel/sched_ext/state)"
    "$bin" topology

    say "starting scx_phase --stats 3"
    local t0 t1
    t0=$(date +%s%N)
    "$bin" --stats 3 &
    local sched=$!
    while [ "$(cat /sys/kernel/sched_ext/state)" != enabled ]; do
        kill -0 "$sched" 2>/dev/null || { echo "scx_phase failed to start" >&2; exit 1; }
        sleep 0.01
    done
    t1=$(date +%s%N)
    say "attached in $(((t1 - t0) / 1000000)) ms as $(cat /sys/kernel/sched_ext/root/ops)"

    say "workload: $(nproc) un-hinted CPU hogs, a 'backward' thread and a 'data_loading' thread"
    stress-ng --cpu "$(nproc)" --timeout 8s --quiet &
    local hogs=$!
    sh -c 'while :; do :; done' &
    local trainer=$!
    sh -c 'while :; do :; done' &
    local dataloader=$!
    "$bin" set --tid "$trainer" --phase backward
    local node=0
    [ -d /sys/devices/system/node/node1 ] && node=1
    "$bin" set --tid "$dataloader" --phase data_loading --node "$node"

    say "scx_phase dump"
    "$bin" dump
    say "bpftool map dump pinned /sys/fs/bpf/scx_phase/phase_map (BTF names the fields)"
    bpftool map dump pinned /sys/fs/bpf/scx_phase/phase_map

    say "per-phase stats while the workload runs (fair vtime for now; the phase policy comes next)"
    sleep 7
    kill "$trainer" "$dataloader" 2>/dev/null || true
    wait "$hogs" 2>/dev/null || true

    say "Ctrl-C to the loader"
    t0=$(date +%s%N)
    kill -INT "$sched"
    while [ "$(cat /sys/kernel/sched_ext/state)" != disabled ]; do sleep 0.005; done
    t1=$(date +%s%N)
    wait "$sched"
    say "detached in $(((t1 - t0) / 1000000)) ms; loader exit code $?; state $(cat /sys/kernel/sched_ext/state)"
}

if [ "${1:-}" = "--inside" ]; then
    inside
    exit 0
fi

"$root/scripts/setup.sh"
(cd "$root" && cargo build --release --quiet)
if [ -d /sys/kernel/sched_ext ] && [ "$(id -u)" -eq 0 ]; then
    exec "$0" --inside
fi
echo "No sched_ext on this kernel ($(uname -r)): running the demo in the sched_ext VM."
exec "$root/scripts/vm.sh" --cpus 2 --nodes 2 -- "$0" --inside
