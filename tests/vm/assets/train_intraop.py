"""A model trained on synthetic data: an ordinary PyTorch script. Its work
is elementwise on large tensors, as activations, normalisation and
optimizer updates are: the part of training that PyTorch's intra-op pool
spreads over N threads on a CPU (2 threads run it 2.1x as fast as one on an
idle 2-core host), the main thread and OpenMP workers that nobody hints by
name. tests/vm/service.rs runs it under `python -m scx_phase.run`.

It imports and warms up once, prints {"ready": true}, then serves lines on
stdin: "run SECONDS FOLLOW" trains for SECONDS and prints samples per
second and the threads of the process; FOLLOW 0/1 says whether scx_phase's
hooks (when they are on) make the process-wide phase follow the main
thread's."""

import argparse
import json
import os
import sys
import time

import torch
from torch import nn


class Wide(nn.Module):
    """tanh(x * a + b) . c, per sample: elementwise on batch x width."""

    def __init__(self, width):
        super().__init__()
        self.a = nn.Parameter(torch.ones(width))
        self.b = nn.Parameter(torch.zeros(width))
        self.c = nn.Parameter(torch.ones(width))

    def forward(self, x):
        return (torch.tanh(x * self.a + self.b) * self.c).sum(dim=1)


def threads():
    names = {}
    for t in os.listdir("/proc/self/task"):
        with open(f"/proc/self/task/{t}/comm") as f:
            names[int(t)] = f.read().strip()
    return names


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--width", type=int, default=65536)
    args = ap.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    model = Wide(args.width)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    x = torch.randn(args.batch, args.width)
    y = torch.randn(args.batch)

    def step():
        loss = ((model(x) - y) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()

    for _ in range(3):
        step()
    print(json.dumps({"ready": True, "intra_op_threads": torch.get_num_threads()}), flush=True)
    for line in sys.stdin:
        _, seconds, follow = line.split()
        hooks = sys.modules.get("scx_phase.torch")
        if hooks is not None:
            hooks.follow_process(follow == "1")
        t0 = time.monotonic()
        steps = 0
        while time.monotonic() - t0 < float(seconds):
            step()
            steps += 1
        dt = time.monotonic() - t0
        print(json.dumps({"samples_per_s": steps * args.batch / dt, "steps": steps,
                          "threads": threads()}), flush=True)


if __name__ == "__main__":
    main()
