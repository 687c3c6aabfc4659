"""The `imagenet` preset's supernet at 224 px on a GPU: does it learn, and how fast?

Writes a generated 10-class image folder at the preset's resolution
(``scarletnas.synthetic``, no download), prepares it into shards and trains
the preset's supernet (19 layers, default settings: projection shortcuts,
identity-started residuals and stabilizers) for a fixed number of steps.
After every epoch it scores random paths with BN recalibration. Prints the
sampled-path accuracy curve, the training images/s and one JSON summary line.

    python bench/imagenet_supernet.py --device cuda --steps 600 --batch 128
    python bench/imagenet_supernet.py --device cpu --size 32 --steps 20   # smoke test
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

import torch

from scarletnas.config import DataConfig, EvalConfig, OptimConfig, SupernetConfig
from scarletnas.data import load_splits
from scarletnas.evaluate import sampled_path_check
from scarletnas.space import SearchSpace
from scarletnas.synthetic import write_shapes
from scarletnas.train import train_supernet


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--per-class", type=int, default=400, help="training images per class")
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--lr", type=float, default=0.2, help="for the batch (0.1 per 64 images)")
    p.add_argument("--workers", type=int, default=12)
    p.add_argument("--paths", type=int, default=8, help="random paths scored per epoch")
    p.add_argument("--shortcut", type=int, default=1, help="0: the paper's exact network")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        write_shapes(f"{tmp}/data", args.classes, args.size, args.per_class,
                     max(20, args.per_class // 5))
        generated = time.perf_counter() - t
        data = DataConfig(dataset="imagefolder", source=f"{tmp}/data", input_size=args.size,
                          workers=args.workers, shard_root=f"{tmp}/shards",
                          cache_dir=f"{tmp}/cache", val_fraction=0.1)
        splits = load_splits(data)
        space = SearchSpace.imagenet(num_classes=splits.num_classes, input_size=args.size,
                                     shortcut=bool(args.shortcut))
        per_epoch = len(splits.train) // args.batch
        cfg = SupernetConfig(optim=OptimConfig(lr=args.lr, batch_size=args.batch,
                                               epochs=args.steps / per_epoch, warmup_epochs=1),
                             device=args.device, log_every=10)
        speed: list[float] = []
        curve: list[dict] = []
        eval_cfg = EvalConfig(calib_batches=4, calib_batch_size=min(args.batch, 128))

        def on_epoch_end(supernet, epoch: int) -> dict:
            check = sampled_path_check(supernet, splits, eval_cfg, args.paths, seed=epoch)
            curve.append({"epoch": epoch + 1, "step": (epoch + 1) * per_epoch,
                          "sampled_top1_mean": round(check["top1_mean"], 4),
                          "sampled_top1_min": round(check["top1_min"], 4)})
            print(json.dumps(curve[-1]), flush=True)
            return {}

        t = time.perf_counter()
        _, result = train_supernet(
            space, splits, cfg, on_epoch_end=on_epoch_end,
            callback=lambda m, _: speed.append(m["supernet/img_per_s"])
            if "supernet/img_per_s" in m else None)
        seconds = time.perf_counter() - t
    steady = speed[len(speed) // 2:] or speed
    print(json.dumps({"bench": "imagenet_supernet", "device": args.device,
                      "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else "",
                      "size": args.size, "classes": args.classes, "shortcut": bool(args.shortcut),
                      "steps": result.steps, "batch": args.batch, "train_images": len(splits.train),
                      "generate_s": round(generated, 1), "train_s": round(seconds, 1),
                      "img_per_s_steady": round(sum(steady) / len(steady), 1),
                      "final_sampled_top1": curve[-1]["sampled_top1_mean"] if curve else None,
                      "chance": 1 / args.classes, "curve": curve}))


if __name__ == "__main__":
    main()
