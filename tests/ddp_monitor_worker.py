"""Worker for test_training_monitor's DDP test: resnet20, 3 SGD steps on a fixed global batch of 8.

Under ``torchrun --nproc_per_node=2`` each rank trains on its half of the batch through DDP (gloo);
run plainly it is the single-process reference on the whole batch. BatchNorm runs in eval mode (its
running statistics) so the computation does not depend on how the batch is split: per-rank batch
statistics would make the two runs differ for a reason that has nothing to do with the monitor.
"""

from __future__ import annotations

import os
import sys

import torch
import torch.nn.functional as F

import resviz
from resviz.core.sources import zoo


def main(run_dir: str) -> None:
    distributed = "RANK" in os.environ
    if distributed:
        torch.distributed.init_process_group("gloo")
    rank = torch.distributed.get_rank() if distributed else 0
    world = torch.distributed.get_world_size() if distributed else 1
    torch.manual_seed(0)
    model = zoo.build("resnet20", device="cpu").eval()
    g = torch.Generator().manual_seed(1)
    data = [
        (torch.randn(8, 3, 32, 32, generator=g), torch.randint(0, 10, (8,), generator=g)) for _ in range(3)
    ]
    with resviz.monitor(model, run_dir, input_shape=(1, 3, 32, 32)) as mon:
        net = torch.nn.parallel.DistributedDataParallel(model) if distributed else model
        opt = torch.optim.SGD(net.parameters(), lr=0.002)  # small: eval-mode BN does not tame a big step
        for x, y in data:
            n = x.shape[0] // world
            xs, ys = x[rank * n : (rank + 1) * n], y[rank * n : (rank + 1) * n]
            loss = F.cross_entropy(net(xs), ys)
            opt.zero_grad()
            loss.backward()
            opt.step()
            mon.step(loss)
    if mon.errors:
        raise SystemExit("\n".join(mon.errors))
    if distributed:
        # both ranks done with every collective before either tears the group down: a rank whose
        # peer (or the store on rank 0) is already gone can abort in gloo at exit
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
