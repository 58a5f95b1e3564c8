"""A tiny PyTorch training loop that logs its loss to MLflow the way training
scripts do: it starts its own run and never mentions scx_phase.
tests/python.rs (host) and tests/vm/mlflow.rs run it under
`python -m scx_phase.run --mlflow`.

    --seconds S   train for S seconds, at least one step (default 10)
    --hold        once the run has started, wait for a line on stdin
    --fail        raise once trained
"""

import argparse
import sys
import time

import mlflow
import torch
from torch import nn


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--hold", action="store_true")
    ap.add_argument("--fail", action="store_true")
    args = ap.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(1)
    model = nn.Sequential(nn.Linear(64, 128), nn.Tanh(), nn.Linear(128, 4))
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    x, y = torch.randn(64, 64), torch.randint(0, 4, (64,))
    with mlflow.start_run() as run:
        print(f"started {run.info.run_id}", flush=True)
        if args.hold:
            sys.stdin.readline()
        cpu0, t0 = time.process_time(), time.monotonic()
        step = 0
        while True:
            loss = nn.functional.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            step += 1
            if time.monotonic() - t0 >= args.seconds:
                break
        mlflow.log_metric("loss", loss.item(), step=step)
        print(f"trained {step} steps; loop cpu {time.process_time() - cpu0:.3f} s", flush=True)
        if args.fail:
            raise RuntimeError("failed on purpose")


if __name__ == "__main__":
    main()
