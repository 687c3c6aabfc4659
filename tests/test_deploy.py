"""Offline checks of what a platform engineer deploys: the images' Dockerfiles
(hadolint, pins) and the kustomize overlays (rendered by kubectl's built-in
kustomize, validated against the Kubernetes schemas in strict mode by
kubernetes-validate). No cluster or Docker engine is used."""

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
OVERLAYS = ["base", "overlays/minio", "overlays/aws", "overlays/external-db"]
DOCKERFILES = [ROOT / "docker" / "Dockerfile", ROOT / "docker" / "Dockerfile.cpu"]


def _pins() -> dict[str, str]:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    return dict(d.split("==") for d in deps if "==" in d)


def render(overlay: str) -> list[dict]:
    if not shutil.which("kubectl"):
        pytest.skip("kubectl (with its built-in kustomize) is not installed")
    out = subprocess.run(["kubectl", "kustomize", str(ROOT / "manifests" / overlay)],
                         capture_output=True, text=True, check=True).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def validate(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "kubernetes-validate"), "--strict", "--quiet", str(path)],
                          capture_output=True, text=True)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_renders_and_validates_strictly(overlay, tmp_path):
    docs = render(overlay)
    path = tmp_path / "rendered.yaml"
    path.write_text(yaml.safe_dump_all(docs))
    result = validate(path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_validator_rejects_what_kubernetes_would(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("apiVersion: v1\nkind: Service\nmetadata: {name: x}\n"
                   "spec: {ports: [{port: 80}], selectr: {a: b}}\n")
    assert validate(bad).returncode != 0


def _pods(docs):
    for d in docs:
        if d["kind"] in ("Deployment", "StatefulSet"):
            yield d["metadata"]["name"], d["spec"]["template"]["spec"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_pods_are_locked_down_and_sized(overlay):
    for name, pod in _pods(render(overlay)):
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", name
        for c in pod["containers"]:
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False, name
            assert sc["readOnlyRootFilesystem"] is True, name
            assert sc["capabilities"]["drop"] == ["ALL"], name
            assert c["resources"]["requests"] and c["resources"]["limits"], name


def test_overlays_differ_where_they_should():
    maps = [d["data"] for d in render("overlays/minio") if d["kind"] == "ConfigMap"]
    assert any(m.get("MLFLOW_S3_ENDPOINT_URL") == "http://minio-service.kubeflow:9000"
               for m in maps)
    aws = render("overlays/aws")
    for sa in (d for d in aws if "annotations" in d["metadata"] and d["kind"] == "ServiceAccount"):
        assert sa["metadata"]["annotations"]["eks.amazonaws.com/role-arn"].startswith("arn:aws")
    binding = next(d for d in aws if d["kind"] == "ClusterRoleBinding")
    assert binding["subjects"][0]["namespace"] == "kubeflow"
    mlflow = next(d for d in aws if d["kind"] == "Deployment")
    env = {e["name"] for e in mlflow["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert "AWS_ACCESS_KEY_ID" not in env and "AWS_SECRET_ACCESS_KEY" not in env
    ext = render("overlays/external-db")
    assert not any(d["kind"] == "StatefulSet" for d in ext)
    assert not any(d["kind"] == "NetworkPolicy" and d["metadata"]["name"] == "mlflow-postgres"
                   for d in ext)
    dep = next(d for d in ext if d["kind"] == "Deployment")
    password = next(e for e in dep["spec"]["template"]["spec"]["containers"][0]["env"]
                    if e["name"] == "PGPASSWORD")
    assert password["valueFrom"]["secretKeyRef"] == {"name": "scarlet-nas-mlflow-db",
                                                     "key": "password"}
    settings = {k: v for d in ext if d["kind"] == "ConfigMap" for k, v in d["data"].items()}
    assert "my-db.example.internal" in settings["MLFLOW_BACKEND_STORE_URI"]
    assert "my-db.example.internal" in settings["basic_auth.ini"]
    role = next(d for d in render("base") if d["kind"] == "Role")
    # the runner reads one Secret, KFP's artifact store's (tests/test_pod_identity.py)
    assert [r for r in role["rules"] if "secrets" in r["resources"]] == [
        {"apiGroups": [""], "resources": ["secrets"],
         "resourceNames": ["mlpipeline-minio-artifact"], "verbs": ["get"]}]


def test_secret_templates_hold_no_credentials(tmp_path):
    for path in (ROOT / "manifests" / "secrets").glob("*.yaml"):
        doc = yaml.safe_load(path.read_text())
        values = [v for v in doc["stringData"].values() if v]
        assert all("REPLACE_ME" in v for v in values), path.name
        assert validate(path).returncode == 0
    assert validate(ROOT / "manifests" / "examples" / "gpu-pod-placement.yaml").returncode == 0


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_lints_clean(dockerfile):
    result = subprocess.run([str(BIN / "hadolint"), str(dockerfile)], capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stdout


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_image_pins_equal_the_projects(dockerfile):
    text = dockerfile.read_text()
    pins = _pins()
    args = dict(re.findall(r"^ARG (\w+)=(\S+)$", text, re.M))
    assert args["TORCH_VERSION"] == pins["torch"]
    assert args["TORCHVISION_VERSION"] == pins["torchvision"]
    assert args["VERSION"] == tomllib.loads((ROOT / "pyproject.toml").read_text())[
        "project"]["version"]
    # everything else comes from pyproject.toml itself
    assert "COPY pyproject.toml" in text and 'pip install "/src[server]"' in text
    final = text.split("\nFROM ")[-1]
    assert "USER 10001" in final and "apt-get" not in final and "gcc" not in final
    assert "org.opencontainers.image.version" in final
