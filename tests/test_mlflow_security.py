"""The deployed MLflow, checked offline: a real MLflow server started with the
manifests' own settings (the basic-auth app, the exact allowed hosts, the auth
config file) and probed with good and bad Host headers, with and without a
login; the pipeline logging through that login; and the rendered manifests'
NetworkPolicy, secrets handling and per-account roles. The database is sqlite
here instead of PostgreSQL; nothing else differs from the Deployment."""

import configparser
import re
import urllib.error
import urllib.request
from base64 import b64encode
from pathlib import Path

import pytest
import yaml

from scarletnas.devstack import Stack, free_port

from .test_deploy import render

ROOT = Path(__file__).resolve().parents[1]
USER, PASSWORD = "scarlet-nas", "a long enough p@ss:w/rd%"  # characters a URI would mangle
BAD_HOSTS = ["mlflow.attacker.example", "attacker.example", "mlflow.kubeflow.attacker.example",
             "10.1.2.3:5000", "localhost.attacker.example:5000"]


def _find(docs, kind, name):
    """The object named ``name`` (a generated ConfigMap also carries a hash suffix)."""
    named = re.compile(rf"{re.escape(name)}(-[a-z0-9]{{10}})?")
    return next(d for d in docs if d["kind"] == kind and named.fullmatch(d["metadata"]["name"]))


def _mlflow_container(docs) -> dict:
    return _find(docs, "Deployment", "mlflow")["spec"]["template"]["spec"]["containers"][0]


def start_deployed(root: Path) -> tuple[Stack, list[str]]:
    """MLflow as the base manifests run it, on 127.0.0.1, and the Host names the
    manifests allow. The tests get it as the session's ``deployed`` fixture
    (conftest.py): one server for this module and test_mlflow_pipeline_user."""
    docs = render("base")
    settings = _find(docs, "ConfigMap", "scarlet-nas-mlflow")["data"]
    container = _mlflow_container(docs)
    auth_ini = configparser.ConfigParser()
    auth_ini.read_string(_find(docs, "ConfigMap", "scarlet-nas-mlflow-auth-config")["data"]
                         ["basic_auth.ini"])
    auth_ini["mlflow"]["database_uri"] = f"sqlite:///{root / 'auth.db'}"
    with (root / "basic_auth.ini").open("w") as f:
        auth_ini.write(f)
    stack = Stack(str(root))
    stack.start_s3()
    stack.mlflow_port = free_port()
    app = container["args"][container["args"].index("--app-name") + 1]
    # plus the address the clients here use (in the cluster: mlflow.kubeflow:5000)
    hosts = f"{settings['MLFLOW_SERVER_ALLOWED_HOSTS']},127.0.0.1:{stack.mlflow_port}"
    try:
        stack.start_mlflow(args=("--app-name", app), env={
            "MLFLOW_SERVER_ALLOWED_HOSTS": hosts,
            "MLFLOW_AUTH_CONFIG_PATH": str(root / "basic_auth.ini"),
            "MLFLOW_AUTH_ADMIN_USERNAME": USER, "MLFLOW_AUTH_ADMIN_PASSWORD": PASSWORD,
            "MLFLOW_FLASK_SERVER_SECRET_KEY": "test-only-signing-key"})
    except BaseException:
        stack.down()  # the S3 server too
        raise
    return stack, settings["MLFLOW_SERVER_ALLOWED_HOSTS"].split(",")


def _status(stack, path: str, host: str, login: tuple[str, str] | None = None) -> int:
    request = urllib.request.Request(stack.tracking_uri + path, headers={"Host": host})
    if login:
        token = b64encode(f"{login[0]}:{login[1]}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as r:
            return r.status
    except urllib.error.HTTPError as err:
        return err.code


API = "/api/2.0/mlflow/experiments/search?max_results=1"


def test_every_listed_host_answers_but_only_to_a_login(deployed):
    stack, hosts = deployed
    assert "localhost:5000" in hosts and "mlflow.kubeflow.svc.cluster.local:5000" in hosts
    assert not any("*" in h for h in hosts)  # exact names only
    for host in hosts:
        assert _status(stack, API, host) == 401, host
        assert _status(stack, API, host, (USER, "a wrong password!")) == 401, host
        assert _status(stack, API, host, (USER, PASSWORD)) == 200, host


@pytest.mark.parametrize("host", BAD_HOSTS)
def test_other_host_headers_are_refused_even_with_a_login(deployed, host):
    stack, _ = deployed
    assert _status(stack, API, host, (USER, PASSWORD)) == 403


def test_health_answers_the_kubelet_probe(deployed):
    """The probes send the pod's IP as Host and no login."""
    stack, _ = deployed
    assert _status(stack, "/health", "10.1.2.3:5000") == 200


def test_the_pipeline_logs_and_loads_models_through_the_login(deployed, monkeypatch, tmp_path):
    import mlflow
    import torch

    from scarletnas import SearchSpace, build_subnet
    from scarletnas.tracking import Tracker, log_model

    stack, _ = deployed
    for k, v in stack.env().items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", USER)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", PASSWORD)
    space = SearchSpace.compact(input_size=16)
    tracker = Tracker(stack.tracking_uri, "secured", "retrain")
    assert tracker.active
    arch = "e3k3-e6k3se-skip-e3k5-e3k3-e6k5-e3k7se-skip"
    version = log_model(tracker, build_subnet(arch, space=space), 16,
                        registered_name="secured-model")
    tracker.end()
    assert version == "1"
    files = mlflow.artifacts.download_artifacts(f"models:/secured-model/{version}",
                                                dst_path=str(tmp_path / "model"),
                                                tracking_uri=stack.tracking_uri)
    names = [p.name for p in Path(files).rglob("*") if p.is_file()]
    assert any(n.endswith(".pt2") for n in names), names
    assert not any(n.endswith((".pkl", ".pickle", ".pth")) for n in names), names
    mlflow.set_tracking_uri(stack.tracking_uri)
    # as docs/deploy.md loads models: MLflow then refuses pickle-format models and checks
    # that a pt2 archive holds no pickle payload before loading it
    monkeypatch.setenv("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "false")
    model = mlflow.pytorch.load_model(f"models:/secured-model/{version}")
    assert model(torch.randn(2, 3, 16, 16)).shape == (2, 10)
    # a pickle-format model planted under the same name is refused, not unpickled
    with mlflow.start_run(experiment_id=mlflow.get_experiment_by_name("secured").experiment_id):
        mlflow.pytorch.log_model(torch.nn.Linear(2, 2), name="planted",
                                 serialization_format="pickle",
                                 registered_model_name="secured-model")
    with pytest.raises(mlflow.exceptions.MlflowException, match="pickle"):
        mlflow.pytorch.load_model("models:/secured-model/2")
    monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD")
    assert not Tracker(stack.tracking_uri, "secured", "anonymous").active


# ---- the rendered manifests ------------------------------------------------------------
@pytest.mark.parametrize("overlay", ["base", "overlays/minio", "overlays/aws",
                                     "overlays/external-db"])
def test_no_secret_reaches_a_command_line_or_a_uri(overlay):
    docs = render(overlay)
    container = _mlflow_container(docs)
    assert container["command"] == ["mlflow", "server"]  # no shell to expand variables
    assert not any("$" in a for a in container["args"])
    env = {e["name"]: e for e in container["env"]}
    assert env["PGPASSWORD"]["valueFrom"]["secretKeyRef"]["key"] == "password"
    uri = _find(docs, "ConfigMap", "scarlet-nas-mlflow")["data"]["MLFLOW_BACKEND_STORE_URI"]
    assert uri.startswith("postgresql://mlflow@") and ":" not in uri.split("@")[0][13:]
    for name in ("MLFLOW_AUTH_ADMIN_PASSWORD", "MLFLOW_FLASK_SERVER_SECRET_KEY"):
        assert env[name]["valueFrom"]["secretKeyRef"]["name"] == "scarlet-nas-mlflow-auth"


@pytest.mark.parametrize("overlay", ["base", "overlays/minio", "overlays/aws"])
def test_network_policies_admit_only_the_pipeline_and_the_ingress(overlay):
    docs = render(overlay)
    mlflow = _find(docs, "NetworkPolicy", "mlflow")["spec"]
    assert mlflow["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "mlflow"}
    peers = mlflow["ingress"][0]["from"]
    assert {"podSelector": {"matchLabels": {"scarlet-nas/mlflow-client": "true"}}} in peers
    assert len(peers) == 2 and "namespaceSelector" in peers[1]
    postgres = _find(docs, "NetworkPolicy", "mlflow-postgres")["spec"]
    assert postgres["ingress"][0]["from"] == [
        {"podSelector": {"matchLabels": {"app.kubernetes.io/name": "mlflow"}}}]


def test_every_pipeline_pod_carries_the_label_the_policy_admits(tmp_path):
    from scarletnas.config import PipelineConfig
    from scarletnas.pipeline.dag import MLFLOW_CLIENT_LABEL, compile_pipeline

    path = compile_pipeline(PipelineConfig(), str(tmp_path / "p.yaml"))
    docs = list(yaml.safe_load_all(Path(path).read_text()))
    executors = docs[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    assert len(executors) == 9
    for name, spec in executors.items():
        assert spec["podMetadata"]["labels"][MLFLOW_CLIENT_LABEL] == "true", name
        # the pipeline's own MLflow account by default, never the server's admin
        secrets = [s["secretName"] for s in spec["secretAsEnv"]]
        assert "scarlet-nas-mlflow-pipeline" in secrets, name
        assert "scarlet-nas-mlflow-auth" not in secrets, name


def test_aws_overlay_gives_each_account_its_own_role_and_keeps_mlflows_token_unmounted():
    docs = render("overlays/aws")
    accounts = {d["metadata"]["name"]: d["metadata"] for d in docs
                if d["kind"] == "ServiceAccount"}
    # the TrainJob launcher's account talks to the Kubernetes API only: no AWS role
    assert "annotations" not in accounts.pop("scarlet-nas-trainjob-launcher")
    roles = {name: meta["annotations"]["eks.amazonaws.com/role-arn"]
             for name, meta in accounts.items()}
    assert set(roles) == {"scarlet-nas-runner", "scarlet-nas-mlflow"}
    assert len(set(roles.values())) == 2
    pod = _find(docs, "Deployment", "mlflow")["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    names = [e["name"] for e in pod["containers"][0]["env"]]
    assert "AWS_ACCESS_KEY_ID" not in names and "AWS_SECRET_ACCESS_KEY" not in names
    assert "PGPASSWORD" in names and "MLFLOW_AUTH_ADMIN_PASSWORD" in names
