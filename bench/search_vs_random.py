"""NSGA-II against random search, judged by what users get: the retrained test
accuracy of each method's picks.

Both searches use the same trained supernet as evaluator, the same budgets and
selection rule (top_k picks spread over the front) and the same number of
evaluations; the picks of each are then retrained from scratch with the
pipeline's retrain recipe and scored on the test split at their best
validation epoch, as the pipeline's evaluate scores them. Per seed it prints
both methods' picks, and at the end the mean champion (best retrained pick)
and mean pick accuracy per method, with their seed spread.

    python bench/search_vs_random.py --supernet RUN/.../supernet.pt \
        --set data.dataset=imagefolder --set data.source=DIR --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics

from scarletnas.checkpoint import load_supernet
from scarletnas.config import load_pipeline_config
from scarletnas.data import Batches, load_splits
from scarletnas.evaluate import accuracy, make_scorer
from scarletnas.search import random_search, run_search
from scarletnas.train import retrain_best


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--supernet", required=True, help="a trained supernet.pt")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="pipeline config overrides (the data, search and retrain settings)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--evaluations", type=int, default=0,
                   help="search generations x population to aim for (0: the config's)")
    args = p.parse_args()
    cfg = load_pipeline_config(None, args.set)
    supernet = load_supernet(args.supernet)
    space = supernet.space
    splits = load_splits(dataclasses.replace(cfg.data, input_size=space.input_size))
    scorer = make_scorer(supernet, splits, cfg.eval)
    scores: dict = {}

    def cached(archs):  # both searches see identical scores for identical archs
        new = [a for a in dict.fromkeys(archs) if a not in scores]
        for a, s in zip(new, scorer(new), strict=True):
            scores[a] = s
        return [scores[a] for a in archs]

    retrained: dict[str, float] = {}

    def test_top1(arch: str) -> float:  # one retrain per arch, shared by seeds and methods
        if arch not in retrained:
            model = retrain_best(space, arch, splits, cfg.retrain)
            retrained[arch] = accuracy(model, Batches(splits, "test", 256, train=False))["top1"]
        return retrained[arch]

    search = cfg.search
    if args.evaluations:
        search = dataclasses.replace(search, generations=max(1, args.evaluations
                                                             // search.population))
    rows = []
    for seed in args.seeds:
        scfg = dataclasses.replace(search, seed=seed)
        nsga = run_search(space, cached, scfg)
        rand = random_search(space, cached, scfg, len(nsga.evaluated))
        row = {"seed": seed, "evaluations": len(nsga.evaluated)}
        for name, result in (("nsga2", nsga), ("random", rand)):
            picks = sorted(result.selected, key=lambda r: r["madds"])
            row[name] = [{"arch": r["arch"], "madds": r["madds"],
                          "supernet_top1": round(r["top1"], 4),
                          "test_top1": round(test_top1(r["arch"]), 4)} for r in picks]
            row[f"{name}_hypervolume"] = round(result.hypervolume[-1], 4)
        rows.append(row)
        print(json.dumps(row), flush=True)

    def spread(xs: list[float]) -> float:
        return round(statistics.stdev(xs), 4) if len(xs) > 1 else 0.0

    def summary(name: str) -> dict:
        champions = [max(p["test_top1"] for p in r[name]) for r in rows]
        means = [statistics.mean(p["test_top1"] for p in r[name]) for r in rows]
        madds = [statistics.mean(p["madds"] for p in r[name]) for r in rows]
        return {"champion_test_top1": round(statistics.mean(champions), 4),
                "champion_seed_std": spread(champions),
                "pick_test_top1": round(statistics.mean(means), 4),
                "pick_seed_std": spread(means), "pick_madds": round(statistics.mean(madds))}

    wins = sum(max(p["test_top1"] for p in r["nsga2"]) > max(p["test_top1"] for p in r["random"])
               for r in rows)
    print(json.dumps({"bench": "search_vs_random", "data": cfg.data.source or cfg.data.dataset,
                      "input_size": space.input_size, "seeds": len(rows),
                      "evaluations": rows[0]["evaluations"], "nsga2": summary("nsga2"),
                      "random": summary("random"), "nsga2_champion_wins": wins,
                      "retrains": len(retrained)}))


if __name__ == "__main__":
    main()
