#!/usr/bin/python3
"""Turn scripts/bench.sh's raw runs into results: medians and spreads per
configuration, the ratios the targets are stated in, a JSON file, and
optionally a Markdown report with a gnuplot chart. With --check, fail unless
every configuration ran and produced every field (no timing is judged)."""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

CONFIGS = {
    "a": "EEVDF, no background (the limit)",
    "b": "EEVDF + background",
    "c": "EEVDF + background, job at nice -10",
    "d": "scx_phase + background",
    "e": "scx_phase + background, no hints",
    "f_scx_bpfland": "scx_bpfland + background",
    "f_scx_lavd": "scx_lavd + background",
    "f_scx_cosmos": "scx_cosmos + background",
    "g_eevdf": "self-contention, EEVDF",
    "g_phase": "self-contention, scx_phase",
    "g_spill": "self-contention, scx_phase --numa-spill-us 2000",
    "h": "scx_phase + background, job claims node 1 exclusively",
    "i": "scx_phase + background, job's preferred claim on node 1",
    "j": "scx_phase + memory streamers",
    "k": "scx_phase + memory streamers, job claims node 1 exclusively",
}
# Configurations whose job holds a CPU claim through the workload API.
CLAIMING = {"h", "i", "k"}
SHORT = {
    "a": "a EEVDF alone",
    "b": "b EEVDF+bg",
    "c": "c nice -10",
    "d": "d scx_phase",
    "e": "e no hints",
    "f_scx_bpfland": "f bpfland",
    "f_scx_lavd": "f lavd",
    "f_scx_cosmos": "f cosmos",
    "g_eevdf": "g EEVDF",
    "g_phase": "g scx_phase",
    "g_spill": "g spill 2 ms",
    "h": "h exclusive",
    "i": "i preferred",
    "j": "j streamers",
    "k": "k streamers, exclusive",
}
FIELDS = [
    "steps", "step_ms_p50", "step_ms_p99", "step_ms_max", "samples_per_s",
    "data_stall_pct", "checkpoints", "checkpoint_ms_mean", "checkpoint_ms_max",
    "hog_work_per_s", "stream_mib_per_s", "cpus", "job_cpu_pct", "background_cpu_pct",
    "hog_share_of_unused_pct", "loader_local_pct", "compute_speed_pct",
    "compute_on_cpu_pct", "barrier_pct", "set_phase_per_s", "wall_s",
]
# Fields that are null by design without a background.
NO_BACKGROUND_NULL = {"hog_share_of_unused_pct"}
WITH_BACKGROUND = {"b", "c", "d", "e", "f_scx_bpfland", "f_scx_lavd", "f_scx_cosmos", "h", "i",
                   "j", "k"}


def spread(values):
    values = [v for v in values if v is not None]
    if not values:
        return None
    return {"median": statistics.median(values), "min": min(values),
            "max": max(values), "n": len(values)}


def attached_ok(run):
    """Whether the scheduler that ran the CPUs at the end of the run is the
    one the configuration asked for (sysfs: eevdf, scx_phase, bpfland...)."""
    want = run["scheduler"].split()[0]
    got = run.get("attached", "")
    if want == "eevdf":
        return got == "eevdf"
    return got != "eevdf" and want.replace("scx_", "") in got


def summarise(runs):
    configs, errors, messaging = {}, {}, {}
    for run in runs:
        name = run["config"]
        if run["ok"] and not attached_ok(run):
            run = dict(run, ok=False, error="ran on %s, not %s" % (
                run.get("attached", "an unknown scheduler"), run["scheduler"]))
        if name == "messaging":
            if run["ok"]:
                messaging.setdefault(run["scheduler"], []).append(run["result"]["seconds"])
            else:
                errors.setdefault("messaging " + run["scheduler"], run["error"])
            continue
        if not run["ok"]:
            errors.setdefault(name, run["error"])
            continue
        configs.setdefault(name, []).append(run)
    summary = {}
    for name, rs in configs.items():
        summary[name] = {
            "scheduler": rs[0]["scheduler"],
            "runs": len(rs),
            **{f: spread([r["result"].get(f) for r in rs]) for f in FIELDS},
            "stats": [r.get("stats") for r in rs],
            "claimed_cpus": [r["result"].get("claimed_cpus") or [] for r in rs],
        }
    return summary, errors, {s: spread(v) for s, v in messaging.items()}


def parse_set_phase(path):
    """'<lang>/<path> p50 <ns> ns p99 <ns> ns' lines of benches/set_phase.rs."""
    out = {}
    try:
        with open(path) as f:
            for line in f:
                parts = line.split()
                if len(parts) == 7 and parts[1] == "p50" and parts[4] == "p99":
                    out[parts[0]] = {"p50_ns": float(parts[2]), "p99_ns": float(parts[5])}
    except OSError:
        pass
    return out


def med(summary, name, field):
    s = summary.get(name, {}).get(field)
    return s["median"] if s else None


def ratio(x, y):
    return x / y if x is not None and y else None


def targets(summary, messaging):
    p50 = lambda n: med(summary, n, "step_ms_p50")
    p99 = lambda n: med(summary, n, "step_ms_p99")
    peers = [n for n in summary if n.startswith("f_")]
    best_f = min(peers, key=p50) if peers else None
    t = []

    def add(name, value, goal, ok, note=""):
        t.append({"target": name, "value": value, "goal": goal,
                  "met": None if value is None else ok(value), "note": note})

    add("(d) p50 / (a) p50", ratio(p50("d"), p50("a")), "<= 1.10", lambda v: v <= 1.10,
        "p99: %s" % fmt_ratio(ratio(p99("d"), p99("a"))))
    add("(b) p50 / (d) p50", ratio(p50("b"), p50("d")), ">= 2.0", lambda v: v >= 2.0,
        "p99: %s" % fmt_ratio(ratio(p99("b"), p99("d"))))
    add("(c) p50 / (d) p50", ratio(p50("c"), p50("d")), "> 1.0", lambda v: v > 1.0,
        "(d)/(a) must be within 1.10")
    add("(c) p99 / (d) p99", ratio(p99("c"), p99("d")), "> 1.0", lambda v: v > 1.0)
    add("best (f) p50 / (d) p50", ratio(p50(best_f), p50("d")) if best_f else None,
        ">= 1.5", lambda v: v >= 1.5, "best peer: %s" % (best_f[2:] if best_f else "none ran"))
    add("(g) scx_phase p50 / EEVDF p50", ratio(p50("g_phase"), p50("g_eevdf")), "<= 0.85",
        lambda v: v <= 0.85, "p99: %s" % fmt_ratio(ratio(p99("g_phase"), p99("g_eevdf"))))
    add("(g) scx_phase, loaders may spill: p50 / EEVDF p50",
        ratio(p50("g_spill"), p50("g_eevdf")), "(extra)", lambda v: v <= 0.85,
        "p99: %s" % fmt_ratio(ratio(p99("g_spill"), p99("g_eevdf"))))
    # Reported, not judged: on TCG there are no caches or memory bandwidth
    # for a neighbour to take, so what exclusivity buys is only CPU time.
    add("(h) exclusive claim p50 / (d) p50", ratio(p50("h"), p50("d")), "(extra)",
        lambda v: v <= 1.0, "p99: %s" % fmt_ratio(ratio(p99("h"), p99("d"))))
    add("(i) preferred claim p50 / (d) p50", ratio(p50("i"), p50("d")), "(extra)",
        lambda v: v <= 1.0, "p99: %s" % fmt_ratio(ratio(p99("i"), p99("d"))))
    speed = lambda n: fmt_num(med(summary, n, "compute_speed_pct"))
    add("(k) exclusive claim among streamers p50 / (j) p50", ratio(p50("k"), p50("j")),
        "(extra)", lambda v: v <= 1.0,
        "p99: %s; compute speed %s%% vs %s%% of calibrated" % (
            fmt_ratio(ratio(p99("k"), p99("j"))), speed("k"), speed("j")))
    add("(d) hogs' share of CPU the job left, %", med(summary, "d", "hog_share_of_unused_pct"),
        ">= 90", lambda v: v >= 90)
    add("(d) loader samples on their node, %", med(summary, "d", "loader_local_pct"),
        ">= 99", lambda v: v >= 99)
    m_phase, m_eevdf = messaging.get("scx_phase"), messaging.get("eevdf")
    add("messaging time scx_phase / EEVDF",
        ratio(m_phase["median"], m_eevdf["median"]) if m_phase and m_eevdf else None,
        "<= 1.10", lambda v: v <= 1.10)
    return t


def fmt_ratio(v):
    return "-" if v is None else "%.2f×" % v


def fmt_num(v, digits=1):
    return "-" if v is None else ("%.*f" % (digits, v))


def fmt_spread(s, digits=1):
    if not s:
        return "-"
    if s["n"] == 1:
        return fmt_num(s["median"], digits)
    return "%s (%s–%s)" % (fmt_num(s["median"], digits), fmt_num(s["min"], digits),
                           fmt_num(s["max"], digits))


def check(summary, errors, messaging, set_phase, quick):
    problems = []
    want = [c for c in CONFIGS if not (quick and c.startswith("f_"))]
    for name in want:
        if name not in summary:
            if name.startswith("f_"):
                continue  # a peer that cannot run is reported, not required
            problems.append("%s: no successful run (%s)" % (name, errors.get(name, "not run")))
            continue
        for field in FIELDS:
            if summary[name][field] is None and not (
                    field in NO_BACKGROUND_NULL and name not in WITH_BACKGROUND):
                problems.append("%s: no %s" % (name, field))
        if summary[name]["steps"]["median"] < 1:
            problems.append("%s: no training step completed" % name)
    for s in ("eevdf", "scx_phase"):
        if s not in messaging:
            problems.append("messaging on %s: %s" % (s, errors.get("messaging " + s, "not run")))
    for lang in ("Rust", "C", "Python"):
        for path in ("store", "bpf"):
            if "%s/%s" % (lang, path) not in set_phase:
                problems.append("set_phase bench: no %s/%s figure" % (lang, path))
    for name in ("d", "g_phase", "g_spill"):
        if name in summary and not any(summary[name]["stats"]):
            problems.append("%s: no scheduler stats captured" % name)
    for name in CLAIMING:
        if name in summary and not all(summary[name]["claimed_cpus"]):
            problems.append("%s: a run held no claimed CPUs" % name)
    return problems


def chart(summary, path):
    names = [n for n in CONFIGS if n in summary]
    with tempfile.TemporaryDirectory() as tmp:
        data = os.path.join(tmp, "data")
        with open(data, "w") as f:
            for n in names:
                s50, s99 = summary[n]["step_ms_p50"], summary[n]["step_ms_p99"]
                f.write('"%s" %f %f %f %f\n' % (SHORT[n], s50["median"], s50["min"],
                                                s50["max"], s99["median"]))
        script = """
set terminal pngcairo size 1000,520 font "sans,10"
set output '%s'
set title "phase-bench step time per configuration (median of runs; bars: min-max of p50)"
set ylabel "step time, ms (log scale)"
set logscale y
set style data histogram
set style histogram errorbars gap 2 lw 1
set style fill solid 0.8 border -1
set xtics rotate by -30
set key top left
set grid ytics
plot '%s' using 2:3:4:xtic(1) title "p50" lc rgb "#3070b0", \
     '' using 5:5:5 title "p99" lc rgb "#d08030"
""" % (path, data)
        subprocess.run(["gnuplot"], input=script, text=True, check=True)


def markdown(summary, errors, messaging, set_phase, tgts, meta, chart_name):
    L = []
    L.append("# scx_phase benchmark results\n")
    L.append("Produced by `%s` on %s (commit %s). Every figure below comes from one "
             "run of that command: all configurations in one VM boot, interleaved, "
             "%d repetitions of %d s each. Cells show the median and, in brackets, "
             "the range over the repetitions.\n" % (meta["command"], meta["date"], meta["commit"],
                                                   meta["reps"], meta["duration_s"]))
    L.append("- Kernel: Debian %s, in QEMU/TCG with %d vCPUs in %d NUMA nodes "
             "(no KVM on this host)" % (meta["kernel"], meta["vcpus"], meta["nodes"]))
    L.append("- Host CPU: %s, 2 cores" % meta["host_cpu"])
    L.append("- The job (phase-bench): a trainer and 1 intra-op helper (forward 4 ms, "
             "backward 8 ms, optimizer sweep of 8 MiB), a checkpoint thread every 10 "
             "steps, 2 loaders (batch 4, lognormal samples, median 1.5 ms, sigma 0.8, "
             "prefetch 4) hinted to node %d" % (meta["nodes"] - 1))
    L.append("- The background: 2 hogs per vCPU and an fsync loop, in their own process at nice 0")
    L.append("- (g) self-contention: 4 compute threads, 6 loaders, batch 8, 3 ms median samples, no background")
    L.append("- VM time for the whole comparison: %d s\n" % meta["vm_seconds"])
    L.append("![step time per configuration](%s)\n" % chart_name)
    L.append("## Targets\n")
    L.append("| target | measured | goal | met |")
    L.append("|---|---|---|---|")
    for t in tgts:
        v = t["value"]
        shown = "-" if v is None else ("%.2f" % v if "%" not in t["target"] else "%.1f" % v)
        met = {True: "yes", False: "**no**", None: "not measured"}[t["met"]]
        note = (" (%s)" % t["note"]) if t["note"] else ""
        L.append("| %s | %s%s | %s | %s |" % (t["target"], shown, note, t["goal"], met))
    L.append("")
    L.append("## Step time and throughput\n")
    L.append("| config | runs | step p50 ms | step p99 ms | samples/s | data stall % | "
             "checkpoint ms | job CPU % | background CPU % | hogs' share of unused % | loaders local % |")
    L.append("|---|---|---|---|---|---|---|---|---|---|---|")
    for n in CONFIGS:
        if n not in summary:
            continue
        s = summary[n]
        L.append("| %s | %d | %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (
            CONFIGS[n], s["runs"], fmt_spread(s["step_ms_p50"]), fmt_spread(s["step_ms_p99"], 0),
            fmt_spread(s["samples_per_s"], 0), fmt_spread(s["data_stall_pct"]),
            fmt_spread(s["checkpoint_ms_mean"], 0), fmt_spread(s["job_cpu_pct"]),
            fmt_spread(s["background_cpu_pct"]), fmt_spread(s["hog_share_of_unused_pct"]),
            fmt_spread(s["loader_local_pct"])))
    L.append("")
    if errors:
        L.append("Did not run:\n")
        for n, e in errors.items():
            L.append("- %s: %s" % (CONFIGS.get(n, n), e))
        L.append("")
    L.append("## Where the compute threads' time goes\n")
    L.append("Forward and backward parts, summed over the compute threads. *Speed*: "
             "calibrated work per CPU second (100% = as fast as on the idle VM; below "
             "that, the vCPU shared a host core). *On CPU*: CPU time per wall time "
             "while computing (below 100%, the thread waited for a CPU: the guest "
             "scheduler's part). *At barriers*: the trainer's wall time spent waiting "
             "for its partner to finish, be woken and run.\n")
    L.append("| config | speed % | on CPU % | trainer at barriers % |")
    L.append("|---|---|---|---|")
    for n in CONFIGS:
        if n in summary:
            L.append("| %s | %s | %s | %s |" % (
                CONFIGS[n], fmt_spread(summary[n]["compute_speed_pct"]),
                fmt_spread(summary[n]["compute_on_cpu_pct"]), fmt_spread(summary[n]["barrier_pct"])))
    L.append("")
    L.append("## Cost to un-hinted work: `perf bench sched messaging -g 4 -l 50`\n")
    L.append("| scheduler | seconds |")
    L.append("|---|---|")
    for s, v in messaging.items():
        L.append("| %s | %s |" % (s, fmt_spread(v, 3)))
    L.append("")
    L.append("## set_phase cost (host): the hint service's store against the tid map's bpf() call\n")
    L.append("| from | store p50 ns | store p99 ns | bpf() p50 ns | bpf() p99 ns |")
    L.append("|---|---|---|---|---|")
    for lang in ("Rust", "C", "Python"):
        st, bp = set_phase.get(lang + "/store"), set_phase.get(lang + "/bpf")
        if st and bp:
            L.append("| %s | %.1f | %.1f | %.0f | %.0f |" % (
                lang, st["p50_ns"], st["p99_ns"], bp["p50_ns"], bp["p99_ns"]))
    L.append("")
    for n in ("d", "g_phase"):
        st = [x for x in summary.get(n, {}).get("stats", []) if x]
        if not st:
            continue
        L.append("## Where the time goes in %s (scheduler stats, first repetition)\n" % CONFIGS[n])
        L.append("| phase | threads | CPU % of one CPU | mean wait µs | max wait ms | preemptions |")
        L.append("|---|---|---|---|---|---|")
        for p in st[0].get("phases", []):
            if p.get("threads", 0) or p.get("cpu_pct", 0) > 0.05:
                L.append("| %s | %d | %.1f | %.0f | %.1f | %d |" % (
                    p["phase"], p.get("threads", 0), p.get("cpu_pct", 0),
                    p.get("wait_avg_us", 0), p.get("wait_max_ms", 0), p.get("preemptions", 0)))
        L.append("")
        extra = []
        if "fair_steals" in st[0]:
            extra.append("fair queues: %d tasks stolen by idle CPUs, %d rebalanced" % (
                st[0]["fair_steals"], st[0].get("fair_rebalances", 0)))
        w = st[0].get("longest_wait")
        if w:
            extra.append("longest wait: %.1f ms, by `%s` (%s)" % (w["ms"], w["comm"], w["phase"]))
        if extra:
            L.append("; ".join(extra) + ".\n")
    return "\n".join(L)


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--runs", required=True)
    ap.add_argument("--set-phase", required=True)
    ap.add_argument("--meta", required=True, help="JSON object describing the run")
    ap.add_argument("--json", required=True)
    ap.add_argument("--markdown")
    ap.add_argument("--chart")
    ap.add_argument("--notes", help="hand-written notes to append to the report")
    ap.add_argument("--check", action="store_true")
    a = ap.parse_args()
    meta = json.loads(a.meta)
    try:
        with open(a.runs) as f:
            runs = [json.loads(line) for line in f if line.strip()]
    except (OSError, ValueError) as e:
        sys.exit("bench-report: cannot read %s: %s" % (a.runs, e))
    summary, errors, messaging = summarise(runs)
    set_phase = parse_set_phase(a.set_phase)
    tgts = targets(summary, messaging)
    with open(a.json, "w") as f:
        json.dump({"meta": meta, "configs": summary, "errors": errors, "messaging": messaging,
                   "set_phase": set_phase, "targets": tgts}, f, indent=1)
    print("\n%-40s %-28s %s" % ("target", "measured", "goal"))
    for t in tgts:
        v = "-" if t["value"] is None else "%.2f" % t["value"]
        mark = {True: "met", False: "MISSED", None: "-"}[t["met"]]
        print("%-40s %-28s %-8s %s" % (t["target"], v + (" " + t["note"] if t["note"] else ""),
                                       t["goal"], mark))
    for n, e in errors.items():
        print("did not run: %s: %s" % (n, e))
    print("results: %s" % a.json)
    if a.markdown:
        chart_path = a.chart or os.path.join(os.path.dirname(a.markdown), "step-time.png")
        chart(summary, chart_path)
        text = markdown(summary, errors, messaging, set_phase, tgts, meta,
                        os.path.basename(chart_path))
        if a.notes and os.path.exists(a.notes):
            with open(a.notes) as f:
                text += "\n" + f.read()
        with open(a.markdown, "w") as f:
            f.write(text)
        print("report: %s, chart: %s" % (a.markdown, chart_path))
    if a.check:
        problems = check(summary, errors, messaging, set_phase, meta.get("quick", False))
        if problems:
            for p in problems:
                print("bench check: " + p, file=sys.stderr)
            sys.exit(1)
        print("bench check: every configuration ran and produced every field")


if __name__ == "__main__":
    main()
