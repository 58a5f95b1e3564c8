"""The Python package against a real hint service. Run by tests/python.rs,
which starts one (scx_phase --hint-service-only) and sets SCX_PHASE_SOCKET,
SCX_PHASE_LIB, SCX_PHASE_BIN and SCX_PHASE_PIN_DIR."""

import io
import json
import os
import resource
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import warnings

import scx_phase
import scx_phase.run as scx_run
from scx_phase import Phase

BIN = os.environ["SCX_PHASE_BIN"]
PIN_DIR = os.environ["SCX_PHASE_PIN_DIR"]


def hint_of(tid, want=None):
    """What `scx_phase get` says of a thread: the text after the colon. With
    `want`, wait up to 2 s for it: a new process's memory reaches the
    scheduler a grace period after it registered."""
    end = time.monotonic() + 2
    while True:
        out = subprocess.run([BIN, "--pin-dir", PIN_DIR, "get", "--tid", str(tid)],
                             capture_output=True, text=True, check=True).stdout
        got = out.split(":", 1)[1].strip()
        if want is None or got == want or time.monotonic() > end:
            return got
        time.sleep(0.02)


def run_py(code, env=None, user=None):
    cmd = [sys.executable, "-c", code]
    if user:
        cmd = ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups"] + cmd
    e = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(scx_phase.__file__)))
    e.update(env or {})
    return subprocess.run(cmd, capture_output=True, text=True, env=e)


class Names(unittest.TestCase):
    def test_names_numbers_and_enum(self):
        for p in Phase:
            self.assertIs(scx_phase._as_phase(p.name.lower()), p)
            self.assertIs(scx_phase._as_phase(int(p)), p)
            self.assertIs(scx_phase._as_phase(p), p)
        self.assertIs(scx_phase._as_phase("data-loading"), Phase.DATA_LOADING)

    def test_unknown_phase_lists_valid_names(self):
        for bad in ("warp", 6, -1, True, None):
            with self.assertRaises(ValueError) as cm:
                scx_phase._as_phase(bad)
            self.assertIn("idle, data_loading, forward, backward, optimizer, checkpoint",
                          str(cm.exception))


class Hints(unittest.TestCase):
    def setUp(self):
        scx_phase.clear_phase()
        scx_phase.clear_process_phase()

    def test_set_and_clear(self):
        me = threading.get_native_id()
        self.assertTrue(scx_phase.set_phase("backward"))
        want = "backward, node any (from the thread)"
        self.assertEqual(hint_of(me, want), want)
        self.assertTrue(scx_phase.set_phase(Phase.DATA_LOADING, node=0))
        want = "data_loading, node 0 (from the thread)"
        self.assertEqual(hint_of(me, want), want)
        scx_phase.clear_phase()
        self.assertEqual(hint_of(me, "no hint"), "no hint")

    def test_with_phase_restores_what_was_there(self):
        me = threading.get_native_id()
        scx_phase.set_phase("forward")
        with scx_phase.phase("checkpoint"):
            self.assertEqual(scx_phase.current_phase(), Phase.CHECKPOINT)
            w = "checkpoint, node any (from the thread)"
            self.assertEqual(hint_of(me, w), w)
            with scx_phase.phase("optimizer"):
                w = "optimizer, node any (from the thread)"
                self.assertEqual(hint_of(me, w), w)
            w = "checkpoint, node any (from the thread)"
            self.assertEqual(hint_of(me, w), w)
        w = "forward, node any (from the thread)"
        self.assertEqual(hint_of(me, w), w)
        scx_phase.clear_phase()
        with scx_phase.phase("backward"):
            pass
        self.assertEqual(hint_of(me, "no hint"), "no hint")

    def test_each_thread_hints_itself_and_others_follow_the_process(self):
        seen = {}
        go = threading.Event()

        def work():
            scx_phase.set_phase("optimizer")
            seen["tid"] = threading.get_native_id()
            go.wait()

        def idle():
            seen["idle"] = threading.get_native_id()
            go.wait()
        threads = [threading.Thread(target=work), threading.Thread(target=idle)]
        for t in threads:
            t.start()
        while len(seen) < 2:
            time.sleep(0.01)
        scx_phase.set_process_phase("forward")
        w = "optimizer, node any (from the thread)"
        self.assertEqual(hint_of(seen["tid"], w), w)
        w = "forward, node any (from the process)"
        self.assertEqual(hint_of(seen["idle"], w), w)
        go.set()
        for t in threads:
            t.join()

    def test_another_thread_until_it_exits(self):
        s = subprocess.Popen(["sleep", "60"])
        try:
            self.assertTrue(scx_phase.set_thread_phase(s.pid, "checkpoint"))
            w = "checkpoint, node any (from the tid map)"
            self.assertEqual(hint_of(s.pid, w), w)
            self.assertTrue(scx_phase.clear_thread_phase(s.pid))
            self.assertEqual(hint_of(s.pid, "no hint"), "no hint")
        finally:
            s.kill()
            s.wait()

    def test_a_dead_thread_is_refused(self):
        with open("/proc/sys/kernel/pid_max") as f:
            pid_max = int(f.read())
        with self.assertRaises(ProcessLookupError):
            scx_phase.set_thread_phase(pid_max + 1, "idle")

    def test_bad_arguments_raise(self):
        with self.assertRaises(ValueError):
            scx_phase.set_phase("warp")
        with self.assertRaises(ValueError):
            scx_phase.set_phase("idle", node=-3)


class WithoutTheScheduler(unittest.TestCase):
    def test_missing_service_is_a_no_op_with_one_warning(self):
        r = run_py(
            "import warnings, scx_phase\n"
            "warnings.simplefilter('always')\n"
            "with warnings.catch_warnings(record=True) as w:\n"
            "    oks = [scx_phase.set_phase('backward') for _ in range(5)]\n"
            "    with scx_phase.phase('checkpoint'): pass\n"
            "print(oks, len(w), w[0].message)\n",
            env={"SCX_PHASE_SOCKET": "/nothing-here/hint.sock"})
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("[False, False, False, False, False] 1 scx_phase is not running", r.stdout)
        self.assertIn("/nothing-here/hint.sock", r.stdout)

    def test_a_silent_service_costs_one_timeout_then_nothing(self):
        # A service that accepts and never answers (stuck, or hostile).
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "hint.sock")
            silent = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            silent.bind(path)
            silent.listen(8)
            r = run_py(
                "import time, warnings, scx_phase\n"
                "warnings.simplefilter('always')\n"
                "with warnings.catch_warnings(record=True) as w:\n"
                "    t = time.monotonic(); first = scx_phase.set_phase('backward')\n"
                "    t1 = time.monotonic() - t; t = time.monotonic()\n"
                "    rest = [scx_phase.set_phase('backward') for _ in range(5)]\n"
                "    t2 = time.monotonic() - t\n"
                "print(first, rest, round(t1, 2), round(t2, 3), len(w), w[0].message)\n",
                env={"SCX_PHASE_SOCKET": path, "SCX_PHASE_TIMEOUT_MS": "300"})
            silent.close()
        self.assertEqual(r.returncode, 0, r.stderr)
        words = r.stdout.split()
        self.assertTrue(r.stdout.startswith("False [False, False, False, False, False] "), r.stdout)
        t1, t2, n = float(words[6]), float(words[7]), int(words[8])
        # One wait of the timeout, then un-hinted at once, one warning.
        self.assertTrue(0.25 <= t1 < 2.0, r.stdout)
        self.assertLess(t2, 0.1, r.stdout)
        self.assertEqual(n, 1, r.stdout)
        self.assertIn("did not answer in time", r.stdout)

    def test_a_refused_phase_names_the_rule(self):
        if os.geteuid() != 0:
            self.fail("this test drops to nobody and needs root")
        r = run_py("import scx_phase\nprint(scx_phase.set_phase('idle'))\n"
                   "scx_phase.set_phase('backward')\n", user="65534")
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("True", r.stdout)
        self.assertIn("PermissionError", r.stderr)
        self.assertIn("may set idle only", r.stderr)
        self.assertIn("--hint-group", r.stderr)

    def test_torch_hooks_warn_once_when_refused(self):
        # The hooks' fallback, without importing torch: the module's
        # switch function on a user who may only set idle.
        r = run_py("import sys, types, warnings\n"
                   "sys.modules['torch'] = types.ModuleType('torch')\n"
                   "import scx_phase.torch as t\n"
                   "warnings.simplefilter('always')\n"
                   "with warnings.catch_warnings(record=True) as w:\n"
                   "    for _ in range(3): t._switch(t.BACKWARD)\n"
                   "print(len(w), t._refused)\n", user="65534")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("1 True", r.stdout)


def workload_rows():
    """The service's workloads of this process, once its 0.1 s refresh shows
    the last change (up to 2 s)."""
    out = subprocess.run([BIN, "--pin-dir", PIN_DIR, "--hint-socket", os.environ["SCX_PHASE_SOCKET"],
                          "workloads", "--json"], capture_output=True, text=True, check=True).stdout
    return [r for r in json.loads(out)["workloads"] if r["pid"] == os.getpid()]


def rows_when(ok):
    end = time.monotonic() + 2
    while True:
        rows = workload_rows()
        if ok(rows) or time.monotonic() > end:
            return rows
        time.sleep(0.02)


def locked_kb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmLck:"):
                return int(line.split()[1])
    return -1


class Workloads(unittest.TestCase):
    def test_bad_arguments_raise_before_asking_the_service(self):
        for kwargs in ({"placement": "diagonal"}, {"node": "mars"}, {"node": -2},
                       {"locked_memory": "lots"}, {"locked_memory": "-1MiB"}):
            with self.assertRaises(ValueError, msg=kwargs):
                scx_phase.Workload(**kwargs)

    def test_a_claim_is_held_until_close(self):
        with scx_phase.Workload(cpus=1) as w:
            self.assertEqual(len(w.cpus), 1)
            rows = rows_when(lambda r: r and r[0]["claims"])
            self.assertEqual(len(rows), 1, rows)
            self.assertEqual(rows[0]["claims"][0]["cpus"], w.cpus)
            self.assertFalse(rows[0]["claims"][0]["exclusive"])
        # The process stays a hint client; its claim is gone.
        rows = rows_when(lambda r: all(not row["claims"] for row in r))
        self.assertEqual([row["claims"] for row in rows], [[]] * len(rows))

    def test_a_checkpoint_buffer_is_locked_by_the_service_then_released_with_its_workload(self):
        # The service locks the buffer in its own address space: nothing of
        # this process's limits or locked memory changes.
        limits_before = resource.getrlimit(resource.RLIMIT_MEMLOCK)
        before = locked_kb()
        w = scx_phase.Workload(locked_memory="1MiB")
        buf = w.checkpoint_buffer("1MiB")
        self.assertEqual(len(buf), 1 << 20)
        buf[:4] = b"ckpt"
        self.assertEqual(bytes(buf[:4]), b"ckpt")
        # More than it reserved is asked of the service: granted within the
        # host's budget, refused past it with the numbers, before a page of
        # it is allocated.
        more = w.checkpoint_buffer("1MiB")
        rows = rows_when(lambda r: r and r[0]["locked_bytes"] == 2 << 20)
        self.assertEqual(rows[0]["locked_bytes"], 2 << 20, rows)
        self.assertEqual(locked_kb(), before)
        self.assertEqual(resource.getrlimit(resource.RLIMIT_MEMLOCK), limits_before)
        with self.assertRaises(OSError) as cm:
            w.checkpoint_buffer("64TiB")
        self.assertIn("of locked memory asked; the host's budget (--max-locked-mem", str(cm.exception))
        w.close()
        rows = rows_when(lambda r: all(row["locked_bytes"] == 0 for row in r))
        self.assertEqual([row["locked_bytes"] for row in rows], [0] * len(rows), rows)
        self.assertEqual(resource.getrlimit(resource.RLIMIT_MEMLOCK), limits_before)
        for view in (buf, more):  # the views went with it
            with self.assertRaises(ValueError):
                view[0]
        w.close()  # twice is harmless


def fake_save(obj, f):
    """torch.save's shape: writes in pieces to a file object."""
    for i in range(0, len(obj), 7):
        f.write(obj[i:i + 7])


class RunModule(unittest.TestCase):
    def test_options_and_defaults(self):
        o = scx_run.parse_args(["train.py", "--lr", "1"])
        self.assertEqual((o.cpus_per_rank, o.node, o.exclusive, o.placement, o.locked_memory),
                         (0, None, False, "pack", "0"))
        self.assertEqual((o.script, o.args), ("train.py", ["--lr", "1"]))
        o = scx_run.parse_args(["--cpus", "4", "--exclusive", "--placement", "spread", "t.py"])
        self.assertEqual((o.cpus_per_rank, o.exclusive, o.placement), (4, True, "spread"))

    def test_each_rank_finds_its_node(self):
        o = scx_run.parse_args(["t.py"])
        self.assertEqual(scx_run.rank_node(o, env={}), "any")
        self.assertEqual(scx_run.rank_node(o, env={"LOCAL_RANK": "1"}), "gpu")
        o = scx_run.parse_args(["--node", "1", "t.py"])
        self.assertEqual(scx_run.rank_node(o, env={}), 1)
        o = scx_run.parse_args(["--rank-nodes", "0, 1", "t.py"])
        self.assertEqual(scx_run.rank_node(o, env={"LOCAL_RANK": "1"}), 1)
        self.assertEqual(scx_run.rank_node(o, env={}), 0)
        with self.assertRaises(SystemExit) as cm:
            scx_run.rank_node(o, env={"LOCAL_RANK": "2"})
        self.assertIn("local rank 2 has none", str(cm.exception))

    def test_a_save_goes_through_the_buffer_to_the_file(self):
        buf = memoryview(bytearray(64))
        save = scx_run.save_through(buf, fake_save)
        data = bytes(range(50))
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "c.pt")
            with warnings.catch_warnings():
                warnings.simplefilter("error")
                save(data, path)
            with open(path, "rb") as f:
                self.assertEqual(f.read(), data)
        self.assertEqual(bytes(buf[:50]), data)
        self.assertFalse(save.last_spilled)
        out = io.BytesIO()
        save(data[::-1], out)  # to a file object as well
        self.assertEqual(out.getvalue(), data[::-1])
        self.assertIs(save.original, fake_save)

    def test_a_save_larger_than_the_buffer_spills_with_one_warning(self):
        save = scx_run.save_through(memoryview(bytearray(64)), fake_save)
        data = bytes(i % 251 for i in range(1000))
        outs = [io.BytesIO(), io.BytesIO()]
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for out in outs:
                save(data, out)
        self.assertTrue(save.last_spilled)
        self.assertEqual([o.getvalue() for o in outs], [data, data])
        self.assertEqual(len(caught), 1, [str(c.message) for c in caught])
        self.assertIn("outgrew the 64-byte locked buffer", str(caught[0].message))

    def test_run_with_a_bad_size_is_a_one_line_error(self):
        r = run_py("import scx_phase.run as r; r.main(['--locked-memory', 'lots', 'x.py'])")
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertEqual(r.stderr.strip().splitlines(),
                         ["scx_phase.run: --locked-memory: invalid size 'lots' "
                          "(like 4GiB, 512M or a number of bytes)"])


class Figures(unittest.TestCase):
    def test_a_registered_process_reads_its_own_figures(self):
        stats = scx_phase.process_stats()
        self.assertEqual(tuple(stats), scx_phase.SLOTS)
        self.assertEqual(stats["backward"],
                         {"runtime_ns": 0, "boosted_ns": 0, "wait_ns": 0, "waits": 0})

    def test_without_the_service_there_are_none_and_one_warning(self):
        r = run_py("import warnings, scx_phase\n"
                   "with warnings.catch_warnings(record=True) as w:\n"
                   "    warnings.simplefilter('always')\n"
                   "    print(scx_phase.process_stats(), scx_phase.process_stats(), len(w))\n",
                   env={"SCX_PHASE_SOCKET": "/nothing-here/hint.sock"})
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout.strip(), "None None 1")


class MlflowMetrics(unittest.TestCase):
    """The metric names and values (MLflow itself: tests/python.rs)."""

    def figures(self, **slots):
        zero = {"runtime_ns": 0, "boosted_ns": 0, "wait_ns": 0, "waits": 0}
        return {s: dict(zero, **slots.get(s, {})) for s in scx_phase.SLOTS}

    def test_slots_that_ran_or_waited_and_the_boosted_share(self):
        from scx_phase.mlflow import metrics
        m = metrics(self.figures(
            backward={"runtime_ns": 3_000_000_000, "boosted_ns": 3_000_000_000,
                      "wait_ns": 2_000_000, "waits": 4},
            unhinted={"runtime_ns": 1_000_000_000},
            idle={"waits": 1, "wait_ns": 5}))
        self.assertEqual(m, {
            "scx_phase.cpu_seconds.backward": 3.0, "scx_phase.wait_seconds.backward": 0.002,
            "scx_phase.waits.backward": 4.0,
            "scx_phase.cpu_seconds.unhinted": 1.0, "scx_phase.wait_seconds.unhinted": 0.0,
            "scx_phase.waits.unhinted": 0.0,
            "scx_phase.cpu_seconds.idle": 0.0, "scx_phase.wait_seconds.idle": 5e-9,
            "scx_phase.waits.idle": 1.0,
            "scx_phase.boosted_share": 0.75})
        self.assertEqual(metrics(self.figures()), {})

    def test_ranks_that_share_a_run_get_their_own_names(self):
        from scx_phase.mlflow import _suffix
        self.assertEqual(_suffix({"RANK": "3", "WORLD_SIZE": "4"}), ".rank3")
        self.assertEqual(_suffix({"RANK": "0", "WORLD_SIZE": "1"}), "")
        self.assertEqual(_suffix({"WORLD_SIZE": "x"}), "")
        self.assertEqual(_suffix({}), "")

    def test_run_options(self):
        o = scx_run.parse_args(["t.py"])
        self.assertEqual((o.mlflow, o.mlflow_every), (False, 30.0))
        o = scx_run.parse_args(["--mlflow", "--mlflow-every", "2.5", "t.py"])
        self.assertEqual((o.mlflow, o.mlflow_every), (True, 2.5))

    def test_bad_mlflow_options_are_one_line_errors(self):
        r = run_py("import scx_phase.run as r; r.main(['--mlflow', '--mlflow-every', '0', 'x.py'])")
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertEqual(r.stderr.strip().splitlines(),
                         ["scx_phase.run: --mlflow-every: 0.0 is not above 0"])
        # Without MLflow (None in sys.modules makes its import fail).
        r = run_py("import sys; sys.modules['mlflow'] = None\n"
                   "import scx_phase.run as r; r.main(['--mlflow', 'x.py'])")
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertEqual(len(r.stderr.strip().splitlines()), 1, r.stderr)
        self.assertIn("--mlflow needs MLflow", r.stderr)
        self.assertIn("pip install mlflow-skinny", r.stderr)


class Adapters(unittest.TestCase):
    def test_adapters_need_their_libraries(self):
        # Neither Lightning nor transformers is installed here.
        for mod in ("scx_phase.lightning", "scx_phase.huggingface"):
            r = run_py(f"import {mod}")
            self.assertNotEqual(r.returncode, 0, mod)
            self.assertIn("ModuleNotFoundError", r.stderr, mod)

    def test_run_without_a_script_is_a_usage_error(self):
        r = run_py("import sys, runpy\nsys.argv = ['run']\nrunpy.run_module('scx_phase.run', run_name='__main__')")
        self.assertEqual(r.returncode, 2, r.stderr)
        self.assertIn("usage: python -m scx_phase.run", r.stderr)


if __name__ == "__main__":
    unittest.main()
