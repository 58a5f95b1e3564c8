"""A chaos actor for the soak: for SECS seconds it does, at random, what a
hostile or broken tenant does to the hint service, then prints one JSON
line of what it did.

    chaos.py SEED SECS      (or @T: until CLOCK_MONOTONIC reads T s)

It connects and leaves, sends garbage and lies, sends files (others'
pidfds, sockets, pipes, epoll fds, memfds, /proc files), forks children
that die in the middle of a request, execs a setuid program while a child
keeps the socket ($CHAOS_SUID), renames threads like PyTorch's, claims and
releases CPUs, locks and unlocks memory, watches pressure, binds threads
and writes garbage into its hint memory. Errors the service causes (a
refusal, a closed socket) are expected; anything else is counted.
"""

import ctypes
import json
import os
import random
import select
import socket
import struct
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import hint_raw as raw  # noqa: E402

libc = ctypes.CDLL(None, use_errno=True)
PR_SET_NAME = 15
NAMES = [b"pt_autograd_0", b"pt_main_thread", b"pt_data_worker", b"ckpt_writer", b"spin"]


def some_files(rng):
    """One file a tenant might send, and what to close after sending it."""
    kind = rng.randrange(7)
    if kind == 0:
        pids = [int(p) for p in os.listdir("/proc") if p.isdigit()]
        fd = os.pidfd_open(rng.choice(pids))
        return fd, [fd]
    if kind == 1:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        return s.fileno(), [s]
    if kind == 2:
        r, w = os.pipe()
        return rng.choice([r, w]), [r, w]
    if kind == 3:
        ep = select.epoll()
        return ep.fileno(), [ep]
    if kind == 4:
        fd = os.memfd_create("chaos")
        os.ftruncate(fd, rng.choice([0, 4096, 1 << 20, 1 << 40]))
        return fd, [fd]
    if kind == 5:
        fd = os.open(rng.choice(["/proc/self/status", "/proc/1/stat", "/proc/self/maps"]),
                     os.O_RDONLY)
        return fd, [fd]
    ours = os.pidfd_open(os.getpid())
    return ours, [ours]


def close_all(things):
    for t in things:
        try:
            t.close() if hasattr(t, "close") else os.close(t)
        except OSError:
            pass


def random_request(rng):
    op = rng.choice([0, raw.OP_HELLO, raw.OP_THREAD, raw.OP_SET, raw.OP_CLEAR, raw.OP_CLAIM,
                     raw.OP_LOCK_MEMORY, raw.OP_WATCH_PRESSURE, raw.OP_STATS,
                     raw.OP_UNLOCK_MEMORY, rng.randrange(10, 65536)])
    return struct.pack(raw.REQUEST, rng.choice([raw.VERSION, raw.VERSION, rng.randrange(65536)]),
                       op, rng.randrange(2**32), rng.randrange(-2**31, 2**31),
                       rng.choice([0, 0, rng.randrange(2**32)]))


def reply(s, timeout=0.5):
    s.settimeout(timeout)
    try:
        return raw.decode(s.recv(raw.MAX_REPLY))
    except (socket.timeout, OSError):
        return None


def act_hello_and_scribble(rng):
    s = raw.connect()
    r, memory = raw.hello(s)
    if memory is not None:
        for _ in range(rng.randrange(1, 64)):
            slot = rng.randrange(len(memory) // raw.SLOT_BYTES)
            memory[slot * 8:slot * 8 + 8] = struct.pack("<Q", rng.randrange(2**64))
        memory.close()
    s.close()


def act_garbage(rng):
    s = raw.connect()
    s.send(os.urandom(rng.randrange(1, 300)))
    reply(s, 0.2)
    s.close()


def act_lie_with_files(rng):
    s = raw.connect()
    if rng.random() < 0.5:
        raw.hello(s)
    keep = []
    fds = []
    for _ in range(rng.randrange(1, 4)):
        fd, things = some_files(rng)
        fds.append(fd)
        keep += things
    socket.send_fds(s, [random_request(rng)], fds)
    close_all(keep)
    if rng.random() < 0.5:
        reply(s)
    s.close()


def act_die_mid_request(rng):
    pid = os.fork()
    if pid == 0:
        try:
            s = raw.connect()
            if rng.random() < 0.5:
                raw.hello(s)
            s.send(random_request(rng))
        finally:
            os._exit(0)
    os.waitpid(pid, 0)


def act_exec_setuid(rng):
    suid = os.environ.get("CHAOS_SUID")
    if not suid:
        return
    s = raw.connect()
    pid = os.fork()
    if pid == 0:
        # The child keeps the socket and asks once its parent is setuid.
        time.sleep(0.05)
        try:
            raw.hello(s)
            s.send(raw.workload_request(raw.OP_CLAIM, 1, -1, raw.CLAIM_EXCLUSIVE))
            reply(s)
        finally:
            os._exit(0)
    parent = os.fork()
    if parent == 0:
        try:
            os.execv(suid, [suid, "0.1"])
        finally:
            os._exit(1)
    s.close()
    os.waitpid(pid, 0)
    os.waitpid(parent, 0)


def act_rename_threads(rng):
    def named():
        libc.prctl(PR_SET_NAME, ctypes.c_char_p(rng.choice(NAMES)), 0, 0, 0)
        end = time.monotonic() + rng.uniform(0.02, 0.2)
        while time.monotonic() < end:
            pass
    threads = [threading.Thread(target=named) for _ in range(rng.randrange(1, 4))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def act_claim_and_release(rng):
    s = raw.connect()
    raw.hello(s)
    raw.call(s, raw.workload_request(raw.OP_CLAIM, rng.randrange(1, 5),
                                     rng.choice([-1, 0, 1, 7]), rng.randrange(4)))
    time.sleep(rng.uniform(0, 0.2))
    s.close()


def act_lock_memory(rng):
    s = raw.connect()
    raw.hello(s)
    size = rng.choice([4096, 1 << 20, 1 << 22])
    if rng.random() < 0.5:
        r, _ = raw.call(s, raw.workload_request(raw.OP_LOCK_MEMORY, size, 0, 0))
    else:
        fd = os.memfd_create("buf")
        os.ftruncate(fd, size)
        r, _ = raw.call(s, raw.workload_request(raw.OP_LOCK_MEMORY, 0, 0, 0), [fd])
        os.close(fd)
    if r.get("status") == 0 and rng.random() < 0.7:
        raw.call(s, raw.workload_request(raw.OP_UNLOCK_MEMORY, r["slot"], -1, 0))
    s.close()


def act_watch(rng):
    s = raw.connect()
    raw.hello(s)
    raw.call(s, raw.workload_request(raw.OP_WATCH_PRESSURE, rng.choice([10000, 100000]),
                                     1000000, rng.randrange(2)))
    time.sleep(rng.uniform(0, 0.1))
    s.close()


def act_hint_others(rng):
    """One-shot hints for another's thread, and for our own."""
    s = raw.connect()
    pids = [int(p) for p in os.listdir("/proc") if p.isdigit()]
    target = rng.choice(pids + [threading.get_native_id()])
    try:
        fd = os.pidfd_open(target)
    except OSError:
        s.close()
        return
    raw.call(s, raw.request(rng.choice([raw.OP_SET, raw.OP_CLEAR]), phase=rng.randrange(8)), [fd])
    os.close(fd)
    s.close()


def act_bind_and_raise(rng):
    s = raw.connect()
    r, memory = raw.hello(s)
    b = raw.bind_me(s)
    if memory is not None and b.get("status") == 0:
        slot = b["slot"]
        memory[slot * 8:slot * 8 + 8] = struct.pack("<Q", rng.choice([1, 2, 3, 4, 5]))
        end = time.monotonic() + rng.uniform(0.02, 0.1)
        while time.monotonic() < end:
            pass
        memory.close()
    s.close()


def act_flood(rng):
    s = raw.connect()
    s.setblocking(False)
    for _ in range(rng.randrange(10, 100)):
        try:
            s.send(raw.request(raw.OP_HELLO))
        except OSError:
            break
    s.close()


ACTIONS = [act_hello_and_scribble, act_garbage, act_lie_with_files, act_die_mid_request,
           act_exec_setuid, act_rename_threads, act_claim_and_release, act_lock_memory,
           act_watch, act_hint_others, act_bind_and_raise, act_flood]
# What the service may do to a lying client: refuse, cut it off, time out.
EXPECTED = (ConnectionError, socket.timeout, BrokenPipeError, ProcessLookupError,
            PermissionError, FileNotFoundError, BlockingIOError)


def main():
    seed, end = int(sys.argv[1]), raw.deadline(sys.argv[2])
    rng = random.Random(seed)
    done = {a.__name__[4:]: 0 for a in ACTIONS}
    cut_off, unexpected, first = 0, 0, []
    while time.monotonic() < end:
        act = rng.choice(ACTIONS)
        try:
            act(rng)
            done[act.__name__[4:]] += 1
        except EXPECTED:
            cut_off += 1
        except Exception as e:  # noqa: BLE001 (counted, and reported)
            unexpected += 1
            if len(first) < 5:
                first.append(f"{act.__name__}: {type(e).__name__}: {e}")
    print(json.dumps({"actions": done, "cut_off": cut_off, "unexpected": unexpected,
                      "first_unexpected": first}), flush=True)


if __name__ == "__main__":
    main()
