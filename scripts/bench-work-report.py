#!/usr/bin/env python3
"""The work counters by host size (scripts/bench.sh --work): per callback,
the mean and the most CPUs and queues one call looked at, at each vCPU
count, and how the most grew from the smallest host to the largest.

    bench-work-report.py RUNS.jsonl [--chart PNG] [--before RUNS.jsonl] [--meta JSON]
"""
import argparse
import json
import subprocess
import sys
import tempfile
import os

# The callbacks, in the order the scheduler reports them (load() fills it).
CALLBACKS = []


def load(path):
    runs = [json.loads(l) for l in open(path) if l.strip()]
    bad = [r for r in runs if not r.get("ok")]
    by_size = {}
    for r in runs:
        if not r.get("ok"):
            continue
        t = by_size.setdefault(r["vcpus"], {})
        for w in r["work"]:
            if w["callback"] not in CALLBACKS:
                CALLBACKS.append(w["callback"])
            a = t.setdefault(w["callback"], dict(calls=0, cpus=0, queues=0, cpus_max=0, queues_max=0))
            for k in ("calls", "cpus", "queues"):
                a[k] += w[k]
            for k in ("cpus_max", "queues_max"):
                a[k] = max(a[k], w[k])
    return by_size, bad


ZERO = dict(calls=0, cpus=0, queues=0, cpus_max=0, queues_max=0)


def at(by_size, size, callback):
    return by_size[size].get(callback, ZERO)


def mean(a, k):
    return a[k] / a["calls"] if a["calls"] else 0.0


def table(by_size, meta):
    sizes = sorted(by_size)
    lo, hi = sizes[0], sizes[-1]
    L = ["Work per call by host size (scripts/bench.sh --work%s): CPUs and queues one call looked at, "
         "mean / most, over scx_phase's quick-benchmark configurations and messaging."
         % ("; " + ", ".join("%s %s" % kv for kv in meta.items()) if meta else ""), ""]
    head = "| callback | what | " + " | ".join("%d vCPUs" % s for s in sizes) + " | most, %d / %d |" % (hi, lo)
    L += [head, "|" + "---|" * (len(sizes) + 3)]
    for c in CALLBACKS:
        if not any(at(by_size, s, c)["calls"] for s in sizes):
            continue
        for what in ("cpus", "queues"):
            cells = []
            for s in sizes:
                a = at(by_size, s, c)
                cells.append("%.2f / %d" % (mean(a, what), a[what + "_max"]) if a["calls"] else "-")
            m_lo, m_hi = at(by_size, lo, c)[what + "_max"], at(by_size, hi, c)[what + "_max"]
            ratio = "%.2f" % (m_hi / m_lo) if m_lo else ("1.00" if m_hi == 0 else "from 0")
            L.append("| %s | %s | %s | %s |" % (c, what, " | ".join(cells), ratio))
    return "\n".join(L)


# The hot callbacks the chart shows (the rest look at no other CPU).
CHARTED = ["select_cpu", "enqueue", "dispatch"]


def chart(by_size, path, before=None):
    """Most CPUs one call looked at, by vCPUs: solid, these runs; dashed,
    the runs of --before (the code before a change), when given."""
    series = [("", by_size)] + ([(" (before)", before)] if before else [])
    sizes = sorted(set().union(*[set(b) for _, b in series]))
    with tempfile.TemporaryDirectory() as tmp:
        plots = []
        colours = {"select_cpu": "#3070b0", "enqueue": "#30a050", "dispatch": "#d08030"}
        for k, (tag, b) in enumerate(series):
            for c in CHARTED:
                data = os.path.join(tmp, "%d-%s" % (k, c))
                with open(data, "w") as f:
                    for s in sorted(b):
                        f.write("%d %d\n" % (s, at(b, s, c)["cpus_max"]))
                plots.append("'%s' using 1:2 with linespoints lw 2 dt %d lc rgb '%s' title '%s%s'"
                             % (data, 2 if tag else 1, colours[c], c, tag))
        script = """
set terminal pngcairo size 900,480 font "sans,10"
set termoption noenhanced
set output '%s'
set title "scx_phase: most CPUs one call looked at, by host size"
set xlabel "vCPUs"
set ylabel "CPUs, most in one call"
set logscale x 2
set xrange [1.6:80]
set xtics (%s)
set key top left
set grid
plot %s
""" % (path, ", ".join("'%d' %d" % (s, s) for s in sizes), ", ".join(plots))
        subprocess.run(["gnuplot"], input=script, text=True, check=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("runs")
    ap.add_argument("--chart")
    ap.add_argument("--meta", default="{}")
    ap.add_argument("--before", help="runs of the code before a change, charted dashed")
    a = ap.parse_args()
    by_size, bad = load(a.runs)
    before = load(a.before)[0] if a.before else None
    if not by_size:
        sys.exit("bench-work-report: no run produced counters (%d failed)" % len(bad))
    print(table(by_size, json.loads(a.meta)))
    for r in bad:
        print("\nfailed: %s at %s vCPUs: %s" % (r.get("config"), r.get("vcpus"), r.get("error", "no counters")))
    if a.chart:
        chart(by_size, a.chart, before)
        print("\nchart: %s" % a.chart)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
