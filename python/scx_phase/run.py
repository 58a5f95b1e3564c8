"""Run a training script with scx_phase's PyTorch hooks on, unmodified, as
a workload of the host (the workload API) if asked:

    python -m scx_phase.run [OPTIONS] train.py ARGS...
    torchrun --nproc-per-node 2 -m scx_phase.run --cpus-per-rank 8 --exclusive train.py

Each process (each torchrun rank) holds its own workload for as long as
it runs. With --locked-memory, torch.save() serializes into the locked
checkpoint buffer, then writes the file: a save under memory pressure
needs no new memory for the serialized bytes. With --mlflow, the process's
per-phase CPU time, waits and boosted share go to an MLflow run
(scx_phase.mlflow), which the script's own mlflow.start_run() resumes.
"""

import argparse
import io
import os
import runpy
import sys
import threading
import warnings

from . import Workload, clear_phase, clear_process_phase, parse_size

USAGE_EPILOG = """\
node: a node id, "any", or "gpu" (the node of the GPU of this rank, from
CUDA_VISIBLE_DEVICES and LOCAL_RANK). --rank-nodes stands in for GPUs where
there are none: rank i (LOCAL_RANK) claims on the i-th node of the list.
"""


def workload():
    """The Workload this process runs under (None without one). Kept on
    the package: under `-m`, this module runs as __main__, and a script's
    `import scx_phase.run` gets a second copy of it."""
    return getattr(sys.modules[__package__], "_run_workload", None)


def parse_args(argv):
    p = argparse.ArgumentParser(
        prog="python -m scx_phase.run",
        description="Run a training script with scx_phase's PyTorch hooks, as a workload.",
        epilog=USAGE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--cpus-per-rank", "--cpus", type=int, default=0, metavar="N",
                   help="CPUs each process claims (default: 0, none)")
    p.add_argument("--node", default=None,
                   help='where: a node id, "any" or "gpu" (default: "gpu" under '
                        'torchrun, else "any")')
    p.add_argument("--rank-nodes", default=None, metavar="N,N,...",
                   help="the node of each local rank, in place of GPUs (default: none)")
    p.add_argument("--exclusive", action="store_true",
                   help="nobody else is placed on the claimed CPUs (default: off)")
    p.add_argument("--placement", choices=("pack", "spread"), default="pack",
                   help="whole cores first, or one CPU per core first (default: pack)")
    p.add_argument("--locked-memory", default="0", metavar="SIZE",
                   help="a locked checkpoint buffer for torch.save, e.g. 4GiB (default: 0, none)")
    p.add_argument("--no-hooks", action="store_true",
                   help="leave PyTorch's phase hooks off (default: on)")
    p.add_argument("--mlflow", action="store_true",
                   help="log scx_phase's figures to an MLflow run: $MLFLOW_RUN_ID, or a new "
                        "one, which the script's mlflow.start_run() resumes (default: off)")
    p.add_argument("--mlflow-every", type=float, default=30.0, metavar="SECONDS",
                   help="how often --mlflow logs, besides at the end (default: 30)")
    p.add_argument("script")
    p.add_argument("args", nargs=argparse.REMAINDER)
    return p.parse_args(argv)


def rank_node(opts, env=os.environ):
    """The node this process claims on."""
    rank = int(env.get("LOCAL_RANK", "0") or 0)
    if opts.rank_nodes:
        nodes = [n.strip() for n in opts.rank_nodes.split(",") if n.strip()]
        if rank >= len(nodes):
            raise SystemExit(f"scx_phase.run: --rank-nodes names {len(nodes)} node(s); "
                             f"local rank {rank} has none")
        return int(nodes[rank])
    if opts.node is not None:
        return int(opts.node) if opts.node.isdigit() else opts.node
    return "gpu" if "LOCAL_RANK" in env else "any"


class _BufferWriter(io.RawIOBase):
    """A write-only file over the locked buffer; what does not fit goes on
    in ordinary memory (the save still succeeds, just without the
    guarantee), and `spilled` says so."""

    def __init__(self, buf):
        self._buf = buf
        self._n = 0
        self._spill = None

    def writable(self):
        return True

    def write(self, b):
        b = memoryview(b).cast("B")
        if self._spill is None and self._n + len(b) <= len(self._buf):
            self._buf[self._n:self._n + len(b)] = b
            self._n += len(b)
            return len(b)
        if self._spill is None:
            self._spill = io.BytesIO()
            self._spill.write(self._buf[:self._n])
        return self._spill.write(b)

    def tell(self):
        return self._n if self._spill is None else self._spill.tell()

    @property
    def spilled(self):
        return self._spill is not None

    def contents(self):
        return self._buf[:self._n] if self._spill is None else self._spill.getbuffer()


def save_through(buf, torch_save):
    """A torch.save that serializes into `buf`, then writes the file. One
    save at a time: they share the buffer."""
    lock = threading.Lock()

    def save(obj, f, *args, **kwargs):
        with lock:
            w = _BufferWriter(buf)
            torch_save(obj, w, *args, **kwargs)
            if w.spilled and not save.warned:
                save.warned = True
                warnings.warn(f"scx_phase: a checkpoint of {w.tell()} bytes outgrew the "
                              f"{len(buf)}-byte locked buffer; the rest went to ordinary "
                              "memory (raise --locked-memory)", RuntimeWarning)
            data = w.contents()
            if isinstance(f, (str, bytes, os.PathLike)):
                with open(f, "wb") as out:
                    out.write(data)
            else:
                f.write(data)
            save.saves += 1
            save.last_spilled = w.spilled
    save.saves = 0
    save.last_spilled = False
    save.warned = False
    save.original = torch_save
    return save


def end_hints():
    """Drop this thread's and the process's phase, quietly."""
    try:
        clear_phase()
        clear_process_phase()
    except OSError:
        pass


def start_mlflow(opts):
    """The MLflow run this process logs to, and its logger: (logger,
    run id if this created the run)."""
    if opts.mlflow_every <= 0:
        raise SystemExit(f"scx_phase.run: --mlflow-every: {opts.mlflow_every} is not above 0")
    try:
        from . import mlflow as scx_mlflow
        run_id, created = scx_mlflow.run_for(opts.script)
        logger = scx_mlflow.Logger(every=opts.mlflow_every, run_id=run_id)
    except ImportError as e:
        raise SystemExit(f"scx_phase.run: --mlflow needs MLflow ({e}); "
                         "pip install mlflow-skinny")
    except Exception as e:  # noqa: BLE001 - MLflow's errors vary by store
        raise SystemExit(f"scx_phase.run: --mlflow: {e}")
    # The script's mlflow.start_run() resumes this run rather than failing.
    os.environ["MLFLOW_RUN_ID"] = run_id
    return logger.start(), run_id if created else None


def main(argv=None):
    opts = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        locked = parse_size(opts.locked_memory)
    except ValueError as e:
        raise SystemExit(f"scx_phase.run: --locked-memory: {e}")
    logger, created_run = start_mlflow(opts) if opts.mlflow else (None, None)
    workload = None
    if opts.cpus_per_rank or locked:
        try:
            workload = Workload(cpus=opts.cpus_per_rank, node=rank_node(opts),
                                exclusive=opts.exclusive, placement=opts.placement,
                                locked_memory=locked)
        except (OSError, ValueError) as e:
            raise SystemExit(f"scx_phase.run: {e}")
    if not opts.no_hooks:
        from . import torch as scx_torch
        scx_torch.enable()
    torch = None
    if workload is not None and locked:
        import torch
        try:
            torch.save = save_through(workload.checkpoint_buffer(locked), torch.save)
        except OSError as e:
            raise SystemExit(f"scx_phase.run: {e}")
    sys.argv = [opts.script] + opts.args
    pkg = sys.modules[__package__]
    pkg._run_workload = workload
    ok = False
    try:
        runpy.run_path(opts.script, run_name="__main__")
        ok = True
    except SystemExit as e:
        ok = e.code in (None, 0)
        raise
    finally:
        if logger is not None:
            # The script's phases are over: what the process does from here
            # (MLflow, interpreter exit) is not training.
            if not opts.no_hooks:
                end_hints()
            logger.stop()
            if created_run:
                from . import mlflow as scx_mlflow
                scx_mlflow.end_run(created_run, ok)
        # The buffer goes with the workload: no save may use it after.
        if torch is not None:
            torch.save = torch.save.original
        if workload is not None:
            pkg._run_workload = None
            workload.close()


if __name__ == "__main__":
    main()
