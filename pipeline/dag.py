"""The SCARLET-NAS pipeline DAG.

start_run -> prepare_data -> train_supernet -> [ranking_check] and search
          -> ParallelFor(selected archs): retrain -> evaluate
          -> summarize (Collected evaluations)
all inside an ExitHandler that closes the MLflow parent run as FINISHED or
FAILED. ranking_check runs beside search (behind dsl.If), so a long ranking
check never delays the search.

Run-time knobs travel as one validated ``config`` parameter (JSON of
``PipelineConfig``); pod settings (GPUs, node selector, tolerations, secrets,
retries, the CPU steps' requests, how many retrains run at once) are applied at
compile time from the same config's ``resources``.

Every pod keeps its own service account's credentials: KFP's launcher, in the
step's container, talks to the API server with them. A step that starts a
TrainJob gets the launcher's token beside them (``LAUNCHER_TOKEN_DIR``), read
only by scarletnas.trainjob. prepare_data takes nothing that differs between
runs of one config, so KFP's cache can reuse its output.
"""

import json  # no "from __future__ import annotations": KFP reads real annotations

from kfp import dsl, kubernetes

from scarletnas import __version__, preflight
from scarletnas.config import PipelineConfig, to_dict
from scarletnas.nodes import MLFLOW_CLIENT_LABEL, MLFLOW_KEYS, S3_KEYS
from scarletnas.placement import ON_NODES, node_count
from scarletnas.trainjob import LAUNCHER_TOKEN_DIR

from .. import components
from . import DEFAULT_IMAGE, PIPELINE_NAME

S3_ENV = {k: k for k in S3_KEYS}
MLFLOW_ENV = {k: k for k in MLFLOW_KEYS}


def _pod_settings(task, res, gpu: bool, retry: bool = False, cache: bool = True,
                  launcher: bool = False):
    """Secrets as env, the compiling version, CPU and memory of the CPU steps, and for
    GPU steps /dev/shm, accelerators and placement (for a ``launcher`` of a TrainJob
    these reach its nodes, as the task's TaskConfig)."""
    # the label the MLflow NetworkPolicy lets in (manifests/base/networkpolicy.yaml)
    kubernetes.add_pod_label(task, MLFLOW_CLIENT_LABEL, "true")
    # each component checks the image's scarlet-nas against it before it starts
    task.set_env_variable(components.VERSION_ENV, __version__)
    if res.s3_secret:
        # optional: with IRSA the Secret may lack the keys (the web-identity token stands
        # in for them), and a missing key must not keep the pod from starting
        kubernetes.use_secret_as_env(task, res.s3_secret, S3_ENV, optional=True)
    if res.mlflow_secret:
        kubernetes.use_secret_as_env(task, res.mlflow_secret, MLFLOW_ENV)
    task.set_caching_options(cache)
    if retry and res.retries:
        task.set_retry(num_retries=res.retries, backoff_duration="60s", backoff_factor=2.0,
                       backoff_max_duration="3600s")
    if launcher and res.launcher_token_secret:  # beside the pod's own token, never over it
        kubernetes.use_secret_as_volume(task, res.launcher_token_secret,
                                        mount_path=LAUNCHER_TOKEN_DIR)
    if not gpu:  # requests equal to limits: Guaranteed QoS, within a profile's quota
        return (task.set_cpu_request(res.step_cpu).set_cpu_limit(res.step_cpu)
                .set_memory_request(res.step_memory).set_memory_limit(res.step_memory))
    if not launcher:  # a TrainJob's nodes get theirs from trainjob.build
        kubernetes.empty_dir_mount(task, volume_name="dshm", mount_path="/dev/shm",
                                   medium="Memory", size_limit=res.shm_size)
    task.set_cpu_limit(res.cpu_limit).set_memory_limit(res.memory_limit)
    if res.gpus:
        task.set_accelerator_type(res.gpu_type).set_accelerator_limit(res.gpus)
    if res.node_selector:
        key, value = res.node_selector.split("=")
        kubernetes.add_node_selector(task, label_key=key, label_value=value)
    if res.toleration:
        kv, effect = res.toleration.rsplit(":", 1)
        key, _, value = kv.partition("=")
        kubernetes.add_toleration(task, key=key, operator="Equal" if value else "Exists",
                                  value=value or None, effect=effect)
    return task


def build_pipeline(cfg: PipelineConfig, image: str = DEFAULT_IMAGE):
    """The pipeline function for ``cfg`` with every component on ``image``."""
    preflight.check(cfg)
    preflight.check_image(image)
    res = cfg.resources
    on_nodes = tuple(stage for stage in ON_NODES if node_count(res, stage) > 1)
    c = components.build(image, on_nodes)
    default_config = json.dumps(to_dict(cfg), sort_keys=True)

    @dsl.pipeline(name="retrain-and-summarize")
    def retrain_and_summarize(selected: list, warning: str, config: str, tracking_uri: str,
                              parent_run_id: str, checkpoint_root: str,
                              dataset: dsl.Input[dsl.Dataset]):
        """Fan out over the selected archs, then collect. (A nested pipeline: the
        loop iterates over a pipeline input, which every KFP backend handles.)"""
        common = {"config": config, "tracking_uri": tracking_uri, "parent_run_id": parent_run_id}
        with dsl.ParallelFor(selected, name="retrain-selected",
                             parallelism=res.retrain_parallelism) as arch:
            model = _pod_settings(
                c.retrain(**common, checkpoint_root=checkpoint_root,
                          kfp_run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER, image=image, arch=arch,
                          dataset=dataset),
                res, gpu=True, retry=True, cache=False, launcher="retrain" in on_nodes)
            evaluation = _pod_settings(
                c.evaluate(**common, dataset=dataset, model=model.outputs["model"]),
                res, gpu=False, cache=False)
        _pod_settings(c.summarize(**common, warning=warning, dataset=dataset,
                                  summaries=dsl.Collected(evaluation.outputs["summary"])),
                      res, gpu=False, cache=False)

    @dsl.pipeline(name=PIPELINE_NAME,
                  description="SCARLET-NAS: stabilized one-shot supernet, NSGA-II search, "
                              "retraining and evaluation of the chosen subnets.")
    def scarlet_nas(config: str = default_config, tracking_uri: str = cfg.tracking.uri,
                    checkpoint_root: str = cfg.checkpoint_root,
                    run_ranking: bool = cfg.ranking.enabled,
                    pipeline_version: str = __version__):
        start = c.start_run(config=config, tracking_uri=tracking_uri,
                            checkpoint_root=checkpoint_root, run_ranking=run_ranking,
                            kfp_run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
                            kfp_run_name=dsl.PIPELINE_JOB_NAME_PLACEHOLDER,
                            pipeline_version=pipeline_version)
        _pod_settings(start, res, gpu=False, cache=False)
        parent = start.output
        # an exit task may depend on no other task: it finds the parent run by the KFP run id
        finish = c.finish_run(config=config, tracking_uri=tracking_uri,
                              kfp_run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER)
        _pod_settings(finish, res, gpu=False, cache=False)
        common = {"config": config, "tracking_uri": tracking_uri, "parent_run_id": parent}
        resumable = {"checkpoint_root": checkpoint_root,
                     "kfp_run_id": dsl.PIPELINE_JOB_ID_PLACEHOLDER}
        with dsl.ExitHandler(finish, name="track-run"):
            # only inputs that every run of this config shares: KFP's cache can hit
            data = _pod_settings(c.prepare_data(config=config, checkpoint_root=checkpoint_root),
                                 res, gpu=False)
            supernet = _pod_settings(
                c.train_supernet(**common, **resumable, image=image,
                                 dataset=data.outputs["dataset"]),
                res, gpu=True, retry=True, cache=False, launcher="train_supernet" in on_nodes)
            with dsl.If(run_ranking == True, name="ranking-enabled"):  # noqa: E712 (KFP)
                _pod_settings(c.ranking_check(**common, dataset=data.outputs["dataset"],
                                              supernet=supernet.outputs["supernet"]),
                              res, gpu=True, cache=False)
            found = _pod_settings(
                c.search(**common, **resumable, image=image, dataset=data.outputs["dataset"],
                         supernet=supernet.outputs["supernet"]),
                res, gpu=True, retry=True, cache=False, launcher="search" in on_nodes)
            retrain_and_summarize(selected=found.outputs["selected"],
                                  warning=found.outputs["warning"], **common,
                                  checkpoint_root=checkpoint_root,
                                  dataset=data.outputs["dataset"])

    return scarlet_nas


def compile_pipeline(cfg: PipelineConfig, path: str, image: str = DEFAULT_IMAGE) -> str:
    import tempfile
    from pathlib import Path

    from kfp import compiler

    from scarletnas.storage import write_bytes

    with tempfile.TemporaryDirectory() as tmp:  # then written atomically: never half a package
        package = Path(tmp, "pipeline.yaml")
        compiler.Compiler().compile(build_pipeline(cfg, image), package_path=str(package))
        write_bytes(path, package.read_bytes())
    return path
