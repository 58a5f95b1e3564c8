#!/usr/bin/env python3
"""The 8-rank node benchmark's table (scripts/bench.sh --ranks), in Markdown.

    bench-ranks-report.py RUNS.jsonl [--meta JSON] [--chart PNG]

One row per scheduler: the job's step p50 and p99 (from one barrier to the
next) with their ratios to the ranks alone and EEVDF's p50 over this one's,
the straggler gap (per step, the slowest rank's time before the barrier
less the median rank's), the ranks' share of time at the barrier, their
compute threads' time on CPU (below 100: waiting for a CPU, the guest
scheduler's part) and speed (below 100: a slower CPU, under TCG a vCPU
sharing a host core), their loaders' locality (all ranks, and the worst
rank), failed hint calls, and whether the kernel ejected the scheduler. With several repetitions, figures are min-max
ranges and ratios compare medians.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

ORDER = ["alone", "eevdf", "scx_phase", "scx_bpfland", "scx_cosmos"]


def label(run):
    return "alone" if run["config"] == "alone" else run["scheduler"]


def span(xs, digits=1):
    lo, hi = min(xs), max(xs)
    if len(xs) == 1 or round(lo, digits) == round(hi, digits):
        return f"{lo:.{digits}f}"
    return f"{lo:.{digits}f}-{hi:.{digits}f}"


def ratio(mine, base):
    if not mine or not base:
        return ""
    m, b = statistics.median(mine), statistics.median(base)
    return f" ({m / b:.2f}x)" if b > 0 else ""


def load(path):
    good, bad = {}, []
    with open(path) as f:
        for line in f:
            r = json.loads(line)
            if r.get("ok"):
                good.setdefault(label(r), []).append(r)
            else:
                bad.append(r)
    return good, bad


def field(runs, key):
    return [r["result"][key] for r in runs]


def table(good, bad, meta):
    names = [n for n in ORDER if n in good] + sorted(set(good) - set(ORDER))
    alone = good.get("alone", [])
    eevdf = good.get("eevdf", [])
    L = [
        "8 ranks on %s vCPUs in %s nodes (ranks 0-3 on node 0, 4-7 on node 1); "
        "%s repetition(s) of %s s; kernel %s, commit %s; %s s in all."
        % (meta.get("vcpus", "?"), meta.get("nodes", "?"), meta.get("reps", "?"),
           meta.get("duration", "?"), meta.get("kernel", "?"), meta.get("commit", "?"),
           meta.get("seconds", "?")),
        "",
        "| scheduler | steps | step p50 ms (x alone) | EEVDF's p50 / this | step p99 ms (x alone) "
        "| straggler gap p50 / p99 ms | at the barrier % | compute on CPU % / speed % "
        "| loaders on node % (worst rank) | hints failed | ejected |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for n in names:
        runs = good[n]
        p50, p99 = field(runs, "step_ms_p50"), field(runs, "step_ms_p99")
        faster = ""
        if n not in ("alone", "eevdf") and eevdf:
            faster = "%.2fx" % (statistics.median(field(eevdf, "step_ms_p50")) / statistics.median(p50))
        ejected = sum(1 for r in runs if r.get("ejected"))
        L.append("| %s | %s | %s%s | %s | %s%s | %s / %s | %s | %s / %s | %s (%s) | %s | %s |" % (
            n + (" (no neighbours)" if n == "alone" else ""),
            span(field(runs, "steps"), 0),
            span(p50), ratio(p50, field(alone, "step_ms_p50")) if n != "alone" else "",
            faster or "-",
            span(p99), ratio(p99, field(alone, "step_ms_p99")) if n != "alone" else "",
            span(field(runs, "straggler_ms_p50")), span(field(runs, "straggler_ms_p99")),
            span(field(runs, "barrier_wait_pct")),
            span(field(runs, "compute_on_cpu_pct"), 0), span(field(runs, "compute_speed_pct"), 0),
            span(field(runs, "loader_local_pct")), span(field(runs, "loader_local_pct_min")),
            span(field(runs, "hint_failures"), 0),
            "yes, %d of %d" % (ejected, len(runs)) if ejected else "no",
        ))
    for r in bad:
        L.append("")
        L.append("failed: %s (%s), repetition %s: %s"
                 % (r.get("config"), r.get("scheduler"), r.get("rep"), r.get("error")))
    return "\n".join(L)


def chart(good, path):
    """Step p50 and p99 by scheduler, as bars (medians over repetitions)."""
    names = [n for n in ORDER if n in good]
    with tempfile.TemporaryDirectory() as tmp:
        data = os.path.join(tmp, "steps")
        with open(data, "w") as f:
            for n in names:
                f.write('"%s" %.2f %.2f\n' % (n, statistics.median(field(good[n], "step_ms_p50")),
                                              statistics.median(field(good[n], "step_ms_p99"))))
        script = """
set terminal pngcairo size 900,480 font "sans,10"
set termoption noenhanced
set output '%s'
set title "8 ranks, a barrier per step: the job's step time"
set ylabel "ms"
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.8 border -1
set key top left
set grid ytics
set yrange [0:*]
plot '%s' using 2:xtic(1) title 'step p50' lc rgb '#3070b0', '' using 3 title 'step p99' lc rgb '#d08030'
""" % (path, data)
        subprocess.run(["gnuplot"], input=script, text=True, check=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("runs")
    ap.add_argument("--meta", default="{}")
    ap.add_argument("--chart")
    a = ap.parse_args()
    good, bad = load(a.runs)
    if not good:
        sys.exit("bench-ranks-report: no run produced a result (%d failed)" % len(bad))
    print(table(good, bad, json.loads(a.meta)))
    if a.chart:
        chart(good, a.chart)
        print("\nchart: %s" % a.chart)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
