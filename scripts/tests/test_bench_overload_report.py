"""Unit tests of scripts/bench-overload-report.py: ratios against EEVDF in
the same boot, ranges over repetitions, and ejections named."""

import importlib.util
import os
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
spec = importlib.util.spec_from_file_location(
    "bench_overload_report", os.path.join(HERE, "..", "bench-overload-report.py"))
bor = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bor)


def run(sched, secs, p99_ms, max_ms, rep=1, **over):
    r = {"shape": "small", "load": "2560", "scheduler": sched, "rep": rep, "ok": True,
         "ejected": False, "why": "", "rcu_stalls": 0,
         "result": {"seconds": secs, "p50_us": 1000.0, "p99_us": p99_ms * 1e3,
                    "max_us": max_ms * 1e3, "status": 0}}
    r.update(over)
    return r


class Table(unittest.TestCase):
    def row(self, text, sched):
        return next(line for line in text.splitlines() if line.startswith(f"| {sched} |"))

    def test_ratios_compare_with_eevdf(self):
        text = bor.render([run("eevdf", 40.0, 3000, 20000), run("scx_phase", 36.0, 3300, 4000)], {})
        row = self.row(text, "scx_phase")
        self.assertIn("36.0 (0.90x)", row)
        self.assertIn("4000 (0.20x)", row)
        self.assertIn("3300 (1.10x)", row)
        self.assertIn("| no |", row)

    def test_perf_time_beside_wall_time(self):
        text = bor.render([run("eevdf", 20.0, 3000, 5000, perf_seconds=8.0),
                           run("scx_phase", 28.0, 3000, 5000, perf_seconds=8.4)], {})
        row = self.row(text, "scx_phase")
        self.assertIn("| 28.0 (1.40x) | 8.40 (1.05x) |", row)

    def test_missing_perf_time_is_marked(self):
        text = bor.render([run("eevdf", 20.0, 3000, 5000), run("scx_phase", 28.0, 3000, 5000)], {})
        self.assertIn("| 28.0 (1.40x) | ? |", self.row(text, "scx_phase"))

    def test_repetitions_give_ranges(self):
        text = bor.render([run("eevdf", 40.0, 3000, 20000), run("eevdf", 44.0, 3000, 30000, rep=2)], {})
        self.assertIn("40.0-44.0", self.row(text, "eevdf"))
        self.assertIn("20000-30000", self.row(text, "eevdf"))

    def test_an_ejection_is_named(self):
        why = '[  187.22] sched_ext: BPF scheduler "x" disabled (runtime error)'
        ejected = {"ok": False, "ejected": True, "why": why, "error": "no result",
                   "shape": "oom", "load": "2560", "scheduler": "scx_cosmos", "rep": 1}
        text = bor.render([run("eevdf", 40.0, 3000, 20000, shape="oom"), ejected], {})
        row = self.row(text, "scx_cosmos")
        self.assertIn("**yes, 1 of 1**", row)
        self.assertIn('**: sched_ext: BPF scheduler "x" disabled (runtime error)', row)
        self.assertIn("2 GiB", text)


if __name__ == "__main__":
    unittest.main()
