import json

import pytest
import yaml
from google.protobuf import json_format
from kfp.pipeline_spec import pipeline_spec_pb2

from scarletnas.cli import main
from scarletnas.config import ConfigError, ResourcesConfig, load_pipeline_config


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    path = tmp_path_factory.mktemp("ir") / "pipeline.yaml"
    code = main(["compile", "-o", str(path), "--image", "registry.example/scarlet:1.2",
                 "--set", "resources.gpus=2", "--set", "resources.node_selector=pool=gpu",
                 "--set", "resources.toleration=nvidia.com/gpu:NoSchedule",
                 "--set", "resources.mlflow_secret=mlflow-auth", "--set", "ranking.enabled=true"])
    assert code == 0
    docs = list(yaml.safe_load_all(path.read_text()))
    spec = json_format.ParseDict(docs[0], pipeline_spec_pb2.PipelineSpec())
    platform = docs[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    return spec, platform


def _dag_tasks(spec, component):
    return spec.components[component].dag.tasks


def _upstream(task) -> set[str]:
    ups = set(task.dependent_tasks)
    for inp in task.inputs.artifacts.values():
        ups.add(inp.task_output_artifact.producer_task)
    for inp in task.inputs.parameters.values():
        ups.add(inp.task_output_parameter.producer_task)
    return ups - {""}


def test_dag_edges(compiled):
    spec, _ = compiled
    root = spec.root.dag.tasks
    assert set(root) == {"start-run", "exit-handler-1", "finish-run"}
    assert root["finish-run"].trigger_policy.strategy == \
        pipeline_spec_pb2.PipelineTaskSpec.TriggerPolicy.TriggerStrategy.ALL_UPSTREAM_TASKS_COMPLETED
    inner = _dag_tasks(spec, root["exit-handler-1"].component_ref.name)
    assert _upstream(inner["train-supernet"]) == {"prepare-data"}
    # shards go beside the run's checkpoints by default: prepare_data gets the run's root
    root_param = inner["prepare-data"].inputs.parameters["checkpoint_root"]
    assert root_param.component_input_parameter.startswith("pipelinechannel--checkpoint_root")
    assert _upstream(inner["search"]) == {"prepare-data", "train-supernet"}
    assert _upstream(inner["retrain-and-summarize"]) == {"prepare-data", "search"}
    cond = [t for t in inner.values() if t.trigger_policy.condition]
    assert len(cond) == 1 and "run_ranking" in cond[0].trigger_policy.condition
    ranking = _dag_tasks(spec, cond[0].component_ref.name)
    assert set(ranking) == {"ranking-check"}


def test_parallel_for_and_collected(compiled):
    spec, _ = compiled
    nested = spec.components["comp-retrain-and-summarize"].dag.tasks
    loop = nested["for-loop-1"]
    assert loop.parameter_iterator.items.input_parameter  # iterates over the selected archs
    body = _dag_tasks(spec, loop.component_ref.name)
    assert set(body) == {"retrain", "evaluate"}
    assert _upstream(body["evaluate"]) == {"retrain"}
    summarize = nested["summarize"]
    assert _upstream(summarize) == {"for-loop-1"}
    src = summarize.inputs.artifacts["summaries"].task_output_artifact
    assert src.producer_task == "for-loop-1"


def test_accelerators_image_and_retries(compiled):
    spec, _ = compiled
    executors = spec.deployment_spec["executors"]
    for name, ex in executors.items():
        assert ex["container"]["image"] == "registry.example/scarlet:1.2", name
    for step in ("train-supernet", "search", "retrain", "ranking-check"):
        acc = executors[f"exec-{step}"]["container"]["resources"]["accelerator"]
        assert acc["resourceCount"] == "2" and acc["resourceType"] == "nvidia.com/gpu", step
    assert "resources" not in executors["exec-evaluate"]["container"]
    inner = _dag_tasks(spec, spec.root.dag.tasks["exit-handler-1"].component_ref.name)
    assert inner["train-supernet"].retry_policy.max_retry_count == 3
    assert inner["search"].retry_policy.max_retry_count == 3
    assert not inner["train-supernet"].caching_options.enable_cache
    assert inner["prepare-data"].caching_options.enable_cache


def test_secrets_placement_and_shm(compiled):
    _, platform = compiled
    for name, ex in platform.items():
        envs = {e["secretName"]: [k["envVar"] for k in e["keyToEnv"]] for e in ex["secretAsEnv"]}
        assert envs["scarlet-nas-s3"] == ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                                          "AWS_ENDPOINT_URL"], name
        assert "mlflow-auth" in envs, name
    gpu = platform["exec-train-supernet"]
    assert gpu["nodeSelector"]["labels"] == {"pool": "gpu"}
    assert gpu["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists",
                                   "effect": "NoSchedule"}]
    assert gpu["emptyDirMounts"][0]["mountPath"] == "/dev/shm"
    assert "nodeSelector" not in platform["exec-evaluate"]


def test_default_config_travels_as_one_validated_parameter(compiled):
    spec, _ = compiled
    params = spec.root.input_definitions.parameters
    assert set(params) == {"config", "tracking_uri", "checkpoint_root", "run_ranking",
                           "pipeline_version"}
    cfg = json.loads(params["config"].default_value.string_value)
    assert cfg["resources"]["gpus"] == 2 and cfg["search"]["generations"] == 4


@pytest.mark.parametrize("overrides,msg", [
    (["resources.gpus=-1"], "KFP accepts 0..16 accelerators"),
    (["resources.gpus=64"], "KFP accepts 0..16 accelerators"),
    (["search.generatons=3"], "unknown key\\(s\\) search.generatons"),
    (["supernet.optim.lr=fast"], "supernet.optim.lr must be a number"),
    (["resources.toleration=gpu"], "use key=value:Effect or key:Effect"),
    (["nonsense"], "use key.sub=value"),
])
def test_bad_settings_are_rejected_before_compiling(overrides, msg):
    with pytest.raises(ConfigError, match=msg):
        load_pipeline_config(None, overrides)


def test_yaml_config_file(tmp_path):
    path = tmp_path / "cfg.yaml"
    path.write_text("search:\n  generations: 9\nresources:\n  gpus: 0\n")
    cfg = load_pipeline_config(str(path), ["search.population=20"])
    assert (cfg.search.generations, cfg.search.population, cfg.resources.gpus) == (9, 20, 0)
    path.write_text("- a list\n")
    with pytest.raises(ConfigError, match="must hold a mapping"):
        load_pipeline_config(str(path))
    with pytest.raises(ConfigError, match="not found"):
        load_pipeline_config(str(tmp_path / "missing.yaml"))
    assert ResourcesConfig(gpus=0).gpus == 0
