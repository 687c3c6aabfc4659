from collections import Counter

import numpy as np
import pytest

from scarletnas import SearchSpace, arch_cost
from scarletnas.complexity import bounds
from scarletnas.sampling import FairSampler, UniformSampler, make_sampler, sample_archs


def test_fair_sampler_uses_every_choice_exactly_once(imagenet_space):
    space = imagenet_space.with_(allow_skip=False)  # FairNAS: equal choices per layer
    sampler = FairSampler(space, seed=0)
    for step in range(50):
        paths = sampler.paths(step)
        assert len(paths) == 12
        for layer in range(space.num_layers):
            assert sorted(p[layer] for p in paths) == list(range(12))


def test_fair_sampler_with_skip_is_balanced(imagenet_space):
    sampler = FairSampler(imagenet_space, seed=1)
    for step in range(50):
        paths = sampler.paths(step)
        assert len(paths) == 13
        for p in paths:
            imagenet_space.parse(p)  # every path valid
        for layer, n in enumerate(imagenet_space.num_choices):
            counts = Counter(p[layer] for p in paths)
            assert set(counts) == set(range(n))
            assert max(counts.values()) - min(counts.values()) <= 1


def test_samplers_are_deterministic_per_step_and_seed(small_space):
    a, b = UniformSampler(small_space, 3), UniformSampler(small_space, 3)
    assert [a.paths(s) for s in range(20)] == [b.paths(s) for s in reversed(range(20))][::-1]
    assert UniformSampler(small_space, 4).paths(0) != a.paths(0)
    assert len({a.paths(s)[0] for s in range(20)}) == 20


def test_uniform_sampler_is_uniform(imagenet_space):
    sampler = UniformSampler(imagenet_space, 0)
    genes = np.array([sampler.paths(s)[0] for s in range(13000)])
    counts = np.bincount(genes[:, 1], minlength=13)  # layer 2 has 13 choices
    assert counts.min() > 850 and counts.max() < 1150
    assert genes[:, 0].max() == 11  # layer 1 never skips


def test_make_sampler_rejects_unknown():
    with pytest.raises(ValueError, match="unknown sampling 'greedy'"):
        make_sampler("greedy", SearchSpace.small())


def test_sample_within_budget(imagenet_space):
    archs = sample_archs(imagenet_space, 200, np.random.default_rng(0), max_madds=300e6,
                         max_params=5e6)
    assert len(set(archs)) == 200
    for a in archs:
        c = arch_cost(imagenet_space, a)
        assert c.madds <= 300e6 and c.params <= 5e6


def test_tight_budget_falls_back_and_terminates(imagenet_space):
    lo, _ = bounds(imagenet_space)
    budget = lo.madds * 1.02
    archs = sample_archs(imagenet_space, 20, np.random.default_rng(0), max_madds=budget,
                         max_rounds=2, batch=256)
    assert len(archs) == 20
    assert all(arch_cost(imagenet_space, a).madds <= budget for a in archs)


def test_budget_below_the_smallest_arch_is_rejected(imagenet_space):
    lo, _ = bounds(imagenet_space)
    with pytest.raises(ValueError, match=f"smallest arch in the space \\({lo.madds:,} MAdds\\)"):
        sample_archs(imagenet_space, 1, np.random.default_rng(0), max_madds=lo.madds - 1)
    with pytest.raises(ValueError, match="params budget"):
        sample_archs(imagenet_space, 1, np.random.default_rng(0), max_params=1e6)
