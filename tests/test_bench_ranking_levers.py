"""bench/ranking_levers.py: its few-shot splits put every arch in exactly one
child, and its ensemble figure is the tau of the averaged scores."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from scarletnas import SearchSpace

BENCH = Path(__file__).resolve().parents[1] / "bench" / "ranking_levers.py"
spec = importlib.util.spec_from_file_location("ranking_levers", BENCH)
bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench)

SPACE = SearchSpace.named("compact", num_classes=10, input_size=16)


def test_layer0_split_groups_by_the_first_layers_op():
    group_of, k = bench.split_rules(SPACE)["layer0"]
    assert k == 3
    assert group_of(SPACE.parse("skip-e3k3-e3k3-e3k3-e3k3-e3k3-e3k3-e3k3")) == 0
    assert group_of(SPACE.parse("e3k7se-skip-skip-skip-e3k3-skip-skip-skip")) == 1
    assert group_of(SPACE.parse("e6k5-skip-skip-skip-e3k3-skip-skip-skip")) == 2


@pytest.mark.parametrize("skips, group", [(0, 0), (1, 0), (2, 1), (3, 1), (4, 2), (7, 2)])
def test_skips_split_counts_the_skips(skips, group):
    group_of, k = bench.split_rules(SPACE)["skips"]
    ops = ["skip"] * skips + ["e3k3"] * (7 - skips)  # layer 5 cannot skip
    arch = SPACE.parse("-".join(ops[:4] + ["e6k3"] + ops[4:]))
    assert k == 3 and group_of(arch) == group


def test_every_arch_has_one_child_and_every_child_is_drawn():
    """The children train on uniform draws kept by group: each group must turn up."""
    rng = np.random.default_rng(0)
    archs = [tuple(int(g) for g in a)
             for a in rng.integers(0, np.asarray(SPACE.num_choices), (20000, 8))]
    for name, (group_of, k) in bench.split_rules(SPACE).items():
        counts = np.bincount([group_of(a) for a in archs], minlength=k)
        assert len(counts) == k and counts.min() > 0, (name, counts)


def test_an_ensemble_is_judged_on_the_averaged_scores():
    truth = [0.80, 0.81, 0.82, 0.83, 0.84, 0.85]
    # two supernets, each right except for a swap the other does not make
    a = {"scores": [0.50, 0.52, 0.51, 0.53, 0.54, 0.55]}
    b = {"scores": [0.50, 0.51, 0.52, 0.53, 0.55, 0.54]}
    single = [bench.judge(r["scores"], truth)["close_tau"] for r in (a, b)]
    both = bench.ensemble_tau([a, b], 2, truth)
    assert both == pytest.approx(bench.judge(list(np.mean([a["scores"], b["scores"]], 0)),
                                             truth)["close_tau"])
    assert both > max(single)
    assert bench.ensemble_tau([a, b], 1, truth) == pytest.approx(np.mean(single))


def test_scores_are_also_judged_against_each_stand_alone_seed_alone():
    """A supernet that scores exactly as seed 0 retrained agrees with seed 0 fully
    and with seed 1 as much as seed 0 does; the far arch is not a close one."""
    seeds = [[0.80, 0.81], [0.82, 0.80], [0.83, 0.84], [0.84, 0.83], [0.60, 0.61]]
    truth = list(np.mean(seeds, 1))
    scores = [s[0] for s in seeds]
    tau01 = stats.kendalltau([s[0] for s in seeds[:4]], [s[1] for s in seeds[:4]]).statistic
    assert tau01 < 1
    assert bench.against_one_seed(scores, truth, seeds) == pytest.approx((1 + tau01) / 2)
