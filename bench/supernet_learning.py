"""Does the supernet learn under weight sharing? Sampled-path accuracy per recipe.

For each (space, init recipe, seed): train a supernet on digits with uniform
single-path sampling for the same number of steps, then score N random paths
with BN recalibration on the validation split. Prints one JSON line per run
and a summary; docs/reproduction.md records the figures.

Recipes (see scarletnas.ops.zero_residual_branches and docs/reproduction.md):
- release: the released models' init everywhere, stabilizer a fresh conv
  (the defaults before this fix);
- zero-residual: residual choices start as the identity, stabilizer fresh;
- identity-stabilizer: release init, stabilizer starts as the identity;
- identity-start: both (the defaults now).

    python bench/supernet_learning.py --spaces compact small --seeds 0 1
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from scarletnas import SearchSpace
from scarletnas.config import DataConfig, EvalConfig, OptimConfig, SupernetConfig
from scarletnas.data import load_splits
from scarletnas.evaluate import sampled_path_check
from scarletnas.train import train_supernet

RECIPES = {
    "release": {"zero_init_residual": False, "stabilizer_init": "kaiming"},
    "zero-residual": {"zero_init_residual": True, "stabilizer_init": "kaiming"},
    "identity-stabilizer": {"zero_init_residual": False, "stabilizer_init": "identity"},
    "identity-start": {"zero_init_residual": True, "stabilizer_init": "identity"},
}


def run(space_name: str, recipe: str, seed: int, args) -> dict:
    splits = load_splits(DataConfig(input_size=args.input_size))
    space = SearchSpace.named(space_name, num_classes=splits.num_classes,
                              input_size=splits.input_size, width_mult=args.width)
    per_epoch = len(splits.train) // args.batch
    cfg = SupernetConfig(optim=OptimConfig(lr=args.lr, batch_size=args.batch,
                                           epochs=args.steps / per_epoch, warmup_epochs=1),
                         seed=seed, device="cpu", log_every=10, **RECIPES[recipe])
    losses: list[float] = []
    t = time.perf_counter()
    supernet, result = train_supernet(
        space, splits, cfg,
        callback=lambda m, _: losses.append(m["supernet/loss"]) if "supernet/loss" in m else None)
    seconds = time.perf_counter() - t
    check = sampled_path_check(supernet, splits, EvalConfig(), args.paths, seed=seed)
    return {"space": space_name, "recipe": recipe, "seed": seed, "steps": result.steps,
            "train_seconds": round(seconds, 1), "final_loss": round(float(np.mean(losses[-3:])), 3),
            **{k: round(v, 4) for k, v in check.items() if k.startswith("top1")},
            "learned": check["learned"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--spaces", nargs="+", default=["compact", "small"])
    p.add_argument("--recipes", nargs="+", default=["release", "identity-start"],
                   choices=list(RECIPES))
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--steps", type=int, default=306, help="the local default: 18 epochs")
    p.add_argument("--paths", type=int, default=20, help="random paths scored per supernet")
    p.add_argument("--input-size", type=int, default=16)
    p.add_argument("--width", type=float, default=0.5)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=0.1)
    args = p.parse_args()
    rows = []
    for space_name in args.spaces:
        for recipe in args.recipes:
            for seed in args.seeds:
                rows.append(run(space_name, recipe, seed, args))
                print(json.dumps(rows[-1]), flush=True)
    print("\nspace    recipe               seeds  sampled top-1 mean (min-max over seeds)")
    for space_name in args.spaces:
        for recipe in args.recipes:
            means = [r["top1_mean"] for r in rows
                     if r["space"] == space_name and r["recipe"] == recipe]
            print(f"{space_name:8s} {recipe:20s} {len(means):5d}  {100 * np.mean(means):5.1f}% "
                  f"({100 * min(means):.1f}-{100 * max(means):.1f})")


if __name__ == "__main__":
    torch.set_num_threads(1)
    main()
