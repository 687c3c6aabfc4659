"""Feeding a training step from S3: shards prepared once vs a copy of every object.

Prints one JSON object. A real S3-compatible server (SeaweedFS on 127.0.0.1)
holds N JPEGs at 224 px under ``train/<class>/`` and ``val/<class>/``; every
request goes through a local relay that holds it ``--latency-ms``, as a remote
store would. Side by side, from an empty local cache each:

- ``per_object``: what every step did before shards: copy the prefix object by
  object (``storage.sync_to_local``, 32 requests in flight), then read and
  decode the files for one training pass.
- ``shards``: what every step does now: open the index prepare_data wrote,
  then stream the shards (whole shards fetched ahead into a bounded cache)
  for one training pass. The one-time preparation (on loopback: the relay
  holds every 64 KiB a client sends, which throttles uploads as no store
  does) and a second preparation of the same source through the relay (which
  finds the shards and reuses them) are timed too.

Both passes decode and crop every image the same way (RandomResizedCrop to
``--input-size``, ``--workers`` loader processes), so the difference is in
getting the bytes. Time to first batch counts everything a step does before
its first batch is ready.

    python bench/shards.py --images 2000 --latency-ms 20
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from s3_sync import DelayRelay, local_s3, put_images  # noqa: E402


class _Files:
    """The local copy of an image folder, read the way steps read images."""

    def __init__(self, files: list[Path], labels: list[int]):
        self.files, self.labels = files, torch.tensor(labels)

    def __len__(self) -> int:
        return len(self.files)

    def read(self, i: int) -> torch.Tensor:
        from torchvision.io import read_file

        return read_file(str(self.files[i]))

    def name(self, i: int) -> str:
        return str(self.files[i])


def _pass(batches, first_at: float) -> dict:
    n, first = 0, None
    for x, _ in batches:
        if first is None:
            first = time.perf_counter() - first_at
        n += len(x)
    seconds = time.perf_counter() - first_at
    return {"images": n, "first_batch_s": round(first, 2), "seconds": round(seconds, 2),
            "images_per_s": round(n / seconds, 1)}


def per_object(prefix: str, cache: Path, args) -> dict:
    from torch.utils.data import DataLoader

    from scarletnas import storage
    from scarletnas.data import _JpegDataset, seed_for

    start = time.perf_counter()
    root = storage.sync_to_local(prefix, cache)
    synced = time.perf_counter() - start
    files = sorted((root / "train").glob("*/*.jpg"))
    classes = sorted({f.parent.name for f in files})
    data = _Files(files, [classes.index(f.parent.name) for f in files])
    order = np.random.default_rng(0).permutation(len(files))
    count = len(files) // args.batch * args.batch
    dataset = _JpegDataset(data, args.input_size, True, "none", True, raw=False)
    loader = DataLoader([(int(i), seed_for(0, 0, int(i))) for i in order[:count]],
                        batch_size=args.batch, num_workers=args.workers,
                        collate_fn=dataset.collate)
    return {**_pass(loader, start), "copy_s": round(synced, 2)}


def shards_pass(index: str, cache: Path, args) -> dict:
    from scarletnas import shards
    from scarletnas.config import DataConfig
    from scarletnas.data import Batches, with_loading

    cfg = DataConfig(dataset="imagefolder", source="s3://unused/x", input_size=args.input_size,
                     workers=args.workers, cache_dir=str(cache), val_fraction=0.02,
                     shuffle_shards=args.shuffle_shards)
    start = time.perf_counter()
    splits = with_loading(shards.open_index(index, cfg), cfg)
    batches = Batches(splits, "train", args.batch, train=True, augment="basic", seed=0)
    return _pass(batches.epoch(0), start)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=2000)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--input-size", type=int, default=224)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--shard-mb", type=float, default=16)
    p.add_argument("--shuffle-shards", type=int, default=2)
    p.add_argument("--latency-ms", type=float, default=20)
    args = p.parse_args()

    from scarletnas import shards
    from scarletnas.config import DataConfig
    from scarletnas.devstack import BUCKET

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp, local_s3(tmp) as stack:
        prefix = f"s3://{BUCKET}/bench/imagenet-like"
        sizes = put_images([f"{prefix}/{'val' if i % 50 == 0 else 'train'}/c{i % 10}/"
                            f"{i:06d}.jpg" for i in range(args.images)], args.size, grain=2)
        cfg = DataConfig(dataset="imagefolder", source=prefix, input_size=args.input_size,
                         val_fraction=0.02, shard_mb=args.shard_mb,
                         shard_root=f"s3://{BUCKET}/bench/shards")
        start = time.perf_counter()
        index, meta = shards.prepare(cfg, cfg.shard_root)
        prepare_s = time.perf_counter() - start
        # prepared on loopback: the relay holds every 64 KiB a client sends, which
        # throttles uploads as no store does; reading the source goes at request rate
        relay = DelayRelay(stack.s3_port, args.latency_ms / 1000)
        os.environ["AWS_ENDPOINT_URL"] = f"http://127.0.0.1:{relay.port}"
        start = time.perf_counter()
        _, again = shards.prepare(cfg, cfg.shard_root)
        reuse_s = time.perf_counter() - start
        assert again["reused"]

        old = per_object(prefix, Path(tmp, "copy"), args)
        new = shards_pass(index, Path(tmp, "shard-cache"), args)
    print(json.dumps({
        "bench": "shards", "images": args.images, "size_px": args.size,
        "mean_kb": round(float(np.mean(sizes)) / 1024, 1), "latency_ms": args.latency_ms,
        "input_size": args.input_size, "batch": args.batch, "workers": args.workers,
        "server": "SeaweedFS on 127.0.0.1 behind a delay relay",
        "cpu": platform.machine(), "cpu_count": os.cpu_count(),
        "prepare_once_s": round(prepare_s, 2), "prepare_again_s": round(reuse_s, 2),
        "shards": len(meta["shards"]), "shard_mb": args.shard_mb,
        "per_object": old, "from_shards": new,
        "first_batch_speedup": round(old["first_batch_s"] / new["first_batch_s"], 1),
        "images_per_s_ratio": round(new["images_per_s"] / old["images_per_s"], 2)}))


if __name__ == "__main__":
    main()
