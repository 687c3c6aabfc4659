import numpy as np
import pytest

from scarletnas import PRESETS, Supernet, arch_cost, build_subnet
from scarletnas.complexity import (
    bounds,
    count_with_hooks,
    fixed_cost,
    layer_report,
    population_cost,
)
from scarletnas.sampling import random_population

PAPER = {  # (MAdds, params) from the paper's table
    "SCARLET-A": (365e6, 6.7e6),
    "SCARLET-B": (329e6, 6.5e6),
    "SCARLET-C": (280e6, 6.0e6),
}


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_match_the_papers_table(imagenet_space, name):
    cost = arch_cost(imagenet_space, name)
    madds, params = PAPER[name]
    assert abs(cost.madds - madds) / madds < 0.01
    assert abs(cost.params - params) / params < 0.015  # the paper rounds to 0.1M


def test_presets_exact_counts(imagenet_space):
    got = {n: (round(arch_cost(imagenet_space, n).madds / 1e5) / 10,
               round(arch_cost(imagenet_space, n).params / 1e4) / 100) for n in PRESETS}
    assert got == {"SCARLET-A": (365.3, 6.71), "SCARLET-B": (326.9, 6.53),
                   "SCARLET-C": (280.1, 6.07)}


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_analytic_equals_hook_count_for_presets(imagenet_space, name):
    assert arch_cost(imagenet_space, name) == count_with_hooks(build_subnet(name), 224)


def test_analytic_equals_hook_count_for_50_random_archs(small_space):
    space = small_space.with_(input_size=24)  # odd sizes after stride 2 too
    pop = random_population(space, 50, np.random.default_rng(7))
    for row in pop:
        arch = tuple(int(g) for g in row)
        net = build_subnet(arch, space=space)
        assert arch_cost(space, arch) == count_with_hooks(net, 24), space.format(arch)


def test_stabilizer_cost_matches_the_supernet_path(small_space):
    arch = small_space.parse("SCARLET-C")  # three skips
    supernet = Supernet(small_space, stabilizer=True)
    path_madds = count_with_hooks(supernet, 16, forward_kwargs={"arch": arch}).madds
    with_stab = arch_cost(small_space, arch, stabilizer=True)
    assert with_stab.madds == path_madds
    assert with_stab.madds > arch_cost(small_space, arch).madds


def test_population_cost_is_vectorized_arch_cost(imagenet_space):
    pop = random_population(imagenet_space, 2000, np.random.default_rng(3))
    madds, params = population_cost(imagenet_space, pop)
    for i in range(0, 2000, 97):
        c = arch_cost(imagenet_space, pop[i])
        assert (madds[i], params[i]) == (c.madds, c.params)


def test_bounds_are_attained(imagenet_space):
    lo, hi = bounds(imagenet_space)
    smallest = tuple(imagenet_space.skip_index if n == 13 else 0
                     for n in imagenet_space.num_choices)
    assert arch_cost(imagenet_space, smallest) == lo
    largest = ("e6k7se",) * 19
    assert arch_cost(imagenet_space, largest) == hi


def test_layer_report_sums_to_the_total(imagenet_space):
    rows = layer_report(imagenet_space, "SCARLET-B")
    assert rows[8]["choice"] == "skip" and rows[8]["madds"] == rows[8]["params"] == 0
    total = arch_cost(imagenet_space, "SCARLET-B")
    fixed = fixed_cost(imagenet_space)
    assert sum(r["madds"] for r in rows) + fixed.madds == total.madds
    assert sum(r["params"] for r in rows) + fixed.params == total.params
    assert rows[0]["in"] == [16, 112, 112] and rows[-1]["out"] == [320, 7, 7]
