#!/usr/bin/env bash
# The benchmark: phase-bench's training step under contention, side by side
# on EEVDF, EEVDF with the job at nice -10, scx_phase (with and without
# hints, with an exclusive or a preferred CPU claim, among CPU hogs or
# memory streamers) and the general
# sched_ext schedulers scx_bpfland, scx_lavd and scx_cosmos; plus the cost
# to un-hinted work (perf bench sched messaging) and the cost of one
# set_phase call.
#
#   scripts/bench.sh [--quick] [--reps N] [--duration SECS] [--cpus N]
#                    [--nodes K] [--kernel newest|oldest|6.12] [--report]
#   scripts/bench.sh --overload [--reps N] [--shape small|wide|oom|threads]...
#   scripts/bench.sh --work [--sizes "2 4 16 64"]
#   scripts/bench.sh --ranks [--reps N] [--duration SECS]
#
#   --quick       one repetition of 3 s runs, no peers (about 3 minutes):
#                 proves the bench runs and yields every field
#   --reps N      repetitions of every configuration (default 3)
#   --duration S  seconds per run (default 10)
#   --cpus N      vCPUs of the VM (default 4), --nodes K its NUMA nodes (2)
#   --kernel K    the VM's kernel, as scripts/vm.sh --kernel (default newest)
#   --report      also write docs/bench/RESULTS.md and its chart (with the
#                 hand-written docs/bench/notes.md appended)
#
#   --overload    the overload benchmark instead (docs/policy.md): perf
#                 bench sched messaging at 640, 2,560 and 10,240 tasks on 4
#                 vCPUs, 2,560 on 16 vCPUs in 2 nodes, and 2,560 in 2 GiB
#                 (the OOM killer ends some), under EEVDF, scx_phase,
#                 scx_bpfland and scx_cosmos; each run's time, runnable
#                 waits (runq-waits: p99, worst) and whether the kernel
#                 ejected the scheduler. Three boots, 15 minutes in the
#                 VM with --reps 1 (the default here; measured 2026-12-06);
#                 with --quick, 640 tasks on 4 vCPUs only (about 1 minute
#                 in the VM); --shape runs only the shapes named
#                 (threads, only when named: small's 10,240 threads alone,
#                 for repetitions of its noisy figure).
#                 target/bench/overload/.
#
#   --work        the work counters by host size: scx_phase's configurations
#                 of the quick benchmark (d, g_phase, h: hogs, self-contention,
#                 an exclusive claim) and messaging, 3 s each, in one boot
#                 per size (2 vCPUs in 1 node, 4 and 16 in 2, 64 in 4); per
#                 callback, the mean and the most CPUs and queues one call
#                 looked at (exact counts, so short runs do). About 12
#                 minutes; --sizes picks vCPU counts. target/bench/work/.
#
#   --ranks       the 8-rank node benchmark: phase-bench --ranks 8 (a
#                 trainer and 2 loaders per rank, the loaders on the
#                 rank's node, a barrier across ranks every step; docs/bench/ranks.md) on 16 vCPUs in 2 nodes,
#                 ranks 0-3 on node 0 and 4-7 on node 1. Alone, then among
#                 2 hogs per vCPU and a bursty neighbour (tar | zstd, with
#                 pauses) under EEVDF, scx_phase, scx_bpfland and
#                 scx_cosmos, interleaved, in one boot. --reps 2 and
#                 --duration 10 by default; about 5 minutes (--duration
#                 20: 4.7 minutes measured, 2026-12-07).
#                 target/bench/ranks/ (table.md, steps.png).
#
# Every configuration runs in one VM boot, interleaved: each repetition
# visits them all, starting one further along the list each time. Results
# go to target/bench/results.json (target/bench/quick/ with --quick).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
quick=0 reps=3 duration=10 cpus=4 nodes=2 report=0 overload=0 reps_set=0 shapes="" vm_kernel=newest
work=0 sizes="2 4 16 64" ranks=0
peers=(scx_bpfland scx_lavd scx_cosmos)
# The overload benchmark's peers: the general-purpose ones.
overload_peers=(scx_bpfland scx_cosmos)
die() { echo "bench: $*" >&2; exit 1; }

# ---------------------------------------------------------------- in the VM
# A scheduler named by $1 ("eevdf", "scx_phase", a peer) with options $2
# on; on failure, status 1 and the reason in $sched_err. Not to be called
# in a subshell: sched_stop needs $sched_pid.
sched_pid="" sched_err=""
sched_start() {
    local name=$1 bin log=/tmp/bench-sched.log opts=() i
    read -ra opts <<<"${2:-}"
    sched_pid="" sched_err=""
    [ "$(cat /sys/kernel/sched_ext/state)" = disabled ] ||
        { sched_err="a scheduler is still attached: $(cat /sys/kernel/sched_ext/root/ops)"; return 1; }
    [ "$name" = eevdf ] && return 0
    case "$name" in
        scx_phase) bin="$root/target/release/scx_phase" ;;
        *) bin="$root/.cache/peers/bin/$name" ;;
    esac
    [ -x "$bin" ] || { sched_err="not installed ($(tail -n 1 "$root/.cache/peers/$name.err" 2>/dev/null || echo no binary))"; return 1; }
    "$bin" "${opts[@]}" >"$log" 2>&1 &
    sched_pid=$!
    for i in $(seq 600); do
        [ "$(cat /sys/kernel/sched_ext/state)" = enabled ] && { sleep 0.5; return 0; }
        kill -0 "$sched_pid" 2>/dev/null || break
        sleep 0.05
    done
    kill -INT "$sched_pid" 2>/dev/null || true
    wait "$sched_pid" 2>/dev/null || true
    sched_pid=""
    sched_err="did not attach: $(grep -v '^\s*$' "$log" | tail -n 2 | tr '\n' ' ')"
    return 1
}

# What runs the CPUs now: "eevdf" or the sched_ext scheduler's name.
attached() {
    if [ "$(cat /sys/kernel/sched_ext/state)" = enabled ]; then
        cat /sys/kernel/sched_ext/root/ops
    else
        echo eevdf
    fi
}

sched_stop() {
    [ -n "$sched_pid" ] || return 0
    kill -INT "$sched_pid" 2>/dev/null || true
    wait "$sched_pid" 2>/dev/null || true
    sched_pid=""
    local i
    for i in $(seq 200); do
        [ "$(cat /sys/kernel/sched_ext/state)" = disabled ] && return 0
        sleep 0.05
    done
    echo "bench: scheduler did not detach" >&2
    return 1
}

# One configuration: its scheduler and phase-bench's arguments.
config_sched() {
    case "$1" in
        a|b|c|g_eevdf) echo eevdf ;;
        d|e|g_phase|i|j) echo scx_phase ;;
        # The loader node's 2 CPUs, all of them, to one job.
        h|k) echo "scx_phase --max-exclusive-pct 100" ;;
        g_spill) echo "scx_phase --numa-spill-us 2000" ;;
        f_*) echo "${1#f_}" ;;
    esac
}

# The job: 2 compute threads (trainer + 1 intra-op helper), 2 loaders whose
# data lives on node 1, a checkpoint every 10 steps. The background: 2 hogs
# per vCPU and an fsync loop, in their own process at nice 0.
job_args() {
    local hogs=$(( $(nproc) * 2 ))
    local job=(--duration-s "$duration" --dir /tmp --json --loader-node "$(( nodes - 1 ))")
    local bg=(--hogs "$hogs" --io-writer)
    case "$1" in
        a) echo "${job[*]}" ;;
        b|d|f_*) echo "${job[*]} ${bg[*]}" ;;
        c) echo "${job[*]} ${bg[*]} --background-nice 0" ;;
        e) echo "${job[*]} ${bg[*]} --no-hints" ;;
        # (d) with the job holding the loader node's CPUs through the
        # workload API: all to itself, or first in line.
        h) echo "${job[*]} ${bg[*]} --claim-cpus $(( $(nproc) / nodes )) --exclusive" ;;
        i) echo "${job[*]} ${bg[*]} --claim-cpus $(( $(nproc) / nodes ))" ;;
        # (d) and (h) with neighbours that stream memory in place of the
        # hogs (as many, each sweeping 32 MiB): caches and memory
        # bandwidth taken, not just CPU time.
        j) echo "${job[*]} --streamers $hogs --io-writer" ;;
        k) echo "${job[*]} --streamers $hogs --io-writer --claim-cpus $(( $(nproc) / nodes )) --exclusive" ;;
        # Self-contention: 4 compute threads and 6 loaders with 4x the
        # per-batch data work want more CPU than the VM has.
        g_*) echo "${job[*]} --helpers $(( $(nproc) - 1 )) --loaders 6 --batch 8 --sample-ms 3" ;;
    esac
}

run_one() {
    local config=$1 rep=$2 out=$3 sched args line stats=null ran
    sched=$(config_sched "$config")
    local opts=""
    [ "$sched" != "${sched%% *}" ] && { opts=${sched#* }; sched=${sched%% *}; }
    if ! sched_start "$sched" "$opts"; then
        jq -cn --arg c "$config" --arg s "$sched" --argjson r "$rep" --arg e "$sched_err" \
            '{config: $c, scheduler: $s, rep: $r, ok: false, error: $e}' >>"$out"
        echo "  $config ($sched): $sched_err"
        return 0
    fi
    read -ra args <<<"$(job_args "$config")"
    local cmd=("$root/target/release/phase-bench" "${args[@]}")
    [ "$config" = c ] && cmd=(nice -n -10 "${cmd[@]}")
    local mon=""
    if [ "$sched" = scx_phase ]; then
        # Where the time goes: the scheduler's per-phase stats over the run.
        # Its first line covers the run, less the monitor's own start-up,
        # which takes a second or more among the hogs under TCG.
        : >/tmp/bench-mon.json
        "$root/target/release/scx_phase" --monitor "$(( duration > 3 ? duration - 2 : 1 ))" --json >/tmp/bench-mon.json 2>/dev/null &
        mon=$!
    fi
    line=$("${cmd[@]}" | tail -n 1) || line=""
    ran=$(attached)
    if [ -n "$mon" ]; then
        # A monitor still starting when the job ends gets 3 s to print.
        for _ in $(seq 60); do
            [ -s /tmp/bench-mon.json ] && break
            sleep 0.05
        done
        kill "$mon" 2>/dev/null || true
        wait "$mon" 2>/dev/null || true
        stats=$(head -n 1 /tmp/bench-mon.json 2>/dev/null | jq -c . 2>/dev/null || echo null)
        [ -n "$stats" ] || stats=null
    fi
    sched_stop
    if ! jq -e . >/dev/null 2>&1 <<<"$line"; then
        jq -cn --arg c "$config" --arg s "$sched" --argjson r "$rep" --arg e "phase-bench printed no result: ${line:0:200}" \
            '{config: $c, scheduler: $s, rep: $r, ok: false, error: $e}' >>"$out"
        echo "  $config ($sched): phase-bench failed"
        return 0
    fi
    jq -cn --arg c "$config" --arg s "$sched${opts:+ $opts}" --arg ran "$ran" --argjson r "$rep" --argjson res "$line" --argjson st "$stats" \
        '{config: $c, scheduler: $s, attached: $ran, rep: $r, ok: true, result: $res, stats: $st}' >>"$out"
    jq -r --arg c "$config" '"  \($c): step p50 \(.step_ms_p50 | . * 10 | round / 10) ms, p99 \(.step_ms_p99 | round) ms, \(.samples_per_s | round) samples/s"' <<<"$line"
}

# perf bench sched messaging: un-hinted wake-up-heavy work, seconds.
run_messaging() {
    local sched=$1 rep=$2 out=$3 secs ran
    if ! sched_start "$sched"; then
        jq -cn --arg s "$sched" --argjson r "$rep" --arg e "$sched_err" \
            '{config: "messaging", scheduler: $s, rep: $r, ok: false, error: $e}' >>"$out"
        return 0
    fi
    secs=$(perf bench sched messaging -g 4 -l 50 2>&1 | awk '/Total time/ {print $3}')
    ran=$(attached)
    sched_stop
    if [ -z "$secs" ]; then
        jq -cn --arg s "$sched" --argjson r "$rep" \
            '{config: "messaging", scheduler: $s, rep: $r, ok: false, error: "perf printed no total"}' >>"$out"
        return 0
    fi
    jq -cn --arg s "$sched" --arg ran "$ran" --argjson r "$rep" --argjson t "$secs" \
        '{config: "messaging", scheduler: $s, attached: $ran, rep: $r, ok: true, result: {seconds: $t}}' >>"$out"
    echo "  messaging ($sched): $secs s"
}

inside() {
    local out=$1 configs=(a b c d e g_eevdf g_phase g_spill h i j k) n rep i k
    [ "$(cat /sys/kernel/sched_ext/state)" = disabled ] || die "a sched_ext scheduler is already attached"
    [ "$quick" -eq 1 ] || configs+=("${peers[@]/#/f_}")
    : >"$out"
    n=${#configs[@]}
    for rep in $(seq "$reps"); do
        echo "repetition $rep of $reps"
        for i in $(seq 0 $(( n - 1 ))); do
            k=$(( (i + rep - 1) % n ))
            run_one "${configs[$k]}" "$rep" "$out"
        done
        # Three alternating pairs a repetition: its spread is wide here.
        for _ in 1 2 3; do
            run_messaging eevdf "$rep" "$out"
            run_messaging scx_phase "$rep" "$out"
        done
    done
}

# ------------------------------------------------------------ work, in the VM
# The work counters of one scx_phase run: what --monitor reports since the
# scheduler started (its totals and maxima), read just before it stops.
work_counters() {
    local line
    line=$(timeout 20 "$root/target/release/scx_phase" --monitor 0.2 --json 2>/dev/null | head -n 1) || true
    jq -c '.work' <<<"$line" 2>/dev/null || echo null
}

# scx_phase's configurations of the quick benchmark, then messaging; into $1.
work_inside() {
    local out=$1 config opts args w
    [ "$(cat /sys/kernel/sched_ext/state)" = disabled ] || die "a sched_ext scheduler is already attached"
    # job_args puts the loaders' data on the last node.
    nodes=$(find /sys/devices/system/node -maxdepth 1 -name 'node[0-9]*' | wc -l)
    echo "work counters: $(nproc) vCPUs in $nodes node(s)"
    for config in d g_phase h messaging; do
        opts=""
        [ "$config" = h ] && opts="--max-exclusive-pct 100"
        if ! sched_start scx_phase "$opts"; then
            echo "  $config: $sched_err"
            jq -cn --arg c "$config" --argjson v "$(nproc)" --arg e "$sched_err" \
                '{config: $c, vcpus: $v, ok: false, error: $e}' >>"$out"
            continue
        fi
        if [ "$config" = messaging ]; then
            perf bench sched messaging -g 4 -l 50 >/dev/null 2>&1 || true
        else
            read -ra args <<<"$(job_args "$config")"
            "$root/target/release/phase-bench" "${args[@]}" >/dev/null 2>&1 || true
        fi
        w=$(work_counters)
        sched_stop
        jq -cn --arg c "$config" --argjson v "$(nproc)" --argjson w "$w" \
            '{config: $c, vcpus: $v, ok: ($w != null), work: $w}' >>"$out"
        jq -r --arg c "$config" '"  \($c): " + ([.[]? | select(.calls > 0) |
            "\(.callback) \(.cpus / .calls * 100 | round / 100)/\(.cpus_max) cpus"] | join(", "))' <<<"$w"
    done
}

# ------------------------------------------------------------ ranks, in the VM
# The bursty neighbour: a compressed tarball of the system's libraries, made
# over and over with a second's pause between, as a log shipper or a
# checkpoint compressor does; its pid in $bursty_pid.
bursty_pid=""
bursty_start() {
    setsid bash -c 'while :; do tar -cf - /usr/lib/x86_64-linux-gnu 2>/dev/null | zstd -q -1 >/dev/null; sleep 1; done' &
    bursty_pid=$!
}
bursty_stop() {
    [ -n "$bursty_pid" ] || return 0
    kill -- -"$bursty_pid" 2>/dev/null || true
    wait "$bursty_pid" 2>/dev/null || true
    bursty_pid=""
}

# One run of 8 ranks: "alone" (no neighbours, EEVDF) or "loaded" under
# scheduler $2; repetition $3, into $4.
ranks_one() {
    local config=$1 sched=$2 rep=$3 out=$4 line ran ejected=false
    # A GPU rank's CPU side: its trainer thread (the GPU computes) and its
    # loaders; no intra-op helpers, which belong to training on the CPU.
    # The first 5 s are not counted: under this load a thread's first hint
    # call took up to 1.75 s, and loaders ran un-hinted for up to 6 s after
    # they started (docs/bench/ranks.md); a job of hours never sees it.
    local args=(--ranks 8 --helpers 0 --warmup-s 5 --duration-s "$duration" --dir /tmp --json)
    if ! sched_start "$sched"; then
        jq -cn --arg c "$config" --arg s "$sched" --argjson r "$rep" --arg e "$sched_err" \
            '{config: $c, scheduler: $s, rep: $r, ok: false, error: $e}' >>"$out"
        echo "  $config ($sched): $sched_err"
        return 0
    fi
    if [ "$config" = loaded ]; then
        args+=(--hogs $(( $(nproc) * 2 )))
        bursty_start
    fi
    line=$("$root/target/release/phase-bench" "${args[@]}" 2>/dev/null | tail -n 1) || line=""
    ran=$(attached)
    bursty_stop
    [ "$sched" != eevdf ] && [ "$ran" = eevdf ] && ejected=true
    sched_stop || true
    if ! jq -e .step_ms_p50 >/dev/null 2>&1 <<<"$line"; then
        jq -cn --arg c "$config" --arg s "$sched" --argjson r "$rep" --argjson ej "$ejected" \
            --arg e "phase-bench printed no result: ${line:0:200}" \
            '{config: $c, scheduler: $s, rep: $r, ok: false, ejected: $ej, error: $e}' >>"$out"
        echo "  $config ($sched): phase-bench failed"
        return 0
    fi
    jq -cn --arg c "$config" --arg s "$sched" --arg ran "$ran" --argjson r "$rep" --argjson ej "$ejected" \
        --argjson res "$line" \
        '{config: $c, scheduler: $s, attached: $ran, rep: $r, ok: true, ejected: $ej, result: $res}' >>"$out"
    jq -r --arg c "$config" --arg s "$sched" '"  \($c) (\($s)): step p50 \(.step_ms_p50 | round) ms, p99 \(.step_ms_p99 | round) ms, straggler p50 \(.straggler_ms_p50 | round) ms, at the barrier \(.barrier_wait_pct | round)%, loaders on node \(.loader_local_pct | . * 10 | round / 10)%"' <<<"$line"
}

ranks_inside() {
    local out=$1 scheds=(eevdf scx_phase "${overload_peers[@]}") rep i n
    [ "$(cat /sys/kernel/sched_ext/state)" = disabled ] || die "a sched_ext scheduler is already attached"
    n=${#scheds[@]}
    echo "ranks: $(nproc) vCPUs"
    for rep in $(seq "$reps"); do
        echo "repetition $rep of $reps"
        ranks_one alone eevdf "$rep" "$out"
        for i in $(seq 0 $(( n - 1 ))); do
            ranks_one loaded "${scheds[$(( (i + rep - 1) % n ))]}" "$rep" "$out"
        done
    done
}

# ---------------------------------------------------------- overload, in the VM
# The loads of each VM shape: "name|perf bench sched messaging options".
# 10,240 tasks are threads (-t), as many processes need 36 GiB, and run 5
# loops, not 20, to keep the benchmark inside 40 minutes.
overload_loads() {
    case "$1" in
        small) printf '%s\n' "640|-g 16 -l 20" "2560|-g 64 -l 20" "10240|-t -g 256 -l 5" ;;
        threads) printf '%s\n' "10240|-t -g 256 -l 5" ;;
        wide|oom) printf '%s\n' "2560|-g 64 -l 20" ;;
        quick) printf '%s\n' "640|-g 16 -l 10" ;;
    esac
}

# One overload run: scheduler $1, load $2 ("name|options"), repetition $3,
# into $4; the VM shape's name is in $shape.
overload_one() {
    local sched=$1 name=${2%%|*} opts=${2#*|} rep=$3 out=$4 before all line ptime ran ejected=false why=""
    local perf=() stalls
    read -ra perf <<<"$opts"
    if ! sched_start "$sched"; then
        jq -cn --arg sh "$shape" --arg l "$name" --arg s "$sched" --argjson r "$rep" --arg e "$sched_err" \
            '{shape: $sh, load: $l, scheduler: $s, rep: $r, ok: false, error: $e}' >>"$out"
        echo "  $name tasks ($sched): $sched_err"
        return 0
    fi
    before=$(dmesg | wc -l)
    # perf's own "Total time" runs from the start signal to the last
    # reaped task; runq-waits' seconds add creating and reaping them.
    all=$(timeout 600 "$root/target/release/runq-waits" --json -- \
        perf bench sched messaging "${perf[@]}" 2>/dev/null) || true
    line=$(tail -n 1 <<<"$all")
    ptime=$(grep -m 1 'Total time' <<<"$all" | grep -oE '[0-9]+\.[0-9]+' | head -n 1 || true)
    ran=$(attached)
    # The kernel's word on an ejection: "sched_ext: BPF scheduler "..."
    # disabled (<reason>)", any reason but the user's own unloading.
    why=$(dmesg | tail -n +"$(( before + 1 ))" | grep -E 'sched_ext: .*disabled \(' |
        grep -v 'unregistered from user space' | head -n 1 | cut -c1-200 || true)
    stalls=$(dmesg | tail -n +"$(( before + 1 ))" | grep -c 'rcu: INFO: .* detected stalls' || true)
    if [ "$sched" != eevdf ] && { [ -n "$why" ] || [ "$ran" = eevdf ]; }; then
        ejected=true
        [ -n "$why" ] || why="detached during the run"
    fi
    sched_stop || true
    if ! jq -e .max_us >/dev/null 2>&1 <<<"$line"; then
        jq -cn --arg sh "$shape" --arg l "$name" --arg s "$sched" --argjson r "$rep" \
            --argjson ej "$ejected" --arg why "$why" --arg e "runq-waits printed no result (timed out after 600 s?)" \
            '{shape: $sh, load: $l, scheduler: $s, rep: $r, ok: false, ejected: $ej, why: $why, error: $e}' >>"$out"
        echo "  $name tasks ($sched): no result"
        return 0
    fi
    jq -cn --arg sh "$shape" --arg l "$name" --arg s "$sched" --argjson r "$rep" --argjson res "$line" \
        --argjson ej "$ejected" --arg why "$why" --argjson st "$stalls" --arg pt "$ptime" \
        '{shape: $sh, load: $l, scheduler: $s, rep: $r, ok: true, ejected: $ej, why: $why,
          rcu_stalls: $st, perf_seconds: ($pt | tonumber? // null), result: $res}' >>"$out"
    jq -r --arg l "$name" --arg s "$sched" --arg ej "$ejected" --arg pt "${ptime:-?}" \
        '"  \($l) tasks (\($s)): \(.seconds * 10 | round / 10) s (messaging \($pt) s), waits p99 \(.p99_us / 1000 | round) ms, worst \(.max_us / 1000 | round) ms, status \(.status), ejected \($ej)"' <<<"$line"
}

# Every load of VM shape $1, under every scheduler, interleaved; into $2.
overload_inside() {
    shape=$1
    local out=$2 scheds=(eevdf scx_phase "${overload_peers[@]}") load loads rep i n
    [ "$(cat /sys/kernel/sched_ext/state)" = disabled ] || die "a sched_ext scheduler is already attached"
    # 10,240 threads in one process hold 20,480 socket fds.
    ulimit -n 65536
    n=${#scheds[@]}
    echo "overload, $shape: $(nproc) vCPUs, $(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 )) MiB"
    # A here-string, not <(...): the VM has no /dev/fd.
    loads=$(overload_loads "$shape")
    for rep in $(seq "$reps"); do
        while read -r load; do
            for i in $(seq 0 $(( n - 1 ))); do
                overload_one "${scheds[$(( (i + rep - 1) % n ))]}" "$load" "$rep" "$out"
            done
        done <<<"$loads"
    done
}

# ---------------------------------------------------------------- on the host
# Install the peers from crates.io once, into .cache/peers; a failure is
# recorded in .cache/peers/<name>.err and reported, not fatal.
install_peers() {
    local p
    mkdir -p .cache/peers
    for p in "$@"; do
        [ -x ".cache/peers/bin/$p" ] && continue
        echo "bench: cargo install $p (once; cached in .cache/peers)"
        if BPF_CLANG=clang-19 CARGO_TARGET_DIR="$root/.cache/peers/target" \
            cargo install --locked --quiet --root .cache/peers "$p" >".cache/peers/$p.log" 2>&1; then
            rm -f ".cache/peers/$p.err"
        else
            grep -m 3 -E '^error' ".cache/peers/$p.log" >".cache/peers/$p.err" || tail -n 3 ".cache/peers/$p.log" >".cache/peers/$p.err"
            echo "bench: $p did not build: $(head -n 1 ".cache/peers/$p.err")" >&2
        fi
    done
}

# The work counters: one boot per size, then the table and its chart.
work_host() {
    local out=target/bench/work t0 kernel size nodes rc=0
    duration=3
    scripts/setup.sh
    cargo build --release --quiet
    kernel=$(cat "$(scripts/vm-kernel.sh "$vm_kernel")/version")
    mkdir -p "$out"
    : >"$out/runs.jsonl"
    t0=$(date +%s)
    for size in $sizes; do
        nodes=2
        [ "$size" -le 2 ] && nodes=1
        [ "$size" -ge 64 ] && nodes=4
        echo "bench: work counters, $size vCPUs in $nodes node(s) ($kernel)"
        # 64 vCPUs on 2 host cores take minutes to reach userspace.
        scripts/vm.sh --kernel "$vm_kernel" --cpus "$size" --nodes "$nodes" --mem $(( 2048 + 64 * size )) \
            --boot-timeout $(( 30 + 4 * size )) --timeout 1800 -- \
            "$0" --duration 3 --inside-work "$root/$out/runs.jsonl" || rc=$?
        [ "$rc" -eq 0 ] || echo "bench: the $size-vCPU VM exited with $rc" >&2
    done
    python3 scripts/bench-work-report.py "$out/runs.jsonl" --chart "$out/work.png" \
        --meta "$(jq -cn --arg k "$kernel" --argjson secs "$(( $(date +%s) - t0 ))" \
            --arg commit "$(git rev-parse --short HEAD 2>/dev/null || echo unknown)" \
            '{kernel: $k, seconds: $secs, commit: $commit}')" | tee "$out/table.md"
    return "$rc"
}

# The 8-rank node benchmark: one boot, then the table and its chart.
ranks_host() {
    local out=target/bench/ranks t0 kernel rc=0
    [ "$reps_set" -eq 1 ] || reps=2
    scripts/setup.sh
    cargo build --release --quiet
    install_peers "${overload_peers[@]}"
    kernel=$(cat "$(scripts/vm-kernel.sh "$vm_kernel")/version")
    mkdir -p "$out"
    : >"$out/runs.jsonl"
    t0=$(date +%s)
    echo "bench: 8 ranks, 16 vCPUs in 2 nodes ($kernel), $reps repetition(s) of $duration s"
    scripts/vm.sh --kernel "$vm_kernel" --cpus 16 --nodes 2 --mem 6144 --boot-timeout 100 --timeout 2400 -- \
        "$0" --reps "$reps" --duration "$duration" --inside-ranks "$root/$out/runs.jsonl" || rc=$?
    [ "$rc" -eq 0 ] || echo "bench: the VM exited with $rc" >&2
    python3 scripts/bench-ranks-report.py "$out/runs.jsonl" --chart "$out/steps.png" \
        --meta "$(jq -cn --arg k "$kernel" --argjson secs "$(( $(date +%s) - t0 ))" \
            --arg commit "$(git rev-parse --short HEAD 2>/dev/null || echo unknown)" \
            --argjson reps "$reps" --argjson dur "$duration" \
            '{kernel: $k, seconds: $secs, commit: $commit, vcpus: 16, nodes: 2, reps: $reps, duration: $dur}')" |
        tee "$out/table.md"
    return "$rc"
}

# The overload benchmark: three VM boots, one per shape, then the table.
overload_host() {
    local out=target/bench/overload t0 kernel shape cpus mem nodes rc=0
    # --reps counts here too; its default is 1, for the time budget.
    [ "$reps_set" -eq 1 ] || reps=1
    scripts/setup.sh
    cargo build --release --quiet
    install_peers "${overload_peers[@]}"
    kernel=$(cat "$(scripts/vm-kernel.sh "$vm_kernel")/version")
    mkdir -p "$out"
    : >"$out/runs.jsonl"
    t0=$(date +%s)
    # shape cpus nodes MiB: 12 GiB holds 2,560 messaging processes (3.5
    # MiB each); 2 GiB does not, and the OOM killer ends some.
    while read -r shape cpus nodes mem; do
        echo "bench: overload, $shape: $cpus vCPUs in $nodes node(s), $mem MiB ($kernel), $reps repetition(s)"
        scripts/vm.sh --kernel "$vm_kernel" --cpus "$cpus" --nodes "$nodes" --mem "$mem" --timeout 1800 -- \
            "$0" --reps "$reps" --inside-overload "$shape" "$root/$out/runs.jsonl" || rc=$?
        [ "$rc" -eq 0 ] || echo "bench: the $shape VM exited with $rc" >&2
    done < <(if [ "$quick" -eq 1 ]; then
                 echo "quick 4 1 4096"
             else
                 printf '%s\n' "small 4 1 12288" "wide 16 2 12288" "oom 4 1 2048" "threads 4 1 12288" |
                     { if [ -n "$shapes" ]; then grep -E "^($shapes) "; else grep -v '^threads '; fi; }
             fi)
    python3 scripts/bench-overload-report.py "$out/runs.jsonl" \
        --meta "$(jq -cn --arg k "$kernel" --argjson secs "$(( $(date +%s) - t0 ))" \
            --arg commit "$(git rev-parse --short HEAD 2>/dev/null || echo unknown)" \
            '{kernel: $k, seconds: $secs, commit: $commit}')" | tee "$out/table.md"
    return "$rc"
}

args=("$@")
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) quick=1 reps=1 duration=3; shift ;;
        --reps) reps=$2; reps_set=1; shift 2 ;;
        --duration) duration=$2; shift 2 ;;
        --cpus) cpus=$2; shift 2 ;;
        --nodes) nodes=$2; shift 2 ;;
        --kernel) vm_kernel=$2; shift 2 ;;
        --report) report=1; shift ;;
        --overload) overload=1; shift ;;
        --work) work=1; shift ;;
        --ranks) ranks=1; shift ;;
        --sizes) [[ "${2:-}" =~ ^[0-9\ ]+$ ]] || die "--sizes takes vCPU counts, e.g. \"2 4 16 64\""
                 sizes=$2; shift 2 ;;
        --shape) [[ "${2:-}" =~ ^(small|wide|oom|threads)$ ]] || die "--shape takes small, wide, oom or threads"
                  shapes=${shapes:+$shapes|}$2; shift 2 ;;
        --inside) shift; inside "$1"; exit 0 ;;
        --inside-overload) overload_inside "$2" "$3"; exit 0 ;;
        --inside-work) work_inside "$2"; exit 0 ;;
        --inside-ranks) ranks_inside "$2"; exit 0 ;;
        -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
        *) die "unknown option $1 (try --help)" ;;
    esac
done
[ "$reps" -ge 1 ] && [ "$duration" -ge 2 ] || die "--reps must be >= 1 and --duration >= 2"

if [ "$overload" -eq 1 ]; then
    overload_host
    exit 0
fi
if [ "$work" -eq 1 ]; then
    work_host
    exit 0
fi
if [ "$ranks" -eq 1 ]; then
    ranks_host
    exit 0
fi

scripts/setup.sh
cargo build --release --quiet
out=target/bench
[ "$quick" -eq 1 ] && out=target/bench/quick
mkdir -p "$out"
[ "$quick" -eq 1 ] || install_peers "${peers[@]}"

echo "bench: set_phase cost on this host"
cargo bench --quiet --bench set_phase | tee "$out/set_phase.txt"

kernel=$(cat "$(scripts/vm-kernel.sh "$vm_kernel")/version")
echo "bench: $reps repetition(s) of ${duration} s runs in the sched_ext VM ($kernel, $cpus vCPUs in $nodes nodes)"
t0=$(date +%s)
# A generous limit: the full run takes about 16 minutes, --quick about 2.
vm_timeout=3600
[ "$quick" -eq 1 ] && vm_timeout=900
scripts/vm.sh --kernel "$vm_kernel" --cpus "$cpus" --nodes "$nodes" --mem 4096 --timeout "$vm_timeout" -- \
    "$0" "${args[@]}" --inside "$root/$out/runs.jsonl"
meta=$(jq -cn --arg k "$kernel" --arg cpu "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')" \
    --arg cmd "scripts/bench.sh ${args[*]}" --argjson vcpus "$cpus" --argjson nodes "$nodes" \
    --argjson reps "$reps" --argjson dur "$duration" --argjson quick "$quick" \
    --argjson secs "$(( $(date +%s) - t0 ))" --arg date "$(date -u +%F)" \
    --arg commit "$(git rev-parse --short HEAD 2>/dev/null || echo unknown)" \
    '{kernel: $k, host_cpu: $cpu, command: $cmd, vcpus: $vcpus, nodes: $nodes, reps: $reps,
      duration_s: $dur, quick: ($quick == 1), vm_seconds: $secs, date: $date, commit: $commit}')
report_args=(--runs "$out/runs.jsonl" --set-phase "$out/set_phase.txt" --meta "$meta" --json "$out/results.json")
if [ "$report" -eq 1 ]; then
    mkdir -p docs/bench
    report_args+=(--markdown docs/bench/RESULTS.md --chart docs/bench/step-time.png
                  --notes docs/bench/notes.md)
fi
[ "$quick" -eq 1 ] && report_args+=(--check)
python3 scripts/bench-report.py "${report_args[@]}"
