"""Search throughput: candidates scored per minute by the real evaluator
(BN recalibration + validation with supernet weights) inside NSGA-II, and the
cache hit rate. Prints one JSON object.

    python bench/search_speed.py                       # CPU: digits, small space
    python bench/search_speed.py --imagenet            # 224x224, 2,048 calibration and
                                                       # 10,000 validation images (synthetic)
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from scarletnas import SearchSpace, Supernet
from scarletnas.config import DataConfig, EvalConfig, SearchConfig
from scarletnas.data import Splits, TensorSet, load_splits
from scarletnas.evaluate import make_scorer
from scarletnas.search import run_search


def synthetic_imagenet(n_train: int, n_val: int, size: int = 224, classes: int = 1000) -> Splits:
    """Random uint8 images: the evaluator's cost does not depend on pixel values."""
    gen = torch.Generator().manual_seed(0)

    def make(n):
        return TensorSet(torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8,
                                       generator=gen),
                         torch.randint(0, classes, (n,), generator=gen))
    return Splits(make(n_train), make(n_val), make(8), classes, size, (0.45,) * 3, (0.25,) * 3,
                  True, "synthetic")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--imagenet", action="store_true")
    p.add_argument("--generations", type=int, default=3)
    p.add_argument("--population", type=int, default=16)
    p.add_argument("--calib-images", type=int, help="default: 2048 (imagenet) / 512")
    p.add_argument("--val-images", type=int, help="default: 10000 (imagenet) / all of digits")
    args = p.parse_args()

    if args.imagenet:
        calib = args.calib_images or 2048
        val = args.val_images or 10000
        splits = synthetic_imagenet(calib, val)
        space = SearchSpace.imagenet()
        batch = 256
    else:
        calib = args.calib_images or 512
        val = args.val_images or 0
        splits = load_splits(DataConfig(input_size=16))
        space = SearchSpace.small(input_size=16)
        batch = 128
    supernet = Supernet(space)
    cfg = EvalConfig(calib_batches=max(1, calib // batch), calib_batch_size=batch, val_images=val)
    t = time.perf_counter()
    scorer = make_scorer(supernet, splits, cfg)
    setup_s = time.perf_counter() - t
    t = time.perf_counter()
    result = run_search(space, scorer, SearchConfig(generations=args.generations,
                                                    population=args.population))
    elapsed = time.perf_counter() - t
    n = len(result.evaluated)
    devices = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] or ["cpu"]
    print(json.dumps({
        "bench": "search_speed", "devices": devices, "threads": torch.get_num_threads(),
        "space": "imagenet" if args.imagenet else "small", "input_size": space.input_size,
        "calib_images": cfg.calib_batches * batch, "val_images": result.evaluated[0]["images"],
        "generations": args.generations, "population": args.population,
        "evaluated": n, "setup_s": round(setup_s, 2), "search_s": round(elapsed, 2),
        "candidates_per_min": round(60 * n / elapsed, 1),
        "s_per_candidate": round(elapsed / n, 3),
        "cache_hit_rate": round(result.cache_hit_rate, 4),
    }))


if __name__ == "__main__":
    main()
