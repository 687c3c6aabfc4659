"""MLflow tracking that never stops the work it records.

One parent run per pipeline run; each component opens a child run linked to
it by the parent's run id (components run in separate pods, so MLflow's
active-run nesting cannot link them). Every call goes through ``Tracker``:
if the tracking server is unreachable at the start or fails mid-run, a
warning is logged once and training or search carry on untracked.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import subprocess
import tempfile
import time
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


EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}  # UI: training runs
UI_MODE = "machine_learning"  # the MLflow UI's ?workflowType= for model training (not GenAI)


def ensure_experiment(client, name: str, artifact_location: str | None = None) -> str:
    """The experiment's id, created if needed, and marked as one of model training
    runs so the MLflow UI opens on its runs table (not on the GenAI views)."""
    exp = client.get_experiment_by_name(name)
    if exp is None:
        return client.create_experiment(name, artifact_location=artifact_location,
                                        tags=EXPERIMENT_KIND)
    for key, value in EXPERIMENT_KIND.items():
        if exp.tags.get(key) != value:
            client.set_experiment_tag(exp.experiment_id, key, value)
    return exp.experiment_id


def kfp_task_run() -> tuple[str, str]:
    """(tracking URI, run id) of the MLflow run KFP's MLflow integration made for
    this task, nested under the pipeline run's root run; ('', '') without it."""
    run_id = os.environ.get("MLFLOW_RUN_ID", "")
    return (os.environ.get("MLFLOW_TRACKING_URI", "") if run_id else ""), run_id


class Tracker:
    """A run on an MLflow server, or a quiet no-op when there is none."""

    def __init__(self, tracking_uri: str, experiment: str, run_name: str, *,
                 parent_run_id: str = "", run_id: str = "", tags: Mapping[str, str] | None = None):
        self.run_id: str | None = None
        self.model_id: str | None = None  # the LoggedModel ``log_model`` made in this run
        self.client = None
        self.tracking_uri = tracking_uri
        self.parent_run_id = parent_run_id
        self.run_name = run_name
        self.started = time.perf_counter()
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
            exp_id = ensure_experiment(self.client, experiment)
            all_tags = {k: str(v) for k, v in (tags or {}).items() if v not in (None, "")}
            if parent_run_id:
                all_tags[PARENT_TAG] = parent_run_id
            self.run_id = self.client.create_run(exp_id, run_name=run_name,
                                                 tags=all_tags).info.run_id
        except Exception as err:  # noqa: BLE001 - tracking must never stop the work
            self._disable(f"cannot open an MLflow run: {err}")

    @classmethod
    def for_task(cls, tracking_uri: str, experiment: str, run_name: str,
                 parent_run_id: str) -> Tracker:
        """A component's run: the one KFP's MLflow integration opened for this task
        when there is one (already nested under the root run), else a new child."""
        kfp_uri, kfp_run = kfp_task_run()
        if kfp_run and (kfp_uri or tracking_uri):
            tracker = cls(tracking_uri or kfp_uri, experiment, run_name, run_id=kfp_run,
                          parent_run_id=parent_run_id)
            tracker.tags({"mlflow.runName": run_name})
            return tracker
        return cls(tracking_uri, experiment, run_name, parent_run_id=parent_run_id)

    def handle(self) -> tuple[str, str, str, str]:
        """What another process needs to log into this run (``for_rank``)."""
        return (self.tracking_uri if self.active else "", self.run_name, self.parent_run_id,
                self.run_id or "")

    @classmethod
    def for_rank(cls, handle: tuple[str, str, str, str], rank: int) -> Tracker:
        """This run in a training process: rank 0 logs into it, the others are no-ops."""
        uri, name, parent_run_id, run_id = handle
        if rank or not uri:
            return cls("", "", name)
        return cls(uri, "", name, parent_run_id=parent_run_id, run_id=run_id)

    @property
    def active(self) -> bool:
        return self.run_id is not None and self.client is not None

    @functools.cached_property
    def parent(self) -> Tracker:
        """The pipeline's parent run, where runs are compared; a no-op without one.
        Its failures are its own: they never disable this run's tracking."""
        view = Tracker("", "", f"{self.run_name} (parent)")
        if self.active and self.parent_run_id:
            view.client, view.run_id = self.client, self.parent_run_id
            view.tracking_uri = self.tracking_uri
        return view

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

    def run(self):
        """This run as MLflow holds it (params, metrics, tags), or None when tracking
        is off or the server cannot answer."""
        return self._call("get_run")

    # ---- logging ---------------------------------------------------------------------
    def params(self, params: Mapping[str, object], prefix: str = "") -> None:
        from mlflow.entities import Param

        flat = _flatten(params, prefix)
        items = [Param(k, str(v)[:6000]) for k, v in flat.items()]
        for i in range(0, len(items), 100):
            self._call("log_batch", params=items[i:i + 100])

    def metrics(self, metrics: Mapping[str, float], step: int = 0,
                model_id: str | None = None) -> None:
        """Log metrics; with ``model_id`` they are also the metrics of that LoggedModel
        (the model's page in the MLflow UI lists them)."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(_key(k), float(v), now, step, model_id=model_id)
                 for k, v in metrics.items() if isinstance(v, (int, float))]
        if items:
            self._call("log_batch", metrics=items)

    def tags(self, tags: Mapping[str, object]) -> None:
        for k, v in tags.items():
            self._call("set_tag", k, str(v))

    def dataset(self, manifest: Mapping, context: str = "training") -> None:
        """The prepared data as an MLflow dataset input: name, source, content
        digest, and classes, input size and split sizes as its profile."""
        from mlflow.entities import Dataset, DatasetInput, InputTag

        profile = {k: manifest[k] for k in ("num_classes", "input_size", "train", "val", "test")}
        data = Dataset(name=manifest["dataset"], digest=manifest["digest"],
                       source_type="s3" if manifest["source"].startswith("s3://") else "local",
                       source=json.dumps({"uri": manifest["source"]}),
                       profile=json.dumps(profile))
        self._call("log_inputs", datasets=[
            DatasetInput(data, [InputTag("mlflow.data.context", context)])])

    def table(self, rows: list[Mapping], name: str) -> None:
        """Rows as a table artifact the MLflow UI renders (its artifact view and the
        evaluation tables), not a file users must download."""
        if rows:
            columns = list(dict.fromkeys(k for r in rows for k in r))
            self._call("log_table", {c: [r.get(c) for r in rows] for c in columns}, name)

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
        self.started = time.perf_counter()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        """End the run; a finished stage's wall time goes to the parent run too."""
        minutes = (time.perf_counter() - self.started) / 60
        self.metrics({"minutes": minutes})
        if exc_type is None:
            self.parent.metrics({f"minutes/{self.run_name.split()[0]}": minutes})
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


@contextlib.contextmanager
def _exported_as(model, program):
    """While ``model`` is logged, its torch.export is ``program``: the one export made
    for all its forms, not a second one. (mlflow.pytorch.log_model takes a module and
    exports it itself; it accepts no ExportedProgram.)"""
    import torch

    if program is None:
        yield
        return
    original = torch.export.export

    def export(module, *args, **kwargs):
        return program if module is model else original(module, *args, **kwargs)

    torch.export.export = export
    try:
        yield
    finally:
        torch.export.export = original


def model_requirements() -> list[str]:
    """What loading a logged pt2 model needs, pinned to this environment. Given, so
    MLflow does not infer them (a subprocess that loads the model again, ~9 s on
    two cores); the same list it inferred, less what mlflow itself brings."""
    import mlflow
    import numpy as np

    return [f"mlflow=={mlflow.__version__}", *mlflow.pytorch.get_default_pip_requirements(),
            f"numpy=={np.__version__}"]


def log_model(tracker: Tracker, model, input_size: int, name: str = "model",
              registered_name: str | None = None, params: Mapping | None = None,
              program=None, metrics: Mapping[str, float] | None = None) -> str | None:
    """Log a subnet as a torch.export program (pt2: any batch size, no Python class
    and no unpickling to load) with a tensor signature and input example;
    optionally register it. Returns the registered version, if any. ``program``:
    the model's torch.export (``export.export``), logged as it is instead of
    exporting the model again. ``metrics``: the figures the model is judged by,
    logged into the run with the LoggedModel's id (``tracker.model_id``), so the
    model's own page lists them too; into the run alone if the model failed."""
    if not tracker.active:
        return None
    try:
        import mlflow
        import numpy as np
        import torch
        from mlflow.models.signature import ModelSignature
        from mlflow.types.schema import Schema, TensorSpec

        model = model.cpu().eval()
        example = torch.randn(2, 3, input_size, input_size)  # batch > 1: exported as dynamic
        with torch.no_grad():
            classes = model(example).shape[1]
        f32 = np.dtype(np.float32)
        signature = ModelSignature(
            inputs=Schema([TensorSpec(f32, (-1, 3, input_size, input_size), "image")]),
            outputs=Schema([TensorSpec(f32, (-1, classes), "logits")]))
        mlflow.set_tracking_uri(tracker.tracking_uri)
        with mlflow.start_run(run_id=tracker.run_id), _exported_as(model, program):
            info = mlflow.pytorch.log_model(
                model, name=name, serialization_format="pt2", signature=signature,
                input_example=example.numpy(), registered_model_name=registered_name,
                params=dict(params or {}), pip_requirements=model_requirements(),
                # its check of the input example cannot run on a tensor model (the
                # PyTorch flavor takes no list input): it would only warn, after a load
                validate_serving_input=False)
    except Exception as err:  # noqa: BLE001
        tracker.metrics(metrics or {})
        tracker._disable(f"log_model failed: {err}")
        return None
    tracker.model_id = info.model_id
    tracker.metrics(metrics or {}, model_id=info.model_id)
    return str(info.registered_model_version) if registered_name else None


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
COMPARED_SECTIONS = ("data", "space", "supernet", "eval", "search", "ranking", "retrain")
KFP_OWNED_TAG = "scarletnas.parent_owner"  # "kfp": KFP's MLflow integration opened and closes it


def comparison_params(cfg) -> dict:
    """The settings two pipeline runs are compared by, flat (``supernet.optim.lr``):
    every section that changes results; not where things run or are tracked. The
    data as used (``DataConfig.as_used``: the input size and the flips resolved)."""
    from .config import to_dict

    sections = {k: v for k, v in to_dict(cfg).items() if k in COMPARED_SECTIONS}
    return _flatten({**sections, "data": cfg.data.as_used()})


def start_parent_run(cfg, tracking_uri: str, kfp_run_id: str, kfp_run_name: str,
                     pipeline_version: str) -> str:
    """The parent MLflow run of a pipeline run, with the params runs are compared by;
    returns its id ('' untracked). Under KFP's MLflow integration it is the root run
    KFP opened (found from this task's run), not a second one. What depends on the
    data (the space fingerprint, the dataset) is recorded by train_supernet, the step
    after prepare_data (stages.record_prepared), from the manifest every step
    checks, so it is never derived twice."""
    from . import __version__
    from .config import to_dict

    tags = {"kfp.run_id": kfp_run_id, "kfp.run_name": kfp_run_name,
            "pipeline_version": pipeline_version or __version__,
            "scarletnas_version": __version__, "git_sha": git_sha(),
            "search_space": cfg.space.preset, "stabilizer": cfg.supernet.stabilizer,
            "stabilizer_init": cfg.supernet.stabilizer_init,
            "sampling": cfg.supernet.sampling, "dataset": cfg.data.dataset}
    kfp_uri, task_run = kfp_task_run()
    tracker = None
    if task_run and (tracking_uri or kfp_uri):
        task = Tracker(tracking_uri or kfp_uri, "", "", run_id=task_run).run()
        root = task.data.tags.get(PARENT_TAG) if task else None
        if root:
            tracker = Tracker(tracking_uri or kfp_uri, "", "", run_id=root)
            tags[KFP_OWNED_TAG] = "kfp"
            tracker.tags({k: v for k, v in tags.items() if v not in (None, "")})
    if tracker is None:
        tracker = Tracker(tracking_uri, cfg.tracking.experiment, kfp_run_name or "scarlet-nas",
                          tags=tags)
    tracker.params({**comparison_params(cfg), "pipeline_version": tags["pipeline_version"],
                    "git_sha": tags["git_sha"] or "unknown"})
    tracker.dict(to_dict(cfg), "config.json")
    return tracker.run_id or ""


def finish_parent_run(cfg, tracking_uri: str, kfp_run_id: str, state: str) -> str:
    """Close the parent run opened for ``kfp_run_id`` (KFP closes the ones it opened);
    returns its id ('' if none)."""
    run_id = find_parent_run(tracking_uri, cfg.tracking.experiment, kfp_run_id)
    if run_id:
        tracker = Tracker(tracking_uri, "", "", run_id=run_id)
        run = tracker.run()
        if run and run.data.tags.get(KFP_OWNED_TAG):
            return run_id
        tracker.end("FINISHED" if state in ("SUCCEEDED", "") else "FAILED")
    return run_id
