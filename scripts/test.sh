#!/usr/bin/env bash
# The whole suite, as CI runs it: install what is missing, check format and
# lints, run the host tests, then the VM tests on a sched_ext kernel, then
# the benchmark in its quick mode.
# Needs root (apt, bpffs mounts in the host tests). A VM that cannot boot
# fails the suite.
#
#   scripts/test.sh                     the whole suite
#   scripts/test.sh --repeat N NAME...  only the VM tests NAME (exact names),
#                                       each N times in every VM the suite
#                                       gives it (tests/vm/needs.txt): finds
#                                       a flake before CI does
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
# Each step says when it started, in minutes since the suite did.
t_start=$(date +%s)
step() { printf '\n== [%d min] %s\n' $(( ($(date +%s) - t_start) / 60 )) "$*"; }

repeat=0
if [ "${1:-}" = --repeat ]; then
    repeat=${2:-}
    shift 2 || true
    [[ "$repeat" =~ ^[1-9][0-9]*$ ]] && [ $# -gt 0 ] ||
        { echo "test.sh: --repeat takes a count and one or more test names (e.g. --repeat 10 claims::NAME)" >&2; exit 2; }
fi

vm_test_binary() {
    cargo test --release --test vm --no-run --message-format=json |
        jq -r 'select(.reason == "compiler-artifact" and .target.name == "vm" and .executable != null) | .executable'
}

# What each VM test needs is tests/vm/needs.txt; scripts/vm-plan turns it
# into boots. run_boots PLAN_FILE [vm-run options]: one VM per run of
# lines with the same kernel and shape, each test a process of its own
# (scripts/vm-run); every boot goes ahead even if one fails, and each
# one's time goes to $boot_times.
failed=0
failures=()
boot_times=()
vm_log=target/test-vm.log
run_boots() {
    local plan=$1 lines=() names=() prev="" key line
    shift
    mapfile -t lines <"$plan"
    lines+=("")
    for line in "${lines[@]}"; do
        key=${line% *}
        if [ -n "$prev" ] && [ "$key" != "$prev" ]; then
            boot "$prev" "$@" -- "${names[@]}"
            names=()
        fi
        [ -z "$line" ] || { prev=$key; names+=("${line##* }"); }
    done
}
boot() {
    local key=$1 kernel cpus nodes mem init args version what t0 secs timeout
    shift
    read -r kernel cpus nodes mem init <<<"$key"
    local opts=() names=()
    while [ "$1" != -- ]; do opts+=("$1"); shift; done
    shift
    names=("$@")
    args=(--kernel "$kernel" --cpus "$cpus" --nodes "$nodes" --mem "$mem")
    [ "$init" = plain ] || args+=(--systemd)
    version=$(cat "$(scripts/vm-kernel.sh "$kernel")/version")
    what="${#names[@]} tests on $version ($kernel), $cpus vCPUs in $nodes nodes, $mem MiB, $init init"
    if [ "$repeat" -gt 0 ]; then
        timeout=$((600 + 300 * repeat * ${#names[@]}))
    else
        # About 30 s a test under TCG; slack for a busy host.
        timeout=$((300 + 60 * ${#names[@]}))
        [ "$timeout" -ge 1200 ] || timeout=1200
    fi
    step "VM: $what"
    echo "== VM: $what" >>"$vm_log"
    t0=$(date +%s)
    scripts/vm.sh "${args[@]}" --timeout "$timeout" -- \
        scripts/vm-run "${opts[@]}" "$vm_tests" "${names[@]}" 2>&1 | tee -a "$vm_log" ||
        { failed=1; failures+=("VM, $what"); }
    secs=$(($(date +%s) - t0))
    boot_times+=("$(printf '%3d:%02d  %s' $((secs / 60)) $((secs % 60)) "$what")")
}

if [ "$repeat" -gt 0 ]; then
    scripts/setup.sh >/dev/null
    scripts/vm-kernel.sh >/dev/null
    cargo build --release
    vm_tests=$(vm_test_binary)
    [ -x "$vm_tests" ] || { echo "test.sh: VM test binary not built" >&2; exit 1; }
    "$vm_tests" --list | scripts/vm-plan tests/vm/needs.txt >target/vm-plan.txt
    for name in "$@"; do
        grep -q " $name\$" target/vm-plan.txt ||
            { echo "test.sh: no VM test is named $name (see $vm_tests --list)" >&2; exit 2; }
    done
    # Each test in every VM the suite gives it (its shape, each kernel).
    printf '%s\n' "$@" | awk 'NR == FNR { want[$0] = 1; next } $NF in want' - target/vm-plan.txt >target/vm-plan-repeat.txt
    : >"$vm_log"
    run_boots target/vm-plan-repeat.txt --repeat "$repeat"
    exit $failed
fi

step "set-up"
scripts/setup.sh
scripts/vm-kernel.sh >/dev/null
# Built once per machine (about 14 minutes), outside the checkout.
scripts/vm-kernel.sh 6.12 >/dev/null

step "format and lints"
cargo fmt --check
cargo clippy --release --all-targets -- -D warnings
cargo clippy --release --test vm -- -D warnings

step "host tests"
# The C and Python tests load libscx_phase.so, which only `cargo build`
# produces (cargo test builds the library as an rlib).
cargo build --release
# Passing tests' output too: their MEASURED lines go to docs/measurements.md
# (scripts/measurements.py).
cargo test --release -- --show-output 2>&1 | tee target/test-host.log

vm_tests=$(vm_test_binary)
[ -x "$vm_tests" ] || { echo "test.sh: VM test binary not built" >&2; exit 1; }
# Every kernel a test needs (scripts/vm-kernel.sh fetches or builds it).
"$vm_tests" --list | scripts/vm-plan tests/vm/needs.txt >target/vm-plan.txt
for k in $(cut -d' ' -f1 target/vm-plan.txt | uniq); do scripts/vm-kernel.sh "$k" >/dev/null; done
# What scripts/measurements.py says the figures were measured on.
echo "== suite: commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD 2>/dev/null || echo ' with uncommitted changes'), $(date -u +%F)" >"$vm_log"
run_boots target/vm-plan.txt

# The benchmark in --quick mode (one short run of every configuration but
# the peers, plus the set_phase cost), so that it cannot rot. It fails if
# any configuration did not run or a field is missing; it judges no timing.
step "benchmark, quick (scripts/bench.sh --quick)"
scripts/bench.sh --quick || { failed=1; failures+=("quick benchmark"); }
step "done"

echo "Time per VM boot (min:s), boot included:"
printf '  %s\n' "${boot_times[@]}"
echo "The slowest VM tests (s):"
awk '$1 == "VMTIME" { print "  " $2, $3, $4 }' "$vm_log" | sort -rn | head -10

if [ "$failed" -ne 0 ]; then
    echo "test.sh: failed: $(IFS=';'; echo "${failures[*]}")" >&2
    # The failing tests by name, each panic with the lines after it, and
    # for a VM that timed out, the test it was running.
    awk '/^test .* \.\.\. / { last = substr($0, 1, 200) }
         /vm: timed out/ { print "timed out in: " last; print }' "$vm_log" >&2 || true
    grep -aE -A3 ' FAILED\s*$|panicked at' "$vm_log" | head -60 >&2 || true
    exit 1
fi
