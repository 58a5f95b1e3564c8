"""Unit tests of scripts/bench-report.py: the checks that make the quick
benchmark in the suite able to fail, and the ratios the report quotes."""

import importlib.util
import os
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
spec = importlib.util.spec_from_file_location(
    "bench_report", os.path.join(HERE, "..", "bench-report.py"))
br = importlib.util.module_from_spec(spec)
spec.loader.exec_module(br)


def result(p50, **over):
    r = {f: 1.0 for f in br.FIELDS}
    r.update(step_ms_p50=p50, step_ms_p99=2 * p50, steps=10)
    r.update(over)
    return r


def run(config, sched, attached, p50, **over):
    return {"config": config, "scheduler": sched, "attached": attached, "rep": 1,
            "ok": True, "result": result(p50, **over), "stats": {"phases": []}}


def full_runs():
    runs = []
    for c in br.CONFIGS:
        if c.startswith("f_"):
            continue
        sched = "eevdf" if c in ("a", "b", "c", "g_eevdf") else "scx_phase"
        got = "eevdf" if sched == "eevdf" else "scx_phase_0.1.0_x86_64"
        over = {} if c in br.WITH_BACKGROUND else {"hog_share_of_unused_pct": None}
        if c in br.CLAIMING:
            over["claimed_cpus"] = [2, 3]
        runs.append(run(c, sched, got, {"a": 38, "b": 160, "d": 44}.get(c, 50), **over))
    for s in ("eevdf", "scx_phase"):
        runs.append({"config": "messaging", "scheduler": s, "attached": s, "rep": 1,
                     "ok": True, "result": {"seconds": 2.0 if s == "eevdf" else 2.1}})
    return runs


META = {"command": "scripts/bench.sh", "date": "today", "commit": "abc", "reps": 1,
        "duration_s": 3, "kernel": "7.3", "vcpus": 4, "nodes": 2, "host_cpu": "x",
        "vm_seconds": 60}
SET_PHASE = {"%s/%s" % (k, p): {"p50_ns": 1, "p99_ns": 2}
             for k in ("Rust", "C", "Python") for p in ("store", "bpf")}


class BenchReport(unittest.TestCase):
    def test_attached_scheduler_must_match(self):
        self.assertTrue(br.attached_ok({"scheduler": "eevdf", "attached": "eevdf"}))
        self.assertFalse(br.attached_ok({"scheduler": "eevdf", "attached": "scx_phase_0.1"}))
        self.assertTrue(br.attached_ok({"scheduler": "scx_lavd", "attached": "lavd_1.1.4"}))
        self.assertFalse(br.attached_ok({"scheduler": "scx_lavd", "attached": "scx_phase_0.1"}))
        self.assertTrue(br.attached_ok({"scheduler": "scx_phase --numa-spill-us 2000",
                                        "attached": "scx_phase_0.1"}))

    def test_complete_runs_pass_the_check(self):
        summary, errors, messaging = br.summarise(full_runs())
        self.assertEqual(br.check(summary, errors, messaging, SET_PHASE, True), [])

    def test_wrong_scheduler_missing_field_and_missing_config_fail(self):
        runs = full_runs()
        runs[1]["attached"] = "scx_phase_0.1"          # b ran on scx_phase
        runs[3]["result"]["loader_local_pct"] = None   # d lost a field
        runs = [r for r in runs if r["config"] != "g_spill"]
        summary, errors, messaging = br.summarise(runs)
        problems = br.check(summary, errors, messaging, SET_PHASE, True)
        text = "\n".join(problems)
        self.assertIn("b: no successful run (ran on scx_phase_0.1, not eevdf)", text)
        self.assertIn("d: no loader_local_pct", text)
        self.assertIn("g_spill: no successful run", text)
        self.assertTrue(br.check(summary, errors, messaging, {}, True))

    def test_a_claiming_run_without_its_claim_fails(self):
        runs = full_runs()
        next(r for r in runs if r["config"] == "h")["result"]["claimed_cpus"] = []
        summary, errors, messaging = br.summarise(runs)
        self.assertEqual(br.check(summary, errors, messaging, SET_PHASE, True),
                         ["h: a run held no claimed CPUs"])

    def test_ratios_are_of_medians(self):
        runs = full_runs() + [run("d", "scx_phase", "scx_phase_0.1", 60),
                              run("d", "scx_phase", "scx_phase_0.1", 40)]
        summary, _, messaging = br.summarise(runs)
        self.assertEqual(summary["d"]["step_ms_p50"]["median"], 44)
        t = {x["target"]: x for x in br.targets(summary, messaging)}
        self.assertAlmostEqual(t["(d) p50 / (a) p50"]["value"], 44 / 38)
        self.assertFalse(t["(d) p50 / (a) p50"]["met"])
        self.assertAlmostEqual(t["(b) p50 / (d) p50"]["value"], 160 / 44)
        self.assertTrue(t["(b) p50 / (d) p50"]["met"])
        self.assertAlmostEqual(t["messaging time scx_phase / EEVDF"]["value"], 1.05)
        self.assertIsNone(t["best (f) p50 / (d) p50"]["met"])

    def test_stats_section_names_the_longest_waiter(self):
        runs = full_runs()
        d = next(r for r in runs if r["config"] == "d")
        d["stats"] = {"phases": [{"phase": "unhinted", "threads": 9, "cpu_pct": 150.0,
                                  "wait_avg_us": 2500, "wait_max_ms": 80.5, "preemptions": 0}],
                      "fair_steals": 12, "fair_rebalances": 34,
                      "longest_wait": {"phase": "unhinted", "ms": 80.5, "tid": 7, "comm": "kworker/1:2"}}
        summary, errors, messaging = br.summarise(runs)
        text = br.markdown(summary, errors, messaging, SET_PHASE,
                           br.targets(summary, messaging), META, "chart.png")
        self.assertIn("| unhinted | 9 | 150.0 | 2500 | 80.5 | 0 |", text)
        self.assertIn("fair queues: 12 tasks stolen by idle CPUs, 34 rebalanced", text)
        self.assertIn("longest wait: 80.5 ms, by `kworker/1:2` (unhinted)", text)


if __name__ == "__main__":
    unittest.main()
