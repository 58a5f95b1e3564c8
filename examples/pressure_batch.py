"""Shrink the batch when memory runs low, instead of being OOM-killed.

A training loop stand-in: each step holds activations in proportion to the
batch size. The workload API calls back (on its own thread) when memory
stalls in this process's cgroup build up; the callback halves the batch,
and the next step uses it. Needs no privilege.

    python3 examples/pressure_batch.py [--batch 256] [--stall-ms 100] [--window-s 1]
"""

import argparse
import threading
import time

import scx_phase


class Batch:
    """The batch size, shared between the loop and the callback."""

    def __init__(self, size):
        self.size = size
        self._lock = threading.Lock()

    def halve(self):
        with self._lock:
            old, self.size = self.size, max(1, self.size // 2)
            return old, self.size


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=256, help="starting batch size (default: 256)")
    p.add_argument("--stall-ms", type=int, default=100,
                   help="memory stall that triggers the callback (default: 100)")
    p.add_argument("--window-s", type=float, default=1.0,
                   help="...within this window (default: 1)")
    p.add_argument("--steps", type=int, default=0, help="steps to run (default: 0, forever)")
    args = p.parse_args()
    batch = Batch(args.batch)

    def on_pressure(ev):
        old, new = batch.halve()
        print(f"memory pressure at {time.monotonic():.3f}: batch size {old} -> {new} ({ev})",
              flush=True)

    with scx_phase.Workload() as w:
        w.on_memory_pressure(on_pressure, stall_ms=args.stall_ms, window_s=args.window_s)
        print(f"watching memory pressure; batch size {batch.size}", flush=True)
        step = 0
        while not args.steps or step < args.steps:
            activations = bytearray(batch.size * 4096)  # stands in for a step's tensors
            activations[::4096] = b"\1" * (len(activations) // 4096)
            time.sleep(0.05)
            step += 1


if __name__ == "__main__":
    main()
