"""How well does the supernet rank subnets? Kendall tau and Spearman rho of
supernet-predicted vs stand-alone accuracy, over archs spread across the
MAdds range."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from scipy import stats

from .complexity import arch_cost, bounds, cost_table, population_cost
from .config import RetrainConfig
from .data import Batches, Splits
from .evaluate import CandidateEvaluator, accuracy
from .sampling import random_population, sample_archs
from .space import Arch, SearchSpace


def rank_correlation(predicted: Sequence[float], actual: Sequence[float]) -> dict:
    """Kendall tau-b and Spearman rho with their two-sided p-values.

    When one side scores every arch the same (an untrained supernet does), no
    order exists to correlate: the result is then tau = rho = 0 with p = 1 and
    ``constant`` names the side, instead of scipy's NaN.
    """
    if len(predicted) != len(actual) or len(predicted) < 3:
        raise ValueError("need at least 3 (predicted, actual) pairs of equal length")
    constant = [name for name, values in (("predicted", predicted), ("actual", actual))
                if len(set(values)) == 1]
    if constant:
        return {"kendall_tau": 0.0, "kendall_p": 1.0, "spearman_rho": 0.0, "spearman_p": 1.0,
                "n": len(predicted), "constant": constant}
    tau = stats.kendalltau(predicted, actual)
    rho = stats.spearmanr(predicted, actual)
    return {"kendall_tau": float(tau.statistic), "kendall_p": float(tau.pvalue),
            "spearman_rho": float(rho.statistic), "spearman_p": float(rho.pvalue),
            "n": len(predicted), "constant": []}


def close_archs(actual: Sequence[float], within: float) -> list[int]:
    """Indices of the archs whose accuracy is within ``within`` (a fraction) of the
    best one; exactly ``within`` below it counts as close."""
    best = max(actual)
    return [i for i, a in enumerate(actual) if a >= best - within - 1e-12]


def close_rank_correlation(predicted: Sequence[float], actual: Sequence[float],
                           within: float) -> dict:
    """The correlation over the archs whose actual accuracy is within ``within``
    (a fraction: 0.05 is 5 points) of the best one: the archs a user picks among.

    A supernet ranks the whole spread well by telling bad archs from good ones;
    among close archs its order is what decides the pick. Fewer than 3 close
    archs: ``n`` says how many, and no correlation is given.
    """
    near = close_archs(actual, within)
    out = {"within": within, "n": len(near)}
    if len(near) >= 3:
        corr = rank_correlation([predicted[i] for i in near], [actual[i] for i in near])
        out |= {k: corr[k] for k in ("kendall_tau", "kendall_p", "spearman_rho", "spearman_p",
                                     "constant")}
    return out


def truth_ceiling(per_seed: Sequence[Sequence[float]], within: float) -> dict:
    """How far any ranker can agree with a stand-alone truth that is itself the
    mean of a few noisy retrains, over the archs within ``within`` of the best.

    ``per_seed[i]`` holds arch i's stand-alone accuracy for each of k >= 2 seeds.
    ``seed_tau``: Kendall tau of one seed's order against another's (mean over
    seed pairs), what a retrain says about a retrain. ``ceiling``: the expected
    tau of the archs' true accuracies against their k-seed means, by Greiner's
    relation tau = 2/pi asin(r) for normal noise, where r is the correlation of
    the truth with its estimate; a supernet's close tau is judged against it.
    """
    runs = np.asarray(per_seed, dtype=float)
    if runs.ndim != 2 or runs.shape[1] < 2:
        raise ValueError("need every arch's accuracy for at least 2 seeds")
    near = runs[close_archs(runs.mean(1), within)]
    n, k = near.shape
    out = {"within": within, "n": n, "seeds": k}
    if n < 3:
        return out
    noise = float(np.sqrt(near.var(1, ddof=1).mean()))  # one retrain's seed noise
    spread = float(near.mean(1).std(ddof=1))
    true_var = max(spread**2 - noise**2 / k, 0.0)
    r = np.sqrt(true_var) / spread if spread > 0 else 0.0
    pairs = [stats.kendalltau(near[:, i], near[:, j]).statistic
             for i in range(k) for j in range(i + 1, k)]
    return out | {"seed_noise": noise, "spread": spread, "seed_tau": float(np.nanmean(pairs)),
                  "ceiling": float(2 / np.pi * np.arcsin(r))}


def spread_archs(space: SearchSpace, n: int, rng: np.random.Generator,
                 pool: int = 5000) -> list[Arch]:
    """n distinct archs at evenly spaced MAdds, from the space's cheapest arch to
    its dearest, in MAdds order.

    Uniform draws cluster around the middle of the range (an 8-layer draw
    rarely skips four layers), so the pool also holds archs drawn under
    budgets spread over the range, and the two extremes themselves.
    """
    table = cost_table(space)[0].astype(float)  # -1: not allowed at that layer
    extremes = np.stack([np.where(table < 0, np.inf, table).argmin(1), table.argmax(1)])
    lo, hi = bounds(space)
    parts = [extremes, random_population(space, pool, rng)]
    for budget in np.linspace(lo.madds, hi.madds, 10)[1:-1]:
        parts.append(np.asarray(sample_archs(space, max(1, pool // 20), rng, max_madds=budget)))
    candidates = np.unique(np.concatenate(parts), axis=0)
    madds, _ = population_cost(space, candidates)
    picked: list[int] = []
    for target in np.linspace(madds.min(), madds.max(), n):
        free = np.setdiff1d(np.arange(len(candidates)), picked)
        picked.append(int(free[np.argmin(np.abs(madds[free] - target))]))
    picked.sort(key=lambda i: (madds[i], i))
    return [tuple(int(g) for g in candidates[i]) for i in picked]


def ranking_check(space: SearchSpace, evaluator: CandidateEvaluator, splits: Splits,
                  archs: Sequence[Arch], retrain: RetrainConfig,
                  progress: Callable[[int, dict], None] | None = None,
                  close_within: float = 0.05) -> dict:
    """Score each arch with the supernet and train it stand-alone; correlate, over
    every arch and over the close ones (``close``)."""
    from .train import train_subnet

    rows = []
    for i, arch in enumerate(archs):
        predicted = evaluator(arch)
        model, _ = train_subnet(space, arch, splits, retrain)
        device = next(model.parameters()).device
        test = Batches(splits, "val", train=False, device=device,
                       channels_last=retrain.channels_last)
        actual = accuracy(model, test, amp=retrain.amp)
        cost = arch_cost(space, arch)
        row = {"arch": space.format(arch), "madds": cost.madds, "params": cost.params,
               "supernet_top1": predicted["top1"], "standalone_top1": actual["top1"]}
        rows.append(row)
        if progress:
            progress(i, row)
    predicted = [r["supernet_top1"] for r in rows]
    actual = [r["standalone_top1"] for r in rows]
    return {"archs": rows, **rank_correlation(predicted, actual),
            "close": close_rank_correlation(predicted, actual, close_within)}
