"""Reproduce SCARLET's claims at small scale: stabilizer vs plain identity skip
vs no skip choice, on a proxy whose stand-alone accuracies spread beyond seed noise.

For each variant and each seed, train a supernet on the same data with the
same budget, then
- record its training-loss curve,
- score N random paths (BN recalibrated) for the spread of sampled-subnet
  validation accuracy,
- score M archs spread over the MAdds range and correlate with the same
  archs trained stand-alone (Kendall tau, Spearman rho, p-values), over all
  of them and over the close ones (within --close pp of the best stand-alone
  arch: the archs a user picks among),
- compare the supernet's mean score of those archs with their stand-alone mean.
Stand-alone accuracies are computed once and shared by every variant; the
median arch is also trained with extra seeds to measure seed noise. The
no-skip variant's space has no skip choice, so its tau is over the ranked
archs without a skip.

Writes results.json and PNG figures to --out; docs/reproduction.md reads them.

    python bench/reproduce_stabilizer.py --out docs/reproduction
    python bench/reproduce_stabilizer.py --report docs/reproduction/results.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from scipy import stats

from scarletnas import SearchSpace
from scarletnas.config import DataConfig, EvalConfig, OptimConfig, RetrainConfig, SupernetConfig
from scarletnas.data import Batches, load_splits
from scarletnas.evaluate import CandidateEvaluator, accuracy
from scarletnas.ranking import (
    close_rank_correlation,
    rank_correlation,
    spread_archs,
    truth_ceiling,
)
from scarletnas.sampling import random_population
from scarletnas.train import train_subnet, train_supernet

VARIANTS = {  # supernet options; "allow_skip" changes the space
    "stabilizer": {"stabilizer": True, "stabilizer_init": "identity"},
    "stabilizer-kaiming": {"stabilizer": True, "stabilizer_init": "kaiming"},
    "identity": {"stabilizer": False},
    "no-skip": {"allow_skip": False},
}
COLORS = {"stabilizer": "tab:red", "stabilizer-kaiming": "tab:orange", "identity": "tab:blue",
          "no-skip": "tab:green"}


def standalone(space, arch, splits, args, seed: int = 0) -> float:
    retrain = RetrainConfig(optim=OptimConfig(epochs=args.standalone_epochs, warmup_epochs=0.5,
                                              batch_size=args.batch, lr=args.lr),
                            dropout=0.1, eval_every_epochs=1000, log_every=10**6, seed=seed,
                            zero_init_residual=bool(args.standalone_zero_init))
    model, _ = train_subnet(space, arch, splits, retrain)
    return accuracy(model, Batches(splits, "val", 256, train=False))["top1"]


def train_standalone(results: dict, space, ranked, splits, args, t0: float) -> None:
    """Train every ranked arch with --standalone-seeds seeds (its accuracy: their
    mean), and the median one with seeds up to --noise-seeds for seed noise."""
    first = args.standalone_first_seed
    for arch in ranked:
        seeds = list(range(first, first + args.standalone_seeds))
        top1 = [standalone(space, arch, splits, args, seed) for seed in seeds]
        row = {"arch": space.format(arch), "val_top1": float(np.mean(top1)),
               "val_top1_seeds": top1, "seeds": seeds}
        results["standalone"].append(row)
        print(json.dumps(row | {"elapsed_s": round(time.time() - t0)}), flush=True)
    actual = [r["val_top1"] for r in results["standalone"]]
    median = ranked[int(np.argsort(actual)[len(actual) // 2])]
    noise = results["standalone"][ranked.index(median)]["val_top1_seeds"] + [
        standalone(space, median, splits, args, seed)
        for seed in range(first + args.standalone_seeds, first + args.noise_seeds)]
    results["seed_noise"] = {"arch": space.format(median), "val_top1": noise,
                             "std": float(np.std(noise, ddof=1)) if len(noise) > 1 else None,
                             "spread_std": float(np.std(actual, ddof=1)) if len(actual) > 1
                             else None,
                             "pooled_std": pooled_noise(results["standalone"])}
    print(json.dumps(results["seed_noise"]), flush=True)


def pooled_noise(rows: list[dict]) -> float | None:
    """Seed noise over every arch trained with two or more seeds: the pooled
    within-arch standard deviation (variances weighted by their degrees of freedom)."""
    seeds = [r["val_top1_seeds"] for r in rows if len(r.get("val_top1_seeds", [])) > 1]
    if not seeds:
        return None
    squares = sum(np.sum((np.array(v) - np.mean(v)) ** 2) for v in seeds)
    return float(np.sqrt(squares / sum(len(v) - 1 for v in seeds)))


# what makes two runs' stand-alone accuracies comparable (besides the ranked archs)
SAME_DATA = ("dataset", "source", "input_size", "width", "lr", "batch")
RECIPE = ("standalone_epochs", "standalone_zero_init")
STANDALONE_SETTINGS = SAME_DATA + RECIPE
OLDER = {"source": "", "standalone_zero_init": 0}  # what runs before these settings did


def standalone_key(results: dict) -> dict:
    settings = results["settings"]
    space = {"shortcut": False} | settings["space"]  # runs before the flag had none
    return {"space": space} | {k: settings.get(k, OLDER.get(k)) for k in STANDALONE_SETTINGS}


def reuse_standalone(results: dict, paths: list[str], ranked: list[str]) -> None:
    """Copy stand-alone accuracies from earlier runs. Several files pool each arch's
    seeds, and may each hold part of the archs (--only); every ranked arch must be
    covered. Refuse other archs, networks or recipes, and a seed twice."""
    earlier = [json.loads(Path(p).read_text()) for p in paths]
    mine, first_key = standalone_key(results), standalone_key(earlier[0])
    for path, run in zip(paths, earlier, strict=True):
        key = standalone_key(run)
        if not run["standalone"]:
            raise SystemExit(f"{path} holds no stand-alone accuracies (it was a --no-standalone "
                             "run): give the results.json of the run that trained them")
        if not {r["arch"] for r in run["standalone"]} <= set(ranked):
            raise SystemExit(f"{path} ranked other archs than this run (different data, space "
                             "or --ranked); run without --standalone-from to train them")
        if key["space"] != mine["space"]:
            raise SystemExit(f"{path} trained another network (space settings, e.g. --shortcut)")
        differ = [k for k in SAME_DATA if key[k] != mine[k]]
        if differ:
            raise SystemExit(f"{path} trained on other data or with another lr or batch "
                             f"({', '.join(differ)}) than this run")
        differ = [k for k in RECIPE if key[k] != first_key[k]]  # all else matched `mine`
        if differ:
            raise SystemExit(f"{path} trained with another recipe than {paths[0]} "
                             f"({', '.join(differ)}): their seeds do not pool")
    rows = []
    for i, arch in enumerate(ranked):
        top1, seeds = [], []
        for run in earlier:
            first = run["settings"].get("standalone_first_seed", 0)
            for row in (r for r in run["standalone"] if r["arch"] == arch):
                top1 += row.get("val_top1_seeds", [row["val_top1"]])
                seeds += row.get("seeds", [first])
        if not top1:
            raise SystemExit(f"{arch} (ranked arch {i}) was trained by none of the "
                             f"--standalone-from files: train it with --only {i}")
        if len(set(seeds)) < len(seeds):
            raise SystemExit(f"{arch}: seeds {seeds} repeat across --standalone-from files; "
                             "give each seed once")
        rows.append({"arch": arch, "val_top1": float(np.mean(top1)), "val_top1_seeds": top1,
                     "seeds": seeds})
    results["standalone"] = rows
    results["seed_noise"] = dict(earlier[0]["seed_noise"] or {}, pooled_std=pooled_noise(rows),
                                 spread_std=float(np.std([r["val_top1"] for r in rows], ddof=1)))
    for key in RECIPE:  # the stand-alone recipe is the reused files', not this run's
        results["settings"][key] = first_key[key]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", help="where results.json and the figures go (default "
                   "docs/reproduction; with --report: nowhere unless given)")
    p.add_argument("--dataset", default="distorted-digits")
    p.add_argument("--source", default="", help="the image folder of --dataset imagefolder "
                   "(e.g. one `scarlet-nas make-shapes` wrote)")
    p.add_argument("--space", default="compact")
    p.add_argument("--steps", type=int, default=600, help="supernet steps per run")
    p.add_argument("--seeds", type=int, nargs="*", default=[0, 1, 2],
                   help="supernet seeds; none: train only the stand-alone archs")
    p.add_argument("--variants", nargs="+", default=["stabilizer", "identity", "no-skip"],
                   choices=list(VARIANTS))
    p.add_argument("--sampled", type=int, default=20, help="random paths scored per supernet")
    p.add_argument("--ranked", type=int, default=20, help="archs trained stand-alone")
    p.add_argument("--noise-seeds", type=int, default=3,
                   help="seeds the median ranked arch is trained with, for seed noise")
    p.add_argument("--standalone-epochs", type=float, default=5)
    p.add_argument("--standalone-zero-init", type=int, default=1, choices=(0, 1),
                   help="1: stand-alone archs start every residual block as the identity "
                        "(retrain.zero_init_residual, the pipeline's default); 0: the released "
                        "init (files without settings.standalone_zero_init were made so)")
    p.add_argument("--standalone-seeds", type=int, default=1,
                   help="seeds each ranked arch is trained with; its accuracy is their mean")
    p.add_argument("--standalone-first-seed", type=int, default=0,
                   help="the first of those seeds (to add seeds to an earlier run's, merged "
                        "by giving both to --standalone-from)")
    p.add_argument("--only", type=int, nargs="+", metavar="INDEX",
                   help="train only these of the ranked archs stand-alone (0: the cheapest), "
                        "for a probe of the stand-alone budget; needs --seeds with no value")
    p.add_argument("--standalone-from", nargs="+",
                   help="results.json of earlier runs with the same data, space and ranked "
                        "archs: reuse their stand-alone accuracies (averaged over the files' "
                        "seeds) instead of retraining them")
    p.add_argument("--input-size", type=int, default=16)
    p.add_argument("--width", type=float, default=0.5)
    p.add_argument("--shortcut", type=int, default=1, choices=(0, 1),
                   help="1: projection shortcuts on the width-changing layers (space.shortcut, "
                        "the pipeline's default); 0: the paper's exact network (the compact "
                        "runs recorded before 2026-11-30 were made so)")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--close", type=float, default=5,
                   help="percentage points below the best stand-alone arch that count as close")
    p.add_argument("--no-standalone", action="store_true",
                   help="train only the supernets (their scores are judged later with --report "
                        "and --standalone-from: two processes can share the work)")
    p.add_argument("--report", metavar="RESULTS_JSON", nargs="+",
                   help="judge an earlier run's results.json again; train nothing")
    args = p.parse_args()
    if args.report:
        report([Path(r) for r in args.report], args.close / 100, args.standalone_from,
               Path(args.out) if args.out else None)
        return
    if args.only and (args.seeds or args.standalone_from or args.no_standalone):
        p.error("--only trains a subset of the ranked archs stand-alone: give --seeds with "
                "no value, and neither --standalone-from nor --no-standalone")
    if args.only and (len(set(args.only)) < len(args.only)
                      or not all(0 <= i < args.ranked for i in args.only)):
        p.error(f"--only takes distinct places among the {args.ranked} ranked archs "
                f"(0..{args.ranked - 1}); got {args.only}")
    if not args.out and (args.no_standalone or not args.seeds):
        p.error("a run that trains only supernets or only stand-alone archs writes part of a "
                "result: give it its own --out")
    out = Path(args.out or "docs/reproduction")
    out.mkdir(parents=True, exist_ok=True)

    splits = load_splits(DataConfig(dataset=args.dataset, source=args.source,
                                     input_size=args.input_size))
    space = SearchSpace.named(args.space, num_classes=splits.num_classes,
                              input_size=args.input_size, width_mult=args.width,
                              shortcut=bool(args.shortcut))
    per_epoch = len(splits.train) // args.batch
    epochs = args.steps / per_epoch
    eval_cfg = EvalConfig(calib_batches=8, calib_batch_size=64)
    ranked = spread_archs(space, args.ranked, np.random.default_rng(1234))

    results = {"settings": {**vars(args), "space": space.to_dict(), "data": splits.describe(),
                            "supernet_epochs": epochs, "torch": torch.__version__},
               "ranked_archs": [space.format(a) for a in ranked],
               "standalone": [], "seed_noise": [], "runs": []}
    t0 = time.time()
    if args.no_standalone:
        pass
    elif args.standalone_from:
        reuse_standalone(results, args.standalone_from, [space.format(a) for a in ranked])
    else:
        train_standalone(results, space, [ranked[i] for i in args.only or range(len(ranked))],
                         splits, args, t0)
    actual = [r["val_top1"] for r in results["standalone"]]
    (out / "results.json").write_text(json.dumps(results, indent=1))

    for seed in args.seeds:
        for name in args.variants:
            opts = dict(VARIANTS[name])
            run_space = space.with_(allow_skip=opts.pop("allow_skip", True))
            keep = [i for i, a in enumerate(ranked)
                    if run_space.allow_skip or space.skip_index not in a]
            sampled = [tuple(int(g) for g in r) for r in
                       random_population(run_space, args.sampled, np.random.default_rng(99))]
            curve: list[tuple[int, float]] = []
            optim = OptimConfig(epochs=epochs, warmup_epochs=min(1.0, epochs / 10),
                                batch_size=args.batch, lr=args.lr)
            cfg = SupernetConfig(optim=optim, seed=seed, log_every=per_epoch, check_paths=0,
                                 **opts)
            supernet, _ = train_supernet(
                run_space, splits, cfg,
                callback=lambda m, s, c=curve: c.append((s, m["supernet/loss"]))
                if "supernet/loss" in m else None)
            evaluator = CandidateEvaluator(supernet, splits, eval_cfg, seed=seed)
            spread = [evaluator(a)["top1"] for a in sampled]
            predicted = [evaluator(ranked[i])["top1"] for i in keep]
            run = {"variant": name, "seed": seed, "loss_curve": curve,
                   "final_loss": float(np.mean([v for _, v in curve[-3:]])),
                   "sampled_top1": spread, "sampled_mean": float(np.mean(spread)),
                   "sampled_std": float(np.std(spread)), "ranked_predicted": predicted,
                   "ranked_kept": keep}
            if actual:
                run |= judge(predicted, [actual[i] for i in keep], args.close / 100, keep)
            results["runs"].append(run)
            print(json.dumps({k: v for k, v in run.items()
                              if k not in ("loss_curve", "sampled_top1", "ranked_predicted")}
                             | {"elapsed_s": round(time.time() - t0)}), flush=True)
            (out / "results.json").write_text(json.dumps(results, indent=1))
    if not args.seeds or not actual:
        return
    summary = summarize(results)
    results["summary"] = summary
    (out / "results.json").write_text(json.dumps(results, indent=1))
    print(json.dumps({"summary": summary}, indent=1))
    plot(results, out)


def judge(predicted: list[float], actual: list[float], close: float, order: list[int]) -> dict:
    """Kendall tau over every ranked arch and over the close ones, the supernet's
    mean score of those archs as a fraction of their stand-alone mean, and how
    each order follows MAdds (``order``: the archs' places in MAdds order), which
    shows a supernet that ranks by size where a short stand-alone budget does not."""
    near = close_rank_correlation(predicted, actual, close)
    out = {**rank_correlation(predicted, actual), "close_n": near["n"],
           "vs_standalone": float(np.mean(predicted) / np.mean(actual)),
           "madds_tau_supernet": float(stats.kendalltau(order, predicted).statistic),
           "madds_tau_standalone": float(stats.kendalltau(order, actual).statistic)}
    if "kendall_tau" in near:
        out |= {"close_tau": near["kendall_tau"], "close_p": near["kendall_p"]}
    return out


# what supernet runs of several files must share to be judged as one
MERGED = ("space", *SAME_DATA, "steps", "sampled")


def ranked_of(results: dict) -> list[str]:
    return (results.get("ranked_archs") or results.get("ranked")
            or [r["arch"] for r in results["standalone"]])


def report(paths: list[Path], close: float, standalone_from: list[str] | None = None,
           out: Path | None = None) -> None:
    """Judge the runs of earlier results.json files again (with another --close, or
    against stand-alone accuracies another process trained); several files of the
    same ranked archs (supernets trained by several processes) are judged as one.
    With ``out``, write the judged results and their figures there."""
    path, results = paths[0], json.loads(paths[0].read_text())
    archs = ranked_of(results)
    for other in paths[1:]:
        more = json.loads(other.read_text())
        if ranked_of(more) != archs:
            raise SystemExit(f"{other} ranked other archs than {path}: judge them apart")
        differ = [k for k in MERGED if more["settings"].get(k) != results["settings"].get(k)]
        if differ:
            raise SystemExit(f"{other} trained its supernets otherwise than {path} "
                             f"({', '.join(differ)}): judge them apart")
        runs = {(r["variant"], r["seed"]) for r in results["runs"]}
        if any((r["variant"], r["seed"]) in runs for r in more["runs"]):
            raise SystemExit(f"{other} repeats a variant and seed of the files before it")
        results["runs"] += more["runs"]
        results["settings"]["seeds"] = list(dict.fromkeys(
            results["settings"]["seeds"] + more["settings"]["seeds"]))
    if standalone_from:
        reuse_standalone(results, standalone_from, archs)
    if not results["standalone"]:
        raise SystemExit(f"{path} holds supernet scores only: give the stand-alone accuracies "
                         "with --standalone-from RESULTS_JSON")
    actual = [r["val_top1"] for r in results["standalone"]]
    print(json.dumps({"standalone": {k: results["seed_noise"].get(k)
                                     for k in ("spread_std", "std", "pooled_std")}}))
    seeds = [r.get("val_top1_seeds", []) for r in results["standalone"]]
    if min(map(len, seeds)) >= 2:  # how far a close tau can go against this truth
        results["truth_ceiling"] = truth_ceiling(seeds, close)
        print(json.dumps({"truth_ceiling": {k: round(v, 3) if isinstance(v, float) else v
                                            for k, v in results["truth_ceiling"].items()}}))
    for run in results["runs"]:
        # older files did not record which archs a run without a skip choice ranked
        skips = VARIANTS[run["variant"]].get("allow_skip", True)
        keep = run["ranked_kept"] if "ranked_kept" in run else [
            i for i, arch in enumerate(archs) if skips or "skip" not in arch.split("-")]
        for key in ("close_tau", "close_p"):
            run.pop(key, None)
        run.update(judge(run["ranked_predicted"], [actual[i] for i in keep], close, keep))
        print(json.dumps({k: round(v, 3) if isinstance(v, float) else v
                          for k, v in run.items() if k in REPORTED}))
    results["summary"] = summarize(results)
    print(json.dumps({"summary": results["summary"]}, indent=1))
    if out:
        out.mkdir(parents=True, exist_ok=True)
        (out / "results.json").write_text(json.dumps(results, indent=1))
        plot(results, out)


REPORTED = ("variant", "seed", "sampled_mean", "kendall_tau", "kendall_p", "close_n",
            "close_tau", "close_p", "vs_standalone", "madds_tau_supernet",
            "madds_tau_standalone")


def summarize(results: dict) -> dict:
    """Per variant: mean and std over seeds of loss, sampled accuracy and tau."""
    out = {}
    for name in dict.fromkeys(r["variant"] for r in results["runs"]):
        runs = [r for r in results["runs"] if r["variant"] == name]
        out[name] = {"seeds": len(runs), "n_ranked": runs[0]["n"]}
        for key in ("final_loss", "sampled_mean", "sampled_std", "kendall_tau", "kendall_p",
                    "close_tau", "close_p", "vs_standalone", "madds_tau_supernet",
                    "madds_tau_standalone"):
            values = [r[key] for r in runs if key in r]
            if not values:
                continue
            out[name][key] = [float(np.mean(values)), float(np.std(values))]
    return out


def plot(results: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = COLORS
    dataset = results["settings"]["dataset"]
    fig, ax = plt.subplots(figsize=(7, 4))
    styles = dict(zip(results["settings"]["seeds"], ("-", "--", ":", "-.") * 8, strict=False))
    for run in results["runs"]:
        steps, loss = zip(*run["loss_curve"], strict=True)
        ax.plot(steps, loss, color=colors[run["variant"]], alpha=0.8, linestyle=styles[run["seed"]],
                label=f"{run['variant']} (seed {run['seed']})")
    ax.set_xlabel("supernet step")
    ax.set_ylabel("training loss (per epoch)")
    ax.set_title(f"Supernet training loss on {dataset}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "loss_curves.png", dpi=120)

    fig, ax = plt.subplots(figsize=(7, 4))
    runs = results["runs"]
    ax.boxplot([r["sampled_top1"] for r in runs], showmeans=True)
    ax.set_xticks(range(1, len(runs) + 1),
                  [f"{r['variant']}\nseed {r['seed']}" for r in runs], fontsize=7)
    ax.set_ylabel("val top-1 of random paths (BN recalibrated)")
    ax.set_title("Spread of sampled-subnet accuracy")
    fig.tight_layout()
    fig.savefig(out / "sampled_accuracy.png", dpi=120)

    fig, ax = plt.subplots(figsize=(7, 4))
    ax.bar(range(len(runs)), [r["kendall_tau"] for r in runs],
           color=[colors[r["variant"]] for r in runs])
    ax.set_xticks(range(len(runs)), [f"{r['variant']}\nseed {r['seed']}" for r in runs],
                  fontsize=7)
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_ylabel("Kendall tau (supernet vs stand-alone)")
    ax.set_title("Ranking quality")
    fig.tight_layout()
    fig.savefig(out / "kendall_tau.png", dpi=120)


if __name__ == "__main__":
    main()
