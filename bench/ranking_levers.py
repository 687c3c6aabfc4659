"""Which levers raise the supernet's ranking of close archs: longer one-shot
training, a few-shot split, or averaging the scores of supernets of several seeds.

The truth is a `bench/reproduce_stabilizer.py` results.json whose archs were
trained stand-alone (default: the 20 compact archs on distorted digits, two
seeds each). Per seed this trains the one-shot supernet of that run's space
(stabilizer, the library's defaults), scores the archs (BN recalibrated), then
from the same weights:
- trains the one-shot supernet ``--extra`` steps more (a cosine restart at half
  the lr, as an extension round);
- splits it into children that each train only the paths of one group
  (Few-shot NAS) for ``--extra / k`` steps, so the split costs what the longer
  one-shot run costs; an arch is scored by its group's child. Splits: ``layer0``
  (the first layer's op: skip, expansion 3, expansion 6) and ``skips`` (0-1,
  2-3, 4 or more skips in the arch).
Kendall tau against the stand-alone accuracies, over all archs and over those
within 5 points of the best, one row per seed and variant; at the end the mean
per variant and the tau of the scores averaged over every seed (an ensemble).
The summary also says how far the truth itself allows: one stand-alone seed's
order against another's, and the tau an exact ranker would reach against the
seeds' mean (``scarletnas.ranking.truth_ceiling``).

    python bench/ranking_levers.py --seeds 0 1 --out rows01.jsonl   # and 2 3 beside it
    python bench/ranking_levers.py --summarize rows01.jsonl rows23.jsonl
"""

from __future__ import annotations

import argparse
import copy
import itertools
import json
import time
from pathlib import Path

import numpy as np
from scipy import stats

from scarletnas import SearchSpace
from scarletnas.config import DataConfig, EvalConfig, OptimConfig, SupernetConfig
from scarletnas.data import Batches, load_splits
from scarletnas.evaluate import CandidateEvaluator
from scarletnas.ranking import (
    close_archs,
    close_rank_correlation,
    rank_correlation,
    truth_ceiling,
)
from scarletnas.train import fit, train_supernet


def split_rules(space: SearchSpace) -> dict:
    """Few-shot splits: name -> (arch -> group, number of groups)."""
    skip = space.skip_index

    def layer0(arch) -> int:
        return 0 if arch[0] == skip else 1 + space.expansions.index(
            space.choices[arch[0]].expansion)

    def skips(arch) -> int:
        return min(2, sum(g == skip for g in arch) // 2)

    return {"layer0": (layer0, 1 + len(space.expansions)), "skips": (skips, 3)}


def schedule(steps: int, per_epoch: int, lr: float, warm_up: bool) -> OptimConfig:
    epochs = steps / per_epoch
    return OptimConfig(epochs=epochs, warmup_epochs=min(1.0, epochs / 10) if warm_up else 0,
                       batch_size=64, lr=lr)


def train_more(net, splits, steps: int, seed: int, group_of=None, group: int = 0) -> None:
    """``steps`` more at half the lr, uniform paths (only ``group``'s with ``group_of``)."""
    cfg = SupernetConfig(optim=schedule(steps, len(splits.train) // 64, 0.05, False),
                         seed=seed, log_every=10**6, check_paths=0)
    highs = np.asarray(net.space.num_choices)

    def paths(step: int) -> list:
        rng = np.random.default_rng((seed, step))
        while True:  # rejection: the rarest group (4+ skips) keeps 1 draw in ~900
            arch = tuple(int(g) for g in rng.integers(0, highs))
            if group_of is None or group_of(arch) == group:
                return [arch]
    batches = Batches(splits, "train", 64, train=True, augment=cfg.augment, seed=seed,
                      channels_last=cfg.channels_last)
    fit(net, batches, cfg, paths_for_step=paths, desc=f"group {group}" if group_of else "more")


def judge(scores: list[float], truth: list[float]) -> dict:
    near = close_rank_correlation(scores, truth, 0.05)
    return {"tau": rank_correlation(scores, truth)["kendall_tau"], "close_n": near["n"],
            "close_tau": near["kendall_tau"], "close_p": near["kendall_p"],
            # the truth lists its archs in MAdds order (reproduce_stabilizer's spread_archs)
            "madds_tau": float(stats.kendalltau(range(len(scores)), scores).statistic)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--truth", default="docs/reproduction/two_seeds/steps600/results.json",
                   help="a reproduce_stabilizer results.json with stand-alone accuracies")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3])
    p.add_argument("--steps", type=int, default=600, help="one-shot supernet steps")
    p.add_argument("--extra", type=int, default=300, help="steps after the one-shot run")
    p.add_argument("--splits", nargs="*", default=["layer0", "skips"],
                   choices=["layer0", "skips"], help="few-shot splits to try")
    p.add_argument("--out", help="also append each row to this JSON-lines file")
    p.add_argument("--summarize", metavar="JSONL", nargs="+",
                   help="summarize the rows of earlier runs (--out files); train nothing")
    args = p.parse_args()
    truth_run = json.loads(Path(args.truth).read_text())
    truth = [r["val_top1"] for r in truth_run["standalone"]]
    seeds = [r.get("val_top1_seeds", [r["val_top1"]]) for r in truth_run["standalone"]]
    if args.summarize:
        summarize([json.loads(line) for path in args.summarize
                   for line in Path(path).read_text().splitlines()], truth, seeds)
        return
    settings = truth_run["settings"]
    space = SearchSpace(**settings["space"])
    splits = load_splits(DataConfig(dataset=settings["dataset"], source=settings.get("source", ""),
                                     input_size=space.input_size))
    archs = [space.parse(r["arch"]) for r in truth_run["standalone"]]
    rules = split_rules(space)
    rows, t0 = [], time.time()

    def report(seed: int, variant: str, net_of) -> None:
        evaluators: dict = {}
        scores = []
        for arch in archs:
            net = net_of(arch)
            if id(net) not in evaluators:  # calibration images as reproduce_stabilizer's
                evaluators[id(net)] = CandidateEvaluator(net, splits, EvalConfig(calib_batches=8),
                                                         seed=seed)
            scores.append(evaluators[id(net)](arch)["top1"])
        row = {"seed": seed, "variant": variant, **judge(scores, truth),
               "mean_score": float(np.mean(scores)), "elapsed_s": round(time.time() - t0),
               "scores": scores}
        rows.append(row)
        print(json.dumps({k: round(v, 3) if isinstance(v, float) else v
                          for k, v in row.items() if k != "scores"}), flush=True)
        if args.out:
            with open(args.out, "a") as f:
                f.write(json.dumps(row) + "\n")

    per_epoch = len(splits.train) // 64
    for seed in args.seeds:
        cfg = SupernetConfig(optim=schedule(args.steps, per_epoch, 0.1, True), seed=seed,
                             log_every=per_epoch, check_paths=0)
        base, _ = train_supernet(space, splits, cfg)
        report(seed, f"one-shot {args.steps}", lambda a, n=base: n)
        longer = copy.deepcopy(base)
        train_more(longer, splits, args.extra, seed + 1000)
        report(seed, f"one-shot {args.steps}+{args.extra}", lambda a, n=longer: n)
        for name in args.splits:
            group_of, k = rules[name]
            children = []
            for group in range(k):
                child = copy.deepcopy(base)
                train_more(child, splits, args.extra // k, seed + 1010 + 10 * group,
                           group_of, group)
                children.append(child)
            report(seed, f"few-shot {name} {args.steps}+{k}x{args.extra // k}",
                   lambda a, c=children, g=group_of: c[g(a)])
    summarize(rows, truth, seeds)


def ensemble_tau(runs: list[dict], n: int, truth: list[float]) -> float:
    """Close-arch tau of the scores averaged over n seeds' supernets, averaged over
    every choice of n seeds among ``runs``."""
    return float(np.mean([judge(np.mean([r["scores"] for r in chosen], 0).tolist(), truth)
                          ["close_tau"] for chosen in itertools.combinations(runs, n)]))


def against_one_seed(scores: list[float], truth: list[float], seeds: list[list[float]]) -> float:
    """Mean close-arch tau of the scores against each stand-alone seed alone (the
    close archs chosen by the seeds' mean): comparable with one seed against another."""
    near = close_archs(truth, 0.05)
    return float(np.mean([stats.kendalltau([scores[i] for i in near],
                                           [seeds[i][j] for i in near]).statistic
                          for j in range(len(seeds[0]))]))


def summarize(rows: list[dict], truth: list[float], seeds: list[list[float]]) -> None:
    """Per variant: the close-arch tau of each seed and their mean, against one
    stand-alone seed, and that of ensembles of 2 and of all seeds; the mean tau
    over all archs. Then what the truth itself allows."""
    print("| variant | seeds | close tau per seed | mean | against one stand-alone seed "
          "| ensembles of 2 | of all | tau, all archs (mean) |")
    print("|---|---|---|---|---|---|---|---|")
    for variant in dict.fromkeys(r["variant"] for r in rows):
        runs = sorted((r for r in rows if r["variant"] == variant), key=lambda r: r["seed"])
        close = [r["close_tau"] for r in runs]
        single = np.mean([against_one_seed(r["scores"], truth, seeds) for r in runs])
        pairs = f"{ensemble_tau(runs, 2, truth):+.2f}" if len(runs) > 1 else ""
        print(f"| {variant} | {len(runs)} | {', '.join(f'{t:+.2f}' for t in close)} | "
              f"{np.mean(close):+.2f} | {single:+.2f} | {pairs} | "
              f"{ensemble_tau(runs, len(runs), truth):+.2f} | "
              f"{np.mean([r['tau'] for r in runs]):+.2f} |")
    if min(map(len, seeds)) >= 2:
        c = truth_ceiling(seeds, 0.05)
        print(f"The truth over its {c['n']} close archs: one stand-alone seed against another "
              f"{c['seed_tau']:+.2f}; seed noise {100 * c['seed_noise']:.2f} points against a "
              f"spread of {100 * c['spread']:.2f}; an exact ranker against the mean of "
              f"{c['seeds']} seeds: {c['ceiling']:+.2f} (expected).")


if __name__ == "__main__":
    main()
