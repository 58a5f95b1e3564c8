"""The Python package against a real phase map. Run by tests/python.rs,
which creates the map and sets SCX_PHASE_MAP, SCX_PHASE_LIB, SCX_PHASE_BIN
and SCX_PHASE_PIN_DIR."""

import os
import subprocess
import sys
import threading
import unittest

import scx_phase
from scx_phase import Phase

BIN = os.environ["SCX_PHASE_BIN"]
PIN_DIR = os.environ["SCX_PHASE_PIN_DIR"]


def hint_of(tid):
    """What `scx_phase get` says of a thread: the text after the colon."""
    out = subprocess.run([BIN, "--pin-dir", PIN_DIR, "get", "--tid", str(tid)],
                         capture_output=True, text=True, check=True).stdout
    return out.split(":", 1)[1].strip()


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

    def test_set_and_clear(self):
        me = threading.get_native_id()
        self.assertTrue(scx_phase.set_phase("backward"))
        self.assertEqual(hint_of(me), "backward, node any")
        self.assertTrue(scx_phase.set_phase(Phase.DATA_LOADING, node=0))
        self.assertEqual(hint_of(me), "data_loading, node 0")
        scx_phase.clear_phase()
        self.assertEqual(hint_of(me), "no hint")

    def test_with_phase_restores_what_was_there(self):
        me = threading.get_native_id()
        scx_phase.set_phase("forward")
        with scx_phase.phase("checkpoint"):
            self.assertEqual(hint_of(me), "checkpoint, node any")
            with scx_phase.phase("optimizer"):
                self.assertEqual(hint_of(me), "optimizer, node any")
            self.assertEqual(hint_of(me), "checkpoint, node any")
        self.assertEqual(hint_of(me), "forward, node any")
        scx_phase.clear_phase()
        with scx_phase.phase("backward"):
            pass
        self.assertEqual(hint_of(me), "no hint")

    def test_each_thread_hints_itself(self):
        tids = []

        def work():
            scx_phase.set_phase("optimizer")
            tids.append(threading.get_native_id())
        t = threading.Thread(target=work)
        t.start()
        t.join()
        # The thread is gone; its entry stays until a scheduler removes it.
        out = subprocess.run([BIN, "--pin-dir", PIN_DIR, "dump", "--json"],
                             capture_output=True, text=True, check=True).stdout
        self.assertIn(f'"tid": {tids[0]}', out)

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
    def test_missing_map_is_a_no_op_with_one_warning(self):
        r = run_py(
            "import warnings, scx_phase\n"
            "warnings.simplefilter('always')\n"
            "with warnings.catch_warnings(record=True) as w:\n"
            "    oks = [scx_phase.set_phase('backward') for _ in range(5)]\n"
            "    with scx_phase.phase('checkpoint'): pass\n"
            "print(oks, len(w), w[0].message)\n",
            env={"SCX_PHASE_MAP": "/sys/fs/bpf/nothing-here/phase_map"})
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("[False, False, False, False, False] 1 scx_phase is not running", r.stdout)

    def test_permission_denied_names_the_map_and_the_remedy(self):
        if os.geteuid() != 0:
            self.fail("this test drops to nobody and needs root")
        r = run_py("import scx_phase\nscx_phase.set_phase('backward')\n", user="65534")
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("PermissionError", r.stderr)
        self.assertIn(os.environ["SCX_PHASE_MAP"], r.stderr)
        self.assertIn("--hint-group", r.stderr)


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
