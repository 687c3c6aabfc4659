"""NSGA-II against random search, judged by what users get: the retrained test
accuracy of each method's picks.

Both searches use the same trained supernet as evaluator, the same budgets and
selection rule (top_k picks spread over the front) and the same number of
evaluations; the picks of each are then retrained from scratch with the
pipeline's retrain recipe and scored on the test split at their best
validation epoch, as the pipeline's evaluate scores them. Per seed it prints
both methods' picks, and at the end the mean champion (best retrained pick)
and mean pick accuracy per method, with their seed spread.

The champion favours whichever front reaches the dearer archs, so the methods
are also compared at matched MAdds: at each pick's MAdds m (either method's),
each method answers with the arch it scored best among those it evaluated
within m, what a user asking for "the best arch under m" gets. Both answers
are retrained and compared pair by pair, with a paired t-test over seeds.

With ``--random-archs N`` each NSGA-II pick is also paired with N archs drawn
uniformly at its MAdds (within 5%) and chosen without the supernet: what a
user gets without the one-shot method at the same cost (Yu et al. 2020's
random-sampling baseline; random search above shares NSGA-II's evaluator).

    python bench/search_vs_random.py --supernet RUN/.../supernet.pt \
        --set data.dataset=imagefolder --set data.source=DIR --seeds 0 1 2
    # reuse the retrains of earlier rows (same data and retrain settings):
    python bench/search_vs_random.py ... --reuse earlier.jsonl
    # the picks against archs drawn at their MAdds without the supernet:
    python bench/search_vs_random.py ... --random-archs 2
    python bench/search_vs_random.py --summarize rows.jsonl --plot random_archs.png
    # one retrain's noise: the same archs retrained with another seed
    python bench/search_vs_random.py ... --set retrain.seed=1 > seed1.jsonl
    python bench/search_vs_random.py --summarize seed0.jsonl --other-seed seed1.jsonl
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import statistics
import sys
from pathlib import Path

import numpy as np
from scipy import stats

from scarletnas import storage
from scarletnas.checkpoint import load_supernet
from scarletnas.complexity import arch_cost, population_cost
from scarletnas.config import load_pipeline_config
from scarletnas.data import Batches, load_splits
from scarletnas.evaluate import accuracy, make_scorer
from scarletnas.report import figure_png, pyplot
from scarletnas.sampling import random_population
from scarletnas.search import random_search, run_search
from scarletnas.space import SearchSpace
from scarletnas.train import retrain_best

# the draws' own random streams: numpy pads seed tuples with zeros, so a bare
# (seed, 0, 0) would replay the searches' stream of ``seed``
DRAWS = 0x5EED


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--supernet", help="a trained supernet.pt")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="pipeline config overrides (the data, search and retrain settings)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--evaluations", type=int, default=0,
                   help="search generations x population to aim for (0: the config's)")
    p.add_argument("--reuse", nargs="*", default=[], metavar="JSONL",
                   help="rows printed by earlier runs with the same data and retrain settings: "
                        "their archs' test accuracies are not retrained again")
    p.add_argument("--random-archs", type=int, default=0, metavar="N",
                   help="also retrain N archs drawn uniformly at each NSGA-II pick's MAdds "
                        "(within 5%%) without the supernet, and pair them with the pick")
    p.add_argument("--summarize", nargs="+", metavar="JSONL",
                   help="summarize the rows of earlier runs (e.g. one per process); train nothing")
    p.add_argument("--other-seed", nargs="+", default=[], metavar="JSONL",
                   help="with --summarize: rows whose archs were retrained with another "
                        "retrain.seed; prints one retrain's noise from the archs both hold")
    p.add_argument("--plot", metavar="PNG",
                   help="with --summarize: the picks and the archs drawn at their MAdds "
                        "(--random-archs rows), retrained, against MAdds")
    args = p.parse_args()
    if (args.other_seed or args.plot) and not args.summarize:
        p.error("--other-seed and --plot go with --summarize")
    if args.summarize:
        rows = read_rows(args.summarize)
        out = summarize(rows)
        if args.other_seed:
            out["retrain_noise"] = retrain_noise(reused_retrains(args.summarize),
                                                 reused_retrains(args.other_seed))
        if args.plot:
            storage.write_bytes(args.plot, random_archs_png(rows, out, data_name(args.summarize)))
        print(json.dumps(out))
        return
    if not args.supernet:
        p.error("--supernet is required (or --summarize)")
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

    retrained: dict[str, float] = reused_retrains(args.reuse)

    def test_top1(arch: str) -> float:  # one retrain per arch, shared by seeds and methods
        if arch not in retrained:
            model = retrain_best(space, arch, splits, cfg.retrain)
            retrained[arch] = accuracy(model, Batches(splits, "test", 256, train=False))["top1"]
        return retrained[arch]

    search = cfg.search
    if args.evaluations:
        search = dataclasses.replace(search, generations=max(1, args.evaluations
                                                             // search.population))

    def answer(r: dict | None) -> dict | None:
        return r and {"arch": r["arch"], "madds": r["madds"], "supernet_top1": round(r["top1"], 4),
                      "test_top1": round(test_top1(r["arch"]), 4)}

    def drawn(genes) -> dict:
        arch = space.format(genes)
        return {"arch": arch, "madds": arch_cost(space, genes).madds,
                "test_top1": round(test_top1(arch), 4)}

    rows = []
    for seed in args.seeds:
        scfg = dataclasses.replace(search, seed=seed)
        nsga = run_search(space, cached, scfg)
        rand = random_search(space, cached, scfg, len(nsga.evaluated))
        row = {"seed": seed, "evaluations": len(nsga.evaluated)}
        for name, result in (("nsga2", nsga), ("random", rand)):
            picks = sorted(result.selected, key=lambda r: r["madds"])
            row[name] = [answer(r) for r in picks]
            row[f"{name}_hypervolume"] = round(result.hypervolume[-1], 4)
        budgets = sorted({r["madds"] for r in nsga.selected + rand.selected})
        row["matched"] = [{"madds": m, **{name: answer(best_within(result.evaluated, m))
                                          for name, result in (("nsga2", nsga),
                                                               ("random", rand))}}
                          for m in budgets]
        if args.random_archs:
            row["random_archs"] = [
                {"madds": pick["madds"], "nsga2": pick,
                 "drawn": [drawn(random_genes_near(space, pick["madds"],
                                                   np.random.default_rng((DRAWS, seed, i, d))))
                           for d in range(args.random_archs)]}
                for i, pick in enumerate(row["nsga2"])]
        rows.append(row)
        print(json.dumps(row), flush=True)

    print(json.dumps({"bench": "search_vs_random", "data": cfg.data.source or cfg.data.dataset,
                      "input_size": space.input_size, **summarize(rows),
                      "retrains": len(retrained)}))


def summarize(rows: list[dict]) -> dict:
    """Both methods' mean champion and picks over the seeds, and the matched-MAdds
    comparison."""
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
    out = {"seeds": len(rows), "evaluations": rows[0]["evaluations"], "nsga2": summary("nsga2"),
           "random": summary("random"), "nsga2_champion_wins": wins}
    if all("matched" in r for r in rows):
        out["matched_madds"] = matched_summary(rows)
    if all("random_archs" in r for r in rows):
        out["against_random_archs"] = random_archs_summary(rows)
    return out


def read_rows(paths: list[str]) -> list[dict]:
    """The per-seed rows of earlier runs' output (their summary lines left out)."""
    rows = [json.loads(line) for path in paths for line in Path(path).read_text().splitlines()]
    return [r for r in rows if "seed" in r]


def data_name(paths: list[str]) -> str:
    """The data the rows were measured on, from the runs' summary lines."""
    lines = [json.loads(line) for path in paths for line in Path(path).read_text().splitlines()]
    names = {Path(r["data"]).name for r in lines if "bench" in r and "data" in r}
    return ", ".join(sorted(names)) or "?"


def reused_retrains(paths: list[str]) -> dict[str, float]:
    """arch -> retrained test top-1 from the rows of earlier runs."""
    out: dict[str, float] = {}
    for row in read_rows(paths):
        for r in row["nsga2"] + row["random"]:
            out[r["arch"]] = r["test_top1"]
        for pair in row.get("matched", []):
            out |= {pair[m]["arch"]: pair[m]["test_top1"] for m in ("nsga2", "random") if pair[m]}
        for pick in row.get("random_archs", []):
            out |= {r["arch"]: r["test_top1"] for r in pick["drawn"]}
    return out


def random_archs_png(rows: list[dict], summary: dict, data: str) -> bytes:
    """Each NSGA-II pick and the archs drawn at its MAdds, retrained test top-1
    against MAdds, a line joining each pick to its draws."""
    fig, ax = pyplot().subplots(figsize=(8, 4.2))
    for i, r in enumerate(rows):
        for p in r.get("random_archs", []):
            x, y = p["nsga2"]["madds"] / 1e6, 100 * p["nsga2"]["test_top1"]
            for d in p["drawn"]:
                ax.plot([x, d["madds"] / 1e6], [y, 100 * d["test_top1"]], color="0.8", lw=0.8,
                        zorder=1)
                ax.scatter(d["madds"] / 1e6, 100 * d["test_top1"], marker="o", s=22,
                           facecolors="none", edgecolors="tab:gray", zorder=2,
                           label="drawn at that MAdds, no supernet" if i == 0 else None)
            ax.scatter(x, y, marker="D", s=26, color=f"C{i % 10}", zorder=3,
                       label=f"NSGA-II pick, seed {r['seed']}")
    handles, labels = ax.get_legend_handles_labels()
    seen = dict(zip(labels, handles, strict=True))
    ax.legend(seen.values(), seen.keys(), fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))
    s = summary.get("against_random_archs", {})
    ax.set_title(f"{data}: NSGA-II picks and archs drawn at their MAdds without the supernet\n"
                 f"pick better {s.get('nsga2_wins', 0)} / tie {s.get('ties', 0)} / worse "
                 f"{s.get('random_wins', 0)}, mean {100 * s.get('mean_difference', 0):+.2f} points",
                 fontsize=9)
    ax.set_xlabel("MAdds (M)")
    ax.set_ylabel("retrained test top-1 (%)")
    ax.grid(alpha=0.3)
    return figure_png(fig)


def retrain_noise(first: dict[str, float], second: dict[str, float]) -> dict:
    """How far one retrain of an arch lands from another with a different seed:
    the standard deviation of one retrain, from the archs both maps hold."""
    both = sorted(first.keys() & second.keys())
    gaps = [first[a] - second[a] for a in both]
    if not gaps:
        return {"archs": 0}
    return {"archs": len(both), "sd": sd_of_one(gaps),
            "mean_abs_difference": round(statistics.mean(abs(g) for g in gaps), 4)}


def sd_of_one(gaps: list[float]) -> float:
    """The standard deviation of one measurement, from differences between pairs
    of independent measurements of the same thing: E[(a - b)^2] = 2 sd^2."""
    return round(math.sqrt(statistics.mean(g * g for g in gaps) / 2), 4)


def random_genes_near(space: SearchSpace, madds: float, rng: np.random.Generator,
                      tolerance: float = 0.05, batch: int = 4096, rounds: int = 50) -> tuple:
    """The genes of an arch drawn uniformly among those within ``tolerance`` of
    ``madds`` (rejection from uniform draws); if none fell that close, the nearest
    drawn, with a warning (its MAdds are in the row)."""
    if madds <= 0:
        raise ValueError(f"madds must be > 0, got {madds}")
    nearest, gap = None, np.inf
    for _ in range(rounds):
        pop = random_population(space, batch, rng)
        cost = population_cost(space, pop)[0]
        off = np.abs(cost - madds) / madds
        if (off <= tolerance).any():
            return tuple(int(g) for g in pop[np.argmax(off <= tolerance)])
        if off.min() < gap:
            nearest, gap = pop[off.argmin()], off.min()
    print(f"no arch within {tolerance:.0%} of {madds:,.0f} MAdds in {rounds * batch:,} draws: "
          f"the nearest is {gap:.0%} off", file=sys.stderr)
    return tuple(int(g) for g in nearest)


def best_within(evaluated: list[dict], madds: float) -> dict | None:
    """The arch a search scored best among those it evaluated within ``madds``
    (the cheaper one on a tie); None when it evaluated none that cheap."""
    return max((r for r in evaluated if r["madds"] <= madds),
               key=lambda r: (r["top1"], -r["madds"]), default=None)


def matched_summary(rows: list[dict]) -> dict:
    """NSGA-II minus random in retrained test top-1 at matched MAdds: per pair
    wins/ties/losses and the mean; per seed the mean, with a paired t-test over
    seeds (the seeds are the independent units, the pairs within one are not).
    Budgets below everything one method evaluated are counted apart."""
    answered = [[p for p in r["matched"] if p["nsga2"] and p["random"]] for r in rows]
    alone = [p for r in rows for p in r["matched"] if not (p["nsga2"] and p["random"])]
    return paired_summary([[p["nsga2"]["test_top1"] - p["random"]["test_top1"] for p in seed]
                           for seed in answered]) | {
        "only_nsga2_answers": sum(p["random"] is None for p in alone),
        "only_random_answers": sum(p["nsga2"] is None for p in alone)}


def random_archs_summary(rows: list[dict]) -> dict:
    """NSGA-II's picks minus the archs drawn at their MAdds without the supernet,
    in retrained test top-1: one pair per drawn arch, tested over seeds. Also how
    far apart archs of the same MAdds retrain (``drawn_sd``: the standard deviation
    of one draw, from the differences of draws at the same pick; arch spread and
    retrain noise together): what there is for a search to find at that cost."""
    out = paired_summary([[p["nsga2"]["test_top1"] - d["test_top1"]
                           for p in r["random_archs"] for d in p["drawn"]] for r in rows])
    gaps = [a["test_top1"] - b["test_top1"] for r in rows for p in r["random_archs"]
            for i, a in enumerate(p["drawn"]) for b in p["drawn"][i + 1:]]
    if gaps:
        out["drawn_sd"] = sd_of_one(gaps)
    return out


def paired_summary(diffs: list[list[float]]) -> dict:
    """Per pair wins/ties/losses and the mean of NSGA-II minus the other; per seed
    the mean, with a paired t-test over seeds (the seeds are the independent
    units, the pairs within one are not)."""
    diffs = [d for d in diffs if d]
    pairs = [d for seed in diffs for d in seed]
    if not pairs:
        return {"pairs": 0}
    per_seed = [statistics.mean(d) for d in diffs]
    out = {"pairs": len(pairs),
           "nsga2_wins": sum(d > 0 for d in pairs),
           "ties": sum(d == 0 for d in pairs), "random_wins": sum(d < 0 for d in pairs),
           "mean_difference": round(statistics.mean(pairs), 4),
           "per_seed": [round(d, 4) for d in per_seed]}
    if len(per_seed) > 1 and statistics.stdev(per_seed) > 1e-9:  # else no spread to test
        test = stats.ttest_1samp(per_seed, 0.0)
        out |= {"t": round(float(test.statistic), 2), "p": round(float(test.pvalue), 4)}
    return out


if __name__ == "__main__":
    main()
