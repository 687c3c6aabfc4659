"""Supernet training throughput on 1 process vs N processes of one machine.

Prints one JSON object. Each run starts its processes the way a pipeline step
does (``scarletnas.launch``: torch's elastic launcher, gloo on CPU, NCCL with
one GPU each on CUDA) and times the real training step (``train._train_step``:
one sampled path, gradients averaged over the processes, SGD update) on
random images. The batch is per process, as in ``supernet.optim.batch_size``,
so N processes train on N times the images per step; images/s counts them all.

    python bench/processes_scaling.py                           # CPU: 1 vs 2
    python bench/processes_scaling.py --device cuda --space imagenet --batch 256 \
        --input-size 224 --processes 1 8                        # a GPU node
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import torch

from scarletnas import launch


def _throughput(space_name: str, input_size: int, batch: int, steps: int, warmup: int,
                device_name: str) -> dict:
    """Images/s of the supernet step on this rank's process group (rank 0 reports)."""
    from torch import nn

    from scarletnas import SearchSpace, Supernet
    from scarletnas.config import OptimConfig
    from scarletnas.launch import resolve_device, world
    from scarletnas.sampling import UniformSampler
    from scarletnas.train import _Running, _train_step, make_optimizer

    rank, size = world()
    device = resolve_device(device_name)
    space = SearchSpace.named(space_name, input_size=input_size)
    torch.manual_seed(0)
    model = Supernet(space).to(device).train()
    opt = make_optimizer(model, OptimConfig(lr=0.05))
    sampler = UniformSampler(space, seed=0)
    loss_fn = nn.CrossEntropyLoss()
    gen = torch.Generator().manual_seed(rank)
    x = torch.randn(batch, 3, input_size, input_size, generator=gen).to(device)
    y = torch.randint(0, space.num_classes, (batch,), generator=gen).to(device)
    amp = device.type == "cuda"
    running = _Running(device)
    for step in range(warmup + steps):
        if step == warmup:
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
        _train_step(model, opt, loss_fn, x, y, sampler.paths(step), 0.05, amp, running, None)
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    return {"processes": size, "img_per_s": round(size * batch * steps / seconds, 1),
            "step_ms": round(1000 * seconds / steps, 1),
            "threads_per_process": torch.get_num_threads()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--space", default="small")
    p.add_argument("--input-size", type=int, default=32)
    p.add_argument("--batch", type=int, default=32, help="per process")
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    args = p.parse_args()
    cuda = args.device.startswith("cuda")
    rows = []
    for n in args.processes:
        work = (args.space, args.input_size, args.batch, args.steps, args.warmup, args.device)
        rows.append(launch.run(_throughput, work, n, cuda) if n > 1 else _throughput(*work))
    base = rows[0]["img_per_s"]
    for row in rows:
        row["speedup"] = round(row["img_per_s"] / base, 2)
    print(json.dumps({
        "bench": "processes_scaling", "device": args.device,
        "hardware": torch.cuda.get_device_name() if cuda else platform.processor() or
        platform.machine(), "cpu_count": os.cpu_count(), "torch": torch.__version__,
        "space": args.space, "input_size": args.input_size, "batch_per_process": args.batch,
        "steps": args.steps, "runs": rows}))


if __name__ == "__main__":
    main()
