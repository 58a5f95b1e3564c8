#!/usr/bin/env python3
"""The overload benchmark's table (scripts/bench.sh --overload), in Markdown.

    bench-overload-report.py RUNS.jsonl [--meta JSON]

One row per VM shape, load and scheduler: the run's wall time (creating,
messaging and reaping the tasks), perf's own time (messaging only), the runnable
waits' p50, p99 and worst (runq-waits), each with its ratio to EEVDF's in
the same boot, whether the kernel ejected the scheduler and why, and the
RCU stall warnings. With several repetitions, figures are min-max ranges
and ratios compare medians.
"""
import argparse
import json
import re
import statistics
import sys

SHAPES = {
    "small": "4 vCPUs, 12 GiB",
    "wide": "16 vCPUs in 2 nodes, 12 GiB",
    "oom": "4 vCPUs, 2 GiB (the OOM killer ends some)",
    "quick": "4 vCPUs, 4 GiB (--quick)",
    "threads": "4 vCPUs, 12 GiB (--shape threads)",
}


def span(xs, scale=1.0, digits=1):
    lo, hi = min(xs) / scale, max(xs) / scale
    if len(xs) == 1 or round(lo, digits) == round(hi, digits):
        return f"{lo:.{digits}f}"
    return f"{lo:.{digits}f}-{hi:.{digits}f}"


def ratio(mine, base):
    if not mine or not base:
        return ""
    m, b = statistics.median(mine), statistics.median(base)
    return f" ({m / b:.2f}x)" if b > 0 else ""


def perf_times(rs):
    """perf's own times of the runs @rs that printed one."""
    return [r["perf_seconds"] for r in rs if r.get("ok") and r.get("perf_seconds")]


def render(runs, meta):
    """The Markdown table of @runs (runs.jsonl records), with @meta's figures."""
    out = ["# Overload: perf bench sched messaging, runnable waits by runq-waits"]
    if meta:
        out.append(f"\nKernel {meta.get('kernel', '?')}, commit {meta.get('commit', '?')}, "
                   f"{meta.get('seconds', 0) / 60:.1f} min in all.")
    groups = {}
    for r in runs:
        groups.setdefault((r["shape"], r["load"]), {}).setdefault(r["scheduler"], []).append(r)
    order = list(SHAPES)
    for (shape, load), by in sorted(groups.items(), key=lambda kv: (
            order.index(kv[0][0]) if kv[0][0] in order else len(order), int(kv[0][1]))):
        out.append(f"\n## {int(load):,} tasks, {SHAPES.get(shape, shape)}\n")
        out.append("| scheduler | wall s | messaging s | wait p50 ms | wait p99 ms | worst wait ms | ejected | RCU stall warnings |")
        out.append("|---|---|---|---|---|---|---|---|")
        base = [r["result"] for r in by.get("eevdf", []) if r.get("ok")]
        base_perf = perf_times(by.get("eevdf", []))

        def col(rs, k):
            return [x[k] for x in rs]
        for sched in sorted(by, key=lambda s: (s != "eevdf", s != "scx_phase", s)):
            rs = by[sched]
            ok = [r["result"] for r in rs if r.get("ok")]
            ej = [r for r in rs if r.get("ejected")]
            # The kernel's line, less its timestamp.
            why = re.sub(r"^\[[^]]*\]\s*", "", ej[0].get("why", "")) if ej else ""
            eject = f"**yes, {len(ej)} of {len(rs)}**: {why}" if ej else "no"
            if not ok:
                out.append(f"| {sched} | failed: {rs[0].get('error', '?')} | | | | | {eject} | |")
                continue
            status = {x["status"] for x in ok}
            note = "" if status == {0} else f" (exit {','.join(map(str, sorted(status)))})"
            perf = perf_times(rs)
            msg = f"{span(perf, 1.0, 2)}{ratio(perf, base_perf)}" if perf else "?"
            out.append(
                f"| {sched} | {span(col(ok, 'seconds'))}{ratio(col(ok, 'seconds'), col(base, 'seconds'))}{note}"
                f" | {msg}"
                f" | {span(col(ok, 'p50_us'), 1e3, 0)}"
                f" | {span(col(ok, 'p99_us'), 1e3, 0)}{ratio(col(ok, 'p99_us'), col(base, 'p99_us'))}"
                f" | {span(col(ok, 'max_us'), 1e3, 0)}{ratio(col(ok, 'max_us'), col(base, 'max_us'))}"
                f" | {eject} | {sum(r.get('rcu_stalls', 0) for r in rs)} |")
    return "\n".join(out)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("runs")
    ap.add_argument("--meta", default="{}")
    a = ap.parse_args()
    runs = [json.loads(line) for line in open(a.runs) if line.strip()]
    if not runs:
        sys.exit("bench-overload-report: no runs in " + a.runs)
    print(render(runs, json.loads(a.meta)))


if __name__ == "__main__":
    main()
