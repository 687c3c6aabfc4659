"""Budgets: which limits a search config sets, and whether an arch's record meets them.

One definition, used by the search (feasibility, constraints, sampling) and by
evaluate (``within_budget`` of a retrained model), so the two can never
disagree on what "within budget" means. Latency is batch-1 on one CPU thread:
what the search's lookup table predicts and what evaluate measures.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from .config import SearchConfig

# record key -> the SearchConfig field that limits it (0: no limit)
LIMITS = {"madds": "max_madds", "params": "max_params", "latency_ms": "max_latency_ms"}


def budgets(cfg: SearchConfig) -> dict[str, float]:
    """The active limits of ``cfg``, keyed by the record field they bound."""
    return {key: float(getattr(cfg, field)) for key, field in LIMITS.items()
            if getattr(cfg, field)}


def over_budget(record: Mapping, limits: Mapping[str, float]) -> list[str]:
    """The record fields above their limit (a missing or None value counts as over:
    a budget nothing measured cannot be said to hold)."""
    return [key for key, limit in limits.items()
            if record.get(key) is None or record[key] > limit]


def within_budget(record: Mapping, limits: Mapping[str, float]) -> bool:
    return not over_budget(record, limits)


def feasible(records: Sequence[Mapping], limits: Mapping[str, float]) -> list:
    return [r for r in records if within_budget(r, limits)]
