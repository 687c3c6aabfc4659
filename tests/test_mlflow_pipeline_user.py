"""The MLflow account the pipeline's steps log in as, against the deployed MLflow
(the manifests' basic-auth server, see test_mlflow_security.py): the admin makes it
once with ``scarlet-nas mlflow-user``; the pipeline's own stages then log a run, a
model with its metrics, a registered version and the champion alias as that user,
who can do nothing beyond its experiment and registered model."""

import json
import os
import stat

import pytest

from scarletnas import stages
from scarletnas.cli import main
from scarletnas.config import load_pipeline_config
from scarletnas.tracking import Tracker, finish_parent_run, start_parent_run

from .test_mlflow_security import PASSWORD, USER

EXPERIMENT, MODEL, PIPELINE_USER = "nas", "nas-model", "scarlet-nas-pipeline"
TINY = ["space.width_mult=0.25", f"tracking.experiment={EXPERIMENT}",
        f"tracking.registered_model={MODEL}"]


def _login(monkeypatch, user: str, password: str) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", user)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", password)


def _env_file(path) -> dict:
    return dict(line.split("=", 1) for line in path.read_text().splitlines())


@pytest.fixture(scope="module")
def granted(deployed, tmp_path_factory):
    """The admin has run ``mlflow-user`` once: (stack, the account's login file, its output)."""
    stack, _ = deployed
    env_file = tmp_path_factory.mktemp("secret") / "pipeline.env"
    with pytest.MonkeyPatch.context() as mp:
        for k, v in stack.env().items():
            mp.setenv(k, v)
        _login(mp, USER, PASSWORD)
        assert main(["mlflow-user", "--tracking-uri", stack.tracking_uri,
                     "--env-file", str(env_file), *[f"--set={s}" for s in TINY[-2:]]]) == 0
    return stack, env_file


@pytest.fixture
def as_admin(granted, monkeypatch):
    stack, _ = granted
    for k, v in stack.env().items():
        monkeypatch.setenv(k, v)
    _login(monkeypatch, USER, PASSWORD)
    return stack


@pytest.fixture
def as_pipeline(granted, monkeypatch):
    stack, env_file = granted
    for k, v in stack.env().items():
        monkeypatch.setenv(k, v)
    login = _env_file(env_file)
    _login(monkeypatch, login["MLFLOW_TRACKING_USERNAME"], login["MLFLOW_TRACKING_PASSWORD"])
    return stack


def test_the_admin_makes_the_account_with_edit_on_the_experiment_and_model(
        granted, as_admin, capsys, tmp_path):
    from mlflow import MlflowClient
    from mlflow.server.auth.client import AuthServiceClient

    stack, env_file = granted
    login = _env_file(env_file)
    assert login["MLFLOW_TRACKING_USERNAME"] == PIPELINE_USER
    assert len(login["MLFLOW_TRACKING_PASSWORD"]) >= 24
    assert stat.S_IMODE(os.stat(env_file).st_mode) == 0o600  # the password's only copy
    auth, client = AuthServiceClient(stack.tracking_uri), MlflowClient(stack.tracking_uri)
    experiment = client.get_experiment_by_name(EXPERIMENT)
    assert not auth.get_user(PIPELINE_USER).is_admin
    assert auth.get_user_permission(PIPELINE_USER, "experiment",
                                    experiment.experiment_id).permission == "EDIT"
    assert auth.get_user_permission(PIPELINE_USER, "registered_model",
                                    MODEL).permission == "EDIT"
    # elsewhere the server's default from the manifests: READ
    other = client.create_experiment("someone-elses")
    assert auth.get_user_permission(PIPELINE_USER, "experiment", other).permission == "READ"

    # run again (to rotate the password): the same grants, the old password refused
    again = tmp_path / "rotated.env"
    assert main(["mlflow-user", "--tracking-uri", stack.tracking_uri, "--env-file", str(again),
                 *[f"--set={s}" for s in TINY[-2:]]]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out == {"user": PIPELINE_USER, "created": False, "permission": "EDIT",
                   "experiment": EXPERIMENT, "experiment_id": experiment.experiment_id,
                   "registered_model": MODEL, "env_file": str(again),
                   "secret": "scarlet-nas-mlflow-pipeline"}
    rotated = _env_file(again)["MLFLOW_TRACKING_PASSWORD"]
    assert rotated != login["MLFLOW_TRACKING_PASSWORD"]
    assert auth.get_user_permission(PIPELINE_USER, "experiment",
                                    experiment.experiment_id).permission == "EDIT"
    # the module's other tests log in with the first file's password: set it back
    auth.update_user_password(PIPELINE_USER, login["MLFLOW_TRACKING_PASSWORD"])


def test_the_pipeline_logs_a_run_and_a_model_with_its_metrics_as_that_user(
        as_pipeline, tmp_path):
    """The MLflow calls of a pipeline run, as the pipeline's user: the parent run, a
    step's run with the data as its input, a model logged and registered with its
    metrics (evaluate's own record, stages.record_evaluated), the champion alias
    (summarize) and the parent's end. The model is an untrained subnet and its
    figures are made up: what is tested is that the user may record them
    (test_stages checks the figures)."""
    import mlflow
    from mlflow import MlflowClient

    from scarletnas.complexity import arch_cost
    from scarletnas.export import export
    from scarletnas.subnet import build_subnet

    stack = as_pipeline
    uri = stack.tracking_uri
    cfg = load_pipeline_config(None, [*TINY, f"tracking.uri={uri}"])
    parent = start_parent_run(cfg, uri, "kfp-run-1", "nightly", "v1")
    assert parent
    dataset = str(tmp_path / "dataset.json")
    manifest = stages.prepare_data(cfg, dataset, Tracker("", "", ""))  # logs nothing itself
    arch = "-".join(["e3k3"] * 8)
    with Tracker.for_task(uri, EXPERIMENT, "evaluate", parent) as evaluated:
        _, space, _ = stages._open(cfg, dataset, evaluated)  # as evaluate starts: the data
        model = build_subnet(arch, space=space).eval()
        cost = arch_cost(space, arch)
        figures = {"arch": arch, "test_top1": 0.625, "test_top5": 0.875, "test_loss": 1.5,
                   "val_top1": 0.5, "madds": cost.madds, "params": cost.params,
                   "latency_ms_cpu_batch1": 1.25, "within_budget": True}
        summary = stages.record_evaluated(cfg, figures, model, space.input_size,
                                          export(model, space.input_size), evaluated)
        assert evaluated.active and evaluated.model_id
    with Tracker.for_task(uri, EXPERIMENT, "summarize", parent) as tracker:
        # (with the data: as a pipeline run does, it reads the registry for a champion)
        result, _ = stages.summarize(cfg, [summary], tracker, dataset=dataset)
        assert tracker.active and result["decision"] == "v1 (62.5%) is the first champion"
    assert finish_parent_run(cfg, uri, "kfp-run-1", "SUCCEEDED") == parent
    assert summary["registered_version"] == "1" and result["alias_set"]

    # the model's own metrics: what its page in the MLflow UI lists
    logged = mlflow.get_logged_model(evaluated.model_id)
    metrics = {m.key: m.value for m in logged.metrics}
    assert metrics["test_top1"] == figures["test_top1"] and metrics["madds"] == cost.madds
    assert {"test_top5", "test_loss", "params", "latency_ms_cpu_batch1"} <= set(metrics)
    assert all(m.run_id == evaluated.run_id for m in logged.metrics)
    client = MlflowClient(uri)
    found = client.search_logged_models(
        experiment_ids=[logged.experiment_id], filter_string="metrics.test_top1 >= 0")
    assert [m.model_id for m in found] == [evaluated.model_id]
    # the run keeps them too, with the data it read; the registered champion is that model
    run = client.get_run(evaluated.run_id)
    assert run.data.metrics["test_top1"] == metrics["test_top1"]
    assert [d.dataset.digest for d in run.inputs.dataset_inputs] == [manifest["digest"]]
    champion = client.get_model_version_by_alias(MODEL, cfg.tracking.champion_alias)
    assert champion.version == "1" and champion.source == f"models:/{evaluated.model_id}"
    assert client.get_run(parent).info.status == "FINISHED"


def test_the_pipeline_user_can_do_nothing_else(granted, as_pipeline, capsys, tmp_path):
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException
    from mlflow.server.auth.client import AuthServiceClient

    stack = as_pipeline
    uri = stack.tracking_uri
    auth, client = AuthServiceClient(uri), MlflowClient(uri)
    ours = client.get_experiment_by_name(EXPERIMENT).experiment_id
    with pytest.MonkeyPatch.context() as mp:
        _login(mp, USER, PASSWORD)
        theirs = MlflowClient(uri).create_experiment("the-admins")
    assert client.get_experiment(theirs).name == "the-admins"  # READ, the server's default

    def refused(call, *args):
        with pytest.raises(MlflowException) as err:
            call(*args)
        assert "403" in str(err.value) or "PERMISSION_DENIED" in str(err.value), err.value

    refused(client.create_run, theirs)  # no logging into other experiments
    refused(client.delete_experiment, theirs)
    refused(client.delete_experiment, ours)  # EDIT: no deleting its own experiment either
    refused(client.set_experiment_tag, theirs, "owner", "the pipeline")
    refused(client.delete_registered_model, MODEL)
    refused(auth.create_user, "mallory", "a long enough password")
    refused(auth.grant_user_permission, PIPELINE_USER, "experiment", theirs, "EDIT")
    refused(auth.grant_user_permission, PIPELINE_USER, "experiment", ours, "MANAGE")
    refused(auth.update_user_admin, PIPELINE_USER, True)
    assert not auth.get_user(PIPELINE_USER).is_admin
    # nor make an account with the command: one line saying whose login that takes
    env_file = tmp_path / "another.env"
    assert main(["mlflow-user", "--tracking-uri", uri, "--user", "another",
                 "--env-file", str(env_file), *[f"--set={s}" for s in TINY[-2:]]]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"scarlet-nas: error: MLflow at {uri} refused")
    assert err[0].endswith("managing users takes the admin's login "
                           "(MLFLOW_TRACKING_USERNAME/PASSWORD)")
    assert not env_file.exists()
