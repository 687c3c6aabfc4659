"""bench/search_vs_random.py: the matched-MAdds comparison gives each method's
best arch within the same budget, and its summary counts and tests pairs as
documented."""

import importlib.util
import json
from pathlib import Path

import pytest
from scipy import stats

BENCH = Path(__file__).resolve().parents[1] / "bench" / "search_vs_random.py"
spec = importlib.util.spec_from_file_location("search_vs_random", BENCH)
bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench)


def rec(arch, madds, top1):
    return {"arch": arch, "madds": madds, "top1": top1}


def test_best_within_is_the_best_scored_arch_the_budget_allows():
    evaluated = [rec("a", 1e6, 0.70), rec("b", 2e6, 0.75), rec("c", 3e6, 0.80),
                 rec("d", 1.5e6, 0.75)]
    assert bench.best_within(evaluated, 2.5e6)["arch"] == "d"  # b's score, fewer MAdds
    assert bench.best_within(evaluated, 3e6)["arch"] == "c"  # the budget is inclusive
    assert bench.best_within(evaluated, 1e6)["arch"] == "a"
    assert bench.best_within(evaluated, 0.9e6) is None


def answer(arch, test_top1):
    return {"arch": arch, "madds": 1, "supernet_top1": 0.5, "test_top1": test_top1}


def pair(nsga, rand):
    return {"madds": 1, "nsga2": nsga and answer(*nsga), "random": rand and answer(*rand)}


def test_matched_summary_pairs_within_seeds_and_tests_over_seeds():
    rows = [{"matched": [pair(("a", 0.80), ("b", 0.78)), pair(("c", 0.81), ("c", 0.81)),
                         pair(("d", 0.70), None)]},
            {"matched": [pair(("e", 0.79), ("f", 0.80)), pair(("g", 0.83), ("h", 0.80))]},
            {"matched": [pair(("i", 0.82), ("j", 0.81))]}]
    s = bench.matched_summary(rows)
    assert (s["pairs"], s["nsga2_wins"], s["ties"], s["random_wins"]) == (5, 3, 1, 1)
    assert (s["only_nsga2_answers"], s["only_random_answers"]) == (1, 0)
    per_seed = [0.01, 0.01, 0.01]  # (0.02 + 0) / 2, (-0.01 + 0.03) / 2, 0.01
    assert s["per_seed"] == pytest.approx(per_seed)
    assert s["mean_difference"] == pytest.approx((0.02 + 0 - 0.01 + 0.03 + 0.01) / 5)
    assert "p" not in s  # identical per-seed means: no spread to test against
    rows[2]["matched"][0]["random"]["test_top1"] = 0.83
    s = bench.matched_summary(rows)
    test = stats.ttest_1samp([0.01, 0.01, -0.01], 0.0)
    assert s["t"] == pytest.approx(test.statistic, abs=0.01)
    assert s["p"] == pytest.approx(test.pvalue, abs=1e-4)


def test_earlier_rows_give_their_retrains_and_their_summary(tmp_path):
    recorded = BENCH.parents[1] / "docs/reproduction/distorted8/search_vs_random.jsonl"
    retrained = bench.reused_retrains([str(recorded)])
    assert len(retrained) == 14  # the distinct picks of 4 seeds x 2 methods x 2 picks
    assert retrained["e6k5se-e6k5se-e3k7-e6k7se-e6k7-e6k5-e6k5se-e3k7"] == 0.8035
    summary = bench.summarize(bench.read_rows([str(recorded)]))
    assert summary["nsga2"]["champion_test_top1"] == 0.8078
    assert summary["random"]["champion_test_top1"] == 0.8064
    assert summary["nsga2_champion_wins"] == 1 and "matched_madds" not in summary
    more = tmp_path / "more.jsonl"
    more.write_text(json.dumps({"seed": 9, "nsga2": [], "random": [],
                                "matched": [pair(("x", 0.9), None)]}) + "\n")
    assert bench.reused_retrains([str(more)]) == {"x": 0.9}


def test_random_genes_near_draws_at_the_asked_madds_and_varies():
    import numpy as np

    from scarletnas.complexity import bounds, population_cost
    from scarletnas.sampling import random_population
    from scarletnas.space import SearchSpace

    space = SearchSpace.compact(input_size=16)
    lo, hi = bounds(space)
    uniform = population_cost(space, random_population(space, 2000, np.random.default_rng(1)))[0]
    for madds in np.percentile(uniform, [2, 50, 98]):
        drawn = {bench.random_genes_near(space, madds, np.random.default_rng((0, i)))
                 for i in range(5)}
        cost = population_cost(space, np.asarray(sorted(drawn)))[0]
        assert (np.abs(cost - madds) <= 0.05 * madds).all()
        assert len(drawn) > 1  # uniform draws in the band, not one fixed arch
    # beyond the dearest arch nothing falls within 5%: the nearest drawn answers
    far = bench.random_genes_near(space, hi.madds * 2, np.random.default_rng(0), rounds=2)
    assert population_cost(space, np.asarray([far]))[0][0] <= hi.madds


def test_random_archs_summary_pairs_each_drawn_arch_with_its_pick():
    rows = [{"random_archs": [{"madds": 1, "nsga2": answer("a", 0.80),
                               "drawn": [answer("r1", 0.78), answer("r2", 0.81)]},
                              {"madds": 2, "nsga2": answer("b", 0.82),
                               "drawn": [answer("r3", 0.80), answer("r4", 0.80)]}]},
            {"random_archs": [{"madds": 1, "nsga2": answer("c", 0.79),
                               "drawn": [answer("r5", 0.79), answer("r6", 0.77)]}]}]
    s = bench.random_archs_summary(rows)
    assert (s["pairs"], s["nsga2_wins"], s["ties"], s["random_wins"]) == (6, 4, 1, 1)
    assert s["per_seed"] == pytest.approx([(0.02 - 0.01 + 0.02 + 0.02) / 4, 0.01])
    assert "p" in s
    # draws at one pick differ by 0.03, 0 and 0.02: sd of one draw sqrt(mean(d^2) / 2)
    assert s["drawn_sd"] == pytest.approx(((0.03**2 + 0 + 0.02**2) / 3 / 2) ** 0.5, abs=1e-4)
    assert bench.summarize([dict(r, seed=i, evaluations=4, nsga2=[answer("a", 0.8)],
                                 random=[answer("z", 0.7)]) for i, r in enumerate(rows)]
                           )["against_random_archs"] == s


def test_retrain_noise_is_one_retrains_spread_over_the_archs_both_seeds_hold():
    first = {"a": 0.80, "b": 0.70, "c": 0.60}
    second = {"a": 0.82, "b": 0.70, "d": 0.50}
    noise = bench.retrain_noise(first, second)
    assert noise["archs"] == 2
    assert noise["sd"] == pytest.approx((0.02**2 / 2 / 2) ** 0.5, abs=1e-4)
    assert noise["mean_abs_difference"] == pytest.approx(0.01)
    assert bench.retrain_noise(first, {"z": 0.1}) == {"archs": 0}


def test_the_random_archs_figure_is_drawn_from_the_rows_and_names_the_data(tmp_path):
    rows = tmp_path / "rows.jsonl"
    row = {"seed": 0, "evaluations": 4, "nsga2": [answer("a", 0.8)], "random": [answer("z", 0.7)],
           "random_archs": [{"madds": 1, "nsga2": answer("a", 0.8),
                             "drawn": [answer("r1", 0.78), answer("r2", 0.81)]}]}
    rows.write_text(json.dumps(row) + "\n" + json.dumps({"bench": "search_vs_random",
                                                         "data": "/some/where/stripes"}) + "\n")
    assert bench.data_name([str(rows)]) == "stripes"
    rows_read = bench.read_rows([str(rows)])
    png = bench.random_archs_png(rows_read, bench.summarize(rows_read), "stripes")
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


def _without_shared_draws(rows):
    """The rows drawn before the draws had their own random stream, less each
    seed's first draw, which replayed the searches' stream."""
    return [dict(r, random_archs=[dict(p, drawn=p["drawn"][1:] if i == 0 else p["drawn"])
                                  for i, p in enumerate(r["random_archs"])]) for r in rows]


RECORDED = BENCH.parents[1] / "docs/reproduction"


@pytest.mark.parametrize("rows, shared, figures", [
    ("distorted8/search_vs_random_random_archs.jsonl", False, (16, 10, 1, 5, 0.0074, 0.0129)),
    ("stripes8-mirror-safe/search_vs_random_random_archs.jsonl", True,
     (12, 6, 1, 5, 0.0073, 0.0123)),
    ("shapes10/search_vs_random_random_archs.jsonl", True, (12, 3, 0, 9, -0.0138, 0.0224)),
])
def test_the_recorded_random_arch_rows_give_the_documented_figures(rows, shared, figures):
    """docs/benchmarks.md, "Against archs drawn at the same MAdds"."""
    read = bench.read_rows([str(RECORDED / rows)])
    s = bench.random_archs_summary(_without_shared_draws(read) if shared else read)
    assert (s["pairs"], s["nsga2_wins"], s["ties"], s["random_wins"], s["mean_difference"],
            s["drawn_sd"]) == figures


def test_the_distorted_digits_draws_pooled_and_one_retrains_noise():
    recorded = RECORDED / "distorted8"
    fixed = bench.read_rows([str(recorded / "search_vs_random_random_archs.jsonl")])
    first = _without_shared_draws(
        bench.read_rows([str(recorded / "search_vs_random_random_archs_first_draws.jsonl")]))
    pooled = [dict(r, random_archs=[dict(p, drawn=p["drawn"] + q["drawn"])
                                    for p, q in zip(r["random_archs"], o["random_archs"],
                                                    strict=True)])
              for r, o in zip(fixed, first, strict=True)]
    s = bench.random_archs_summary(pooled)
    assert (s["pairs"], s["nsga2_wins"], s["mean_difference"], s["p"]) == (28, 18, 0.006, 0.1781)
    seed1 = str(recorded / "search_vs_random_retrain_seed1.jsonl")
    seed0 = str(recorded / "search_vs_random_random_archs.jsonl")
    noise = bench.retrain_noise(bench.reused_retrains([seed0]), bench.reused_retrains([seed1]))
    assert (noise["archs"], noise["sd"]) == (21, 0.008)
