"""Multi-objective evolutionary search (NSGA-II, pymoo) with the supernet as evaluator.

Pieces in pymoo's own split:
- ``NASProblem``: integer genes (one per layer, skip only where allowed),
  objectives (validation error, MAdds, params, latency: all minimized) and
  budgets as inequality constraints. A whole generation is scored in one
  call; each arch is scored once (the cache), so re-visits cost nothing.
- Operators that only ever produce valid archs: budget-aware ``ArchSampling``,
  gene-wise ``UniformCrossover`` (parents agree on which genes each layer
  allows), ``ChoiceMutation`` (a new allowed choice per mutated layer).
- ``run_search``: drives NSGA-II one generation at a time and saves its state
  (population with ranks, cache, RNG) as JSON after every generation, so a
  restarted search resumes at the next generation and ends exactly as an
  uninterrupted one.

The reported front is the non-dominated set of every feasible arch scored,
not only the last population.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
from pymoo.algorithms.moo.nsga2 import NSGA2
from pymoo.core.crossover import Crossover
from pymoo.core.mutation import Mutation
from pymoo.core.population import Population
from pymoo.core.problem import Problem
from pymoo.core.sampling import Sampling
from pymoo.indicators.hv import HV
from pymoo.util.nds.non_dominated_sorting import NonDominatedSorting
from tqdm.auto import tqdm

from . import storage
from .budget import budgets as budget_limits
from .budget import feasible
from .complexity import bounds, population_cost
from .config import SearchConfig, to_dict
from .latency import LatencyTable
from .launch import world
from .sampling import check_budget, sample_archs
from .space import Arch, SearchSpace

Scorer = Callable[[list[Arch]], list[dict]]  # archs -> [{"top1": ...}, ...]

# what search.objectives may name: each minimized, read from an arch's record
OBJECTIVES: dict[str, Callable[[dict], float]] = {
    "top1": lambda r: 1.0 - r["top1"], "madds": lambda r: r["madds"],
    "params": lambda r: r["params"], "latency": lambda r: r["latency_ms"]}


# ---- operators -------------------------------------------------------------------------
class ArchSampling(Sampling):
    """Initial population: random archs within the budgets (never loops)."""

    def _do(self, problem, n_samples, *args, random_state=None, **kwargs):
        archs = sample_archs(problem.space, n_samples, random_state,
                             max_madds=problem.budgets.get("madds"),
                             max_params=problem.budgets.get("params"),
                             latency=problem.latency,
                             max_latency_ms=problem.budgets.get("latency_ms"))
        return np.array(archs, dtype=int)


class UniformCrossover(Crossover):
    """Each gene from either parent; both parents valid, so the children are."""

    def __init__(self, prob: float = 0.9):
        super().__init__(2, 2, prob=prob)

    def _do(self, problem, X, *args, random_state=None, **kwargs):
        swap = random_state.random(X.shape[1:]) < 0.5
        a, b = X[0].copy(), X[1].copy()
        a[swap], b[swap] = X[1][swap], X[0][swap]
        return np.stack([a, b])


class ChoiceMutation(Mutation):
    """Each gene, with probability ``prob_var``, moves to another allowed choice."""

    def _do(self, problem, X, *args, random_state=None, **kwargs):
        X = X.copy()
        n = np.asarray(problem.space.num_choices)
        p = self.get_prob_var(problem, size=len(X))
        hit = random_state.random(X.shape) < np.asarray(p).reshape(-1, 1)
        shift = random_state.integers(1, np.broadcast_to(n, X.shape))  # 1..n-1: never itself
        X[hit] = (X[hit] + shift[hit]) % np.broadcast_to(n, X.shape)[hit]
        return X


# ---- problem ---------------------------------------------------------------------------
class NASProblem(Problem):
    """Objectives and budgets of archs; ``cache`` maps an arch to its record."""

    def __init__(self, space: SearchSpace, scorer: Scorer, objectives: Sequence[str],
                 budgets: dict[str, float], latency: LatencyTable | None = None,
                 cache: dict[Arch, dict] | None = None):
        self.space, self.scorer, self.objectives = space, scorer, list(objectives)
        self.budgets, self.latency = budgets, latency
        self.cache: dict[Arch, dict] = cache if cache is not None else {}
        self.generation = 0
        self.requests = self.hits = 0
        super().__init__(n_var=space.num_layers, n_obj=len(self.objectives),
                         n_ieq_constr=max(1, len(budgets)), xl=0,
                         xu=np.asarray(space.num_choices) - 1, vtype=int)

    def records(self, X: np.ndarray) -> list[dict]:
        archs = [tuple(int(g) for g in row) for row in X]
        self.requests += len(archs)
        new = list(dict.fromkeys(a for a in archs if a not in self.cache))
        self.hits += len(archs) - len(new)
        if new:
            genes = np.array(new, dtype=int)
            madds, params = population_cost(self.space, genes)
            lat = self.latency.predict_many(genes) if self.latency else [None] * len(new)
            for arch, score, m, p, t in zip(new, self.scorer(new), madds, params, lat,
                                            strict=True):
                self.cache[arch] = {"arch": self.space.format(arch), "genes": list(arch),
                                    "top1": float(score["top1"]),
                                    **{k: v if isinstance(v, int) else float(v)
                                       for k, v in score.items() if k != "top1"},
                                    "madds": int(m), "params": int(p),
                                    "latency_ms": None if t is None else float(t),
                                    "generation": self.generation}
        return [self.cache[a] for a in archs]

    def objective_matrix(self, recs: Sequence[dict]) -> np.ndarray:
        return np.array([[OBJECTIVES[o](r) for o in self.objectives] for r in recs], dtype=float)

    def constraint_matrix(self, recs: Sequence[dict]) -> np.ndarray:
        if not self.budgets:
            return np.zeros((len(recs), 1))
        # normalized so one constraint does not swamp the others
        return np.array([[(r[k] - b) / b for k, b in self.budgets.items()] for r in recs])

    def _evaluate(self, X, out, *args, **kwargs):
        recs = self.records(X)
        out["F"] = self.objective_matrix(recs)
        out["G"] = self.constraint_matrix(recs)


# ---- results ---------------------------------------------------------------------------
@dataclass
class SearchResult:
    objectives: list[str]
    evaluated: list[dict]
    front: list[dict]
    hypervolume: list[float]  # of the front so far, after each generation
    selected: list[dict]
    cache_hit_rate: float
    config: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"objectives": self.objectives, "front": self.front, "selected": self.selected,
                "hypervolume": self.hypervolume, "cache_hit_rate": self.cache_hit_rate,
                "evaluated": self.evaluated, "config": self.config}


def pareto_front(problem: NASProblem, recs: Sequence[dict]) -> list[dict]:
    """Non-dominated feasible records, sorted by MAdds."""
    recs = feasible(recs, problem.budgets)
    if not recs:
        return []
    F = problem.objective_matrix(recs)
    idx = NonDominatedSorting().do(F, only_non_dominated_front=True)
    return sorted((recs[i] for i in idx), key=lambda r: (r["madds"], -r["top1"]))


def _normalizer(space: SearchSpace, objectives: Sequence[str], latency: LatencyTable | None):
    _, hi = bounds(space)
    scale = {"top1": 1.0, "madds": float(hi.madds), "params": float(hi.params)}
    if latency is not None:
        scale["latency"] = latency.fixed_ms + sum(
            max(v for v in row if v is not None) for row in latency.table_ms)
    return np.array([scale[o] for o in objectives])


def hypervolume(problem: NASProblem, front: Sequence[dict], scale: np.ndarray) -> float:
    """Hypervolume of the front with objectives scaled to [0, 1], reference 1."""
    if not front:
        return 0.0
    F = problem.objective_matrix(front) / scale
    return float(HV(ref_point=np.ones(F.shape[1]))(np.minimum(F, 1.0)))


def select_top_k(front: Sequence[dict], k: int) -> list[dict]:
    """Spread k picks across the front: split its MAdds range into k equal
    bands and take the most accurate arch of each; bands left empty are
    filled with the most accurate archs not yet picked. (A front smaller than
    k is topped up by the search with the most accurate feasible others.)"""
    if len(front) <= k:
        return sorted(front, key=lambda r: -r["top1"])
    lo = min(r["madds"] for r in front)
    width = (max(r["madds"] for r in front) - lo) / k or 1
    picks = []
    for band in range(k):
        members = [r for r in front if min(int((r["madds"] - lo) / width), k - 1) == band]
        if members:
            picks.append(max(members, key=lambda r: r["top1"]))
    rest = sorted((r for r in front if r not in picks), key=lambda r: -r["top1"])
    return picks + rest[: k - len(picks)]


# ---- the loop --------------------------------------------------------------------------
def _check_latency_budget(cfg: SearchConfig, latency: LatencyTable | None,
                          space: SearchSpace) -> None:
    if not cfg.needs_latency:
        return
    if latency is None:
        raise ValueError("latency is an objective or a budget but no latency table was "
                         "given: build one with scarletnas.latency.build_latency_table")
    if latency.space_fingerprint != space.fingerprint:
        raise ValueError("the latency table was built for another search space; rebuild it")
    lo = latency.fixed_ms + sum(min(v for v in row if v is not None) for row in latency.table_ms)
    if cfg.max_latency_ms and cfg.max_latency_ms < lo:
        raise ValueError(f"latency budget {cfg.max_latency_ms} ms is below the fastest arch in "
                         f"the space ({lo:.3f} ms predicted on {latency.device}): raise it to "
                         "at least that")


def _make_algorithm(cfg: SearchConfig) -> NSGA2:
    return NSGA2(pop_size=cfg.population, sampling=ArchSampling(),
                 crossover=UniformCrossover(cfg.crossover_prob),
                 mutation=ChoiceMutation(prob_var=cfg.mutation_prob or None),
                 eliminate_duplicates=True)


def _save_state(uri: str, algorithm: NSGA2, problem: NASProblem, gen: int,
                hv: list[float], fingerprint: dict) -> None:
    pop = algorithm.pop
    state = {
        "generation": gen, "fingerprint": fingerprint, "hypervolume": hv,
        "rng": algorithm.random_state.bit_generator.state,
        "population": {"X": pop.get("X").astype(int).tolist(),
                       "rank": pop.get("rank").astype(int).tolist(),
                       "crowding": [c if math.isfinite(c) else "inf"
                                    for c in pop.get("crowding").astype(float).tolist()]},
        "cache": list(problem.cache.values()),
        "requests": problem.requests, "hits": problem.hits,
    }
    storage.write_bytes(uri, json.dumps(state).encode())


def _restore(algorithm: NSGA2, problem: NASProblem, state: dict) -> None:
    for rec in state["cache"]:
        problem.cache[tuple(rec["genes"])] = rec
    algorithm._initialize()
    pop = Population.new("X", np.array(state["population"]["X"], dtype=int))
    algorithm.evaluator.eval(problem, pop)  # from the cache: nothing is scored again
    pop.set("rank", np.array(state["population"]["rank"]),
            "crowding", np.array([float(c) for c in state["population"]["crowding"]]))
    problem.requests, problem.hits = state["requests"], state["hits"]
    algorithm.pop = pop
    algorithm.is_initialized = True
    algorithm.n_iter = state["generation"]
    algorithm.random_state.bit_generator.state = state["rng"]


def _read_state(uri: str) -> dict:
    """A search state written by ``_save_state``, with a clear error for anything else."""
    try:
        state = json.loads(storage.read_bytes(uri))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"search state {uri} is not JSON ({err}); it was not written by "
                         "the search: delete it or use a new state location") from None
    keys = ("fingerprint", "generation", "hypervolume", "rng", "population", "cache")
    if not isinstance(state, dict) or any(k not in state for k in keys):
        raise ValueError(f"search state {uri} is not a search state (it needs {list(keys)}); "
                         "delete it or use a new state location")
    return state


def run_search(space: SearchSpace, scorer: Scorer, cfg: SearchConfig, *,
               latency: LatencyTable | None = None, state_uri: str | None = None,
               callback: Callable[[int, dict], None] | None = None) -> SearchResult:
    """NSGA-II for ``cfg.generations`` generations; resumes from ``state_uri``."""
    budgets = budget_limits(cfg)
    check_budget(space, budgets.get("madds"), budgets.get("params"))
    _check_latency_budget(cfg, latency, space)
    problem = NASProblem(space, scorer, cfg.objective_names, budgets, latency)
    algorithm = _make_algorithm(cfg)
    algorithm.setup(problem, seed=cfg.seed, termination=("n_gen", cfg.generations + 1))
    fingerprint = {"space": space.to_dict(), "config": to_dict(cfg)}
    scale = _normalizer(space, problem.objectives, latency)
    hv: list[float] = []
    start = 0
    if state_uri and storage.exists(state_uri):
        state = _read_state(state_uri)
        if state["fingerprint"] != fingerprint:
            raise ValueError(f"search state {state_uri} belongs to a different search (space or "
                             "settings differ); use a new state location or delete it")
        _restore(algorithm, problem, state)
        hv, start = list(state["hypervolume"]), state["generation"]

    bar = tqdm(total=cfg.generations, initial=start, desc="search", dynamic_ncols=True)
    try:
        for gen in range(start, cfg.generations):
            problem.generation = gen + 1
            algorithm.next()
            front = pareto_front(problem, list(problem.cache.values()))
            hv.append(hypervolume(problem, front, scale))
            if state_uri and world()[0] == 0:  # on several ranks all hold the same state
                _save_state(state_uri, algorithm, problem, gen + 1, hv, fingerprint)
            stats = {"hypervolume": hv[-1], "evaluated": len(problem.cache),
                     "front_size": len(front),
                     "best_top1": max((r["top1"] for r in front), default=0.0)}
            bar.update(1)
            bar.set_postfix(hv=f"{hv[-1]:.4f}", evaluated=len(problem.cache), refresh=False)
            if callback:
                callback(gen + 1, stats)
    finally:
        bar.close()
    return _result(problem, cfg, hv, fingerprint)


def _result(problem: NASProblem, cfg: SearchConfig, hv: list[float], fp: dict) -> SearchResult:
    evaluated = sorted(problem.cache.values(), key=lambda r: (r["generation"], r["arch"]))
    front = pareto_front(problem, evaluated)
    selected = select_top_k(front, cfg.top_k)
    if len(selected) < cfg.top_k:  # a small front: add the most accurate feasible others
        others = sorted((r for r in feasible(evaluated, problem.budgets) if r not in front),
                        key=lambda r: -r["top1"])
        selected += others[: cfg.top_k - len(selected)]
    return SearchResult(problem.objectives, evaluated, front, hv, selected,
                        problem.hits / max(1, problem.requests), fp["config"])


def random_search(space: SearchSpace, scorer: Scorer, cfg: SearchConfig, n_evals: int, *,
                  latency: LatencyTable | None = None, batch: int | None = None) -> SearchResult:
    """Baseline: ``n_evals`` distinct random archs within the budgets, scored in
    batches of a population; same front, hypervolume and selection rules."""
    budgets = budget_limits(cfg)
    check_budget(space, budgets.get("madds"), budgets.get("params"))
    problem = NASProblem(space, scorer, cfg.objective_names, budgets, latency)
    rng = np.random.default_rng(cfg.seed)
    scale = _normalizer(space, problem.objectives, latency)
    batch = batch or cfg.population
    hv = []
    while len(problem.cache) < n_evals:
        problem.generation += 1
        want = min(batch, n_evals - len(problem.cache))
        drawn = sample_archs(space, want * 2, rng, budgets.get("madds"), budgets.get("params"),
                             latency=latency, max_latency_ms=budgets.get("latency_ms"))
        archs = [a for a in dict.fromkeys(drawn) if a not in problem.cache][:want]
        problem.records(np.array(archs, dtype=int))
        hv.append(hypervolume(problem, pareto_front(problem, list(problem.cache.values())),
                              scale))
    return _result(problem, cfg, hv, {"config": to_dict(cfg)})
