import csv
import io
import json

import numpy as np
import pytest
import torch

from scarletnas import Supernet
from scarletnas.complexity import bounds, population_cost
from scarletnas.config import EvalConfig, SearchConfig
from scarletnas.evaluate import make_scorer
from scarletnas.report import write_search_outputs
from scarletnas.search import (
    ChoiceMutation,
    NASProblem,
    UniformCrossover,
    random_search,
    run_search,
    select_top_k,
)


class SyntheticScorer:
    """A deterministic stand-in for supernet accuracy: grows with MAdds, plus
    an arch-specific offset. Records every call, to check batching and caching."""

    def __init__(self, space):
        self.space, self.calls = space, []

    def __call__(self, archs):
        self.calls.append(list(archs))
        madds, _ = population_cost(self.space, np.array(archs))
        noise = [np.random.default_rng(list(a)).normal(0, 0.01) for a in archs]
        return [{"top1": float(np.clip(0.4 + 0.1 * np.log(m / 1e8) + n, 0, 1))}
                for m, n in zip(madds, noise, strict=True)]


def _valid(space, X):
    return all(space.parse(tuple(int(g) for g in row)) for row in X)


def test_operators_only_make_valid_archs(imagenet_space):
    problem = NASProblem(imagenet_space, SyntheticScorer(imagenet_space), ["top1", "madds"], {})
    rng = np.random.default_rng(0)
    X = rng.integers(0, np.asarray(imagenet_space.num_choices), size=(2, 500, 19))
    children = UniformCrossover()._do(problem, X, random_state=rng)
    assert children.shape == (2, 500, 19) and _valid(imagenet_space, children.reshape(-1, 19))
    mutated = ChoiceMutation(prob_var=0.5)._do(problem, X[0], random_state=rng)
    assert _valid(imagenet_space, mutated)
    changed = mutated != X[0]
    assert 0.4 < changed.mean() < 0.6  # every hit moves to a different choice
    skip_layers = [i for i, n in enumerate(imagenet_space.num_choices) if n == 13]
    assert (mutated[:, skip_layers] == imagenet_space.skip_index).any()


def test_search_front_is_feasible_non_dominated_and_batched(imagenet_space):
    scorer = SyntheticScorer(imagenet_space)
    cfg = SearchConfig(generations=6, population=16, max_madds=300e6, top_k=3)
    result = run_search(imagenet_space, scorer, cfg)
    assert len(scorer.calls) == 6  # one scoring call per generation
    scored = [a for call in scorer.calls for a in call]
    assert len(scored) == len(set(scored)) == len(result.evaluated)  # never twice
    front = result.front
    assert front and all(r["madds"] <= 300e6 for r in front)
    for a in front:
        for b in result.evaluated:
            dominates = (b["top1"] >= a["top1"] and b["madds"] <= a["madds"]
                         and (b["top1"] > a["top1"] or b["madds"] < a["madds"]))
            assert not (dominates and b["madds"] <= 300e6), (a["arch"], b["arch"])
    assert result.hypervolume == sorted(result.hypervolume)  # the front only improves
    assert len(result.selected) == 3 and all(r in front for r in result.selected)


def test_search_resumes_to_the_same_front(tmp_path, imagenet_space):
    cfg = SearchConfig(generations=5, population=12, max_madds=320e6,
                       objectives="top1,madds,params")
    reference = run_search(imagenet_space, SyntheticScorer(imagenet_space), cfg)

    class Preempted(Exception):
        pass

    def die_after_two(gen, stats):
        if gen == 2:
            raise Preempted

    state = str(tmp_path / "search" / "state.json")
    with pytest.raises(Preempted):
        run_search(imagenet_space, SyntheticScorer(imagenet_space), cfg, state_uri=state,
                   callback=die_after_two)
    assert json.loads(open(state).read())["generation"] == 2
    scorer = SyntheticScorer(imagenet_space)
    resumed = run_search(imagenet_space, scorer, cfg, state_uri=state)
    assert len(scorer.calls) == 3  # generations 3..5 only
    assert [r["arch"] for r in resumed.front] == [r["arch"] for r in reference.front]
    assert [r["arch"] for r in resumed.evaluated] == [r["arch"] for r in reference.evaluated]
    assert resumed.hypervolume == reference.hypervolume
    other = SearchConfig(generations=5, population=12, max_madds=300e6)
    with pytest.raises(ValueError, match="belongs to a different search"):
        run_search(imagenet_space, scorer, other, state_uri=state)


def test_impossible_budgets_are_rejected_before_searching(imagenet_space):
    lo, _ = bounds(imagenet_space)
    scorer = SyntheticScorer(imagenet_space)
    with pytest.raises(ValueError, match=f"below the smallest arch in the space \\({lo.madds:,}"):
        run_search(imagenet_space, scorer, SearchConfig(max_madds=lo.madds - 1))
    with pytest.raises(ValueError, match="no latency table was given"):
        run_search(imagenet_space, scorer, SearchConfig(objectives="top1,latency"))
    assert scorer.calls == []


def test_tight_budget_does_not_loop(imagenet_space):
    lo, _ = bounds(imagenet_space)
    cfg = SearchConfig(generations=3, population=8, max_madds=lo.madds * 1.03)
    result = run_search(imagenet_space, SyntheticScorer(imagenet_space), cfg)
    assert result.front and all(r["madds"] <= lo.madds * 1.03 for r in result.front)


def test_select_top_k_spreads_across_madds_bands():
    front = [{"arch": str(i), "madds": m, "top1": t} for i, (m, t) in enumerate(
        [(100, 0.50), (110, 0.52), (200, 0.60), (210, 0.61), (290, 0.70), (300, 0.71)])]
    picks = select_top_k(front, 3)
    assert [p["arch"] for p in picks] == ["1", "3", "5"]
    gap = [front[0], front[1], front[5]]
    assert [p["arch"] for p in select_top_k(gap, 2)] == ["1", "5"]
    assert len(select_top_k(front[:2], 3)) == 2


def test_random_search_baseline(imagenet_space):
    cfg = SearchConfig(population=16, max_madds=300e6)
    result = random_search(imagenet_space, SyntheticScorer(imagenet_space), cfg, 64)
    assert len(result.evaluated) == 64 and len(result.hypervolume) == 4
    assert all(r["madds"] <= 300e6 for r in result.evaluated)


def test_outputs(tmp_path, imagenet_space):
    result = run_search(imagenet_space, SyntheticScorer(imagenet_space),
                        SearchConfig(generations=2, population=8))
    files = write_search_outputs(result, str(tmp_path / "out"))
    front = json.loads(open(files["front.json"]).read())
    assert [r["arch"] for r in front["front"]] == [r["arch"] for r in result.front]
    rows = list(csv.DictReader(io.StringIO(open(files["front.csv"]).read())))
    assert len(rows) == len(result.front) and float(rows[0]["top1"]) == result.front[0]["top1"]
    page = open(files["pareto.html"]).read()
    assert "data:image/png;base64," in page and page.count("<tr") == len(result.front) + 1
    assert open(files["pareto.png"], "rb").read(8) == b"\x89PNG\r\n\x1a\n"


def test_search_with_the_real_supernet_scorer(tiny_space, digits):
    supernet = Supernet(tiny_space)
    cfg = EvalConfig(calib_batches=2, calib_batch_size=64)
    one = make_scorer(supernet, digits, cfg)
    two = make_scorer(supernet, digits, cfg, devices=[torch.device("cpu")] * 2)
    result = run_search(tiny_space, one, SearchConfig(generations=2, population=6, top_k=2))
    archs = [tuple(r["genes"]) for r in result.evaluated[:5]]
    assert [r["top1"] for r in two(archs)] == [r["top1"] for r in one(archs)]
    assert all(0 <= r["top1"] <= 1 and r["loss"] > 0 for r in result.evaluated)
