"""PyTorch with no code change: `scx_phase.torch.enable()` hints every phase.

- forward: a global module forward pre-hook
- backward: `torch.autograd.backward` / `Tensor.backward` on the calling
  thread, a global module backward pre-hook where PyTorch has one (2.0+) for
  whichever thread runs backward; PyTorch's autograd device threads
  (pt_autograd_*) are also boosted by the scheduler from their names
- optimizer: global optimizer step pre/post hooks (2.0+), else a wrapper
  around every Optimizer subclass's `step`
- checkpoint: `torch.save`, for its duration
- data_loading: DataLoader workers (through their worker_init_fn) and the
  main thread while it loads batches itself (num_workers=0)

In forward, backward and optimizer the process-wide phase follows too, so
the intra-op pool (OpenMP or TBB workers, which nobody hints by name) runs
in the same phase as the thread that feeds it. SCX_PHASE_PROCESS=0 turns
that off.

When the hint service refuses a phase (this user may only set idle), the
hooks warn once and stop hinting; training goes on.

`python -m scx_phase.run train.py ARGS...` runs a script with all this on.
"""

import contextlib
import functools
import importlib
import os
import warnings

import torch

from . import Phase, _state, clear_phase, clear_process_phase, set_phase, set_process_phase

__all__ = ["enable", "enabled", "worker_init_fn", "gpu_node", "follow_process"]

_enabled = False
_refused = False
FORWARD, BACKWARD, OPTIMIZER = int(Phase.FORWARD), int(Phase.BACKWARD), int(Phase.OPTIMIZER)
_COMPUTE = (FORWARD, BACKWARD, OPTIMIZER)
_PROCESS = os.environ.get("SCX_PHASE_PROCESS", "1") != "0"


def follow_process(on=True):
    """Whether the process-wide phase follows forward, backward and
    optimizer (default: on; SCX_PHASE_PROCESS=0 starts with it off)."""
    global _PROCESS
    _PROCESS = bool(on)
    if not _PROCESS and not _refused:
        try:
            clear_process_phase()
        except PermissionError:
            pass


def _switch(code):
    """This thread to phase `code` (None: no hint); in a compute phase the
    process-wide phase follows, for the intra-op pool."""
    global _refused
    if _refused:
        return
    try:
        if code is None:
            clear_phase()
            return
        set_phase(code)
        if _PROCESS and code in _COMPUTE:
            set_process_phase(code)
    except PermissionError as e:
        _refused = True
        warnings.warn(f"scx_phase: hints refused, training goes on unhinted: {e}",
                      RuntimeWarning, stacklevel=3)


def _enter(code):
    # Hooks fire per module: skip the work when nothing changes.
    if getattr(_state, "code", None) != code:
        _switch(code)


@contextlib.contextmanager
def _hinted(code):
    prev = getattr(_state, "code", None)
    _switch(code)
    try:
        yield
    finally:
        _switch(prev)


def gpu_node(device=None):
    """The NUMA node of a CUDA device (from sysfs), or None."""
    try:
        if not torch.cuda.is_available():
            return None
        props = torch.cuda.get_device_properties(device if device is not None else 0)
        bus = getattr(props, "pci_bus_id", None)
        if not bus:
            return None
        with open(f"/sys/bus/pci/devices/{bus.lower()}/numa_node") as f:
            node = int(f.read())
        return node if node >= 0 else None
    except (OSError, RuntimeError, ValueError):
        return None


def worker_init_fn(node=None, chain=None):
    """A DataLoader worker_init_fn that hints data_loading on `node` (default:
    the GPU's node, else any), then calls `chain(worker_id)` if given."""
    def init(worker_id):
        try:
            set_phase(Phase.DATA_LOADING, node if node is not None else gpu_node())
        except PermissionError as e:
            warnings.warn(f"scx_phase: hints refused: {e}", RuntimeWarning)
        if chain is not None:
            chain(worker_id)
    return init


def _wrap(fn, code):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with _hinted(code):
            return fn(*args, **kwargs)
    wrapper.__scx_phase_wrapped__ = True
    return wrapper


def _wrap_optimizer_steps():
    """PyTorch before 2.0 has no global optimizer hooks: wrap each class's
    step, now and for classes defined later."""
    def wrap_class(cls):
        step = cls.__dict__.get("step")
        if step is not None and not getattr(step, "__scx_phase_wrapped__", False):
            cls.step = _wrap(step, OPTIMIZER)

    def walk(cls):
        for sub in cls.__subclasses__():
            wrap_class(sub)
            walk(sub)
    walk(torch.optim.Optimizer)

    def init_subclass(cls, **kwargs):
        super(torch.optim.Optimizer, cls).__init_subclass__(**kwargs)
        wrap_class(cls)
    torch.optim.Optimizer.__init_subclass__ = classmethod(init_subclass)


def _hook_dataloader():
    dl = torch.utils.data.DataLoader
    original_init = dl.__init__

    @functools.wraps(original_init)
    def init(self, *args, **kwargs):
        original_init(self, *args, **kwargs)
        if self.num_workers > 0:
            self.worker_init_fn = worker_init_fn(chain=self.worker_init_fn)
    dl.__init__ = init

    from torch.utils.data import dataloader as mod
    single = mod._SingleProcessDataLoaderIter
    single.__next__ = _wrap(single.__next__, int(Phase.DATA_LOADING))


def enable():
    """Install the hooks (once per process). Returns what was hooked."""
    global _enabled
    if _enabled:
        return []
    _enabled = True
    hooked = []
    mm = torch.nn.modules.module
    mm.register_module_forward_pre_hook(lambda module, args: _enter(FORWARD))
    hooked.append("forward")
    if hasattr(mm, "register_module_full_backward_pre_hook"):
        mm.register_module_full_backward_pre_hook(lambda module, grad: _enter(BACKWARD))
    torch.autograd.backward = _wrap(torch.autograd.backward, BACKWARD)
    torch.Tensor.backward = _wrap(torch.Tensor.backward, BACKWARD)
    hooked.append("backward")
    opt = importlib.import_module("torch.optim.optimizer")
    if hasattr(opt, "register_optimizer_step_pre_hook"):
        opt.register_optimizer_step_pre_hook(lambda o, a, k: _enter(OPTIMIZER))
        hooked.append("optimizer (global hooks)")
    else:
        _wrap_optimizer_steps()
        hooked.append("optimizer (wrapped step)")
    torch.save = _wrap(torch.save, int(Phase.CHECKPOINT))
    hooked.append("checkpoint")
    _hook_dataloader()
    hooked.append("data_loading")
    if os.environ.get("SCX_PHASE_VERBOSE"):
        print(f"scx_phase: PyTorch {torch.__version__} hooked: {', '.join(hooked)}")
    return hooked


def enabled():
    return _enabled
