"""How many archs per second the analytic MAdds/params count scores.

Prints one JSON object: one arch at a time (``arch_cost``, the string API)
and a whole population at once (``population_cost``, what the search uses),
against a hook-based count on a built model for scale.
"""

from __future__ import annotations

import json
import time

import numpy as np

from scarletnas import SearchSpace, arch_cost, build_subnet
from scarletnas.complexity import count_with_hooks, population_cost
from scarletnas.sampling import random_population


def rate(fn, n: int) -> float:
    t = time.perf_counter()
    fn()
    return n / (time.perf_counter() - t)


def main() -> None:
    space = SearchSpace.imagenet()
    pop = random_population(space, 20000, np.random.default_rng(0))
    strings = [space.format(row) for row in pop[:5000]]
    population_cost(space, pop[:10])  # build the cached table
    hooks = pop[:5]
    result = {
        "bench": "complexity_speed",
        "space": "imagenet",
        "arch_cost_strings_per_s": round(rate(lambda: [arch_cost(space, s) for s in strings],
                                              len(strings))),
        "population_cost_per_s": round(rate(lambda: population_cost(space, pop), len(pop))),
        "hook_count_per_s": round(rate(lambda: [count_with_hooks(
            build_subnet(tuple(int(g) for g in r)), 224) for r in hooks], len(hooks)), 2),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
