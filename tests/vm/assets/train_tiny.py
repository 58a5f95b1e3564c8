"""A tiny CNN trained on synthetic data: an ordinary PyTorch script with no
scx_phase calls. tests/vm/shim.rs runs it under `python -m scx_phase.run`."""

import argparse
import os
import tempfile

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset


class Synthetic(Dataset):
    def __len__(self):
        return 64

    def __getitem__(self, i):
        g = torch.Generator().manual_seed(i)
        x = torch.randn(1, 16, 16, generator=g)
        # Some per-sample work, as real augmentation does.
        for _ in range(20):
            x = torch.tanh(x @ torch.randn(16, 16, generator=g) * 0.1)
        return x, i % 4


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=4)
    args = ap.parse_args()
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), nn.Flatten(),
        # A wide layer (1M parameters): the optimizer's step then lasts
        # several scheduler ticks. A phase set by a plain store is seen at
        # the next tick or wake-up, and the step over the small layers
        # alone was often over before one came.
        nn.Linear(8 * 8 * 8, 2048), nn.ReLU(), nn.Linear(2048, 4))
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    loader = DataLoader(Synthetic(), batch_size=8, num_workers=2)
    ckpt = os.path.join(tempfile.gettempdir(), "train_tiny.pt")
    for step, (x, y) in enumerate(loader):
        if step == args.steps:
            break
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        torch.save(model.state_dict(), ckpt)
        print(f"step {step} loss {loss.item():.3f}", flush=True)


if __name__ == "__main__":
    main()
