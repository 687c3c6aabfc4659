"""Training-loop and input-pipeline throughput. Prints one JSON object.

- ``loop``: the real training loop (``fit``: data, schedule, optimizer,
  metrics) on digits, supernet with a random path per step vs stand-alone
  networks of the same paths, run back to back; ``ratio`` = supernet img/s /
  stand-alone img/s.
- ``loaders``: images per second delivered by ``Batches`` alone, for digits,
  a CIFAR-format set (written to a temp folder in the real format) and a
  JPEG image folder (500x375 JPEGs, RandomResizedCrop): decoded per image on
  the CPU in-process, with loader workers, and decoded batched on the
  training device (``gpu_decode``; on a CPU-only machine that device is the CPU).

    python bench/train_throughput.py [--device cuda] [--jpegs 512]
"""

from __future__ import annotations

import argparse
import json
import pickle
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from scarletnas import SearchSpace, build_subnet
from scarletnas.config import DataConfig, OptimConfig, RetrainConfig, SupernetConfig
from scarletnas.data import Batches, load_splits
from scarletnas.sampling import UniformSampler
from scarletnas.supernet import Supernet
from scarletnas.train import fit


def loader_rate(batches: Batches, min_images: int) -> float:
    seen, epoch = 0, 0
    next(iter(batches.epoch(99)))  # start-up (workers, first decode) outside the timing
    t = time.perf_counter()
    while seen < min_images:
        for x, _ in batches.epoch(epoch):
            seen += len(x)
        epoch += 1
    if batches.device.type == "cuda":
        torch.cuda.synchronize()
    return seen / (time.perf_counter() - t)


def write_cifar(root: Path, n: int) -> None:
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, size=(n // 5, 3072), dtype=np.uint8)
        with open(root / name, "wb") as f:
            pickle.dump({b"data": data, b"labels": [int(i % 10) for i in range(n // 5)]}, f,
                        protocol=2)


def write_jpegs(root: Path, n: int) -> None:
    from torchvision.io import encode_jpeg

    gen = torch.Generator().manual_seed(0)
    for split, count in (("train", n), ("val", 10)):
        for c in range(2):
            (root / split / f"c{c}").mkdir(parents=True, exist_ok=True)
            for i in range(count // 2):
                # smooth random images compress like photos (~30-60 KiB at 500x375)
                small = torch.randint(0, 256, (3, 24, 32), dtype=torch.uint8, generator=gen)
                img = torch.nn.functional.interpolate(small[None].float(), size=(375, 500),
                                                      mode="bicubic")[0].clamp(0, 255)
                noise = torch.randint(0, 24, img.shape, generator=gen)
                jpeg = encode_jpeg((img + noise).clamp(0, 255).to(torch.uint8), quality=90)
                (root / split / f"c{c}" / f"{i}.jpg").write_bytes(jpeg.numpy().tobytes())


def loop_ratio(device: str, steps: int, paths: int) -> dict:
    splits = load_splits(DataConfig(input_size=16))
    space = SearchSpace.small(input_size=16)
    optim = OptimConfig(epochs=100, warmup_epochs=1, batch_size=64)
    sampler = UniformSampler(space, 0)
    archs = [sampler.paths(s)[0] for s in range(paths)]
    batches = Batches(splits, "train", 64, train=True, augment="basic", device=device,
                      channels_last=True)
    fmt = torch.channels_last
    per_path = steps // paths

    def timed_fit(model, cfg, path_fn=None) -> float:
        t = time.perf_counter()
        fit(model.to(device, memory_format=fmt), batches, cfg, paths_for_step=path_fn,
            desc="bench")
        if torch.device(device).type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t

    supernet = Supernet(space)
    if torch.device(device).type == "cuda":
        torch.backends.cudnn.benchmark = True
        supernet.to(device, memory_format=fmt).warm_up(64, device, fmt, torch.bfloat16)
    sup_cfg = SupernetConfig(optim=optim, max_steps=per_path * paths, log_every=10**6,
                             device=device)
    sup_t = timed_fit(supernet, sup_cfg, lambda step: [archs[step % paths]])
    std_cfg = RetrainConfig(optim=optim, max_steps=per_path, log_every=10**6, dropout=0,
                            device=device)
    std_t = sum(timed_fit(build_subnet(a, space=space, stabilizer=True), std_cfg)
                for a in archs)
    images = 64 * per_path * paths
    return {"steps": per_path * paths, "supernet_img_s": round(images / sup_t, 1),
            "standalone_img_s": round(images / std_t, 1), "ratio": round(std_t / sup_t, 4)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--jpegs", type=int, default=256)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--loop-steps", type=int, default=96)
    p.add_argument("--loop-paths", type=int, default=8)
    args = p.parse_args()
    dev = torch.device(args.device)
    result = {"bench": "train_throughput", "device": args.device,
              "gpu": torch.cuda.get_device_name(dev) if dev.type == "cuda" else None,
              "threads": torch.get_num_threads(), "torch": torch.__version__}
    result["loop"] = loop_ratio(args.device, args.loop_steps, args.loop_paths)

    loaders = {}
    digits = load_splits(DataConfig(input_size=32))
    loaders["digits_32px"] = loader_rate(Batches(digits, "train", 128, train=True,
                                                 augment="basic", device=dev), 20000)
    with tempfile.TemporaryDirectory() as tmp:
        write_cifar(Path(tmp, "cifar"), 10000)
        cifar = load_splits(DataConfig(dataset="cifar10", source=str(Path(tmp, "cifar")),
                                       input_size=32))
        loaders["cifar10_32px"] = loader_rate(Batches(cifar, "train", 128, train=True,
                                                      augment="basic", device=dev), 30000)
        write_jpegs(Path(tmp, "jpegs"), args.jpegs)
        folder = load_splits(DataConfig(dataset="imagefolder", source=str(Path(tmp, "jpegs")),
                                        input_size=224, val_fraction=0.05,
                                        cache_dir=str(Path(tmp, "cache"))))  # via shards
        n = len(folder.train) * 2
        for name, kw in (("jpeg_224px_cpu_decode_in_process", {"workers": 0}),
                         (f"jpeg_224px_cpu_decode_{args.workers}_workers",
                          {"workers": args.workers}),
                         ("jpeg_224px_batched_decode_on_device", {"gpu_decode": True})):
            loaders[name] = loader_rate(Batches(folder, "train", 64, train=True, augment="basic",
                                                device=dev, **kw), n)
    result["loaders_img_s"] = {k: round(v, 1) for k, v in loaders.items()}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
