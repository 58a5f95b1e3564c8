"""Tell the scx_phase scheduler which training phase a thread, or the whole
process, is in.

    import scx_phase
    scx_phase.set_phase("backward")
    with scx_phase.phase("checkpoint"):
        torch.save(model.state_dict(), path)
    scx_phase.set_process_phase("forward")   # threads without a hint of their own

Calls go through libscx_phase.so (found beside this package, or at
$SCX_PHASE_LIB). The process registers once with the scx_phase hint service
($SCX_PHASE_SOCKET, default /run/scx_phase/hint.sock); after that a hint is
a plain store to memory the scheduler reads, with no system call, from any
container that mounts the socket's folder. When scx_phase is not running,
calls do nothing and warn once per process: training never fails because
the scheduler is absent. A phase the service does not allow this process
(anything above idle, without --hint-group membership) raises
PermissionError with the rule.
"""

import contextlib
import ctypes
import enum
import errno
import os
import threading
import warnings

__all__ = [
    "Phase", "ScxPhaseError", "set_phase", "clear_phase", "phase", "current_phase",
    "set_process_phase", "clear_process_phase", "set_thread_phase",
    "clear_thread_phase", "socket_path", "Workload", "PressureEvent", "process_stats",
    "SLOTS",
]


class Phase(enum.IntEnum):
    """The training phases, numbered as the scheduler expects."""
    IDLE = 0
    DATA_LOADING = 1
    FORWARD = 2
    BACKWARD = 3
    OPTIMIZER = 4
    CHECKPOINT = 5


class ScxPhaseError(OSError):
    """A hint could not be written for a reason other than a missing map."""


def _as_phase(p):
    if isinstance(p, Phase):
        return p
    if isinstance(p, int) and not isinstance(p, bool):
        try:
            return Phase(p)
        except ValueError:
            pass
    elif isinstance(p, str):
        name = p.strip().upper().replace("-", "_")
        if name in Phase.__members__:
            return Phase[name]
    valid = ", ".join(m.name.lower() for m in Phase)
    raise ValueError(f"unknown phase {p!r} (valid: {valid}, or 0-5)")


def _node(node):
    if node is None:
        return -1
    if isinstance(node, int) and not isinstance(node, bool) and node >= 0:
        return node
    raise ValueError(f"invalid NUMA node {node!r}")


def socket_path():
    """The hint service this process talks to."""
    return os.environ.get("SCX_PHASE_SOCKET", "/run/scx_phase/hint.sock")


class _WorkloadReq(ctypes.Structure):
    _fields_ = [("cpus", ctypes.c_int), ("node", ctypes.c_int), ("exclusive", ctypes.c_int),
                ("spread", ctypes.c_int), ("locked_memory", ctypes.c_ulonglong)]


class _Pressure(ctypes.Structure):
    _fields_ = [("full", ctypes.c_int), ("stall_us", ctypes.c_uint), ("window_us", ctypes.c_uint),
                ("some_avg10", ctypes.c_double), ("full_avg10", ctypes.c_double),
                ("figures", ctypes.c_char_p)]


class _Stats(ctypes.Structure):
    _fields_ = [("runtime_ns", ctypes.c_ulonglong), ("boosted_ns", ctypes.c_ulonglong),
                ("wait_ns", ctypes.c_ulonglong), ("waits", ctypes.c_ulonglong)]


# The scheduler's phase slots: the phases, then threads without one.
SLOTS = tuple(p.name.lower() for p in Phase) + ("unhinted",)
_PRESSURE_FN = ctypes.CFUNCTYPE(None, ctypes.POINTER(_Pressure), ctypes.c_void_p)
NODE_ANY, NODE_GPU = -1, -2

_lib = None
_lib_lock = threading.Lock()


def _load():
    global _lib
    if _lib is not None:
        return _lib
    with _lib_lock:
        if _lib is None:
            here = os.path.dirname(os.path.abspath(__file__))
            path = os.environ.get("SCX_PHASE_LIB") or os.path.join(here, "libscx_phase.so")
            try:
                lib = ctypes.CDLL(path)
            except OSError as e:
                raise ImportError(
                    f"cannot load {path}: {e}; build it with `cargo build --release` "
                    "and point SCX_PHASE_LIB at target/release/libscx_phase.so") from e
            for name, args in (("scx_phase_set", [ctypes.c_int]),
                               ("scx_phase_set_node", [ctypes.c_int, ctypes.c_int]),
                               ("scx_phase_set_tid", [ctypes.c_int, ctypes.c_int, ctypes.c_int]),
                               ("scx_phase_clear_tid", [ctypes.c_int]),
                               ("scx_phase_clear", []),
                               ("scx_phase_set_process_node", [ctypes.c_int, ctypes.c_int]),
                               ("scx_phase_clear_process", [])):
                fn = getattr(lib, name)
                fn.argtypes = args
                fn.restype = ctypes.c_int
            lib.scx_phase_strerror.argtypes = [ctypes.c_int]
            lib.scx_phase_strerror.restype = ctypes.c_char_p
            lib.scx_phase_last_error.argtypes = []
            lib.scx_phase_last_error.restype = ctypes.c_char_p
            p_wl = ctypes.c_void_p
            lib.scx_phase_workload_open.argtypes = [ctypes.POINTER(_WorkloadReq), ctypes.POINTER(p_wl)]
            lib.scx_phase_workload_open.restype = ctypes.c_int
            lib.scx_phase_workload_cpus.argtypes = [p_wl, ctypes.POINTER(ctypes.c_int), ctypes.c_int]
            lib.scx_phase_workload_cpus.restype = ctypes.c_int
            lib.scx_phase_workload_node.argtypes = [p_wl]
            lib.scx_phase_workload_node.restype = ctypes.c_int
            lib.scx_phase_workload_checkpoint_buffer.argtypes = [
                p_wl, ctypes.c_size_t, ctypes.POINTER(ctypes.c_void_p)]
            lib.scx_phase_workload_checkpoint_buffer.restype = ctypes.c_int
            lib.scx_phase_workload_on_memory_pressure.argtypes = [
                p_wl, ctypes.c_uint, ctypes.c_uint, ctypes.c_int, _PRESSURE_FN, ctypes.c_void_p]
            lib.scx_phase_workload_on_memory_pressure.restype = ctypes.c_int
            lib.scx_phase_stats.argtypes = [ctypes.POINTER(_Stats), ctypes.c_int]
            lib.scx_phase_stats.restype = ctypes.c_int
            lib.scx_phase_workload_close.argtypes = [p_wl]
            lib.scx_phase_workload_close.restype = None
            _lib = lib
    return _lib


_warned = False
_state = threading.local()


def _check(ret):
    """True if written; False (with one warning per process) if scx_phase
    is not running or its service did not answer in time; raises otherwise."""
    global _warned
    if ret == 0:
        return True
    err = -ret
    if err in (errno.ENOENT, errno.ETIMEDOUT):
        if not _warned:
            _warned = True
            why = (f"scx_phase is not running (no hint service at {socket_path()})"
                   if err == errno.ENOENT else
                   "scx_phase's hint service did not answer in time "
                   "(SCX_PHASE_TIMEOUT_MS, default 1000)")
            warnings.warn(f"{why}; phase hints are ignored", RuntimeWarning, stacklevel=3)
        return False
    _raise(ret)


# Fast path: every accepted spelling of a phase, straight to its number.
_CODES = {}
for _p in Phase:
    _CODES[_p.name.lower()] = int(_p)
    _CODES[int(_p)] = int(_p)
_set_node_fn = None


def _code(phase):
    code = _CODES.get(phase)
    if code is None or phase.__class__ is bool:
        code = int(_as_phase(phase))
    return code


def set_phase(phase, node=None):
    """Hint the calling thread's phase (and NUMA node). Returns whether the
    hint was written (False when scx_phase is not running)."""
    global _set_node_fn
    fn = _set_node_fn
    if fn is None:
        fn = _set_node_fn = _load().scx_phase_set_node
    code = _code(phase)
    ret = fn(code, -1 if node is None else _node(node))
    _state.current = (phase, node)
    _state.code = code
    return ret == 0 or _check(ret)


def set_thread_phase(tid, phase, node=None):
    """Hint another thread's phase until it exits, by its id in this
    process's PID namespace; the service checks that we could signal it."""
    return _check(_load().scx_phase_set_tid(int(tid), int(_as_phase(phase)), _node(node)))


def clear_thread_phase(tid):
    """Remove another thread's hint."""
    return _check(_load().scx_phase_clear_tid(int(tid)))


def clear_phase():
    """Remove the calling thread's hint."""
    ok = _check(_load().scx_phase_clear())
    _state.current = None
    _state.code = None
    return ok


def set_process_phase(phase, node=None):
    """Set the phase of every thread of this process that has no hint of its
    own and no name rule: a framework's intra-op pool follows its caller."""
    return _check(_load().scx_phase_set_process_node(_code(phase), _node(node)))


def clear_process_phase():
    """Remove the process-wide phase."""
    return _check(_load().scx_phase_clear_process())


def current_phase():
    """The phase this thread last set through this module, or None."""
    cur = getattr(_state, "current", None)
    return _as_phase(cur[0]) if cur else None


@contextlib.contextmanager
def phase(p, node=None):
    """Be in phase `p` for the block; then back to what this thread had."""
    prev = getattr(_state, "current", None)
    set_phase(p, node)
    try:
        yield
    finally:
        if prev is None:
            clear_phase()
        else:
            set_phase(*prev)


_UNITS = {"": 1, "b": 1, "k": 1 << 10, "kb": 1 << 10, "kib": 1 << 10, "m": 1 << 20, "mb": 1 << 20,
          "mib": 1 << 20, "g": 1 << 30, "gb": 1 << 30, "gib": 1 << 30, "t": 1 << 40, "tib": 1 << 40}


def process_stats():
    """What the scheduler counted for this process since it registered with
    the hint service: {slot: {"runtime_ns", "boosted_ns", "wait_ns",
    "waits"}} for each of SLOTS. None (with one warning) if scx_phase is
    not running. A process sees its own figures only."""
    lib = _load()
    out = (_Stats * len(SLOTS))()
    ret = lib.scx_phase_stats(out, len(SLOTS))
    if ret < 0:
        _check(ret)
        return None
    return {name: {f: getattr(out[i], f) for f, _ in _Stats._fields_}
            for i, name in enumerate(SLOTS[:ret])}


def parse_size(size):
    """4 << 30, "4GiB", "512M" -> bytes."""
    if isinstance(size, int) and not isinstance(size, bool) and size >= 0:
        return size
    if isinstance(size, str):
        s = size.strip()
        i = len(s) - len(s.lstrip("0123456789."))
        num, unit = s[:i], s[i:].strip().lower()
        if num and unit in _UNITS:
            return int(float(num) * _UNITS[unit])
    raise ValueError(f"invalid size {size!r} (like 4GiB, 512M or a number of bytes)")


class PressureEvent:
    """What a memory-pressure callback gets: the trigger's level and PSI's
    figures (avg10 in percent, and the pressure file's lines)."""

    def __init__(self, ev):
        self.level = "full" if ev.full else "some"
        self.stall_ms = ev.stall_us / 1000
        self.window_s = ev.window_us / 1e6
        self.some_avg10 = ev.some_avg10
        self.full_avg10 = ev.full_avg10
        self.figures = (ev.figures or b"").decode(errors="replace")

    def __repr__(self):
        return f"PressureEvent({self.level}, some avg10 {self.some_avg10}%, full avg10 {self.full_avg10}%)"


class Workload:
    """What a training job asks of the host, held until `close()`, the end
    of the `with` block, or the end of the process (the service releases
    all of it when the connection closes, even after a crash).

        with scx_phase.Workload(cpus=8, node="gpu", exclusive=True,
                                locked_memory="4GiB") as w:
            buf = w.checkpoint_buffer("1GiB")       # a writable memoryview
            w.on_memory_pressure(lambda ev: shrink_batch(), stall_ms=100)

    node: a node id, "any", or "gpu" (the node of the GPU this process uses,
    from CUDA_VISIBLE_DEVICES and LOCAL_RANK). placement: "pack" (whole
    cores first) or "spread" (one CPU per core first). Claims need the
    raise privilege (--hint-group or CAP_SYS_NICE); a refusal raises
    PermissionError, CPUs that are not free OSError(EBUSY), both with the
    service's one-line reason.
    """

    def __init__(self, cpus=0, node="any", exclusive=False, placement="pack", locked_memory=0):
        if node == "any" or node is None:
            n = NODE_ANY
        elif node == "gpu":
            n = NODE_GPU
        else:
            n = _node(node)
        if placement not in ("pack", "spread"):
            raise ValueError(f"placement is 'pack' or 'spread', not {placement!r}")
        req = _WorkloadReq(int(cpus), n, int(bool(exclusive)), int(placement == "spread"),
                           parse_size(locked_memory))
        self._lib = _load()
        self._w = ctypes.c_void_p()
        self._callbacks = []
        self._buffers = []
        ret = self._lib.scx_phase_workload_open(ctypes.byref(req), ctypes.byref(self._w))
        if ret != 0:
            self._w = None
            _raise(ret)

    @property
    def cpus(self):
        """The claimed CPUs (they change if one goes offline)."""
        n = self._lib.scx_phase_workload_cpus(self._w, None, 0)
        arr = (ctypes.c_int * max(n, 1))()
        n = self._lib.scx_phase_workload_cpus(self._w, arr, n)
        return list(arr[:n])

    @property
    def node(self):
        n = self._lib.scx_phase_workload_node(self._w)
        return None if n < 0 else n

    def checkpoint_buffer(self, size):
        """Locked, resident memory (a writable memoryview), valid until the
        workload closes: then the view is released, and using it raises
        ValueError (slices taken from it must not outlive the workload)."""
        n = parse_size(size)
        ptr = ctypes.c_void_p()
        ret = self._lib.scx_phase_workload_checkpoint_buffer(self._w, n, ctypes.byref(ptr))
        if ret != 0:
            _raise(ret)
        view = memoryview((ctypes.c_char * n).from_address(ptr.value)).cast("B")
        self._buffers.append(view)
        return view

    def on_memory_pressure(self, callback, stall_ms=100, window_s=1.0, level="some"):
        """Call callback(PressureEvent) on a background thread whenever
        stall_ms of memory stall builds up within window_s, in this
        process's cgroup (or the host's)."""
        def trampoline(ev, _arg):
            try:
                callback(PressureEvent(ev.contents))
            except Exception as e:  # a callback's error must not kill the reader
                warnings.warn(f"scx_phase: memory-pressure callback failed: {e!r}", RuntimeWarning)
        fn = _PRESSURE_FN(trampoline)
        self._callbacks.append(fn)
        ret = self._lib.scx_phase_workload_on_memory_pressure(
            self._w, int(stall_ms), int(window_s * 1000), int(level == "full"), fn, None)
        if ret != 0:
            _raise(ret)

    def close(self):
        if self._w:
            for view in self._buffers:
                try:
                    view.release()
                except BufferError:  # exported (e.g. to numpy): the caller's to drop
                    warnings.warn("scx_phase: a checkpoint buffer is still in use at close",
                                  RuntimeWarning)
            self._buffers = []
            self._lib.scx_phase_workload_close(self._w)
            self._w = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass


def _raise(ret):
    """Raise what a negative errno from the library means, with its reason."""
    err = -ret
    lib = _load()
    msg = (lib.scx_phase_last_error() or lib.scx_phase_strerror(ret)).decode(errors="replace")
    if err == errno.ENOENT:
        raise FileNotFoundError(err, msg)
    if err in (errno.EPERM, errno.EACCES):
        raise PermissionError(err, msg)
    if err == errno.ESRCH:
        raise ProcessLookupError(err, msg)
    raise ScxPhaseError(err, msg)
