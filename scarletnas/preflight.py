"""Deterministic preconditions, checked before any step starts.

A run that cannot succeed (a budget no arch meets, a space that cannot be
built) fails at compile or submit time with the reason, instead of after the
supernet has trained. And a step that fails for a reason a retry cannot
change records it beside its checkpoint, so KFP's retries of that step end
at once instead of doing the work again.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager

from . import storage
from .budget import budgets
from .config import ConfigError, PipelineConfig
from .data import KNOWN_CLASSES
from .manifest import space_for
from .sampling import check_budget
from .shards import DATASETS, default_root

# errors that come back unchanged on a retry with the same inputs (bad config or
# data, an impossible budget, a bug); network, storage and device errors may not
DETERMINISTIC = (ValueError, TypeError, LookupError, ArithmeticError, AssertionError)
# the same, by name, for an error raised in a training process or on a TrainJob node
DETERMINISTIC_NAMES = {"ValueError", "TypeError", "KeyError", "IndexError", "ZeroDivisionError",
                       "AssertionError", "ConfigError", "DataError", "ArchError",
                       "CheckpointError"}


def deterministic(err: BaseException) -> bool:
    """Whether a retry would fail the same way. A training process's or TrainJob
    node's error (launch.WorkerError, trainjob.TrainJobError) carries its class name
    as ``kind``."""
    kind = getattr(err, "kind", None)
    if isinstance(kind, str):
        return kind in DETERMINISTIC_NAMES
    return isinstance(err, DETERMINISTIC)


def check(cfg: PipelineConfig) -> None:
    """Fail now if ``cfg`` cannot succeed. An image folder's class count is
    known only once it is read, so its budgets are checked at two classes,
    the cheapest a classifier can be (the search checks again on the data)."""
    _check_nodes(cfg)
    space = space_for(cfg, KNOWN_CLASSES.get(cfg.data.dataset, 2))
    limits = budgets(cfg.search)
    try:
        check_budget(space, limits.get("madds"), limits.get("params"))
    except ValueError as err:
        raise ConfigError(f"search: {err} (space {cfg.space.preset}, width "
                          f"{cfg.space.width_mult}, {cfg.data.input_size}px)") from None


def check_cluster(cfg: PipelineConfig) -> None:
    """What a run on a cluster needs beyond ``check``: its steps run in pods that share
    nothing but S3, so the shards prepare_data writes must be there."""
    if cfg.data.dataset in DATASETS and not storage.is_s3(
            default_root(cfg.data, cfg.checkpoint_root)):
        raise ConfigError(f"data.dataset={cfg.data.dataset} on a cluster: every step reads "
                          "the shards "
                          "prepare_data writes, each from its own pod; set data.shard_root (or "
                          "checkpoint_root) to an s3://bucket/prefix location")


def _check_nodes(cfg: PipelineConfig) -> None:
    """A TrainJob's nodes share nothing with the step that starts it but S3."""
    res = cfg.resources
    key, nodes = max((("resources.nodes", res.nodes), ("resources.retrain_nodes",
                                                       res.retrain_nodes)), key=lambda kv: kv[1])
    if nodes == 1:
        return
    if not storage.is_s3(cfg.checkpoint_root):
        raise ConfigError(f"{key}={nodes}: the nodes of a TrainJob exchange the work, "
                          "checkpoints and results through checkpoint_root; set it to an "
                          "s3://bucket/prefix location")
    root = default_root(cfg.data, cfg.checkpoint_root)
    if cfg.data.dataset in DATASETS and not storage.is_s3(root):  # the nodes read the shards
        raise ConfigError(f"{key}={nodes}: data.shard_root={root!r} is a folder of one "
                          "pod, which the nodes cannot read; set it to an "
                          "s3://bucket/prefix location (or leave it empty: beside the "
                          "checkpoints)")


@contextmanager
def final_failure(state_dir: str, step: str) -> Iterator[None]:
    """Run a retried step so that a deterministic failure is final: recorded in
    ``state_dir`` and raised again by every retry, before it does any work."""
    if not state_dir:
        yield
        return
    record = storage.join(state_dir, "failed.json")
    if storage.exists(record):
        error = json.loads(storage.read_bytes(record))["error"]
        raise ConfigError(f"{step} already failed with an error a retry cannot change, so it "
                          f"is not run again: {error} (fix the cause and start a new run, or "
                          f"delete {record} to retry this one)")
    try:
        yield
    except Exception as err:
        if deterministic(err):
            storage.write_bytes(record, json.dumps({"step": step, "error": f"{err}",
                                                    "type": type(err).__name__}).encode())
        raise
