"""KFP components (installed as ``scarletnas.components``): thin wrappers, one
file each, that parse inputs, call one ``scarletnas.stages`` function, log, and
write outputs. ``build(image)`` turns them into lightweight components that
run on the project's image (chosen at compile time).
"""

from __future__ import annotations

from types import SimpleNamespace

from .evaluate import evaluate
from .finish_run import finish_run
from .prepare_data import prepare_data
from .ranking_check import ranking_check
from .retrain import retrain
from .search import search
from .start_run import start_run
from .summarize import summarize
from .train_supernet import train_supernet

FUNCTIONS = (start_run, prepare_data, train_supernet, ranking_check, search, retrain,
             evaluate, summarize, finish_run)


def build(image: str, on_nodes: tuple[str, ...] = ()) -> SimpleNamespace:
    """Every component on ``image``, which already holds the package and its pins.
    Those named in ``on_nodes`` start a TrainJob: the resources, env and placement
    set on their tasks reach them as ``dsl.TaskConfig`` for the TrainJob's nodes,
    and their own pods get none of it but the env and volumes."""
    from kfp import dsl

    passthrough = [dsl.TaskConfigField.RESOURCES, dsl.TaskConfigField.KUBERNETES_NODE_SELECTOR,
                   dsl.TaskConfigField.KUBERNETES_TOLERATIONS,
                   dsl.TaskConfigField.KUBERNETES_AFFINITY,
                   dsl.TaskConfigPassthrough(field=dsl.TaskConfigField.ENV, apply_to_task=True),
                   # the API token the step mounts (pipeline/dag.py); its nodes drop it
                   dsl.TaskConfigPassthrough(field=dsl.TaskConfigField.KUBERNETES_VOLUMES,
                                             apply_to_task=True)]
    return SimpleNamespace(**{
        fn.__name__: dsl.component(
            fn, base_image=image, packages_to_install=[],
            task_config_passthroughs=passthrough if fn.__name__ in on_nodes else None)
        for fn in FUNCTIONS})
