import json
import re

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
    for step in ("start-run", "prepare-data", "evaluate", "summarize", "finish-run"):
        res = executors[f"exec-{step}"]["container"]["resources"]
        assert "accelerator" not in res, step  # resources.step_cpu/step_memory, both ways
        assert (res["resourceCpuRequest"], res["resourceCpuLimit"]) == ("2", "2"), step
        assert (res["resourceMemoryRequest"], res["resourceMemoryLimit"]) == ("8Gi", "8Gi"), step
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
    from scarletnas.config import RUN_PARAMETERS

    assert set(params) == {"config", "pipeline_version", *RUN_PARAMETERS}
    cfg = json.loads(params["config"].default_value.string_value)
    assert cfg["resources"]["gpus"] == 2 and cfg["search"]["generations"] == 4


@pytest.mark.parametrize("overrides,msg", [
    (["resources.gpus=-1"], "KFP accepts 0..16 accelerators"),
    (["resources.gpus=64"], "KFP accepts 0..16 accelerators"),
    (["search.generatons=3"], "unknown key\\(s\\) search.generatons"),
    (["supernet.optim.lr=fast"], "supernet.optim.lr must be a number"),
    (["resources.toleration=gpu"], "use key=value:Effect or key:Effect"),
    (["nonsense"], "use key.sub=value"),
    (["resources.step_cpu=lots"], "resources.step_cpu='lots' is not a positive Kubernetes "),
    (["resources.step_cpu=1e3"], "resources.step_cpu='1e3': write CPUs as KFP takes them"),
    (["resources.step_memory=1.5Gi"], "step_memory='1.5Gi': write memory as KFP takes it"),
    (["resources.retrain_parallelism=-1"], "resources.retrain_parallelism must be >= 0"),
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


# ---- what KFP's own machinery meets in every pod --------------------------------------------
SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"  # Kubernetes' own path
PIP = re.compile(r"\b(pip3?|uv|conda|mamba|micromamba|poetry|easy_install|apt-get|apk)\b"
                 r"[^\n]*\b(install|add|sync)\b|ensurepip|get-pip")


def _compile(tmp_path, name: str, *overrides: str) -> tuple[dict, dict]:
    """The compiled pipeline's spec and Kubernetes settings, as plain data."""
    path = tmp_path / f"{name}.yaml"
    assert main(["compile", "-o", str(path), "--image", "registry.example/scarlet:1.2",
                 *[a for o in overrides for a in ("--set", o)]]) == 0
    spec, platform = yaml.safe_load_all(path.read_text())
    return spec, platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]


def _mount_paths(settings: dict) -> list[str]:
    kinds = ("secretAsVolume", "configMapAsVolume", "pvcMount", "emptyDirMounts",
             "genericEphemeralVolume")
    return [m["mountPath"] for kind in kinds for m in settings.get(kind, [])]


def _hides(mount: str, path: str) -> bool:
    """A volume at ``mount`` replaces what the container sees at ``path``."""
    mount, path = mount.rstrip("/"), path.rstrip("/")
    return path == mount or path.startswith(mount + "/")


def test_no_pod_mounts_over_its_service_account_token(tmp_path):
    """KFP's launcher runs inside each step's container and calls the API server as
    the pod's service account (its token at Kubernetes' path): no step may cover
    that path, and the TrainJob-starting steps get the launcher token elsewhere, at
    the one place scarletnas.trainjob reads it."""
    from scarletnas import trainjob

    _, executors = _compile(tmp_path, "nodes", "resources.nodes=2", "resources.retrain_nodes=2",
                            "checkpoint_root=s3://bucket/ck", "ranking.enabled=true")
    assert len(executors) == 9
    for name, settings in executors.items():
        for mount in _mount_paths(settings):
            assert not _hides(mount, SERVICE_ACCOUNT_DIR), (name, mount)
            assert not _hides(SERVICE_ACCOUNT_DIR, mount), (name, mount)
    launchers = {n for n, s in executors.items() if s.get("secretAsVolume")}
    assert launchers == {"exec-train-supernet", "exec-search", "exec-retrain"}
    for name in launchers:
        assert executors[name]["secretAsVolume"] == [{
            "secretName": "scarlet-nas-trainjob-launcher-token",
            "secretNameParameter": {"runtimeValue": {
                "constant": "scarlet-nas-trainjob-launcher-token"}},
            "mountPath": trainjob.LAUNCHER_TOKEN_DIR, "optional": False}]
    assert not _hides(trainjob.LAUNCHER_TOKEN_DIR, SERVICE_ACCOUNT_DIR)
    assert not _hides(SERVICE_ACCOUNT_DIR, trainjob.LAUNCHER_TOKEN_DIR)


def test_irsa_compiles_with_optional_or_no_s3_secret_env(tmp_path):
    """With IRSA the S3 Secret holds no keys, or there is none: a required key
    would keep every pod in CreateContainerConfigError."""
    _, executors = _compile(tmp_path, "default")
    for name, settings in executors.items():
        s3 = [e for e in settings["secretAsEnv"] if e["secretName"] == "scarlet-nas-s3"]
        assert len(s3) == 1 and s3[0]["optional"] is True, name
    _, executors = _compile(tmp_path, "irsa", "resources.s3_secret=")
    for name, settings in executors.items():
        envs = [k["envVar"] for e in settings.get("secretAsEnv", []) for k in e["keyToEnv"]]
        assert not [e for e in envs if e.startswith("AWS_")], name
        assert [e["secretName"] for e in settings["secretAsEnv"]] == [
            "scarlet-nas-mlflow-pipeline"], name


def _run_values(spec: dict, run: dict) -> dict:
    """The input parameters of every task in one run, resolved as KFP's driver sees
    them: pipeline parameters (their defaults), constants with the run's own
    placeholders filled in, and other tasks' outputs, which are this run's own."""
    resolved: dict = {}

    def walk(component: dict, scope: dict, path: str) -> None:
        for name, task in component.get("dag", {}).get("tasks", {}).items():
            values = {}
            for key, src in task.get("inputs", {}).get("parameters", {}).items():
                if "componentInputParameter" in src:  # a loop's item: this run's own
                    item = src["componentInputParameter"]
                    values[key] = scope.get(item, f"{item}@{run['id']}")
                elif "runtimeValue" in src:
                    constant = json.dumps(src["runtimeValue"]["constant"])
                    for placeholder in ("pipeline_job_uuid", "pipeline_job_name"):
                        constant = constant.replace(f"{{{{$.{placeholder}}}}}",
                                                    run[placeholder])
                    values[key] = json.loads(constant)
                else:  # another task's output or final status: this run's own
                    values[key] = f"{json.dumps(src, sort_keys=True)}@{run['id']}"
            artifacts = {key: f"{src['taskOutputArtifact']['producerTask']}@{run['id']}"
                         if "taskOutputArtifact" in src else f"input@{run['id']}"
                         for key, src in task.get("inputs", {}).get("artifacts", {}).items()}
            resolved[f"{path}{name}"] = (task["componentRef"]["name"], values, artifacts)
            walk(spec["components"][task["componentRef"]["name"]], values, f"{path}{name}/")

    params = spec["root"]["inputDefinitions"]["parameters"]
    walk(spec["root"], {k: v.get("defaultValue") for k, v in params.items()}, "")
    return resolved


def _cache_key(spec: dict, run: dict, task: str) -> str:
    """What KFP 2.17's driver hashes for a task's cache entry: input parameter values,
    input artifacts, output specs, the container's image, command and arguments."""
    component, values, artifacts = _run_values(spec, run)[task]
    comp = spec["components"][component]
    container = spec["deploymentSpec"]["executors"][comp["executorLabel"]]["container"]
    return json.dumps({"inputs": values, "artifacts": artifacts,
                       "outputs": comp.get("outputDefinitions"), "image": container["image"],
                       "cmd": container["command"] + container.get("args", [])},
                      sort_keys=True)


def test_prepare_data_cache_key_is_stable_across_runs_of_one_config(tmp_path):
    """Two compiled pipelines of one config, run twice: prepare_data's cache key is
    the same (nothing per run goes in), so KFP reuses its output. Steps that take
    the run's id or MLflow parent run are keyed per run (they are not cached)."""
    first, _ = _compile(tmp_path, "a", "search.generations=3")
    second, _ = _compile(tmp_path, "b", "search.generations=3")
    runs = [{"id": "run-1", "pipeline_job_uuid": "6f1c2d1e-0001",
             "pipeline_job_name": "weekly-1"},
            {"id": "run-2", "pipeline_job_uuid": "6f1c2d1e-0002",
             "pipeline_job_name": "weekly-2"}]
    task = "exit-handler-1/prepare-data"
    assert _cache_key(first, runs[0], task) == _cache_key(second, runs[1], task)
    inner = first["components"]["comp-exit-handler-1"]["dag"]["tasks"]
    assert inner["prepare-data"]["cachingOptions"] == {"enableCache": True}
    assert set(inner["prepare-data"]["inputs"]["parameters"]) == {"config", "checkpoint_root"}
    supernet = "exit-handler-1/train-supernet"  # the parent run and run id: per run
    assert _cache_key(first, runs[0], supernet) != _cache_key(second, runs[1], supernet)
    other, _ = _compile(tmp_path, "c", "search.generations=4")  # another config: another key
    assert _cache_key(other, runs[0], task) != _cache_key(first, runs[0], task)


def test_no_container_installs_packages_at_start(tmp_path):
    """Every step runs the image's own kfp and scarlet-nas: nothing is installed when
    a container starts (which would need a package index, and could bring a kfp
    other than the image's)."""
    spec, _ = _compile(tmp_path, "nodes", "resources.nodes=2", "checkpoint_root=s3://b/ck")
    assert PIP.search("pip install kfp==2.17.3") and PIP.search("python3 -m pip install x")
    for name, ex in spec["deploymentSpec"]["executors"].items():
        container = ex["container"]
        script = "\n".join(container["command"][:2] + [container["command"][2]])
        assert not PIP.search(script), name
        assert "python3 -m kfp.dsl.executor_main" in script, name
        source = container["command"][3]  # the component's program, run by the image's kfp
        assert not PIP.search(source), name


def test_each_step_checks_the_image_version_first(tmp_path, monkeypatch):
    """The IR records the compiling scarlet-nas version on every task, and each
    component refuses to run, in one line, on an image holding another version."""
    from scarletnas import __version__
    from scarletnas.components import VERSION_ENV

    spec, _ = _compile(tmp_path, "default")
    for name, ex in spec["deploymentSpec"]["executors"].items():
        container = ex["container"]
        assert {"name": VERSION_ENV, "value": __version__} in container["env"], name
        function = container["args"][container["args"].index("--function_to_execute") + 1]
        program = container["command"][3]
        body = program.split(f"\ndef {function}(", 1)[1].split('"""')[2]
        assert body.lstrip().startswith("check_image_version()"), name
    namespace: dict = {}
    exec(compile(program, "ephemeral_component.py", "exec"), namespace)  # noqa: S102
    monkeypatch.setenv(VERSION_ENV, __version__)
    namespace["check_image_version"]()
    monkeypatch.setenv(VERSION_ENV, "0.0.1")
    with pytest.raises(RuntimeError) as err:
        namespace["check_image_version"]()
    message = str(err.value)
    assert "\n" not in message and f"compiled by scarlet-nas 0.0.1 but the image holds " \
        f"scarlet-nas {__version__}" in message


def test_cpu_steps_request_resources_and_retrains_run_as_configured(tmp_path):
    spec, _ = _compile(tmp_path, "sized", "resources.step_cpu=1500m", "resources.step_memory=16Gi",
                       "resources.retrain_parallelism=1")
    executors = spec["deploymentSpec"]["executors"]
    res = executors["exec-evaluate"]["container"]["resources"]
    assert (res["resourceCpuRequest"], res["resourceCpuLimit"]) == ("1500m", "1500m")
    assert (res["resourceMemoryRequest"], res["resourceMemoryLimit"]) == ("16Gi", "16Gi")
    assert "resourceCpuRequest" not in executors["exec-retrain"]["container"]["resources"]
    loop = spec["components"]["comp-retrain-and-summarize"]["dag"]["tasks"]["for-loop-1"]
    assert loop["iteratorPolicy"] == {"parallelismLimit": 1}
    spec, _ = _compile(tmp_path, "default")
    loop = spec["components"]["comp-retrain-and-summarize"]["dag"]["tasks"]["for-loop-1"]
    assert "iteratorPolicy" not in loop  # 0: every selected arch at once


@pytest.mark.parametrize("name", ["local", "imagenet", "imagenet-nodes"])
def test_each_shipped_config_compiles_to_what_it_says(tmp_path, name):
    """The shipped configs are picked by name and compile (with the same checks
    as any config) into a pipeline whose pods ask for what the config says."""
    from scarletnas.config import named_configs, to_dict

    assert name in named_configs()
    path = tmp_path / f"{name}.yaml"
    assert main(["compile", "--config", name, "-o", str(path),
                 "--image", "registry.example/scarlet:1.2"]) == 0
    spec, platform = yaml.safe_load_all(path.read_text())
    cfg = load_pipeline_config(name)
    params = spec["root"]["inputDefinitions"]["parameters"]
    assert json.loads(params["config"]["defaultValue"]) == to_dict(cfg)
    assert params["checkpoint_root"].get("defaultValue", "") == cfg.checkpoint_root
    train = spec["deploymentSpec"]["executors"]["exec-train-supernet"]["container"]["resources"]
    assert train["accelerator"]["resourceCount"] == str(cfg.resources.gpus)
    on_nodes = "taskConfigPassthroughs" in spec["components"]["comp-train-supernet"]
    assert on_nodes == (cfg.resources.nodes > 1)
    assert ("taskConfigPassthroughs" in spec["components"]["comp-retrain"]) == \
        (cfg.resources.retrain_nodes > 1)
    executors = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    if cfg.resources.node_selector:
        key, value = cfg.resources.node_selector.split("=")
        assert executors["exec-search"].get("nodeSelector", {}).get("labels") == {key: value} \
            or on_nodes  # on nodes, the TrainJob carries the selector (TaskConfig)
