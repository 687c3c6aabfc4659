"""upload, run and schedule against a local server speaking the KFP v2beta1 API
(tests/kfp_api_server.py) with a real server's rules: single-user, and multi-user
with bearer tokens and namespaces."""

import json

import pytest

from scarletnas.cli import main
from scarletnas.pipeline.cli import PACKAGE_TAG, kfp_cron

from .kfp_api_server import FakeKFP

TOKEN, USER, NAMESPACE = "token-of-alice", "alice@example.com", "team-a"


@pytest.fixture(autouse=True)
def _no_kfp_context(tmp_path, monkeypatch):
    """kfp.Client reads a namespace from ~/.config/kfp/context.json: none here."""
    from kfp.client.client import Client

    monkeypatch.setattr(Client, "_LOCAL_KFP_CONTEXT", str(tmp_path / "kfp-context.json"))
    monkeypatch.delenv("KF_PIPELINES_SA_TOKEN_PATH", raising=False)


@pytest.fixture
def kfp_server():
    with FakeKFP() as server:
        yield server


@pytest.fixture
def multi_user():
    with FakeKFP(multi_user=True, users={TOKEN: (USER, {NAMESPACE})}) as server:
        yield server


@pytest.fixture
def token_file(tmp_path):
    path = tmp_path / "token"
    path.write_text(TOKEN + "\n")
    return str(path)


def _last_json(capsys) -> dict:
    """The command's own JSON line (kfp.Client prints links before it)."""
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def _error(capsys) -> str:
    """The one line a refused command prints."""
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("scarlet-nas: error: ")
    return err[0][len("scarlet-nas: error: "):]


def _spec(version: dict) -> dict:
    return version["pipeline_spec"]["pipeline_spec"]


# ---- single-user ---------------------------------------------------------------------
def test_a_first_upload_makes_one_version_with_the_given_name(kfp_server, capsys):
    assert main(["upload", "--host", kfp_server.url, "--image", "img:1", "--version", "v1"]) == 0
    out = _last_json(capsys)
    pipeline = kfp_server.pipeline("scarlet-nas")
    assert out["pipeline_id"] == pipeline["pipeline_id"] and out["uploaded"] is True
    (version,) = kfp_server.versions_of(pipeline["pipeline_id"])
    assert version["name"] == out["version"] == "v1"
    assert version["pipeline_version_id"] == out["version_id"]
    # its package runs as v1 when started from the KFP UI too, and says what it holds
    spec = _spec(version)
    assert spec["pipelineInfo"]["name"] == "scarlet-nas"
    assert spec["root"]["inputDefinitions"]["parameters"]["pipeline_version"][
        "defaultValue"] == "v1"
    assert "kubernetes" in version["pipeline_spec"]["platform_spec"]["platforms"]
    assert len(version["tags"][PACKAGE_TAG]) == 40
    assert not kfp_server.calls("POST", "/apis/v2beta1/pipelines/upload")

    # the same package again is found, not uploaded; another package gets a new version
    assert main(["upload", "--host", kfp_server.url, "--image", "img:1", "--version", "v1"]) == 0
    again = _last_json(capsys)
    assert again["uploaded"] is False and again["version_id"] == version["pipeline_version_id"]
    assert main(["upload", "--host", kfp_server.url, "--image", "img:1", "--version", "v2",
                 "--set", "search.generations=7"]) == 0
    second = _last_json(capsys)
    assert second["pipeline_id"] == pipeline["pipeline_id"] and second["uploaded"] is True
    assert [v["name"] for v in kfp_server.versions_of(pipeline["pipeline_id"])] == ["v1", "v2"]
    # a name already holding another package is refused, in one line
    assert main(["upload", "--host", kfp_server.url, "--image", "img:2", "--version", "v1"]) == 2
    assert _error(capsys) == (
        "pipeline 'scarlet-nas' already has a version 'v1' holding another package (other "
        "settings or image); give a new --version, or none to name it by its content")
    assert len(kfp_server.versions_of(pipeline["pipeline_id"])) == 2


def test_versions_are_named_by_their_content_by_default(kfp_server, capsys):
    assert main(["upload", "--host", kfp_server.url]) == 0
    first = _last_json(capsys)
    assert main(["upload", "--host", kfp_server.url]) == 0
    assert _last_json(capsys) == {**first, "uploaded": False}
    assert main(["upload", "--host", kfp_server.url, "--set", "search.population=20"]) == 0
    other = _last_json(capsys)
    assert other["version"] != first["version"] and other["uploaded"] is True
    assert first["version"].startswith("0.") and len(first["version"].split("-")[-1]) == 12
    assert len(kfp_server.versions_of(first["pipeline_id"])) == 2


def test_a_pipeline_uploaded_in_the_ui_gets_a_new_version(kfp_server, tmp_path, capsys):
    """The server's upload makes a pipeline and its first version (named as the
    pipeline): the reason the commands never upload a pipeline that way."""
    import kfp

    from scarletnas.config import PipelineConfig
    from scarletnas.pipeline.dag import compile_pipeline

    package = compile_pipeline(PipelineConfig(), str(tmp_path / "p.yaml"))
    kfp.Client(host=kfp_server.url).upload_pipeline(package, pipeline_name="scarlet-nas")
    pipeline = kfp_server.pipeline("scarlet-nas")
    assert [v["name"] for v in kfp_server.versions_of(pipeline["pipeline_id"])] == [
        "scarlet-nas"]
    assert main(["upload", "--host", kfp_server.url, "--version", "v2"]) == 0
    assert _last_json(capsys)["pipeline_id"] == pipeline["pipeline_id"]
    assert [v["name"] for v in kfp_server.versions_of(pipeline["pipeline_id"])] == [
        "scarlet-nas", "v2"]


def test_a_run_references_the_uploaded_version(kfp_server, capsys):
    assert main(["run", "--host", kfp_server.url, "--run-name", "nightly",
                 "--set", "search.generations=7"]) == 0
    out = _last_json(capsys)
    run = kfp_server.runs[out["run_id"]]
    (version,) = kfp_server.versions.values()
    assert run["display_name"] == "nightly"
    assert run["experiment_id"] == kfp_server.experiment("scarlet-nas")["experiment_id"]
    # the uploaded version, not a package of its own
    assert run["pipeline_version_reference"] == {
        "pipeline_id": version["pipeline_id"],
        "pipeline_version_id": version["pipeline_version_id"]}
    assert "pipeline_spec" not in run
    params = run["runtime_config"]["parameters"]
    assert json.loads(params["config"])["search"]["generations"] == 7
    assert params["pipeline_version"] == version["name"] == out["version"]
    assert out["version_id"] == version["pipeline_version_id"]
    # the same settings again: the same version, a second run
    assert main(["run", "--host", kfp_server.url, "--set", "search.generations=7"]) == 0
    again = _last_json(capsys)
    assert again["version_id"] == out["version_id"] and again["uploaded"] is False
    assert len(kfp_server.versions) == 1 and len(kfp_server.runs) == 2


def test_a_run_of_a_named_version(kfp_server, capsys):
    assert main(["upload", "--host", kfp_server.url, "--version", "release-1"]) == 0
    uploaded = _last_json(capsys)
    assert main(["run", "--host", kfp_server.url, "--version", "release-1"]) == 0
    out = _last_json(capsys)
    assert out["version_id"] == uploaded["version_id"] and out["uploaded"] is False
    run = kfp_server.runs[out["run_id"]]
    assert run["pipeline_version_reference"]["pipeline_version_id"] == uploaded["version_id"]
    assert run["runtime_config"]["parameters"]["pipeline_version"] == "release-1"


def test_schedule_references_the_uploaded_version(kfp_server, capsys):
    assert main(["schedule", "--host", kfp_server.url, "--cron", "0 3 * * *",
                 "--max-concurrency", "1", "--version", "weekly"]) == 0
    out = _last_json(capsys)
    assert out["cron"] == "0 0 3 * * *"
    job = kfp_server.recurring_runs[out["recurring_run_id"]]
    (version,) = kfp_server.versions.values()
    assert job["trigger"]["cron_schedule"]["cron"] == "0 0 3 * * *"
    assert int(job["max_concurrency"]) == 1 and job["no_catchup"] is True
    assert job["display_name"] == "scarlet-nas-recurring" and job["mode"] == "ENABLE"
    assert job["pipeline_version_reference"] == {
        "pipeline_id": version["pipeline_id"],
        "pipeline_version_id": version["pipeline_version_id"]}
    assert "pipeline_spec" not in job
    assert job["runtime_config"]["parameters"]["pipeline_version"] == "weekly"
    assert "config" in job["runtime_config"]["parameters"]


def test_a_schedule_catches_up_only_when_asked(kfp_server, capsys):
    assert main(["schedule", "--host", kfp_server.url, "--cron", "0 3 * * 0", "--catchup",
                 "--max-concurrency", "2", "--name", "weekly-nas"]) == 0
    job = kfp_server.recurring_runs[_last_json(capsys)["recurring_run_id"]]
    assert job["no_catchup"] is False and int(job["max_concurrency"]) == 2
    assert job["display_name"] == "weekly-nas"


# ---- multi-user ----------------------------------------------------------------------
def test_multi_user_runs_in_the_namespace_with_the_token(multi_user, token_file, capsys):
    assert main(["run", "--host", multi_user.url, "--namespace", NAMESPACE,
                 "--token-file", token_file, "--version", "v1"]) == 0
    out = _last_json(capsys)
    pipeline = multi_user.pipeline("scarlet-nas", NAMESPACE)
    assert pipeline and out["pipeline_id"] == pipeline["pipeline_id"]
    assert len(multi_user.versions_of(pipeline["pipeline_id"])) == 1
    assert multi_user.experiment("scarlet-nas", NAMESPACE)
    assert multi_user.runs[out["run_id"]]["namespace"] == NAMESPACE
    api_calls = [r for r in multi_user.requests if r["path"] != "/apis/v2beta1/healthz"]
    assert api_calls and all(r["authorization"] == f"Bearer {TOKEN}" for r in api_calls)

    # the same without the token: refused before anything is made
    assert main(["schedule", "--host", multi_user.url, "--namespace", NAMESPACE,
                 "--cron", "0 3 * * *", "--version", "v1"]) == 2
    assert _error(capsys).startswith(f"the KFP API at {multi_user.url} wants credentials "
                                     "(401 Unauthorized: Failed to check authorization.")
    assert multi_user.recurring_runs == {}


def test_the_token_path_variable_is_read(multi_user, token_file, monkeypatch, capsys):
    monkeypatch.setenv("KF_PIPELINES_SA_TOKEN_PATH", token_file)
    assert main(["schedule", "--host", multi_user.url, "--namespace", NAMESPACE,
                 "--cron", "0 3 * * *"]) == 0
    job = multi_user.recurring_runs[_last_json(capsys)["recurring_run_id"]]
    assert job["namespace"] == NAMESPACE


def test_multi_user_refusals_are_one_line(multi_user, token_file, tmp_path, capsys):
    host = multi_user.url
    # no namespace: the server is multi-user and would refuse every call
    assert main(["upload", "--host", host, "--token-file", token_file]) == 2
    assert _error(capsys) == (f"the KFP API at {host} is multi-user: give --namespace (your "
                              "Kubeflow profile's namespace)")
    # a namespace the token's user may not use
    assert main(["run", "--host", host, "--namespace", "team-b",
                 "--token-file", token_file]) == 2
    said = _error(capsys)
    assert said.startswith(f"the KFP API at {host} refused namespace 'team-b' (403 Forbidden: ")
    assert f"User '{USER}' is not authorized" in said
    assert said.endswith("check --namespace (your Kubeflow profile's namespace) and that your "
                         "credentials may edit it")
    # no credentials at all
    assert main(["upload", "--host", host, "--namespace", NAMESPACE]) == 2
    assert "wants credentials (401 Unauthorized" in _error(capsys)
    # a token file that is not there, or empty
    assert main(["upload", "--host", host, "--namespace", NAMESPACE,
                 "--token-file", str(tmp_path / "missing")]) == 2
    assert _error(capsys) == f"--token-file {tmp_path / 'missing'}: No such file or directory"
    (tmp_path / "empty").write_text("\n")
    assert main(["upload", "--host", host, "--namespace", NAMESPACE,
                 "--token-file", str(tmp_path / "empty")]) == 2
    assert _error(capsys) == (f"--token-file {tmp_path / 'empty'} is empty: it should hold "
                              "the bearer token")
    assert multi_user.pipelines == {} and multi_user.runs == {}


def test_bad_cron_and_flags(capsys):
    with pytest.raises(ValueError, match="give 5 fields"):
        kfp_cron("every day")
    assert main(["run", "--set", "search.generations=3"]) == 2
    assert "choose one: --local" in capsys.readouterr().err
    assert main(["upload", "--host", "http://127.0.0.1:9", "--version", " "]) == 2
    assert _error(capsys) == "--version ' ': give a name of 1..127 characters"
