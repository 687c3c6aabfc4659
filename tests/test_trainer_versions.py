"""Kubeflow Trainer versions, Pod Security, deadline and Kueue for the TrainJob.

Trainer v2.1 (the one Kubeflow 26.03 installs) sets the nodes' pods with
spec.podTemplateOverrides, v2.2 and later with spec.runtimePatches. An API
server drops the fields its CRD lacks unless the create asks for strict field
validation, so a TrainJob written for one version and sent to another loses
its placement, /dev/shm, service account and labels without an error. The
local API server (tests/k8s_api_server.py) holds the CRD of each version and
does what an API server does with unknown fields; the step reads the
installed CRD's fields, sends the shape it has, creates strictly and refuses
a version it cannot serve in one line.
"""

import json
import logging
import sys

import pytest
from kubernetes.client.exceptions import ApiException

from scarletnas import trainjob
from scarletnas.config import ConfigError, PipelineConfig, ResourcesConfig, load_pipeline_config
from scarletnas.devstack import BUCKET
from scarletnas.nodes import MLFLOW_CLIENT_LABEL, Nodes
from scarletnas.preflight import deterministic

from .k8s_api_server import FakeCluster, node_pod, restricted_violations
from .test_trainjob import _granted, _task_config


@pytest.fixture
def k8s(tmp_path, monkeypatch):
    """A local API server per call (a Trainer version's CRD, ...), the kubeconfig on it."""
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    started: list[FakeCluster] = []

    def start(mode="run", **kw):
        fake = FakeCluster(tmp_path, mode, **kw).__enter__()
        monkeypatch.setenv("KUBECONFIG", str(fake.kubeconfig(tmp_path / "kubeconfig")))
        started.append(fake)
        return fake

    yield start
    for fake in started:
        fake.__exit__(None, None, None)
        assert set(fake.calls()) <= _granted(), "an API call the launcher's Role lacks"
        # the OpenAPI documents: granted to every authenticated account (system:discovery)
        assert all(url.startswith("/openapi/") for url in fake.urls())


def _body(name="job-a", command=("torchrun",), **kw) -> dict:
    """The TrainJob a 2-node step sends, with the task's placement and the MLflow label."""
    nodes = Nodes.for_step(PipelineConfig(checkpoint_root=f"s3://{BUCKET}/ck",
                                          resources=ResourcesConfig(nodes=2)),
                           "train_supernet", "run-1", f"s3://{BUCKET}/ck/run-1/supernet", "i",
                           _task_config())
    return trainjob.build(name, image="i", command=list(command), nodes=2, procs_per_node=1,
                          runtime="torch-distributed", placement=nodes.placement, env=[],
                          labels=nodes.labels, shm_size="1Gi",
                          service_account="scarlet-nas-runner", **kw)


def _run(body, **kw):
    return trainjob.run(trainjob.Cluster.connect(), body, poll=0.2, echo=lambda line: None,
                        **{"pending_timeout": 60, **kw})


def _what_the_nodes_got(fake, name="job-a") -> dict:
    """What the TrainJob stored by the API server gives its node pods."""
    labels, spec = node_pod(fake.jobs[name])
    return {"mlflow label": labels.get(MLFLOW_CLIENT_LABEL),
            "service account": spec.get("serviceAccountName"),
            "node selector": spec.get("nodeSelector"),
            "/dev/shm": [v["name"] for v in spec.get("volumes") or []] == ["dshm"]}


PLACED = {"mlflow label": "true", "service account": "scarlet-nas-runner",
          "node selector": {"nvidia.com/gpu.product": "NVIDIA-H100"}, "/dev/shm": True}


def test_the_node_pods_pass_the_restricted_pod_security_standard():
    body = _body(deadline=3600)
    job = body["spec"]["runtimePatches"][0]["trainingRuntimeSpec"]["template"]["spec"]
    pod = job["replicatedJobs"][0]["template"]["spec"]["template"]["spec"]
    assert pod["securityContext"] == {"runAsNonRoot": True, "runAsUser": 10001,
                                      "seccompProfile": {"type": "RuntimeDefault"}}
    _, merged = node_pod(body)  # the runtime's container with the TrainJob's patch
    assert restricted_violations(merged) == []
    assert body["spec"]["activeDeadlineSeconds"] == 3600
    # the check finds what the standard refuses: the runtime's pod alone, a hostPath
    bare, _ = trainjob.shaped(body, trainjob.OVERRIDES)  # Trainer v2.1 cannot set it
    _, v21 = node_pod(bare)
    assert restricted_violations(v21) == [
        "node: allowPrivilegeEscalation not false", "node: capabilities do not drop ALL",
        "node: runAsNonRoot not true", "node: no RuntimeDefault or Localhost seccompProfile"]
    host = {**merged, "volumes": [{"name": "data", "hostPath": {"path": "/data"}}]}
    assert restricted_violations(host) == ["volume data: hostPath"]


@pytest.mark.parametrize("version", ["v2.1", "v2.0"])
def test_an_old_trainer_drops_unknown_fields_unless_strict_and_the_step_refuses_them(
        k8s, version):
    from kubernetes import client

    fake = k8s("pending", trainer=version)
    api = client.CustomObjectsApi(trainjob.Cluster.connect().api)
    # a create without strict validation, as the step made it before: accepted, and the
    # node pods would run without placement, /dev/shm, account and MLflow label
    _, status, headers = api.create_namespaced_custom_object_with_http_info(
        trainjob.GROUP, trainjob.VERSION, "team-a", trainjob.PLURAL, _body(deadline=60))
    assert status == 201 and "runtimePatches" not in fake.jobs["job-a"]["spec"]
    assert 'unknown field \\"spec.runtimePatches\\"' in headers["Warning"]
    assert _what_the_nodes_got(fake) == {"mlflow label": None, "service account": None,
                                         "node selector": None, "/dev/shm": False}
    # strict: refused, every unknown field named
    with pytest.raises(ApiException) as err:
        api.create_namespaced_custom_object(trainjob.GROUP, trainjob.VERSION, "team-a",
                                            trainjob.PLURAL, _body("job-b", deadline=60),
                                            field_validation="Strict")
    assert err.value.status == 400 and "job-b" not in fake.jobs
    assert json.loads(err.value.body)["message"] == (
        'TrainJob in version "v1alpha1" cannot be handled as a TrainJob: strict decoding '
        'error: unknown field "spec.runtimePatches", unknown field "spec.activeDeadlineSeconds"')


def test_an_unsupported_trainer_is_refused_in_one_line(k8s):
    fake = k8s(trainer="v2.0")
    with pytest.raises(trainjob.TrainJobError) as err:
        _run(_body())
    assert str(err.value) == (
        "the cluster's TrainJob API is Kubeflow Trainer v2.0's (spec.podSpecOverrides), which "
        "this project does not support: install Kubeflow Trainer v2.2 or later, or v2.1 "
        "(docs/deploy.md)")
    assert deterministic(err.value) and not fake.jobs and ("create", "trainjobs") not in \
        fake.calls()
    # without the OpenAPI document, the strict creates find it out, and nothing is created
    fake = k8s(trainer="v2.0", openapi=False)
    with pytest.raises(trainjob.TrainJobError, match="neither runtimePatches nor "
                       "podTemplateOverrides") as err:
        _run(_body())
    assert "\n" not in str(err.value) and deterministic(err.value) and not fake.jobs
    assert [v for v, r in fake.calls() if r == "trainjobs"].count("create") == 2
    k8s(trainer=None)  # no Trainer at all
    with pytest.raises(trainjob.TrainJobError, match="ClusterTrainingRuntime "
                       "'torch-distributed' not found: install Kubeflow Trainer"):
        _run(_body())
    k8s(trainer=None, forbid=(("get", "clustertrainingruntimes"),))  # runtimes unreadable
    with pytest.raises(trainjob.TrainJobError) as err:
        _run(_body())
    assert str(err.value) == (
        "the Kubernetes API serves no trainjobs.trainer.kubeflow.org/v1alpha1 in namespace "
        "team-a (the server could not find the requested resource): install Kubeflow Trainer "
        "(docs/deploy.md)") and deterministic(err.value)


@pytest.mark.parametrize("version,openapi", [("v2.3", True), ("v2.2", True), ("v2.1", True),
                                             ("v2.1", False)])
def test_each_supported_trainer_gets_the_shape_it_reads(k8s, caplog, version, openapi):
    # Trainer v2.2+ nodes run where the restricted Pod Security Standard is enforced
    fake = k8s(trainer=version, openapi=openapi,
               pod_security="baseline" if version == "v2.1" else "restricted")
    body = _body(command=(sys.executable, "-c", "print('trained')"), deadline=3600)
    with caplog.at_level(logging.INFO, logger="scarletnas"):
        job = _run(body)
    creates = [r for r in fake.requests if r["verb"] == "create"]
    assert all(r["query"]["fieldValidation"] == ["Strict"] for r in creates)
    sent = creates[-1]["body"]
    assert job["metadata"]["name"] == "job-a"
    assert _what_the_nodes_got(fake) == PLACED  # nothing dropped
    pod = fake.nodes["job-a"][0].spec
    if version == "v2.1":
        assert set(sent["spec"]) == {"runtimeRef", "trainer", "podTemplateOverrides"}
        assert len(creates) == (1 if openapi else 2)  # without the schema: tried v2.2+ first
        warned = [r.message for r in caplog.records if r.levelno == logging.WARNING]
        assert any("Trainer v2.1 cannot set spec.activeDeadlineSeconds, "
                   "pod.securityContext, containers[node].securityContext" in m for m in warned)
        assert "securityContext" not in pod
    else:
        assert sent["spec"]["activeDeadlineSeconds"] == 3600 and len(creates) == 1
        assert restricted_violations(pod) == []
    assert fake.urls() == ["/openapi/v3/apis/trainer.kubeflow.org/v1alpha1"]


def test_trainer_v21_nodes_in_a_restricted_namespace_are_named_as_the_problem(k8s):
    fake = k8s(trainer="v2.1", pod_security="restricted")
    with pytest.raises(trainjob.TrainJobError) as err:
        _run(_body(), pending_timeout=1)
    assert str(err.value) == (
        "TrainJob job-a still waits for nodes after 1 s (0 of 2 started): no node pod was "
        "created (Trainer v2.1 cannot give the node pods a security context: a namespace that "
        "enforces the restricted Pod Security Standard refuses them). Free the GPUs, lower "
        "resources.nodes or raise resources.pending_timeout")
    assert "node: runAsNonRoot not true" in fake.refused["job-a"] and not fake.jobs


def test_the_deadline_stops_the_trainjob(k8s):
    fake = k8s("hold", trainer="v2.3")  # Trainer v2.2+ fails it
    with pytest.raises(trainjob.TrainJobError, match=r"failed \(DeadlineExceeded: TrainJob "
                       r"exceeded its active deadline\); it ran past "
                       r"resources.trainjob_deadline \(1 s\)") as err:
        _run(_body(deadline=1))
    assert not deterministic(err.value)  # a retry resumes from the checkpoint
    assert all(n.code is not None for n in fake.nodes["job-a"])
    fake = k8s("hold", trainer="v2.1")  # v2.1 has no deadline: the step stops it
    with pytest.raises(trainjob.TrainJobError, match=r"ran past resources.trainjob_deadline "
                       r"\(1 s\) and was stopped"):
        _run(_body(deadline=1))
    assert not fake.jobs  # deleted


def test_a_queue_labels_the_trainjob_for_kueue(k8s):
    cfg = load_pipeline_config(None, ["resources.nodes=2", "resources.queue=team-a-gpus",
                                      "resources.trainjob_deadline=7200"])
    assert cfg.resources.queue == "team-a-gpus"
    fake = k8s(kueue=True)  # Kueue suspends it; no quota: never admitted
    with pytest.raises(trainjob.TrainJobError, match=r"\(0 of 2 started\): the TrainJob is "
                       "suspended: Kueue has not admitted it from LocalQueue team-a-gpus. Give "
                       "the queue quota or raise resources.pending_timeout$") as e:
        _run(_body(queue=cfg.resources.queue, deadline=1), pending_timeout=1)
    assert "\n" not in str(e.value)
    created = next(r["body"] for r in fake.requests if r["verb"] == "create")
    assert created["metadata"]["labels"][trainjob.QUEUE_LABEL] == "team-a-gpus"
    assert trainjob.QUEUE_LABEL not in node_pod(created)[0]  # the TrainJob's, not the pods'
    assert trainjob.QUEUE_LABEL not in _body()["metadata"]["labels"]


@pytest.mark.parametrize("setting,error", [
    ("resources.queue=Team_A", "resources.queue='Team_A' is not a Kueue LocalQueue name "
     "usable as a label value: use at most 63 lower-case letters, digits, '-' and '.', "
     "starting and ending with a letter or digit"),
    (f"resources.queue={'q' * 64}", "is not a Kueue LocalQueue name usable as a label value"),
    ("resources.queue=gpus-", "is not a Kueue LocalQueue name"),
    ("resources.trainjob_deadline=0", "resources.trainjob_deadline must be > 0 seconds"),
])
def test_bad_trainjob_settings_get_one_line_errors(setting, error):
    with pytest.raises(ConfigError) as err:
        load_pipeline_config(None, [setting])
    assert error in str(err.value) and "\n" not in str(err.value)
