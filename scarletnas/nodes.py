"""A training stage on several nodes, as a Kubeflow Trainer TrainJob.

The launching KFP step writes a work order (the stage, its config, the
prepared-data manifest, its keyword arguments, the MLflow run to log into) to S3
and starts the TrainJob (``trainjob.py``). On every node torchrun starts
``python -m scarletnas.nodes ORDER`` once per process; each joins the job's
process group and runs the stage's registered work (``placement.py``), the same
function a single pod runs, rank 0 logging into the step's MLflow run and
writing the result beside the order.
Checkpoints and outputs go to S3, so a retried step resumes where the
TrainJob it replaces stopped.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from . import layout, storage, trainjob
from .config import ConfigError, PipelineConfig, to_dict
from .placement import ON_NODES, node_count, on_rank
from .tracking import Tracker

S3_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL")
MLFLOW_KEYS = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")
# the label the MLflow NetworkPolicy lets in (manifests/base/networkpolicy.yaml)
MLFLOW_CLIENT_LABEL = "scarlet-nas/mlflow-client"
TERMINATION_LOG = "/dev/termination-log"  # what Kubernetes reports as the pod's failure

log = logging.getLogger("scarletnas")


def _label(value: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "-", value)[:63].strip("-_.") or "none"


@dataclass
class Nodes:
    """Where a stage runs when it runs as a TrainJob."""

    stage: str  # one of placement.ON_NODES
    count: int
    name: str  # the TrainJob's
    state: str  # s3:// folder of this step: the order and the result
    image: str
    placement: trainjob.Placement = field(default_factory=trainjob.Placement)
    labels: dict[str, str] = field(default_factory=dict)

    @classmethod
    def for_step(cls, cfg: PipelineConfig, stage: str, run_id: str, state: str, image: str,
                 task_config=None, task: str = "") -> Nodes | None:
        """The TrainJob of ``stage`` in KFP run ``run_id`` (named after ``task``, by
        default the stage), or None when the stage runs in its own pod; ``task_config``
        is the task's ``dsl.TaskConfig`` (resources, env, placement for the nodes)."""
        count = node_count(cfg.resources, stage)
        if count == 1:
            return None
        task = task or stage.replace("_", "-")
        if not storage.is_s3(state):
            raise ConfigError(f"{task} on {count} nodes needs an s3:// checkpoint_root (the "
                              f"nodes share nothing else), not {state!r}")
        placement = trainjob.Placement.of_task(task_config)
        labels = {MLFLOW_CLIENT_LABEL: "true", "scarlet-nas/kfp-run-id": _label(run_id),
                  "scarlet-nas/step": _label(task)}
        return cls(stage, count, trainjob.job_name(run_id, task),
                   storage.join(state, layout.TRAINJOB), image, placement, labels)

    def run(self, cfg: PipelineConfig, kwargs: dict, tracker: Tracker, device: str) -> dict:
        """The stage's registered work with ``kwargs`` on every process of the
        TrainJob (``kwargs["dataset"]``, a local manifest, travels in the order);
        rank 0's result."""
        from .manifest import read

        order_uri = storage.join(self.state, layout.ORDER)
        result_uri = storage.join(self.state, layout.RESULT)
        if storage.exists(result_uri):  # an earlier attempt's
            storage.delete(result_uri)
        token = uuid.uuid4().hex
        storage.write_bytes(order_uri, json.dumps({
            "stage": self.stage, "config": to_dict(cfg), "manifest": read(kwargs["dataset"]),
            "kwargs": kwargs, "tracking": list(tracker.handle()), "device": device,
            "result": result_uri, "token": token}).encode())
        res = cfg.resources
        env = (trainjob.secret_env(res.s3_secret, S3_KEYS) if res.s3_secret else []) + \
            (trainjob.secret_env(res.mlflow_secret, MLFLOW_KEYS) if res.mlflow_secret else [])
        body = trainjob.build(
            self.name, image=self.image, command=["torchrun", "-m", "scarletnas.nodes",
                                                  order_uri],
            nodes=self.count, procs_per_node=res.processes or max(1, res.gpus),
            runtime=res.trainer_runtime, placement=self.placement, env=env,
            labels=self.labels, shm_size=res.shm_size, service_account=res.service_account,
            deadline=res.trainjob_deadline, queue=res.queue)
        trainjob.run(trainjob.Cluster.connect(), body, pending_timeout=res.pending_timeout,
                     echo=lambda line: print(line, flush=True))
        if not storage.exists(result_uri):
            raise trainjob.TrainJobError(f"TrainJob {self.name} completed without writing "
                                         f"{result_uri}")
        result = json.loads(storage.read_bytes(result_uri))
        if result.get("token") != token:
            raise trainjob.TrainJobError(f"{result_uri} is from another attempt of this step")
        return result["out"]


def _termination_message(err: BaseException) -> None:
    """The error, in one line, where Kubernetes reads a container's failure
    (the first failing process of the node writes it)."""
    path = Path(os.environ.get("SCARLETNAS_TERMINATION_LOG", TERMINATION_LOG))
    first = (str(err).strip().splitlines() or [""])[0]
    try:
        if path.exists() and path.stat().st_size == 0:
            path.write_text(f"{type(err).__name__}: {first}"[:4000])
    except OSError:
        pass


def run_order(order_uri: str) -> None:
    """One process of one node: join the job's group, run the ordered stage."""
    from . import launch
    from .config import pipeline_config_from_json
    from .launch import resolve_device, world
    from .manifest import write

    order = json.loads(storage.read_bytes(order_uri))
    if order.get("stage") not in ON_NODES:
        raise ValueError(f"{order_uri}: unknown stage {order.get('stage')!r}")
    cfg = pipeline_config_from_json(json.dumps(order["config"]))
    cuda = resolve_device(order["device"]).type == "cuda"
    with tempfile.TemporaryDirectory(prefix="scarletnas-node-") as tmp, \
            launch.process_group(cuda):
        dataset = str(Path(tmp, layout.DATASET))
        write(dataset, order["manifest"])
        rank = world()[0]
        out = on_rank(order["stage"], cfg, {**order["kwargs"], "dataset": dataset},
                      tuple(order["tracking"]))
        if rank == 0:
            storage.write_bytes(order["result"], json.dumps(
                {"token": order["token"], "out": out}).encode())


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        raise SystemExit("usage: torchrun -m scarletnas.nodes s3://bucket/.../order.json")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        run_order(argv[0])
    except Exception as err:
        _termination_message(err)
        raise


if __name__ == "__main__":
    main()
