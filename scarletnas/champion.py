"""Champion and challenger: whether a run's best model replaces the one serving.

A scheduled run must not move the champion alias to a model that is worse than
the one already behind it. The serving champion is loaded from the registry and
scored on this run's test split, beside the new model, and ``decide`` applies
one written rule (README, "Champion and challenger"):

1. No champion yet, or one this run cannot score (it does not load, or takes
   another image size or class count): the new model takes the alias.
2. A champion outside this run's budget gives way to a new model within it.
3. A new model with higher test top-1 takes the alias.
4. A new model with fewer multiply-adds takes it if it loses at most
   ``tracking.max_top1_drop`` of test top-1 (default 0: only an equally
   accurate, smaller one). A faster, less accurate model never replaces the
   champion unless the config asks for that trade.
5. Otherwise the champion stays, and the new model gets the challenger alias.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass

log = logging.getLogger(__name__)


@dataclass
class Incumbent:
    """The model behind the champion alias, as this run sees it."""

    version: str
    arch: str = ""
    madds: float | None = None
    params: float | None = None
    latency_ms: float | None = None
    test_top1: float | None = None  # on this run's test split; None: not scored
    problem: str = ""  # why it could not be scored

    def record(self) -> dict:
        """Its figures under the keys a budget checks (budget.LIMITS)."""
        return {"madds": self.madds, "params": self.params, "latency_ms": self.latency_ms}


@dataclass
class Decision:
    promote: bool  # the new model takes the champion alias
    reason: str  # one sentence for the leaderboard and the MLflow parent run


def decide(new: Mapping, incumbent: Incumbent | None, limits: Mapping[str, float],
           max_top1_drop: float = 0.0) -> Decision:
    """The module docstring's rule. ``new``: the run's best model (test_top1,
    madds, registered_version); ``limits``: this run's budgets (budget.budgets)."""
    from .budget import over_budget, within_budget

    ours = f"v{new.get('registered_version')} ({_pct(new['test_top1'])})"
    if incumbent is None:
        return Decision(True, f"{ours} is the first champion")
    if incumbent.version == str(new.get("registered_version")):
        return Decision(True, f"{ours} is already the champion")
    theirs = f"v{incumbent.version}"
    if incumbent.test_top1 is None:
        return Decision(True, f"{ours} replaces champion {theirs}, which this run cannot "
                              f"score: {incumbent.problem}")
    theirs = f"{theirs} ({_pct(incumbent.test_top1)} on this run's test split)"
    over = over_budget(incumbent.record(), limits)
    if over and within_budget(new, _renamed(limits)):
        return Decision(True, f"{ours} replaces champion {theirs}, which is over this run's "
                              f"budget ({', '.join(over)})")
    gain = new["test_top1"] - incumbent.test_top1
    if gain > 0:
        return Decision(True, f"{ours} beats champion {theirs}")
    smaller = incumbent.madds is not None and new["madds"] < incumbent.madds
    if smaller and -gain <= max_top1_drop:
        return Decision(True, f"{ours} replaces champion {theirs}: {_pct(-gain)} less top-1 "
                              f"(tracking.max_top1_drop={max_top1_drop:g}) for "
                              f"{new['madds'] / incumbent.madds:.0%} of its multiply-adds")
    return Decision(False, f"champion {theirs} stays: {ours} does not beat it"
                           + (f" (smaller, but {_pct(-gain)} less top-1 than "
                              f"tracking.max_top1_drop={max_top1_drop:g} allows)"
                              if smaller else ""))


def _renamed(limits: Mapping[str, float]) -> dict:
    """Budget keys as a leaderboard row names them (latency measured by evaluate)."""
    return {"latency_ms_cpu_batch1" if k == "latency_ms" else k: v for k, v in limits.items()}


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def find_incumbent(tracking_uri: str, model_name: str, alias: str, splits, space
                   ) -> Incumbent | None:
    """The model behind ``alias``, scored on ``splits``' test split; None if the
    alias is not set. A champion that cannot be loaded or scored comes back with
    ``problem`` set (and a warning), never as an error: the run goes on."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient(tracking_uri)
    try:
        aliases = client.get_registered_model(model_name).aliases
    except MlflowException as err:
        if err.error_code == "RESOURCE_DOES_NOT_EXIST":  # no model registered yet
            return None
        raise
    if alias not in aliases:
        return None
    version = client.get_model_version(model_name, aliases[alias])
    incumbent = Incumbent(version=str(version.version))
    try:
        run = client.get_run(version.run_id) if version.run_id else None
        if run is not None:
            params, metrics = run.data.params, run.data.metrics
            incumbent.arch = params.get("arch", "")
            incumbent.madds = _number(params.get("madds"))
            incumbent.params = _number(params.get("params"))
            incumbent.latency_ms = metrics.get("latency_ms_cpu_batch1")
        incumbent.test_top1 = _score(f"models:/{model_name}/{version.version}", tracking_uri,
                                     splits, space)
    except Exception as err:  # noqa: BLE001 (a broken champion must not fail the run)
        incumbent.problem = str(err).splitlines()[0] if str(err) else type(err).__name__
        log.warning("champion %s v%s cannot be scored on this run's data: %s", model_name,
                    incumbent.version, incumbent.problem)
    return incumbent


def _number(value) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _score(uri: str, tracking_uri: str, splits, space) -> float:
    """Test top-1 of the registered model at ``uri`` on this run's test split."""
    import mlflow

    from .data import Batches
    from .evaluate import score

    mlflow.set_tracking_uri(tracking_uri)
    inputs, outputs = _signature_shapes(mlflow.models.get_model_info(uri))
    want_in, want_out = (3, space.input_size, space.input_size), space.num_classes
    if inputs and tuple(inputs[1:]) != want_in:
        raise ValueError(f"it takes {inputs[-1]} px images, this run's data {space.input_size} px")
    if outputs and outputs[-1] != want_out:
        raise ValueError(f"it predicts {outputs[-1]} classes, this run's data has {want_out}")
    previous = os.environ.get("MLFLOW_ALLOW_PICKLE_DESERIALIZATION")
    os.environ["MLFLOW_ALLOW_PICKLE_DESERIALIZATION"] = "false"  # pt2 only: never unpickle
    try:
        model = mlflow.pytorch.load_model(uri)
    finally:
        if previous is None:
            os.environ.pop("MLFLOW_ALLOW_PICKLE_DESERIALIZATION")
        else:
            os.environ["MLFLOW_ALLOW_PICKLE_DESERIALIZATION"] = previous
    batches = ((x.cpu(), y.cpu()) for x, y in Batches(splits, "test", train=False))
    return score(model, batches, amp=False)["top1"]


def _signature_shapes(info) -> tuple[list | None, list | None]:
    """The input and output tensor shapes a logged model's signature declares."""
    import json

    def shape(schema: str) -> list | None:
        specs = json.loads(schema) if schema else []
        return specs[0].get("tensor-spec", {}).get("shape") if specs else None

    if info.signature is None:
        return None, None
    sig = info.signature.to_dict()
    return shape(sig.get("inputs")), shape(sig.get("outputs"))
