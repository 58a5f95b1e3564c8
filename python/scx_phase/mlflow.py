"""Log what scx_phase did for this process to an MLflow run: the CPU time
of its threads in each phase, how long and how often they waited for a
CPU, and the share of their CPU time the scheduler boosted.

    import mlflow, scx_phase.mlflow
    with mlflow.start_run():
        with scx_phase.mlflow.Logger(every=30):
            train()

or, with no code change:

    python -m scx_phase.run --mlflow train.py

The figures are the scheduler's own (the hint service answers a process
for itself only), counted since the process registered (its first hint).
They are logged every `every` seconds and once more at the end, with
step = whole seconds since logging began:

    scx_phase.cpu_seconds.<slot>    CPU time in that phase
    scx_phase.wait_seconds.<slot>   time runnable but waiting for a CPU
    scx_phase.waits.<slot>          how many times it waited
    scx_phase.boosted_share         boosted CPU time / all CPU time (0-1)

<slot> is a phase name, or "unhinted" for threads without one. A slot
appears once it has run or waited. Under torchrun with more than one
rank, every name ends in ".rank<RANK>", so ranks that share a run do not
overwrite each other.

When scx_phase is not running, nothing is logged (one warning); when
MLflow refuses a batch, the logger warns once and training goes on.
"""

import os
import threading
import time
import warnings

import scx_phase

METRIC_PREFIX = "scx_phase."


def _suffix(env=os.environ):
    try:
        ranks = int(env.get("WORLD_SIZE", "1") or 1)
    except ValueError:
        ranks = 1
    return f".rank{env.get('RANK', '0')}" if ranks > 1 else ""


def metrics(stats, suffix=""):
    """The metrics for `stats` (what scx_phase.process_stats() returns)."""
    out = {}
    total = boosted = 0
    for slot, f in stats.items():
        if not (f["runtime_ns"] or f["waits"]):
            continue
        out[f"{METRIC_PREFIX}cpu_seconds.{slot}{suffix}"] = f["runtime_ns"] / 1e9
        out[f"{METRIC_PREFIX}wait_seconds.{slot}{suffix}"] = f["wait_ns"] / 1e9
        out[f"{METRIC_PREFIX}waits.{slot}{suffix}"] = float(f["waits"])
        total += f["runtime_ns"]
        boosted += f["boosted_ns"]
    if total:
        out[f"{METRIC_PREFIX}boosted_share{suffix}"] = boosted / total
    return out


class Logger:
    """Logs this process's figures to run `run_id` (default: the calling
    thread's active run) every `every` seconds on a background thread,
    and at stop(). A context manager: start on entry, stop on exit."""

    def __init__(self, every=30.0, run_id=None):
        import mlflow
        if every <= 0:
            raise ValueError(f"every must be above 0 seconds, not {every!r}")
        if run_id is None:
            run = mlflow.active_run()
            if run is None:
                raise RuntimeError("scx_phase.mlflow: no active MLflow run "
                                   "(start one first, or pass run_id)")
            run_id = run.info.run_id
        self.run_id = run_id
        self.every = every
        self.logged = 0
        self._client = mlflow.MlflowClient()
        self._metric = mlflow.entities.Metric
        self._suffix = _suffix()
        self._t0 = time.monotonic()
        self._stop = threading.Event()
        self._thread = None
        self._lock = threading.Lock()
        self._warned = False

    def log(self):
        """Log the figures now; returns what was logged ({} if nothing)."""
        stats = scx_phase.process_stats()
        if stats is None:
            return {}
        m = metrics(stats, self._suffix)
        if not m:
            return m
        step = int(time.monotonic() - self._t0)
        at = int(time.time() * 1000)
        batch = [self._metric(k, v, at, step) for k, v in sorted(m.items())]
        with self._lock:
            self._client.log_batch(self.run_id, metrics=batch)
            self.logged += 1
        return m

    def _loop(self):
        while not self._stop.wait(self.every):
            self._log_quietly()

    def _log_quietly(self):
        try:
            return self.log()
        except Exception as e:  # noqa: BLE001 - training must go on
            if not self._warned:
                self._warned = True
                warnings.warn(f"scx_phase.mlflow: cannot log to run {self.run_id}: {e}",
                              RuntimeWarning)
            return {}

    def start(self):
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="scx_phase-mlflow",
                                            daemon=True)
            self._thread.start()
        return self

    def stop(self):
        """Stop the background thread and log the final figures."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        return self._log_quietly()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
        return False


def run_for(script, env=os.environ):
    """The run that `python -m scx_phase.run --mlflow` logs to: $MLFLOW_RUN_ID
    if set, else a new run in $MLFLOW_EXPERIMENT_ID, $MLFLOW_EXPERIMENT_NAME
    or the default experiment. Returns (run_id, created)."""
    import mlflow
    if env.get("MLFLOW_RUN_ID"):
        return env["MLFLOW_RUN_ID"], False
    client = mlflow.MlflowClient()
    experiment = env.get("MLFLOW_EXPERIMENT_ID")
    name = env.get("MLFLOW_EXPERIMENT_NAME")
    if not experiment and name:
        found = client.get_experiment_by_name(name)
        experiment = found.experiment_id if found else client.create_experiment(name)
    run = client.create_run(experiment or "0", run_name=os.path.basename(script),
                            tags={"scx_phase.run": "1"})
    return run.info.run_id, True


def end_run(run_id, ok):
    import mlflow
    mlflow.MlflowClient().set_terminated(run_id, "FINISHED" if ok else "FAILED")
