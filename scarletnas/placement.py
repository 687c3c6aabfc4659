"""Where a stage's work runs: in this process, in one process per device of this
pod (``launch.py``), or on every process of a Kubeflow Trainer TrainJob's nodes
(``nodes.py``). The config decides; the stage does not branch on it.

A stage's work is written once, as a public function of keyword arguments that
runs on every rank (rank 0 writes the outputs). The stages that may run on
several nodes are registered in ``ON_NODES``, by name, with the resources key
that says on how many: that name is what a TrainJob's order carries, and how a
node finds the function to run. Adding such a stage is one entry here.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .config import PipelineConfig, ResourcesConfig
    from .nodes import Nodes
    from .tracking import Tracker

log = logging.getLogger("scarletnas")


@dataclass(frozen=True)
class RankWork:
    """A stage's work on every rank: ``module:function``, the ``resources`` key that
    counts its nodes, and whether a pod runs it in one process per device (else in
    one process that drives all of the pod's devices itself)."""

    function: str
    nodes_key: str
    per_device: bool = True

    def resolve(self) -> Callable[..., dict]:
        module, _, name = self.function.partition(":")
        return getattr(importlib.import_module(module), name)


ON_NODES = {
    "train_supernet": RankWork("scarletnas.stages:train_supernet_on_ranks", "nodes"),
    "search": RankWork("scarletnas.stages:search_on_ranks", "nodes", per_device=False),
    "retrain": RankWork("scarletnas.stages:retrain_on_ranks", "retrain_nodes"),
}


def node_count(resources: ResourcesConfig, stage: str) -> int:
    """On how many nodes ``stage`` runs (1: in its own pod)."""
    return getattr(resources, ON_NODES[stage].nodes_key)


def work(stage: str) -> Callable[..., dict]:
    """The registered work of ``stage``: what every rank runs."""
    if stage not in ON_NODES:
        raise ValueError(f"unknown stage {stage!r}; one of {list(ON_NODES)}")
    return ON_NODES[stage].resolve()


def run(stage: str, cfg: PipelineConfig, device: str, tracker: Tracker,
        nodes: Nodes | None = None, **kwargs) -> dict:
    """``stage``'s work with ``kwargs`` (plus ``cfg`` and ``tracker``) on the
    TrainJob ``nodes``, else on every device of this pod, in this process when it
    has one; rank 0 tracks into ``tracker``'s run. Rank 0's result."""
    from . import launch

    if nodes:
        return nodes.run(cfg, kwargs, tracker, device)
    n = launch.processes(cfg, device) if ON_NODES[stage].per_device else 1
    if n == 1:
        return work(stage)(cfg=cfg, tracker=tracker, **kwargs)
    cuda = launch.resolve_device(device).type == "cuda"
    log.info("training on %d processes (%s)", n, "one GPU each" if cuda else "CPU, gloo")
    return launch.run(on_rank, (stage, cfg, kwargs, tracker.handle()), n, cuda)


def on_rank(stage: str, cfg: PipelineConfig, kwargs: dict, tracking: tuple) -> dict:
    """One rank of a group (this pod's processes, or a TrainJob's): ``stage``'s
    work, tracking into the step's run from rank 0."""
    from .launch import world
    from .tracking import Tracker

    return work(stage)(cfg=cfg, tracker=Tracker.for_rank(tracking, world()[0]), **kwargs)
