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


def build(image: str) -> SimpleNamespace:
    """Every component on ``image``, which already holds the package and its pins."""
    from kfp import dsl

    return SimpleNamespace(**{
        fn.__name__: dsl.component(fn, base_image=image, packages_to_install=[])
        for fn in FUNCTIONS})
