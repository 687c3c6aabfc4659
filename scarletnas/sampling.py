"""Path samplers for supernet training, and random archs within a budget.

Training samplers are stateless: the paths of a step come from a generator
seeded by (seed, step). Every DDP rank therefore draws the same path, and a
resumed run draws exactly what the interrupted one would have, with no RNG
state to checkpoint.
"""

from __future__ import annotations

import numpy as np

from .complexity import bounds, cost_table, fixed_cost
from .space import Arch, SearchSpace


class UniformSampler:
    """SPOS: one path per step, each layer's choice uniform over its options."""

    def __init__(self, space: SearchSpace, seed: int = 0):
        self.space, self.seed = space, seed
        self._highs = np.asarray(space.num_choices)

    def paths(self, step: int) -> list[Arch]:
        rng = np.random.default_rng((self.seed, step))
        return [tuple(int(g) for g in rng.integers(0, self._highs))]


class FairSampler:
    """FairNAS strict fairness: m paths per step, each layer's choices drawn
    without replacement, so every choice of every layer is trained once.

    m is the largest choice count. A layer with fewer choices (no skip) fills
    its extra slots from a second permutation, so its choices are each used
    once or twice and never more than one time apart.
    """

    def __init__(self, space: SearchSpace, seed: int = 0):
        self.space, self.seed = space, seed
        self.m = max(space.num_choices)

    def paths(self, step: int) -> list[Arch]:
        rng = np.random.default_rng((self.seed, step))
        columns = []
        for n in self.space.num_choices:
            col = rng.permutation(n)
            if n < self.m:
                col = rng.permutation(np.concatenate([col, rng.permutation(n)[: self.m - n]]))
            columns.append(col)
        return [tuple(int(g) for g in row) for row in np.stack(columns, axis=1)]


SAMPLERS = {"uniform": UniformSampler, "fair": FairSampler}


def make_sampler(name: str, space: SearchSpace, seed: int = 0):
    try:
        return SAMPLERS[name](space, seed)
    except KeyError:
        raise ValueError(f"unknown sampling {name!r}; choose one of {sorted(SAMPLERS)}") from None


def random_population(space: SearchSpace, n: int, rng: np.random.Generator) -> np.ndarray:
    """(n, layers) uniform random valid archs."""
    return rng.integers(0, np.asarray(space.num_choices), size=(n, space.num_layers))


def check_budget(space: SearchSpace, max_madds: float | None = None,
                 max_params: float | None = None) -> None:
    """Reject budgets no arch in the space can meet, naming the smallest one."""
    lo, _ = bounds(space)
    if max_madds is not None and max_madds < lo.madds:
        raise ValueError(f"MAdds budget {max_madds:,.0f} is below the smallest arch in the "
                         f"space ({lo.madds:,} MAdds): raise it to at least that")
    if max_params is not None and max_params < lo.params:
        raise ValueError(f"params budget {max_params:,.0f} is below the smallest arch in the "
                         f"space ({lo.params:,} params): raise it to at least that")


def _limits(space: SearchSpace, max_madds, max_params, latency, max_latency_ms):
    """(per-layer cost table, fixed cost, budget) for every active budget."""
    madds, params = cost_table(space)
    fixed = fixed_cost(space)
    out = []
    if max_madds is not None:
        out.append((madds.astype(float), float(fixed.madds), float(max_madds)))
    if max_params is not None:
        out.append((params.astype(float), float(fixed.params), float(max_params)))
    if max_latency_ms is not None and latency is not None:
        table = np.array([[-1.0 if v is None else v for v in row] for row in latency.table_ms])
        out.append((table, float(latency.fixed_ms), float(max_latency_ms)))
    return [(np.where(t < 0, np.inf, t), f, b) for t, f, b in out]


def sample_archs(space: SearchSpace, n: int, rng: np.random.Generator,
                 max_madds: float | None = None, max_params: float | None = None,
                 max_rounds: int = 20, batch: int = 4096, latency=None,
                 max_latency_ms: float | None = None) -> list[Arch]:
    """n random archs within the budgets (MAdds, params, predicted latency).

    Uniform over the feasible set by vectorized rejection; if the budget is
    so tight that rejection keeps failing, the rest are built layer by layer
    in random order, each choice kept only if the cheapest completion of the
    remaining layers still fits. Never loops on an impossible budget.
    """
    check_budget(space, max_madds, max_params)
    limits = _limits(space, max_madds, max_params, latency, max_latency_ms)
    rows = np.arange(space.num_layers)
    found: list[Arch] = []
    for _ in range(max_rounds):
        pop = random_population(space, batch, rng)
        ok = np.ones(len(pop), dtype=bool)
        for table, fixed, budget in limits:
            ok &= fixed + table[rows, pop].sum(axis=1) <= budget
        for row in pop[ok]:
            found.append(tuple(int(g) for g in row))
            if len(found) == n:
                return found
    while len(found) < n:
        found.append(_constructive(space, rng, limits))
    return found


def _constructive(space: SearchSpace, rng: np.random.Generator, limits) -> Arch:
    mins = [table.min(1) for table, _, _ in limits]
    spent = [fixed + m.sum() for (_, fixed, _), m in zip(limits, mins, strict=True)]
    genes = [0] * space.num_layers
    for i in rng.permutation(space.num_layers):
        options = np.arange(space.num_choices[i])
        ok = np.ones(len(options), dtype=bool)
        for (table, _, budget), m, s in zip(limits, mins, spent, strict=True):
            ok &= s - m[i] + table[i, options] <= budget * (1 + 1e-12)
        if not ok.any():  # the budgets' cheapest choices differ: keep the cheapest in the first
            ok = options == int(np.argmin(limits[0][0][i, options]))
        g = int(rng.choice(options[ok]))
        genes[i] = g
        spent = [s - m[i] + table[i, g] for (table, _, _), m, s in zip(limits, mins, spent,
                                                                         strict=True)]
    return tuple(genes)
