"""Where a run's files live. One module names every file and folder a run writes,
so that the step writing a file and the step, node or test reading it agree.

A run's resumable state, under ``<checkpoint_root>/<KFP run id>/``::

    supernet/          checkpoint.pt, failed.json, trainjob/
    search/            state.json, failed.json, trainjob/
    retrain/<key>/     checkpoint.pt, best.pt, final.pt, failed.json, trainjob/
    .../trainjob/      order.json, result.json (and supernet.pt: what the nodes read)

Prepared shards are shared by runs: ``<checkpoint_root>/shards/``
(``shards.default_root``), and so are results stored for reuse:
``<checkpoint_root>/reuse/<kind>/<key>/`` (``reuse.Store``). A local run's
folder: ``LocalRun``. A step's KFP outputs: ``supernet.pt`` in the supernet,
``best.pt`` and ``final.pt`` in a retrained model, ``model.pt2`` and
``model.onnx`` in an exported one.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from pathlib import Path

from . import storage

SUPERNET = "supernet.pt"  # a trained supernet with its space and path check
CHECKPOINT = "checkpoint.pt"  # a training run's resumable state
BEST = "best.pt"  # a retrained subnet's weights at its best validation accuracy
FINAL = "final.pt"  # ... and after its last step
SEARCH_STATE = "state.json"  # the search's scored generations, to resume from
FAILED = "failed.json"  # a deterministic failure, so that retries stop at once
DATASET = "dataset.json"  # the prepared data's manifest
TRAINJOB = "trainjob"  # a step's exchange with its TrainJob nodes
ORDER = "order.json"  # ... what the nodes run
RESULT = "result.json"  # ... and rank 0's result
PROGRAM = "model.pt2"  # the torch.export program
ONNX = "model.onnx"
SHARDS = "shards"  # under an s3:// checkpoint_root: prepared data, shared by runs
REUSE = "reuse"  # under checkpoint_root: results later runs reuse (reuse.py), shared by runs

STEPS = ("supernet", "search", "retrain")  # the steps that keep resumable state


def step_state(checkpoint_root: str, run_id: str, step: str, key: str = "") -> str:
    """The resumable state folder of ``step`` in run ``run_id`` (``key``: which of
    the step's tasks, for retrain), or "" without a checkpoint_root: nothing resumes."""
    if step not in STEPS:
        raise ValueError(f"{step!r} keeps no state; one of {list(STEPS)}")
    if not checkpoint_root:
        return ""
    return storage.join(checkpoint_root, run_id, step, *([key] if key else []))


def retrain_key(arch: str) -> str:
    """A short, stable name for one retrained arch (its state folder, its TrainJob)."""
    return hashlib.sha256(arch.encode()).hexdigest()[:12]


def inside(folder: str, name: str) -> str:
    """``name`` in ``folder`` (local or s3://), or "" when there is no folder."""
    return storage.join(folder, name) if folder else ""


@dataclass(frozen=True)
class LocalRun:
    """The folder of local runs (``make run``: ``local_outputs/``): KFP's outputs,
    the checkpoints, each run's logs, and the MLflow store the UI opens."""

    root: Path

    @property
    def pipeline_root(self) -> Path:
        return self.root / "pipeline_root"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def mlflow_db(self) -> Path:
        return self.root / "mlflow.db"

    @property
    def mlartifacts(self) -> Path:
        return self.root / "mlartifacts"

    def new_logs(self) -> Path:
        """A folder for one run's logs, named by when it started."""
        return self.root / "logs" / time.strftime("%Y%m%d-%H%M%S")
