"""Several nodes: train_supernet and retrain as a Kubeflow Trainer TrainJob.

No cluster is reachable here. The TrainJob the step sends is checked against
the Trainer API's own models; its life (create, wait, node 0's logs, success,
failure, pending timeout, stop, retry) runs against a local server speaking
the Kubernetes API (tests/k8s_api_server.py) whose "nodes" are local
torchrun processes on gloo, fed the env the TrainJob names (Secrets included)
and the PET_* variables the torch-distributed runtime sets. Every API call
made is checked against the Role in manifests/base/trainjob-launcher.yaml.
"""

import dataclasses
import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest
import yaml
from kfp import dsl

from scarletnas import manifest, stages, storage, trainjob
from scarletnas.checkpoint import load_supernet, load_weights
from scarletnas.config import ConfigError, PipelineConfig, ResourcesConfig, load_pipeline_config
from scarletnas.devstack import BUCKET
from scarletnas.nodes import Nodes
from scarletnas.preflight import check, deterministic
from scarletnas.tracking import Tracker

from .k8s_api_server import UNSCHEDULABLE, FakeCluster
from .short_runs import NO_STEP_FLOOR

ROOT = Path(__file__).resolve().parents[1]
TOKEN_DIR = trainjob.LAUNCHER_TOKEN_DIR


def _granted() -> set[tuple[str, str]]:
    """(verb, resource) the launcher's Role and ClusterRole grant."""
    docs = yaml.safe_load_all((ROOT / "manifests/base/trainjob-launcher.yaml").read_text())
    return {(verb, res) for d in docs if d["kind"] in ("Role", "ClusterRole")
            for rule in d["rules"] for res in rule["resources"] for verb in rule["verbs"]}


def _task_config(**extra) -> dsl.TaskConfig:
    """What KFP hands the step: the task's settings, its API token mount included."""
    return dsl.TaskConfig(
        resources={"limits": {"cpu": "8", "memory": "32G", "nvidia.com/gpu": "8"}},
        node_selector={"nvidia.com/gpu.product": "NVIDIA-H100"},
        tolerations=[{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}],
        volumes=[{"name": "token", "secret": {"secretName": "launcher-token"}}],
        volume_mounts=[{"name": "token", "mountPath": TOKEN_DIR}], **extra)


def test_the_trainjob_is_valid_for_the_trainer_api_and_carries_the_task_settings():
    cfg = PipelineConfig(checkpoint_root=f"s3://{BUCKET}/ck",
                         resources=ResourcesConfig(nodes=4, gpus=8))
    nodes = Nodes.for_step(cfg, "train_supernet", "6f1c2d1e-aaaa-bbbb-cccc-1234567890ab",
                           f"s3://{BUCKET}/ck/run/supernet", "registry.example/snas:1",
                           _task_config(env=[{"name": "NCCL_DEBUG", "value": "INFO"}]))
    assert nodes.count == 4  # resources.nodes; retrain_nodes is 1: retraining stays in its pod
    assert Nodes.for_step(cfg, "retrain", "run", f"s3://{BUCKET}/ck", "i") is None
    assert nodes.name == trainjob.job_name("6f1c2d1e-aaaa-bbbb-cccc-1234567890ab",
                                           "train-supernet")
    assert nodes.name.startswith("train-supernet-6f1c2d1e-") and len(nodes.name) <= 40
    assert trainjob.job_name("run-1", "retrain-a") != trainjob.job_name("run-1", "retrain-b")
    body = trainjob.build(nodes.name, image=nodes.image, command=["torchrun"], nodes=4,
                          procs_per_node=8, runtime="torch-distributed",
                          placement=nodes.placement,
                          env=trainjob.secret_env("scarlet-nas-s3", ("AWS_ACCESS_KEY_ID",)),
                          labels=nodes.labels, shm_size="4Gi",
                          service_account="scarlet-nas-runner")
    trainer = body["spec"]["trainer"]
    assert trainer["numNodes"] == 4 and trainer["numProcPerNode"] == 8
    assert trainer["resourcesPerNode"]["limits"]["nvidia.com/gpu"] == "8"
    assert [e["name"] for e in trainer["env"]] == ["NCCL_DEBUG", "AWS_ACCESS_KEY_ID"]
    patch = body["spec"]["runtimePatches"][0]["trainingRuntimeSpec"]["template"]["spec"]
    pod = patch["replicatedJobs"][0]["template"]["spec"]["template"]
    assert pod["metadata"]["labels"]["scarlet-nas/mlflow-client"] == "true"
    assert pod["spec"]["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-H100"}
    assert pod["spec"]["serviceAccountName"] == "scarlet-nas-runner"  # S3 by IRSA on AWS
    assert pod["spec"]["tolerations"][0]["key"] == "gpu"
    # the launching step's API token stays with it; the nodes get a memory /dev/shm
    assert [v["name"] for v in pod["spec"]["volumes"]] == ["dshm"]
    assert pod["spec"]["containers"] == [{
        "name": "node", "securityContext": trainjob.CONTAINER_SECURITY,
        "volumeMounts": [{"name": "dshm", "mountPath": "/dev/shm"}]}]
    trainjob.validate(body)  # and what the Trainer API would not read is refused:
    with pytest.raises(ValueError, match="spec.podSpecOverrides"):
        trainjob.validate({**body, "spec": {**body["spec"], "podSpecOverrides": [{}]}})
    with pytest.raises(ValueError, match="numNodes"):
        trainjob.validate({**body, "spec": {**body["spec"],
                                            "trainer": {**trainer, "numNodes": "4"}}})


def test_nodes_need_shared_storage():
    with pytest.raises(ConfigError, match="s3://bucket/prefix"):
        check(PipelineConfig(resources=ResourcesConfig(nodes=2)))
    cifar = ["resources.retrain_nodes=2", "data.dataset=cifar10", "data.source=/data/cifar",
             "checkpoint_root=s3://b/c"]
    check(load_pipeline_config(None, cifar))  # only prepare_data reads the source; the nodes
    with pytest.raises(ConfigError, match="the nodes cannot read"):  # read the shards in S3
        check(load_pipeline_config(None, [*cifar, "data.shard_root=/data/shards"]))
    with pytest.raises(ConfigError, match="resources.nodes=0"):
        ResourcesConfig(nodes=0)


@pytest.fixture
def cluster_env(stack, tmp_path, monkeypatch):
    """S3 and MLflow for the launcher, a fake cluster whose nodes get the same
    S3 through the Secret their TrainJob names."""
    for k, v in stack.env().items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    storage._client.cache_clear()

    def start(mode="run", **kw):
        s3 = {k: v for k, v in stack.env().items() if k.startswith("AWS_")}
        fake = FakeCluster(tmp_path, mode, secrets={"scarlet-nas-s3": s3}, **kw).__enter__()
        monkeypatch.setenv("KUBECONFIG", str(fake.kubeconfig(tmp_path / "kubeconfig")))
        started.append(fake)
        return fake

    started: list[FakeCluster] = []
    yield start
    for fake in started:
        fake.__exit__(None, None, None)
        assert set(fake.calls()) <= _granted(), "an API call the launcher's Role lacks"
    storage._client.cache_clear()


def _cfg(run: str, *extra) -> PipelineConfig:
    return load_pipeline_config(None, [
        "supernet.optim.epochs=3", "supernet.optim.warmup_epochs=0.5", "supernet.device=cpu",
        "supernet.check_paths=4", "supernet.optim.batch_size=64", "retrain.optim.epochs=8",
        *NO_STEP_FLOOR,
        "retrain.optim.warmup_epochs=0.5", "retrain.device=cpu", "retrain.optim.batch_size=64",
        "resources.nodes=2", "resources.retrain_nodes=2", "resources.gpus=0",
        "resources.processes=1", "resources.mlflow_secret=", "tracking.experiment=trainjob",
        "search.generations=2", "search.population=8",
        f"checkpoint_root=s3://{BUCKET}/{run}", *extra])


def _dataset(cfg, tmp_path) -> str:
    _, _, described = manifest.prepare(cfg)
    path = str(tmp_path / "dataset.json")
    manifest.write(path, described)
    return path


def _nodes(cfg, run: str, stage: str) -> Nodes:
    return Nodes.for_step(cfg, stage, run, storage.join(cfg.checkpoint_root, run, stage),
                          "scarlet-nas:test")


def _terminate_when(ready, timeout: float = 300.0) -> None:
    """SIGTERM this process (as KFP terminating a run does to the step) once ready()."""
    deadline = time.monotonic() + timeout
    while not ready() and time.monotonic() < deadline:
        time.sleep(0.2)
    os.kill(os.getpid(), signal.SIGTERM)


@pytest.mark.slow
def test_two_nodes_train_search_and_retrain(cluster_env, stack, tmp_path, capfd):
    """Two nodes (torchrun, gloo) train, rank 0 logging into the step's MLflow run
    and writing the outputs the step hands on; node 0's log is in the step's.
    Then the search and a subnet's retraining on two nodes."""
    fake = cluster_env()
    cfg = _cfg("r2", "supernet.checkpoint_every=8")
    dataset = _dataset(cfg, tmp_path)
    ckpt = f"s3://{BUCKET}/r2/supernet/checkpoint.pt"
    # the run is terminated once the nodes wrote a checkpoint: the step deletes its
    # TrainJob; the retry replaces it and resumes from the S3 checkpoint
    watcher = threading.Thread(target=_terminate_when, args=(lambda: storage.exists(ckpt),))
    watcher.start()
    with pytest.raises(trainjob.TrainJobError, match="stopped"):
        stages.train_supernet(cfg, dataset, str(tmp_path / "supernet.pt"), ckpt,
                              Tracker("", "", "r"), _nodes(cfg, "r2", "train_supernet"))
    watcher.join()
    assert not fake.jobs and not (tmp_path / "supernet.pt").exists()
    tracker = Tracker.for_task(stack.tracking_uri, "trainjob", "train_supernet", None)
    with tracker:
        out = stages.train_supernet(cfg, dataset, str(tmp_path / "supernet.pt"), ckpt, tracker,
                                    _nodes(cfg, "r2", "train_supernet"))
    assert out["resumed_from_step"] in (8, 16) and out["steps"] == 24
    assert out["sampled_top1_mean"] > 0.2  # chance: 0.1
    supernet = load_supernet(str(tmp_path / "supernet.pt"))
    assert supernet.path_check["top1_mean"] == out["sampled_top1_mean"]
    run = tracker.client.get_run(tracker.run_id)  # rank 0 logged into the step's run
    assert run.data.metrics["supernet/sampled_top1_mean"] == pytest.approx(
        out["sampled_top1_mean"])
    job = next(r["body"] for r in fake.requests if r["verb"] == "create")
    assert job["spec"]["trainer"]["numNodes"] == 2
    assert job["spec"]["trainer"]["command"][:3] == ["torchrun", "-m", "scarletnas.nodes"]
    assert [v for v, r in fake.calls() if r == "trainjobs" and v in ("create", "delete")] == [
        "create", "delete", "create"]
    logged = capfd.readouterr().out
    assert "supernet:" in logged.partition("[node 0]")[2]  # its progress, in the step's log

    # the search on both nodes, each scoring half of every generation, finds what one
    # process finds
    found = stages.search(cfg, dataset, str(tmp_path / "supernet.pt"), str(tmp_path / "front"),
                          f"s3://{BUCKET}/r2/search/state.json", Tracker("", "", "s"),
                          _nodes(cfg, "r2", "search"))
    # (searched again, not reused from the nodes' result: reuse=false)
    alone = stages.search(dataclasses.replace(cfg, reuse=False), dataset,
                          str(tmp_path / "supernet.pt"), str(tmp_path / "alone"), "",
                          Tracker("", "", "s"))
    assert found["selected"] == alone["selected"] and found["selected"]
    assert found["metrics"] == pytest.approx(alone["metrics"])
    assert Path(found["files"]["pareto.html"]).read_text() == \
        Path(alone["files"]["pareto.html"]).read_text()

    arch = "e3k3-e6k3se-skip-e3k5-e3k3-e6k5-e3k7se-skip"  # a subnet of the default space
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    ckpt = f"s3://{BUCKET}/r2/retrain/a"
    result = stages.retrain(cfg, dataset, arch, str(model_dir), ckpt, Tracker("", "", "r"),
                            Nodes.for_step(cfg, "retrain", "r2", ckpt, "scarlet-nas:test",
                                           task="retrain-a"))
    assert result["best_val_top1"] > 0.8
    assert load_weights(str(model_dir / "best.pt"))["meta"]["arch"] == arch


@pytest.mark.slow
def test_a_node_that_fails_fails_the_step_with_its_error(cluster_env, tmp_path):
    cluster_env()
    cfg = _cfg("r3")
    dataset = _dataset(cfg, tmp_path)
    ckpt = f"s3://{BUCKET}/r3/retrain/x"
    with pytest.raises(trainjob.TrainJobError, match=r"node \d: ArchError: arch has 3") as err:
        stages.retrain(cfg, dataset, "not-an-arch", str(tmp_path), ckpt, Tracker("", "", "r"),
                       Nodes.for_step(cfg, "retrain", "r3", ckpt, "scarlet-nas:test",
                                      task="retrain-x"))
    assert deterministic(err.value)  # bad input on a node: KFP's retries will not redo it


def _launch(cfg, fake, name="job-a", pod="", **kw):
    body = trainjob.build(name, image="i", command=["torchrun"], nodes=2, procs_per_node=1,
                          runtime="torch-distributed", placement=trainjob.Placement(), env=[],
                          labels={}, shm_size="1Gi")
    cluster = trainjob.Cluster.connect()
    cluster.pod = pod  # in a pod, its HOSTNAME
    return trainjob.run(cluster, body, poll=0.2, echo=lambda line: None,
                        **{"pending_timeout": 60, **kw})


def test_a_trainjob_without_nodes_fails_after_the_pending_timeout(cluster_env):
    fake = cluster_env("pending")
    with pytest.raises(trainjob.TrainJobError, match="0 of 2 started.*Insufficient nvidia") as e:
        _launch(None, fake, pod="launcher-pod", pending_timeout=1)
    assert UNSCHEDULABLE in str(e.value) and "resources.pending_timeout" in str(e.value)
    assert ("delete", "trainjobs") in fake.calls() and not fake.jobs
    # owned by the launching pod: Kubernetes deletes it with the pod, however that ends
    created = next(r["body"] for r in fake.requests if r["verb"] == "create")
    assert created["metadata"]["ownerReferences"] == [
        {"apiVersion": "v1", "kind": "Pod", "name": "launcher-pod", "uid": "0f3c-launcher-uid",
         "controller": False}]


def test_a_stopped_step_deletes_its_trainjob(cluster_env):
    fake = cluster_env("hold")
    before = signal.getsignal(signal.SIGTERM)
    timer = threading.Timer(1.5, os.kill, (os.getpid(), signal.SIGTERM))
    timer.start()
    with pytest.raises(trainjob.TrainJobError, match="stopped"):
        _launch(None, fake)
    assert not fake.jobs and all(n.code is not None for ns in fake.nodes.values() for n in ns)
    assert signal.getsignal(signal.SIGTERM) is before  # the handler is put back


def test_a_retried_step_replaces_the_trainjob_of_the_earlier_attempt(cluster_env):
    fake = cluster_env("hold")
    threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGTERM)).start()
    with pytest.raises(trainjob.TrainJobError):
        _launch(None, fake)
    fake.mode = "pending"
    fake.jobs["job-a"] = {"metadata": {"name": "job-a"}, "spec": {}}  # left behind
    with pytest.raises(trainjob.TrainJobError, match="waits for nodes"):
        _launch(None, fake, pending_timeout=0.5)
    verbs = [v for v, r in fake.calls() if r == "trainjobs" and v in ("create", "delete")]
    assert verbs == ["create", "delete", "delete", "create", "delete"]


def test_missing_runtime_and_missing_permissions_are_named(cluster_env):
    fake = cluster_env(runtimes=())
    with pytest.raises(trainjob.TrainJobError, match="ClusterTrainingRuntime 'torch-distributed'"
                       ) as err:
        _launch(None, fake)
    assert deterministic(err.value) and not fake.jobs
    fake = cluster_env(forbid=(("create", "trainjobs"),))
    with pytest.raises(trainjob.TrainJobError, match="scarlet-nas-runner Role|trainjob-launcher"):
        _launch(None, fake)


def test_compiled_pipeline_passes_the_gpu_settings_to_the_trainjob(tmp_path):
    from scarletnas.pipeline.dag import compile_pipeline

    cfg = load_pipeline_config(None, ["resources.nodes=2", "resources.gpus=8",
                                      "resources.node_selector=pool=gpu",
                                      f"checkpoint_root=s3://{BUCKET}/ck"])
    spec, platform = yaml.safe_load_all(Path(compile_pipeline(cfg, str(tmp_path / "p.yaml")))
                                        .read_text())
    comp = spec["components"]["comp-train-supernet"]
    assert comp["inputDefinitions"]["parameters"]["task_config"]["parameterType"] == \
        "TASK_CONFIG"
    fields = {p["field"]: p.get("applyToTask", False) for p in comp["taskConfigPassthroughs"]}
    assert fields == {"RESOURCES": False, "KUBERNETES_NODE_SELECTOR": False,
                      "KUBERNETES_TOLERATIONS": False, "KUBERNETES_AFFINITY": False,
                      "ENV": True, "KUBERNETES_VOLUMES": True}
    container = spec["deploymentSpec"]["executors"]["exec-train-supernet"]["container"]
    assert container["resources"]["accelerator"]["resourceCount"] == "8"  # for the nodes
    executors = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    launcher = executors["exec-train-supernet"]
    assert launcher["secretAsVolume"][0]["mountPath"] == TOKEN_DIR
    assert "emptyDirMounts" not in launcher  # /dev/shm is the nodes'
    assert "taskConfigPassthroughs" in spec["components"]["comp-search"]  # nodes: 2
    assert "taskConfigPassthroughs" not in spec["components"]["comp-retrain"]  # retrain_nodes: 1
    for step in ("ranking-check", "retrain", "evaluate"):  # their own pods: no API token
        assert "secretAsVolume" not in executors[f"exec-{step}"]
    assert json.loads(spec["root"]["inputDefinitions"]["parameters"]["config"][
        "defaultValue"])["resources"]["nodes"] == 2
