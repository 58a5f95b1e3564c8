#!/usr/bin/env python3
"""The work counters by host size (scripts/bench.sh --work): per callback,
the mean and the most CPUs and queues one call looked at, at each vCPU
count, and how the most grew from the smallest host to the largest.

    bench-work-report.py RUNS.jsonl [--chart PNG] [--meta JSON]
"""
import argparse
import json
import subprocess
import sys
import tempfile
import os

CALLBACKS = ["select_cpu", "enqueue", "dispatch", "running", "tick", "stopping", "spill_timer", "claims_sync"]


def load(path):
    runs = [json.loads(l) for l in open(path) if l.strip()]
    bad = [r for r in runs if not r.get("ok")]
    by_size = {}
    for r in runs:
        if not r.get("ok"):
            continue
        t = by_size.setdefault(r["vcpus"], {c: dict(calls=0, cpus=0, queues=0, cpus_max=0, queues_max=0)
                                            for c in CALLBACKS})
        for w in r["work"]:
            a = t[w["callback"]]
            for k in ("calls", "cpus", "queues"):
                a[k] += w[k]
            for k in ("cpus_max", "queues_max"):
                a[k] = max(a[k], w[k])
    return by_size, bad


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
        if not any(by_size[s][c]["calls"] for s in sizes):
            continue
        for what in ("cpus", "queues"):
            cells = []
            for s in sizes:
                a = by_size[s][c]
                cells.append("%.2f / %d" % (mean(a, what), a[what + "_max"]) if a["calls"] else "-")
            m_lo, m_hi = by_size[lo][c][what + "_max"], by_size[hi][c][what + "_max"]
            ratio = "%.2f" % (m_hi / m_lo) if m_lo else ("1.00" if m_hi == 0 else "from 0")
            L.append("| %s | %s | %s | %s |" % (c, what, " | ".join(cells), ratio))
    return "\n".join(L)


def chart(by_size, path):
    sizes = sorted(by_size)
    shown = [c for c in CALLBACKS if any(by_size[s][c]["calls"] for s in sizes)]
    with tempfile.TemporaryDirectory() as tmp:
        data = os.path.join(tmp, "data")
        with open(data, "w") as f:
            for s in sizes:
                f.write("%d %s\n" % (s, " ".join("%d %d" % (by_size[s][c]["cpus_max"], by_size[s][c]["queues_max"])
                                                 for c in shown)))
        plots = []
        for i, c in enumerate(shown):
            plots.append("'%s' using 1:%d with linespoints title '%s, CPUs'" % (data, 2 + 2 * i, c))
            plots.append("'%s' using 1:%d with linespoints dt 2 title '%s, queues'" % (data, 3 + 2 * i, c))
        script = """
set terminal pngcairo size 1000,520 font "sans,10"
set output '%s'
set title "scx_phase: most CPUs and queues one call looked at, by host size"
set xlabel "vCPUs"
set ylabel "per call, most"
set logscale x 2
set xtics (%s)
set key outside right
set grid
plot %s
""" % (path, ", ".join("'%d' %d" % (s, s) for s in sizes), ", ".join(plots))
        subprocess.run(["gnuplot"], input=script, text=True, check=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("runs")
    ap.add_argument("--chart")
    ap.add_argument("--meta", default="{}")
    a = ap.parse_args()
    by_size, bad = load(a.runs)
    if not by_size:
        sys.exit("bench-work-report: no run produced counters (%d failed)" % len(bad))
    print(table(by_size, json.loads(a.meta)))
    for r in bad:
        print("\nfailed: %s at %s vCPUs: %s" % (r.get("config"), r.get("vcpus"), r.get("error", "no counters")))
    if a.chart:
        chart(by_size, a.chart)
        print("\nchart: %s" % a.chart)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
