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
    "clear_thread_phase", "socket_path",
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
            _lib = lib
    return _lib


_warned = False
_state = threading.local()


def _check(ret):
    """True if written; False (with one warning per process) if scx_phase
    is not running; raises otherwise."""
    global _warned
    if ret == 0:
        return True
    err = -ret
    if err == errno.ENOENT:
        if not _warned:
            _warned = True
            warnings.warn(
                f"scx_phase is not running (no hint service at {socket_path()}); "
                "phase hints are ignored", RuntimeWarning, stacklevel=3)
        return False
    lib = _load()
    msg = (lib.scx_phase_last_error() or lib.scx_phase_strerror(ret)).decode(errors="replace")
    if err in (errno.EPERM, errno.EACCES):
        raise PermissionError(err, msg)
    if err == errno.ESRCH:
        raise ProcessLookupError(err, msg)
    raise ScxPhaseError(err, msg)


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
