import numpy as np
import pytest

from scarletnas import SearchSpace
from scarletnas.config import SearchConfig
from scarletnas.latency import LatencyTable, build_latency_table
from scarletnas.sampling import random_population
from scarletnas.search import run_search


@pytest.fixture(scope="module")
def space():
    """The paper's space at 128 px: compute, not per-op overhead, sets latency,
    and archs spread over the MAdds range differ by several times."""
    return SearchSpace.imagenet(input_size=128)


@pytest.fixture(scope="module")
def table(space):
    return build_latency_table(space, "cpu", repeats=9)


def test_table_covers_every_allowed_choice(space, table):
    assert len(table.table_ms) == space.num_layers
    for row, n in zip(table.table_ms, space.num_choices, strict=True):
        assert all(v is not None and v > 0 for v in row[:n])
        assert all(v is None for v in row[n:])
    again = LatencyTable.from_dict(table.to_dict())
    arch = space.parse("SCARLET-B")
    assert again.predict(arch) == table.predict(arch) > table.fixed_ms


def test_table_predicts_the_sum_of_its_entries_for_20_random_archs(space, table):
    """What a prediction is, without timing anything: the fixed parts plus one
    entry per layer, the same one at a time and vectorized. How close the sums
    come to measured networks is a speed figure, measured by
    bench/latency_table.py (docs/benchmarks.md), not asserted here: a timing
    bound fails on a busy machine."""
    archs = [tuple(int(g) for g in a)
             for a in random_population(space, 20, np.random.default_rng(0))]
    predicted = [table.predict(a) for a in archs]
    by_hand = [table.fixed_ms + sum(table.table_ms[i][g] for i, g in enumerate(a)) for a in archs]
    assert predicted == pytest.approx(by_hand, rel=1e-12)
    assert np.allclose(table.predict_many(np.array(archs)), predicted)
    assert len(set(predicted)) == len(set(archs))  # different archs, different predictions


def test_latency_as_objective_and_budget(space, table):
    def scorer(archs):
        return [{"top1": 0.5 + 0.001 * sum(a)} for a in archs]

    lo = table.fixed_ms + sum(min(v for v in row if v is not None) for row in table.table_ms)
    with pytest.raises(ValueError, match="below the fastest arch in the space"):
        run_search(space, scorer, SearchConfig(max_latency_ms=lo * 0.9), latency=table)
    budget = lo * 1.6
    result = run_search(space, scorer, SearchConfig(generations=3, population=8,
                                                    objectives="top1,latency",
                                                    max_latency_ms=budget), latency=table)
    assert result.front and all(r["latency_ms"] <= budget for r in result.front)
    other = SearchSpace.small()
    with pytest.raises(ValueError, match="built for another search space"):
        run_search(other, scorer, SearchConfig(objectives="top1,latency"), latency=table)
