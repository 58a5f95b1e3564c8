"""Speak the hint service's protocol by hand, as a client that does not use
libscx_phase would, to test what the service and the scheduler do with
lies, garbage and floods. Used by the host and VM tests.

    hint_raw.py hello                       register; print the reply
    hint_raw.py scribble SLOT VALUE         write a raw 64-bit VALUE into
                                            SLOT of our memory
    hint_raw.py own VALUE [spin]            bind this thread, write VALUE to
                                            its slot (then spin if asked)
    hint_raw.py garbage                     send malformed requests
    hint_raw.py flood N                     send N requests, read nothing
    hint_raw.py set-fd FD PHASE             a one-shot Set with inherited FD
    hint_raw.py connect N                   open N connections
    hint_raw.py register N                  N child processes register
    hint_raw.py probe SECS [boost]          a timed Hello every second
    hint_raw.py userns-connect UID N        enter a new user namespace,
                                            print our pid, wait for a line
                                            (the caller maps the namespace),
                                            become UID in it, then connect N
    hint_raw.py claim CPUS NODE FLAGS       claim CPUs; hold them
    hint_raw.py claim-fork-exit CPUS NODE FLAGS
                                            claim, fork a child that keeps
                                            the socket, and exit
    hint_raw.py claim-on-line CPUS NODE FLAGS
                                            register, then claim at each
                                            line on stdin
    hint_raw.py claim-and-die CPUS NODE FLAGS
                                            send a claim and exit at once,
                                            without reading the reply
    hint_raw.py workload-garbage            send lying workload requests
    hint_raw.py stats                       ask for figures before Hello,
                                            then for every slot (and two
                                            lies) at each line on stdin
    hint_raw.py bind-and-keep               bind a short-lived thread, and
                                            keep the pidfd sent for it
    hint_raw.py register-fork-exit          register, fork a child that
                                            keeps the socket, and exit
    hint_raw.py linger-hello N              N times: a child sends Hello with
                                            a TCP socket whose close blocks
                                            (SO_LINGER 30 s, a peer that
                                            never reads) and exits; then
                                            Hello of our own, 10 s timeout
    hint_raw.py hello-ms                    register; print how long it took
                                            (10 s timeout)

Each prints one JSON object per line; those that hold something hold it
until stdin closes. The constants below repeat
src/hint/protocol.rs; tests/layout.rs holds the two together.
"""

import ctypes
import json
import mmap
import os
import socket
import struct
import sys
import tempfile
import threading
import time

VERSION = 1
OP_HELLO, OP_THREAD, OP_SET, OP_CLEAR = 1, 2, 3, 4
OP_CLAIM, OP_LOCK_MEMORY, OP_WATCH_PRESSURE = 5, 6, 7
OP_STATS, OP_UNLOCK_MEMORY = 8, 9
NR_SLOTS = 7
CLAIM_EXCLUSIVE, CLAIM_SPREAD = 1, 2
REQUEST = "<HHIiI"
REPLY_HEADER = "<HHiIIIII"
MAX_REPLY = 28 + 232
PIDFD_THREAD = os.O_EXCL
SLOT_BYTES = 8


def path():
    return os.environ.get("SCX_PHASE_SOCKET", "/run/scx_phase/hint.sock")


def connect():
    s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    s.connect(path())
    return s


def request(op, phase=0, node=-1, version=VERSION, reserved=0):
    return struct.pack(REQUEST, version, op, phase, node, reserved)


def workload_request(op, a, b, c):
    """The workload requests put their arguments where a hint has its
    phase, node and reserved field."""
    return request(op, phase=a, node=b, reserved=c)


def decode(data):
    if len(data) < 28:
        return {"status": None, "raw": data.hex()}
    _, n, status, wid, gen, slot, allow, slots = struct.unpack_from(REPLY_HEADER, data)
    return {"status": status, "wid": wid, "generation": gen, "slot": slot,
            "allow": allow, "slots": slots, "message": data[28:28 + n].decode()}


def call(s, data, fds=()):
    socket.send_fds(s, [data], list(fds))
    msg, got, _, _ = socket.recv_fds(s, MAX_REPLY, 1)
    if not msg:
        return {"status": None, "closed": True}, got
    return decode(msg), got


def out(**kw):
    print(json.dumps(kw), flush=True)


def hello(s):
    r, fds = call(s, request(OP_HELLO))
    memory = None
    if fds:
        memory = mmap.mmap(fds[0], r["slots"] * SLOT_BYTES, mmap.MAP_SHARED,
                           mmap.PROT_READ | mmap.PROT_WRITE)
        os.close(fds[0])
    return r, memory


def bind_me(s):
    me = os.pidfd_open(threading.get_native_id(), PIDFD_THREAD)
    r, _ = call(s, request(OP_THREAD), [me])
    os.close(me)
    return r


def cmd_hello(_):
    s = connect()
    r, _ = hello(s)
    out(**r)


def hold(spin=False):
    """Until stdin closes (spinning on another thread if asked)."""
    if spin:
        def burn():
            while True:
                pass
        threading.Thread(target=burn, daemon=True).start()
    sys.stdin.read()


def cmd_scribble(args):
    slot, value = int(args[0]), int(args[1], 0)
    s = connect()
    r, memory = hello(s)
    memory[slot * 8:slot * 8 + 8] = struct.pack("<Q", value & (2**64 - 1))
    out(hello=r, tid=threading.get_native_id(), pid=os.getpid())
    hold()


def cmd_own(args):
    value = int(args[0], 0)
    spin = len(args) > 1 and args[1] == "spin"
    s = connect()
    r, memory = hello(s)
    b = bind_me(s)
    slot = b["slot"]
    memory[slot * 8:slot * 8 + 8] = struct.pack("<Q", value & (2**64 - 1))
    out(hello=r, bind=b, tid=threading.get_native_id(), pid=os.getpid())
    if spin:
        # This thread is the one bound: it spins, another waits on stdin.
        threading.Thread(target=lambda: (sys.stdin.read(), os._exit(0)), daemon=True).start()
        while True:
            pass
    hold()


def cmd_garbage(_):
    s = connect()
    cases = [
        ("short", b"\x01\x00\x01\x00", []),
        ("long", request(OP_HELLO) + b"extra", []),
        ("version 9", request(OP_HELLO, version=9), []),
        ("op 77", request(77), []),
        ("reserved", request(OP_HELLO, reserved=1), []),
        ("thread without fd", request(OP_THREAD), []),
        ("hello with fd", request(OP_HELLO), [0]),
        ("not a pidfd", request(OP_SET, phase=3), [os.open("/dev/null", os.O_RDONLY)]),
        ("phase 42", request(OP_SET, phase=42),
         [os.pidfd_open(threading.get_native_id(), PIDFD_THREAD)]),
    ]
    for name, data, fds in cases:
        try:
            r, _ = call(s, data, fds)
        except OSError as e:
            r = {"status": None, "error": str(e)}
        out(case=name, **r)


def cmd_claim(args):
    cpus, node, flags = int(args[0]), int(args[1]), int(args[2])
    s = connect()
    hello(s)
    r, _ = call(s, workload_request(OP_CLAIM, cpus, node, flags))
    out(pid=os.getpid(), **r)
    hold()


def cmd_claim_fork_exit(args):
    """Claim, fork a child that keeps the socket (until stdin closes), and
    exit: the claim must end with this process, not with the socket."""
    cpus, node, flags = int(args[0]), int(args[1]), int(args[2])
    s = connect()
    hello(s)
    r, _ = call(s, workload_request(OP_CLAIM, cpus, node, flags))
    child = os.fork()
    if child == 0:
        hold()
        os._exit(0)
    out(pid=os.getpid(), child=child, **r)
    os._exit(0)


def cmd_claim_on_line(args):
    """Register now; claim at each line on stdin, printing the reply."""
    cpus, node, flags = int(args[0]), int(args[1]), int(args[2])
    s = connect()
    hello(s)
    out(pid=os.getpid(), registered=True)
    while sys.stdin.readline():
        r, _ = call(s, workload_request(OP_CLAIM, cpus, node, flags))
        out(**r)


def cmd_claim_and_die(args):
    cpus, node, flags = int(args[0]), int(args[1]), int(args[2])
    s = connect()
    hello(s)
    s.send(workload_request(OP_CLAIM, cpus, node, flags))
    out(pid=os.getpid(), sent=True)
    os._exit(0)


def cmd_workload_garbage(_):
    s = connect()
    hello(s)
    big = 2**64 - 1
    cases = [
        ("claim 0 CPUs", workload_request(OP_CLAIM, 0, -1, 0)),
        ("claim 2^32-1 CPUs", workload_request(OP_CLAIM, 2**32 - 1, -1, 0)),
        ("claim on node 999", workload_request(OP_CLAIM, 1, 999, 0)),
        ("claim on node -1000", workload_request(OP_CLAIM, 1, -1000, 0)),
        ("claim with flags 0xff", workload_request(OP_CLAIM, 1, -1, 0xff)),
        ("lock 0 bytes", workload_request(OP_LOCK_MEMORY, 0, 0, 0)),
        ("lock 2^64-1 bytes", workload_request(OP_LOCK_MEMORY, big & 0xffffffff, 0, big >> 32)),
        ("watch a 0 s window", workload_request(OP_WATCH_PRESSURE, 1000, 0, 0)),
        ("watch a stall over its window",
         workload_request(OP_WATCH_PRESSURE, 2000000, 1000000, 0)),
        ("watch level 7", workload_request(OP_WATCH_PRESSURE, 100000, 1000000, 7)),
        ("unlock a lock it does not hold", workload_request(OP_UNLOCK_MEMORY, 12345, -1, 0)),
    ]
    # Files sent along: a memfd past the budget (sparse: it costs nothing
    # here), a memfd with a request that takes none, a tmpfs file that is
    # not a memfd.
    big_memfd = os.memfd_create("big")
    os.ftruncate(big_memfd, 1 << 30)
    small_memfd = os.memfd_create("small")
    os.ftruncate(small_memfd, 4096)
    shm = tempfile.TemporaryFile(dir="/dev/shm")
    with_fds = {
        "lock a 1 GiB memfd past the budget": (workload_request(OP_LOCK_MEMORY, 0, 0, 0), [big_memfd]),
        "a memfd with a claim": (workload_request(OP_CLAIM, 1, -1, 0), [small_memfd]),
        "lock a tmpfs file that is not a memfd": (workload_request(OP_LOCK_MEMORY, 0, 0, 0), [shm.fileno()]),
    }
    cases += [(name, data) for name, (data, _) in with_fds.items()]
    for name, data in cases:
        try:
            r, _ = call(s, data, with_fds.get(name, ((), []))[1])
        except OSError as e:
            r = {"status": None, "error": str(e)}
        out(case=name, **r)
    hold()


def cmd_flood(args):
    n = int(args[0])
    s = connect()
    s.setblocking(False)
    sent = 0
    cut = None
    for i in range(n):
        try:
            s.send(request(OP_HELLO))
            sent += 1
        except BlockingIOError:
            time.sleep(0.001)
        except OSError as e:
            cut = str(e)
            break
    # Were we cut off? Drain what is there and see whether the socket ends.
    s.setblocking(True)
    s.settimeout(3)
    replies = 0
    try:
        while True:
            m = s.recv(MAX_REPLY)
            if not m:
                cut = cut or "closed by the service"
                break
            replies += 1
    except (socket.timeout, OSError) as e:
        cut = cut or f"still open ({e})"
    out(sent=sent, replies=replies, cut=cut)


def cmd_set_fd(args):
    fd, phase = int(args[0]), int(args[1])
    s = connect()
    r, _ = call(s, request(OP_SET, phase=phase), [fd])
    out(**r)


def cmd_connect(args):
    n = int(args[0])
    socks, failed = [], 0
    for _ in range(n):
        try:
            socks.append(connect())
        except OSError:
            failed += 1
    # The service answers a connection over its limits with one refusal.
    time.sleep(1)
    refused, message = 0, None
    for s in socks:
        try:
            m = s.recv(MAX_REPLY, socket.MSG_DONTWAIT)
            if m:
                refused += 1
                message = decode(m).get("message")
        except BlockingIOError:
            pass
    out(open=len(socks) - refused, refused=refused + failed, message=message)
    hold()


def cmd_register(args):
    """N child processes each register with a Hello, and stay registered
    until stdin closes."""
    n = int(args[0])
    report_r, report_w = os.pipe()
    hold_r, hold_w = os.pipe()
    kids = []
    for _ in range(n):
        pid = os.fork()
        if pid == 0:
            os.close(report_r)
            os.close(hold_w)
            try:
                # Kept open: the workload ends with its last connection.
                s = connect()
                r, _ = hello(s)
                line = {"status": r.get("status"), "message": r.get("message")}
            except OSError as e:
                line = {"status": None, "message": str(e)}
            # One short write: atomic on a pipe.
            os.write(report_w, (json.dumps(line)[:500] + "\n").encode())
            os.read(hold_r, 1)
            os._exit(0)
        kids.append(pid)
    os.close(report_w)
    os.close(hold_r)
    registered, refused, message = 0, 0, None
    with os.fdopen(report_r) as f:
        for _ in range(n):
            r = json.loads(f.readline())
            if r["status"] == 0:
                registered += 1
            else:
                refused += 1
                message = r["message"]
    out(registered=registered, refused=refused, message=message)
    hold()
    os.close(hold_w)
    for pid in kids:
        os.waitpid(pid, 0)


def cmd_userns_connect(args):
    inner, n = int(args[0]), args[1]
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(0x10000000) != 0:  # CLONE_NEWUSER
        raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWUSER)")
    out(pid=os.getpid())
    sys.stdin.readline()
    if libc.setresgid(inner, inner, inner) != 0 or libc.setresuid(inner, inner, inner) != 0:
        raise OSError(ctypes.get_errno(), f"cannot become uid {inner} in the namespace")
    cmd_connect([n])


def cmd_probe(args):
    """Every second for SECS: a new connection and a Hello, timed. With
    "boost" (root, or the hint group), this thread first raises itself to
    backward, so that its own wait for a CPU stays out of the figure."""
    secs = float(args[0])
    keep = None
    if len(args) > 1 and args[1] == "boost":
        keep = connect()
        _, memory = hello(keep)
        slot = bind_me(keep)["slot"]
        memory[slot * 8:slot * 8 + 8] = struct.pack("<Q", 3 | (0xffffffff << 32))
    times, failed = [], []
    end = time.monotonic() + secs
    while time.monotonic() < end:
        t0 = time.monotonic()
        try:
            s = connect()
            s.settimeout(5)
            r, _ = hello(s)
            s.close()
            if r.get("status") != 0:
                failed.append(r.get("message"))
        except OSError as e:
            failed.append(str(e))
        times.append((time.monotonic() - t0) * 1e3)
        time.sleep(max(0.0, 1.0 - (time.monotonic() - t0)))
    times.sort()
    out(probes=len(times), max_ms=round(times[-1], 1), p50_ms=round(times[len(times) // 2], 1),
        over_100ms=sum(t > 100 for t in times), failed=failed[:3], failures=len(failed))


def cmd_stats(_):
    s = connect()
    r, _ = call(s, workload_request(OP_STATS, 3, -1, 0))
    out(case="before hello", **r)
    hello(s)
    out(pid=os.getpid(), registered=True)
    while sys.stdin.readline():
        slots = [call(s, workload_request(OP_STATS, i, -1, 0))[0]["message"]
                 for i in range(NR_SLOTS)]
        lies = {name: call(s, data)[0] for name, data in (
            ("slot 7", workload_request(OP_STATS, NR_SLOTS, -1, 0)),
            ("slot 2^32-1", workload_request(OP_STATS, 2**32 - 1, -1, 0)),
            ("reserved", workload_request(OP_STATS, 3, -1, 1)))}
        out(slots=slots, lies=lies)


def cmd_bind_and_keep(_):
    s = connect()
    hello(s)
    kept = {}

    def short_lived():
        kept["fd"] = os.pidfd_open(threading.get_native_id(), PIDFD_THREAD)
        kept["bind"], _ = call(s, request(OP_THREAD), [kept["fd"]])

    t = threading.Thread(target=short_lived)
    t.start()
    t.join()
    out(pid=os.getpid(), bind=kept["bind"], kept_fd=kept["fd"])
    hold()


def timed_hello(s, timeout=10.0):
    """Hello's reply and its latency in ms, or a timeout after `timeout` s."""
    s.settimeout(timeout)
    t = time.monotonic()
    try:
        r, _ = hello(s)
    except (socket.timeout, TimeoutError):
        return {"status": None, "timeout": True}, None
    return r, (time.monotonic() - t) * 1e3


def send_lingering(listener):
    """In a child: connect to `listener` (whose connections nobody reads),
    fill the connection, set SO_LINGER 30 s, send that socket with Hello,
    and close it at once, so that the service's copy is most likely the
    last, the one whose close waits for the peer. (If the service was
    quicker, the child's close waits instead; nobody waits for the child.)"""
    r, w = os.pipe()
    if os.fork():
        os.close(w)
        os.read(r, 1)
        os.close(r)
        return
    # Hold nothing of the parent's that its reader waits on (stdout), or
    # that keeps the peer alive (the listener).
    null = os.open(os.devnull, os.O_RDWR)
    for std in (0, 1, 2):
        os.dup2(null, std)
    c = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    c.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    c.connect(listener.getsockname())
    listener.close()
    c.setblocking(False)
    try:
        while True:
            c.send(b"x" * 65536)
    except BlockingIOError:
        pass
    c.setblocking(True)
    c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 30))
    s = connect()
    fd = c.detach()
    socket.send_fds(s, [request(OP_HELLO)], [fd])
    os.close(fd)
    os.write(w, b"sent")
    os._exit(0)


def cmd_linger_hello(args):
    n = int(args[0])
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)
    listener.bind(("127.0.0.1", 0))
    listener.listen(n + 1)
    for _ in range(n):
        send_lingering(listener)
    time.sleep(0.5)
    r, ms = timed_hello(connect())
    out(sent=n, hello=r, ms=ms)
    hold()


def cmd_hello_ms(_):
    r, ms = timed_hello(connect())
    out(hello=r, ms=ms)


def cmd_register_fork_exit(_):
    s = connect()
    r, _ = hello(s)
    child = os.fork()
    if child == 0:
        hold()
        os._exit(0)
    out(pid=os.getpid(), child=child, hello=r)
    os._exit(0)


COMMANDS = {
    "bind-and-keep": cmd_bind_and_keep, "register-fork-exit": cmd_register_fork_exit,
    "hello": cmd_hello, "scribble": cmd_scribble, "own": cmd_own,
    "garbage": cmd_garbage, "flood": cmd_flood, "set-fd": cmd_set_fd,
    "connect": cmd_connect, "register": cmd_register,
    "userns-connect": cmd_userns_connect, "probe": cmd_probe, "claim": cmd_claim, "claim-and-die": cmd_claim_and_die,
    "workload-garbage": cmd_workload_garbage, "stats": cmd_stats,
    "linger-hello": cmd_linger_hello, "hello-ms": cmd_hello_ms,
    "claim-fork-exit": cmd_claim_fork_exit, "claim-on-line": cmd_claim_on_line,
}

if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    COMMANDS[sys.argv[1]](sys.argv[2:])
