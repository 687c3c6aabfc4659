"""NSGA-II vs random search with the same number of evaluations, on the same
trained supernet and budget. Prints one JSON object per seed and a summary.

With --retrain-epochs, each arch NSGA-II selects is retrained from scratch
beside the random search's arch of the nearest MAdds (same recipe, same
seed), and both test top-1 are reported.

    python bench/search_vs_random.py --supernet local_outputs/.../supernet.pt
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from scarletnas.checkpoint import load_supernet
from scarletnas.config import DataConfig, EvalConfig, OptimConfig, RetrainConfig, SearchConfig
from scarletnas.data import Batches, load_splits
from scarletnas.evaluate import accuracy, make_scorer
from scarletnas.search import random_search, run_search
from scarletnas.train import train_subnet


def retrained_top1(space, arch: str, splits, epochs: float) -> float:
    cfg = RetrainConfig(optim=OptimConfig(epochs=epochs, warmup_epochs=min(1.0, epochs / 5),
                                          lr=0.1), dropout=0.1, log_every=10**6)
    model, _ = train_subnet(space, arch, splits, cfg)
    return accuracy(model, Batches(splits, "test", 256, train=False))["top1"]


def retrain_pairs(space, nsga, rand, splits, epochs: float) -> list[dict]:
    """Each NSGA-II-selected arch against the random search's nearest-MAdds arch."""
    pairs = []
    for chosen in nsga.selected:
        twin = min(rand.evaluated, key=lambda r: abs(r["madds"] - chosen["madds"]))
        pairs.append({"nsga2_arch": chosen["arch"], "nsga2_madds": chosen["madds"],
                      "nsga2_test_top1": retrained_top1(space, chosen["arch"], splits, epochs),
                      "random_arch": twin["arch"], "random_madds": twin["madds"],
                      "random_test_top1": retrained_top1(space, twin["arch"], splits, epochs)})
    return pairs


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--supernet", required=True)
    p.add_argument("--generations", type=int, default=8)
    p.add_argument("--population", type=int, default=16)
    p.add_argument("--max-madds", type=float, default=6e6)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--dataset", default="digits")
    p.add_argument("--retrain-epochs", type=float, default=0,
                   help="retrain NSGA-II's selected archs and random ones of similar MAdds")
    args = p.parse_args()
    supernet = load_supernet(args.supernet)
    space = supernet.space
    splits = load_splits(DataConfig(dataset=args.dataset, input_size=space.input_size))
    scorer = make_scorer(supernet, splits, EvalConfig(calib_batches=4, calib_batch_size=64))
    cache: dict = {}

    def cached(archs):  # both searches see identical scores for identical archs
        new = [a for a in archs if a not in cache]
        for a, s in zip(new, scorer(new), strict=True):
            cache[a] = s
        return [cache[a] for a in archs]

    rows = []
    for seed in args.seeds:
        cfg = SearchConfig(generations=args.generations, population=args.population,
                           max_madds=args.max_madds, seed=seed)
        nsga = run_search(space, cached, cfg)
        rand = random_search(space, cached, cfg, len(nsga.evaluated))
        row = {"seed": seed, "evaluations": len(nsga.evaluated),
               "nsga2_hypervolume": round(nsga.hypervolume[-1], 4),
               "random_hypervolume": round(rand.hypervolume[-1], 4),
               "nsga2_best_top1": max(r["top1"] for r in nsga.front),
               "random_best_top1": max(r["top1"] for r in rand.front),
               "nsga2_front": len(nsga.front), "random_front": len(rand.front)}
        if args.retrain_epochs:
            row["retrained"] = retrain_pairs(space, nsga, rand, splits, args.retrain_epochs)
        rows.append(row)
        print(json.dumps(row), flush=True)
    print(json.dumps({"bench": "search_vs_random", "max_madds": args.max_madds,
                      "generations": args.generations, "population": args.population,
                      "mean_nsga2_hv": float(np.mean([r["nsga2_hypervolume"] for r in rows])),
                      "mean_random_hv": float(np.mean([r["random_hypervolume"] for r in rows]))}))


if __name__ == "__main__":
    main()
