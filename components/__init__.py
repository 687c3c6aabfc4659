"""KFP components (installed as ``scarletnas.components``): thin wrappers, one
file each, that parse inputs, call one ``scarletnas.stages`` function, log, and
write outputs. ``build(image)`` turns them into lightweight components that
run on the project's image (chosen at compile time) with the image's own kfp and
scarlet-nas: nothing is installed when a step starts, and each step first checks
that the image holds the scarlet-nas version that compiled it (``_image.py``).
"""

from __future__ import annotations

from types import SimpleNamespace

from ._image import VERSION_ENV, check_image_version
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
__all__ = ["FUNCTIONS", "VERSION_ENV", "build", "check_image_version"]


def build(image: str, on_nodes: tuple[str, ...] = ()) -> SimpleNamespace:
    """Every component on ``image``, which already holds the package and its pins
    (kfp included: KFP's executor is the image's, not one installed at start).
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
            fn, base_image=image, packages_to_install=[], install_kfp_package=False,
            additional_funcs=[check_image_version],
            task_config_passthroughs=passthrough if fn.__name__ in on_nodes else None)
        for fn in FUNCTIONS})
