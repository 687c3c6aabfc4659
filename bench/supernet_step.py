"""Supernet training-step throughput vs the same paths as standalone networks.

Prints one JSON object. Both sides run the same random paths, interleaved in
one process, with the same optimizer (SGD, Nesterov momentum, weight decay)
and the same per-device settings (bf16 autocast and channels_last on CUDA,
cudnn.benchmark on). The supernet warms every choice op once up front
(``Supernet.warm_up``); each standalone network gets one untimed step, so
neither side pays first-use autotuning inside the timed region.

    python bench/supernet_step.py                      # CPU, small space
    python bench/supernet_step.py --device cuda --space imagenet --batch 256
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import torch
from torch import nn

from scarletnas import SearchSpace, Supernet, build_subnet
from scarletnas.sampling import UniformSampler


def make_step(model: nn.Module, device: torch.device, autocast: bool):
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True,
                          weight_decay=4e-5)
    loss_fn = nn.CrossEntropyLoss()

    def step(x, y, *args):
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            loss = loss_fn(model(x, *args), y)
        loss.backward()
        opt.step()
    return step


def timed(fn, device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--space", default="small", help="imagenet or small")
    p.add_argument("--input-size", type=int, help="default: 224 (imagenet) or 32 (small)")
    p.add_argument("--batch", type=int, help="default: 256 on CUDA, 64 on CPU")
    p.add_argument("--paths", type=int, default=16, help="random paths, each a standalone net")
    p.add_argument("--rounds", type=int, default=3, help="timed passes over the paths")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()

    device = torch.device(args.device)
    cuda = device.type == "cuda"
    torch.backends.cudnn.benchmark = True
    size = args.input_size or (224 if args.space == "imagenet" else 32)
    batch = args.batch or (256 if cuda else 64)
    space = SearchSpace.named(args.space, input_size=size)
    fmt = torch.channels_last if cuda else torch.contiguous_format
    torch.manual_seed(args.seed)

    supernet = Supernet(space, stabilizer=True).to(device, memory_format=fmt).train()
    sampler = UniformSampler(space, args.seed)
    paths = [sampler.paths(s)[0] for s in range(args.paths)]
    standalone = [build_subnet(a, space=space, stabilizer=True).to(device, memory_format=fmt)
                  .train() for a in paths]
    x = torch.randn(batch, 3, size, size, device=device).contiguous(memory_format=fmt)
    y = torch.randint(0, space.num_classes, (batch,), device=device)

    # Autotuning happens only under cudnn; on CPU there is nothing to warm.
    warm_s = timed(lambda: supernet.warm_up(batch, device, fmt, torch.bfloat16),
                   device) if cuda else None
    sup_step = make_step(supernet, device, cuda)
    std_steps = [make_step(net, device, cuda) for net in standalone]
    for step in std_steps:  # first use of each standalone net, untimed
        step(x, y)

    sup_t = std_t = 0.0
    for _ in range(args.rounds):
        for arch, std_step in zip(paths, std_steps, strict=True):
            sup_t += timed(lambda a=arch: sup_step(x, y, a), device)
            std_t += timed(lambda s=std_step: s(x, y), device)
    images = batch * args.paths * args.rounds
    result = {
        "bench": "supernet_step",
        "device": torch.cuda.get_device_name(device) if cuda else platform.processor() or "cpu",
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "space": args.space, "input_size": size, "batch": batch,
        "paths": args.paths, "rounds": args.rounds,
        "autocast_bf16": cuda, "channels_last": cuda,
        "warm_up_s": warm_s and round(warm_s, 3),
        "supernet_img_s": round(images / sup_t, 1),
        "standalone_img_s": round(images / std_t, 1),
        "ratio": round(std_t / sup_t, 4),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
