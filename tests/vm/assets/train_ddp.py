"""A tiny DDP job (gloo, CPU) for `torchrun -m scx_phase.run`: each rank
prints its workload's claim as JSON, trains a few steps, waits until the
file named by SCX_TEST_RELEASE exists (the test has looked at the claims
meanwhile), and rank 0 saves a checkpoint through torch.save."""

import json
import os
import sys
import time

import torch
import torch.distributed as dist

import scx_phase.run


def report(obj):
    """One line in one write(): print() writes the text and its newline
    apart, and torchrun's --tee copies a line it finds half-written as a
    line of its own, prefix and all, which splits the JSON."""
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


dist.init_process_group("gloo")
rank = dist.get_rank()
w = scx_phase.run.workload()
report({"rank": rank, "local_rank": int(os.environ["LOCAL_RANK"]), "pid": os.getpid(),
        "cpus": w.cpus, "node": w.node})

torch.manual_seed(0)
model = torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(32, 4))
opt = torch.optim.SGD(model.parameters(), lr=0.1)
for _ in range(5):
    opt.zero_grad()
    model(torch.randn(8, 32)).sum().backward()
    opt.step()

release = os.environ["SCX_TEST_RELEASE"]
while not os.path.exists(release):
    time.sleep(0.05)
dist.barrier()
if rank == 0:
    path = sys.argv[1]
    torch.save(model.module.state_dict(), path)
    back = torch.load(path)
    same = all(torch.equal(back[k], v) for k, v in model.module.state_dict().items())
    report({"saved": path, "loads_back": same, "through_buffer": torch.save.saves,
            "spilled": torch.save.last_spilled})
dist.barrier()
dist.destroy_process_group()
