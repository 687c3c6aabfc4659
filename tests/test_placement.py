"""One module decides where a stage's work runs; a stage that can run on nodes is
one registration there."""

import ast
import inspect
from pathlib import Path

import pytest

from scarletnas import placement
from scarletnas.config import ResourcesConfig

PACKAGE = Path(placement.__file__).parent


@pytest.mark.parametrize("stage", sorted(placement.ON_NODES))
def test_each_registered_stage_is_public_work_of_named_arguments(stage):
    work = placement.work(stage)
    assert not work.__name__.startswith("_")
    params = inspect.signature(work).parameters
    assert {"cfg", "dataset", "tracker"} <= set(params)
    assert all(p.kind is p.POSITIONAL_OR_KEYWORD for p in params.values())
    assert placement.node_count(ResourcesConfig(), stage) == 1  # a pod unless set


def test_the_node_count_comes_from_the_stages_own_resources_key():
    res = ResourcesConfig(nodes=3, retrain_nodes=2)
    assert {s: placement.node_count(res, s) for s in placement.ON_NODES} == {
        "train_supernet": 3, "search": 3, "retrain": 2}
    with pytest.raises(ValueError, match="unknown stage 'evaluate'"):
        placement.work("evaluate")


def _imported(module: str, top_level_only: bool) -> set[str]:
    """The package modules ``module`` imports (``from .x import``, ``from . import x``)."""
    tree = ast.parse((PACKAGE / f"{module}.py").read_text())
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    found = set()
    for node in nodes:
        if isinstance(node, ast.ImportFrom) and node.level:
            found |= {node.module} if node.module else {a.name for a in node.names}
    return found


def test_stages_and_nodes_do_not_import_each_other():
    """stages names Nodes only for type checking; nodes finds a stage's work through
    placement's registry, not by importing stages."""
    assert "nodes" not in _imported("stages", top_level_only=True)
    assert "stages" not in _imported("nodes", top_level_only=False)
