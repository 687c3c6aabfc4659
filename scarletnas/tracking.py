"""MLflow tracking that never stops the work it records.

One parent run per pipeline run; each component opens a child run linked to
it by the parent's run id (components run in separate pods, so MLflow's
active-run nesting cannot link them). Every call goes through ``Tracker``:
if the tracking server is unreachable at the start or fails mid-run, a
warning is logged once and training or search carry on untracked.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import tempfile
from collections.abc import Mapping
from pathlib import Path

log = logging.getLogger("scarletnas.tracking")

PARENT_TAG = "mlflow.parentRunId"


def git_sha() -> str | None:
    sha = os.environ.get("SCARLETNAS_GIT_SHA")
    if sha:
        return sha
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=5, cwd=Path(__file__).parent)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def _reachable(uri: str) -> bool:
    if not uri.startswith(("http://", "https://")):
        return True  # file or database stores: nothing to reach
    import urllib.request

    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=3) as r:
            return r.status == 200
    except OSError:
        return False


class Tracker:
    """A run on an MLflow server, or a quiet no-op when there is none."""

    def __init__(self, tracking_uri: str, experiment: str, run_name: str, *,
                 parent_run_id: str = "", run_id: str = "", tags: Mapping[str, str] | None = None):
        self.run_id: str | None = None
        self.client = None
        self.tracking_uri = tracking_uri
        self.parent_run_id = parent_run_id
        if not tracking_uri:
            return
        # fail fast rather than retrying for minutes against a dead server
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")
        if not _reachable(tracking_uri):
            self._disable(f"tracking server {tracking_uri} is unreachable")
            return
        try:
            from mlflow import MlflowClient

            self.client = MlflowClient(tracking_uri)
            if run_id:
                self.run_id = run_id
                return
            exp = self.client.get_experiment_by_name(experiment)
            exp_id = exp.experiment_id if exp else self.client.create_experiment(experiment)
            all_tags = {k: str(v) for k, v in (tags or {}).items() if v not in (None, "")}
            if parent_run_id:
                all_tags[PARENT_TAG] = parent_run_id
            self.run_id = self.client.create_run(exp_id, run_name=run_name,
                                                 tags=all_tags).info.run_id
        except Exception as err:  # noqa: BLE001 - tracking must never stop the work
            self._disable(f"cannot open an MLflow run: {err}")

    @property
    def active(self) -> bool:
        return self.run_id is not None and self.client is not None

    def _disable(self, why: str) -> None:
        log.warning("MLflow tracking disabled, the work continues untracked: %s", why)
        self.client = None
        self.run_id = None

    def _call(self, fn_name: str, *args, **kwargs):
        if not self.active:
            return None
        try:
            return getattr(self.client, fn_name)(self.run_id, *args, **kwargs)
        except Exception as err:  # noqa: BLE001
            self._disable(f"{fn_name} failed: {err}")
            return None

    # ---- logging ---------------------------------------------------------------------
    def params(self, params: Mapping[str, object], prefix: str = "") -> None:
        from mlflow.entities import Param

        flat = _flatten(params, prefix)
        items = [Param(k, str(v)[:6000]) for k, v in flat.items()]
        for i in range(0, len(items), 100):
            self._call("log_batch", params=items[i:i + 100])

    def metrics(self, metrics: Mapping[str, float], step: int = 0) -> None:
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(_key(k), float(v), now, step) for k, v in metrics.items()
                 if isinstance(v, (int, float))]
        if items:
            self._call("log_batch", metrics=items)

    def tags(self, tags: Mapping[str, object]) -> None:
        for k, v in tags.items():
            self._call("set_tag", k, str(v))

    def parent_tags(self, tags: Mapping[str, object]) -> None:
        """Tags on the pipeline's parent run too, where runs are compared."""
        if not (self.active and self.parent_run_id):
            return
        try:
            for k, v in tags.items():
                self.client.set_tag(self.parent_run_id, k, str(v))
        except Exception as err:  # noqa: BLE001 - tracking must never stop the work
            log.warning("cannot tag the parent run %s: %s", self.parent_run_id, err)

    def artifact(self, local_path: str | Path, artifact_path: str | None = None) -> None:
        self._call("log_artifact", str(local_path), artifact_path)

    def text(self, text: str, name: str, artifact_path: str | None = None) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            p = Path(tmp, name)
            p.write_text(text)
            self.artifact(p, artifact_path)

    def dict(self, data: Mapping, name: str, artifact_path: str | None = None) -> None:
        self.text(json.dumps(data, indent=1, default=str), name, artifact_path)

    def end(self, status: str = "FINISHED") -> None:
        if self.active:
            self._call("set_terminated", status=status)

    def __enter__(self) -> Tracker:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.end("FAILED" if exc_type else "FINISHED")


def _key(k: str) -> str:
    """MLflow metric keys allow alphanumerics, _ - . / and spaces."""
    return "".join(c if c.isalnum() or c in "_-./ " else "_" for c in k)


def _flatten(d: Mapping, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def log_model(tracker: Tracker, model, input_size: int, name: str = "model",
              registered_name: str | None = None) -> str | None:
    """Log a subnet as TorchScript (any batch size, no Python class needed to
    load) with a signature and input example; optionally register it.
    Returns the registered version, if any."""
    if not tracker.active:
        return None
    try:
        import mlflow
        import numpy as np
        import torch
        from mlflow.models import infer_signature

        model = model.cpu().eval()
        example = torch.randn(1, 3, input_size, input_size)
        with torch.no_grad():
            scripted = torch.jit.trace(model, example)
            out = model(example).numpy()
        mlflow.set_tracking_uri(tracker.tracking_uri)
        with mlflow.start_run(run_id=tracker.run_id):
            info = mlflow.pytorch.log_model(
                scripted, name=name, serialization_format="pickle",
                signature=infer_signature(example.numpy(), out),
                input_example=example.numpy().astype(np.float32),
                registered_model_name=registered_name)
        return str(info.registered_model_version) if registered_name else None
    except Exception as err:  # noqa: BLE001
        tracker._disable(f"log_model failed: {err}")
        return None


def find_parent_run(tracking_uri: str, experiment: str, kfp_run_id: str) -> str:
    """The parent run tagged with this KFP run id, or '' (also when unreachable)."""
    if not tracking_uri or not kfp_run_id or not _reachable(tracking_uri):
        return ""
    try:
        from mlflow import MlflowClient

        client = MlflowClient(tracking_uri)
        exp = client.get_experiment_by_name(experiment)
        if exp is None:
            return ""
        runs = client.search_runs([exp.experiment_id],
                                  filter_string=f"tags.`kfp.run_id` = '{kfp_run_id}'",
                                  max_results=10)
        parents = [r for r in runs if PARENT_TAG not in r.data.tags]
        return parents[0].info.run_id if parents else ""
    except Exception as err:  # noqa: BLE001
        log.warning("could not look up the parent run of %s: %s", kfp_run_id, err)
        return ""


def set_alias(tracking_uri: str, model_name: str, alias: str, version: str) -> bool:
    try:
        from mlflow import MlflowClient

        MlflowClient(tracking_uri).set_registered_model_alias(model_name, alias, version)
        return True
    except Exception as err:  # noqa: BLE001
        log.warning("could not set alias %s on %s v%s: %s", alias, model_name, version, err)
        return False


# ---- the parent run of a pipeline run -------------------------------------------------------
def start_parent_run(cfg, tracking_uri: str, kfp_run_id: str, kfp_run_name: str,
                     pipeline_version: str) -> str:
    """Open the parent MLflow run of a pipeline run; returns its id ('' untracked).
    What depends on the data (the space fingerprint) is tagged by prepare_data,
    from the manifest every step checks, so it is never derived twice."""
    from . import __version__
    from .config import to_dict

    tracker = Tracker(tracking_uri, cfg.tracking.experiment, kfp_run_name or "scarlet-nas",
                      tags={"kfp.run_id": kfp_run_id, "kfp.run_name": kfp_run_name,
                            "pipeline_version": pipeline_version or __version__,
                            "scarletnas_version": __version__, "git_sha": git_sha(),
                            "search_space": cfg.space.preset,
                            "stabilizer": cfg.supernet.stabilizer,
                            "stabilizer_init": cfg.supernet.stabilizer_init,
                            "sampling": cfg.supernet.sampling, "dataset": cfg.data.dataset})
    tracker.dict(to_dict(cfg), "config.json")
    return tracker.run_id or ""


def finish_parent_run(cfg, tracking_uri: str, kfp_run_id: str, state: str) -> str:
    """Close the parent run opened for ``kfp_run_id``; returns its id ('' if none)."""
    run_id = find_parent_run(tracking_uri, cfg.tracking.experiment, kfp_run_id)
    if run_id:
        Tracker(tracking_uri, "", "", run_id=run_id).end(
            "FINISHED" if state in ("SUCCEEDED", "") else "FAILED")
    return run_id
