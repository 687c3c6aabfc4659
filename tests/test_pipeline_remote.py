import json

import pytest
import yaml

from scarletnas.cli import main
from scarletnas.pipeline.cli import kfp_cron

from .kfp_api_server import FakeKFP


@pytest.fixture
def kfp_server():
    with FakeKFP() as server:
        yield server


def _last_json(capsys) -> dict:
    """The command's own JSON line (kfp.Client prints links before it)."""
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def _uploaded_spec(request) -> dict:
    body = request["body"].decode(errors="replace")
    start = body.index("# PIPELINE DEFINITION") if "# PIPELINE DEFINITION" in body else \
        body.index("components:")
    end = body.rindex("\r\n--")
    return next(yaml.safe_load_all(body[start:end]))


def test_upload_then_new_version(kfp_server, capsys):
    assert main(["upload", "--host", kfp_server.url, "--image", "img:1"]) == 0
    first = _last_json(capsys)
    uploads = kfp_server.calls("POST", "/apis/v2beta1/pipelines/upload")
    assert len(uploads) == 1 and uploads[0]["query"]["name"] == ["scarlet-nas"]
    spec = _uploaded_spec(uploads[0])
    assert spec["pipelineInfo"]["name"] == "scarlet-nas"
    assert main(["upload", "--host", kfp_server.url, "--version", "v2"]) == 0
    second = _last_json(capsys)
    versions = kfp_server.calls("POST", "/apis/v2beta1/pipelines/upload_version")
    assert versions[-1]["query"]["name"] == ["v2"]
    assert versions[-1]["query"]["pipelineid"] == [first["pipeline_id"]]
    assert second["pipeline_id"] == first["pipeline_id"]


def test_run_on_a_host(kfp_server, capsys):
    assert main(["run", "--host", kfp_server.url, "--run-name", "nightly",
                 "--set", "search.generations=7"]) == 0
    assert _last_json(capsys)["run_id"]
    run = kfp_server.calls("POST", "/apis/v2beta1/runs")[0]["json"]
    assert run["display_name"] == "nightly"
    assert run["experiment_id"] == kfp_server.experiments["scarlet-nas"]
    params = run["runtime_config"]["parameters"]
    assert json.loads(params["config"])["search"]["generations"] == 7
    assert run["pipeline_spec"]["pipeline_spec"]["pipelineInfo"]["name"] == "scarlet-nas"
    assert "kubernetes" in run["pipeline_spec"]["platform_spec"]["platforms"]


def test_schedule(kfp_server, capsys):
    assert main(["schedule", "--host", kfp_server.url, "--cron", "0 3 * * *",
                 "--max-concurrency", "1"]) == 0
    out = _last_json(capsys)
    assert out["cron"] == "0 0 3 * * *"
    job = kfp_server.calls("POST", "/apis/v2beta1/recurringruns")[0]["json"]
    assert job["trigger"]["cron_schedule"]["cron"] == "0 0 3 * * *"
    assert int(job["max_concurrency"]) == 1 and job["no_catchup"] is True
    assert "config" in job["runtime_config"]["parameters"]


def test_bad_cron_and_flags(capsys):
    with pytest.raises(ValueError, match="give 5 fields"):
        kfp_cron("every day")
    assert main(["run", "--set", "search.generations=3"]) == 2
    assert "choose one: --local" in capsys.readouterr().err
