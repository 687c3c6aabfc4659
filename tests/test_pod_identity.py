"""Whose credentials each pod of a run uses. KFP's driver, the launcher KFP runs
inside each step's container and Argo's executor all call the Kubernetes API as
the pod's service account; a step that starts a TrainJob uses a second token of
its own, read from another path. Neither KFP nor a cluster runs here, so the rules
are checked on the manifests and on the client that reads the second token."""

from pathlib import Path

import pytest
import yaml

from scarletnas import trainjob

ROOT = Path(__file__).resolve().parents[1]
BASE = ROOT / "manifests" / "base"

# The API calls KFP 2.17's own code makes with the pod's token in every pod of a run
# (all of a run's pods run as the run's service account; Argo gives it to each):
KFP_CALLS = [
    ("get", "", "secrets", "mlpipeline-minio-artifact"),  # launcher: artifact store login
    ("get", "", "configmaps", "kfp-launcher"),  # driver: pipeline root and stores
    ("get", "", "pods", "scarlet-nas-abc-system-container-impl-1"),  # its own pod
    ("get", "argoproj.io", "workflows", "scarlet-nas-abc"),  # driver: the run's Workflow
    ("create", "argoproj.io", "workflowtaskresults", None),  # Argo's executor: outputs
    ("patch", "argoproj.io", "workflowtaskresults", "scarlet-nas-abc-1"),
]


def _docs(name: str) -> list[dict]:
    return [d for d in yaml.safe_load_all((BASE / name).read_text()) if d]


def _find(docs, kind: str, name: str) -> dict:
    return next(d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name)


def _allows(role: dict, verb: str, group: str, resource: str, name: str | None) -> bool:
    """Kubernetes RBAC: some rule names the group, resource and verb, and either no
    resource names or this one (a create names none)."""
    return any(group in r["apiGroups"] and resource in r["resources"] and verb in r["verbs"]
               and ("resourceNames" not in r or name in r["resourceNames"])
               for r in role["rules"])


def test_the_pipelines_account_keeps_its_token_and_grants_kfp_what_it_uses():
    accounts = _docs("serviceaccounts.yaml")
    runner = _find(accounts, "ServiceAccount", "scarlet-nas-runner")
    assert runner.get("automountServiceAccountToken", True) is True
    rbac = _docs("rbac.yaml")
    role = _find(rbac, "Role", "scarlet-nas-runner")
    binding = _find(rbac, "RoleBinding", "scarlet-nas-runner")
    assert binding["roleRef"]["name"] == "scarlet-nas-runner"
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "scarlet-nas-runner"}]
    missing = [call for call in KFP_CALLS if not _allows(role, *call)]
    assert missing == [], "calls of KFP's driver, launcher or Argo's executor the Role lacks"
    # and nothing more: no wildcard, no other Secret (the kubelet reads the steps'
    # Secrets into env, not the pod), no listing, no TrainJobs
    for rule in role["rules"]:
        assert "*" not in rule["verbs"] + rule["resources"] + rule["apiGroups"], rule
        assert not {"list", "watch", "update", "delete"} & set(rule["verbs"]), rule
    for secret in ("scarlet-nas-s3", "scarlet-nas-mlflow-auth", "scarlet-nas-mlflow-pipeline",
                   "scarlet-nas-trainjob-launcher-token"):
        assert not _allows(role, "get", "", "secrets", secret), secret
    assert not _allows(role, "create", "trainer.kubeflow.org", "trainjobs", None)


def test_the_trainjob_token_is_another_accounts_and_only_the_launcher_may_use_trainjobs():
    docs = _docs("trainjob-launcher.yaml")
    account = _find(docs, "ServiceAccount", "scarlet-nas-trainjob-launcher")
    assert account["automountServiceAccountToken"] is False  # reaches pods only as the mount
    token = _find(docs, "Secret", "scarlet-nas-trainjob-launcher-token")
    assert token["type"] == "kubernetes.io/service-account-token"
    assert token["metadata"]["annotations"] == {
        "kubernetes.io/service-account.name": "scarlet-nas-trainjob-launcher"}
    role = _find(docs, "Role", "scarlet-nas-trainjob-launcher")
    assert _allows(role, "create", "trainer.kubeflow.org", "trainjobs", None)
    assert not _allows(role, "get", "", "secrets", "mlpipeline-minio-artifact")
    assert trainjob.LAUNCHER_TOKEN_DIR != trainjob.SERVICE_ACCOUNT_DIR
    assert not trainjob.LAUNCHER_TOKEN_DIR.startswith(trainjob.SERVICE_ACCOUNT_DIR + "/")
    assert not trainjob.SERVICE_ACCOUNT_DIR.startswith(trainjob.LAUNCHER_TOKEN_DIR + "/")


@pytest.fixture
def in_a_pod(tmp_path, monkeypatch):
    """A pod's view: the API server's address in env, the launcher's token Secret
    (token, ca.crt, namespace) mounted at a folder of its own."""
    from kubernetes import client

    mounted = tmp_path / "trainjob-launcher"
    mounted.mkdir()
    (mounted / "token").write_text("launcher-token-abc")
    (mounted / "ca.crt").write_text("-----BEGIN CERTIFICATE-----\n")
    (mounted / "namespace").write_text("team-a\n")
    monkeypatch.setattr(trainjob, "LAUNCHER_TOKEN_DIR", str(mounted))
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    monkeypatch.setenv("HOSTNAME", "scarlet-nas-abc-train-supernet-pod")
    before = client.Configuration.get_default_copy()
    yield mounted
    client.Configuration.set_default(before)


def test_in_a_pod_the_trainjob_client_uses_the_launcher_token_not_the_pods(in_a_pod):
    cluster = trainjob.Cluster.connect()
    conf = cluster.core.api_client.configuration
    assert conf.host == "https://10.96.0.1:443"
    assert conf.api_key["authorization"].lower() == "bearer launcher-token-abc"
    assert conf.ssl_ca_cert == str(in_a_pod / "ca.crt")
    assert cluster.namespace == "team-a"
    assert cluster.pod == "scarlet-nas-abc-train-supernet-pod"


def test_a_step_without_the_launcher_token_says_where_it_belongs(in_a_pod):
    (in_a_pod / "token").unlink()
    with pytest.raises(trainjob.TrainJobError) as err:
        trainjob.Cluster.connect()
    message = str(err.value)
    assert "\n" not in message and str(in_a_pod) in message
    assert "resources.launcher_token_secret" in message
