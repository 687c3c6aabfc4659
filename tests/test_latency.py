import numpy as np
import pytest

from scarletnas import SearchSpace, build_subnet
from scarletnas.config import SearchConfig
from scarletnas.latency import LatencyTable, build_latency_table, model_latency_ms
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


def test_table_predicts_measured_latency_of_20_random_archs(space, table):
    """The sum of per-op times against the built network at batch 1. The
    accuracy figures come from bench/latency_table.py (docs/benchmarks.md:
    ~6% mean error on a quiet machine); a unit test must not hinge on timing
    noise, so here every prediction only has to be within 2x of its
    measurement: a gross failure (ops timed at the wrong shape or device, a
    table built for another space) still shows."""
    archs = [tuple(int(g) for g in a)
             for a in random_population(space, 20, np.random.default_rng(0))]
    predicted = [table.predict(a) for a in archs]
    measured = [model_latency_ms(build_subnet(a, space=space), 128, repeats=9) for a in archs]
    ratio = np.array(predicted) / np.array(measured)
    print(f"table/measured: mean abs error {np.abs(ratio - 1).mean():.3f}, "
          f"range {ratio.min():.2f}-{ratio.max():.2f}")
    assert np.all((ratio > 0.5) & (ratio < 2.0)), ratio
    assert np.allclose(table.predict_many(np.array(archs)), predicted)


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
