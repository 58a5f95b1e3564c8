#!/usr/bin/env bash
# The demo: scx_phase scheduling a small contended workload.
#
# On a kernel with sched_ext it runs here (as root); elsewhere it boots the
# sched_ext VM (2 vCPUs in 2 NUMA nodes) and runs there. It shows the
# scheduler attaching, hints going into the pinned map (and out through
# bpftool), a container hinting itself through the hint service under its
# default seccomp profile (and another tenant refused), a training job
# claiming a NUMA node's CPUs exclusively through the workload API, the
# per-phase stats table, and a clean detach with the kernel's exit reason.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
bin="$root/target/release/scx_phase"

# Wait until the scx_phase started as $1 is attached; fail if it exits.
wait_attached() {
    while [ "$(cat /sys/kernel/sched_ext/state)" != enabled ]; do
        kill -0 "$1" 2>/dev/null || { echo "scx_phase failed to start" >&2; exit 1; }
        sleep 0.01
    done
}

inside() {
    say() {
        if [ -t 1 ]; then printf '\n\033[1m>> %s\033[0m\n' "$*"; else printf '\n>> %s\n' "$*"; fi
    }
    say "kernel $(uname -r), sched_ext state: $(cat /sys/kernel/sched_ext/state)"
    "$bin" topology

    say "starting scx_phase (members of group 4242 may raise threads through its hint service; workloads may claim whole nodes)"
    local t0 t1
    t0=$(date +%s%N)
    "$bin" --hint-group 4242 --max-exclusive-pct 100 &
    local sched=$!
    wait_attached "$sched"
    t1=$(date +%s%N)
    say "attached in $(((t1 - t0) / 1000000)) ms as $(cat /sys/kernel/sched_ext/root/ops)"

    # CPU share of a process over $2 seconds, from its schedstat.
    share() {
        local a b t0 t1
        a=$(cut -d' ' -f1 "/proc/$1/schedstat")
        t0=$(date +%s%N)
        sleep "$2"
        b=$(cut -d' ' -f1 "/proc/$1/schedstat")
        t1=$(date +%s%N)
        echo $(((b - a) * 100 / (t1 - t0)))
    }

    say "a background job: $(( $(nproc) * 2 )) un-hinted CPU hogs on $(nproc) CPUs"
    local hogs=()
    for _ in $(seq $(( $(nproc) * 2 ))); do
        sh -c 'while :; do :; done' &
        hogs+=($!)
    done
    sh -c 'while :; do :; done' &
    local trainer=$!
    say "a 'trainer' thread, no hint yet: $(share "$trainer" 3)% of a CPU over 3 s"
    "$bin" set --tid "$trainer" --phase backward
    say "the same thread hinted backward: $(share "$trainer" 3)% of a CPU over 3 s (each hog: $(share "${hogs[0]}" 2)%)"

    local node=0
    [ -d /sys/devices/system/node/node1 ] && node=1
    sh -c 'while :; do :; done' &
    local dataloader=$!
    "$bin" set --tid "$dataloader" --phase data_loading --node "$node"
    sleep 0.3
    local cpus="" i
    for i in $(seq 20); do
        cpus="$cpus $(awk '{print $39}' "/proc/$dataloader/stat")"
        sleep 0.05
    done
    say "a data loader hinted node $node ran on CPUs:$cpus (node $node: CPUs $(cat /sys/devices/system/node/node$node/cpulist))"

    say "bpftool map dump pinned /sys/fs/bpf/scx_phase/phase_map (root's tid map; BTF names the fields)"
    bpftool map dump pinned /sys/fs/bpf/scx_phase/phase_map

    say "per-phase stats, from another process: scx_phase --monitor 2"
    # Under TCG among hogs, starting the monitor alone takes 0.5-1.5 s.
    timeout -s INT 5.5 "$bin" --monitor 2 || true
    # Under TCG, a container started beside boosted spinners can lose its
    # runtime to a failed page-in over 9p; the hogs stay.
    kill "$trainer" "$dataloader" 2>/dev/null || true

    container_demo
    claim_demo "$node" "${hogs[@]}"
    kill "${hogs[@]}" 2>/dev/null || true

    say "Ctrl-C to the loader"
    t0=$(date +%s%N)
    kill -INT "$sched"
    while [ "$(cat /sys/kernel/sched_ext/state)" != disabled ]; do sleep 0.005; done
    t1=$(date +%s%N)
    wait "$sched"
    say "detached in $(((t1 - t0) / 1000000)) ms; loader exit code $?; state $(cat /sys/kernel/sched_ext/state)"

    side_by_side
}

# A container with podman's default seccomp profile, its own PID namespace,
# no capability and only the hint socket's folder mounted boosts its own
# thread with a plain store; another tenant's container is refused.
container_demo() {
    local r=/tmp/demo-rootfs d
    mkdir -p "$r"/{usr,etc,proc,sys,dev,tmp,run}
    mountpoint -q "$r/usr" || mount --bind -o ro /usr "$r/usr"
    for d in bin lib lib64 sbin; do ln -sfn "usr/$d" "$r/$d"; done
    cp /etc/passwd /etc/group /etc/ld.so.cache /etc/nsswitch.conf "$r/etc/"
    local pod=(podman --root /tmp/demo-podman --runroot /run/demo-podman --storage-driver vfs
               --cgroup-manager cgroupfs --events-backend none run --rm --network none
               -v /run/scx_phase:/run/scx_phase -v "$root:$root:ro"
               -e PYTHONPATH="$root/python" -e SCX_PHASE_LIB="$root/target/release/libscx_phase.so")
    local code='import os, threading, scx_phase
s = open("/proc/self/status").read().split("Seccomp:")[1].split()[0]
print("   inside: pid", os.getpid(), "tid", threading.get_native_id(), "uid", os.getuid(), "seccomp mode", s, flush=True)
scx_phase.set_phase("backward")
while True: pass'
    say "a container (podman, default seccomp, own PID namespace, uid 4243 in group 4242) hints itself backward and spins"
    "${pod[@]}" --user 4243:4243 --group-add 4242 --rootfs "$r" /usr/bin/python3 -c "$code" demo-tenant-a &
    local ctr=$! pid="" i p
    for i in $(seq 150); do
        for p in $(pgrep -f demo-tenant-a || true); do
            [ "$(cat "/proc/$p/comm" 2>/dev/null)" = python3 ] && pid=$p
        done
        [ -n "$pid" ] && break
        sleep 0.2
    done
    [ -n "$pid" ] || { echo "demo: the container did not start" >&2; return 1; }
    # Python imports the package first; measure once the hint is there.
    for i in $(seq 150); do
        "$bin" get --tid "$pid" 2>/dev/null | grep -q backward && break
        sleep 0.2
    done
    say "the container's thread (host pid $pid): $(share "$pid" 3)% of a CPU over 3 s among the hogs"
    say "scx_phase dump: every hint, where it comes from (tid map, thread slot, name, process) and whose it is"
    "$bin" dump
    say "another tenant's container (uid 5000, not in the group) tries the same:"
    { "${pod[@]}" --user 5000:5000 --rootfs "$r" /usr/bin/python3 -c "import scx_phase; scx_phase.set_phase('backward')" 2>&1 || true; } |
        tail -n 1 | sed 's/^/   /'
    # The container's init: only SIGKILL reaches it from outside.
    kill -KILL "$pid" 2>/dev/null || true
    wait "$ctr" 2>/dev/null || true
}

# A training job (Python, the workload API) claims node $1's CPUs
# exclusively among the hogs ($2...): where the hogs run before and after,
# the operator's view, and the release when the job is killed.
claim_demo() {
    local node=$1; shift
    local hogs=("$@") cpus n job i t0 t1
    cpus=$(cat "/sys/devices/system/node/node$node/cpulist")
    n=$(ls -d /sys/devices/system/node/node"$node"/cpu[0-9]* | wc -l)
    # Of 20 samples of every hog, how many found it on node $node. Bash
    # builtins only: under TCG among the hogs, every fork costs.
    on_node() {
        local hits=0 all=0 h f
        for _ in {1..20}; do
            for h in "${hogs[@]}"; do
                read -r -a f <"/proc/$h/stat" 2>/dev/null || continue
                all=$((all + 1))
                [ -d "/sys/devices/system/node/node$node/cpu${f[38]}" ] && hits=$((hits + 1))
            done
            sleep 0.05
        done
        echo "$hits of $all"
    }
    # Whether the service lists an exclusive claim (its status file).
    claimed() {
        local t=""
        IFS= read -r t </run/scx_phase/workloads.json || true
        [[ $t == *'"exclusive":true'* ]]
    }
    say "hog samples on node $node (CPUs $cpus) before any claim: $(on_node)"
    say "a training job claims node $node's $n CPU(s) exclusively, with a 64 MiB locked checkpoint buffer"
    SCX_PHASE_LIB="$root/target/release/libscx_phase.so" PYTHONPATH="$root/python" /usr/bin/python3 -c "
import scx_phase
w = scx_phase.Workload(cpus=$n, node=$node, exclusive=True, locked_memory='64MiB')
buf = w.checkpoint_buffer('64MiB')
print('   the job holds CPUs', w.cpus, 'on node', w.node, 'and', len(buf) >> 20, 'MiB of locked memory', flush=True)
while True: pass" &
    # Out of the job table: bash would print "Killed" when it reaps it.
    job=$!
    disown "$job"
    for i in {1..100}; do
        claimed && break
        sleep 0.1
    done
    sleep 0.5
    say "hog samples on node $node while the job holds it: $(on_node)"
    say "scx_phase workloads: what each job holds, and its CPU time per phase"
    "$bin" workloads
    t0=$(date +%s%N)
    kill -KILL "$job"
    while claimed; do sleep 0.01; done
    t1=$(date +%s%N)
    say "kill -9 of the job: its claim gone from the service's list $(((t1 - t0) / 1000000)) ms later (refreshed every 0.1 s); hog samples on node $node: $(on_node)"
}

# The point in one table: phase-bench's training step among noisy
# neighbours (2 hogs per CPU and an fsync loop), on EEVDF and on scx_phase.
# One run of each; scripts/bench.sh does it properly, repeated.
side_by_side() {
    local bench="$root/target/release/phase-bench" secs=8 eevdf phase sched
    local args=(--duration-s "$secs" --dir /tmp --json --hogs $(( $(nproc) * 2 )) --io-writer)
    say "side by side: a training step (phase-bench) among $(( $(nproc) * 2 )) hogs and an fsync loop, ${secs} s each"
    eevdf=$("$bench" "${args[@]}" | tail -n 1)
    "$bin" >/dev/null 2>&1 &
    sched=$!
    wait_attached "$sched"
    phase=$("$bench" "${args[@]}" | tail -n 1)
    kill -INT "$sched"
    wait "$sched" || true
    jq -rn --argjson e "$eevdf" --argjson p "$phase" '
        def row(n; r): "\(n)\t\(r.step_ms_p50 * 10 | round / 10)\t\(r.step_ms_p99 | round)\t\(r.samples_per_s | round)\t\(r.hog_work_per_s | round)";
        "scheduler\tstep p50 ms\tstep p99 ms\tsamples/s\thog work ms/s",
        row("EEVDF"; $e), row("scx_phase"; $p),
        "",
        "step p50: scx_phase is \($e.step_ms_p50 / $p.step_ms_p50 * 100 | round / 100)x faster than EEVDF"' |
        awk -F'\t' 'NF > 1 { printf "%-10s %12s %12s %10s %14s\n", $1, $2, $3, $4, $5; next } { print }'
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
