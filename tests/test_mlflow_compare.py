"""What users compare in the MLflow UI, against a real MLflow server (artifacts in a
real S3 server): two pipeline runs, one the stabilizer ablation of the other."""

import json

import pytest

from scarletnas.config import load_pipeline_config
from scarletnas.devstack import Stack
from scarletnas.pipeline.cli import run_local
from scarletnas.tracking import (
    EXPERIMENT_KIND,
    KFP_OWNED_TAG,
    PARENT_TAG,
    Tracker,
    finish_parent_run,
    start_parent_run,
)

from .short_runs import NO_STEP_FLOOR

pytestmark = pytest.mark.slow  # end to end: `make test-fast` leaves it out

TINY = ["space.width_mult=0.25", "supernet.optim.epochs=1", "supernet.optim.warmup_epochs=0.2",
        "supernet.check_paths=3", "search.generations=1", "search.population=4",
        "search.top_k=1", "retrain.optim.epochs=1", "retrain.optim.warmup_epochs=0.2",
        "tracking.experiment=ablation", *NO_STEP_FLOOR]
HEADLINE = ["champion_test_top1", "champion_test_top5", "champion_madds", "champion_params",
            "champion_latency_ms", "supernet_final_loss", "supernet_sampled_top1",
            "search_hypervolume", "search_front_size", "minutes/prepare_data",
            "minutes/train_supernet", "minutes/search", "minutes/retrain", "minutes/summarize"]


@pytest.fixture(scope="module")
def ablation(tmp_path_factory):
    """The same pipeline run twice on a real MLflow server: with and without the stabilizer."""
    stack = Stack(str(tmp_path_factory.mktemp("stack"))).up()
    try:
        for stabilizer in ("true", "false"):
            cfg = load_pipeline_config(None, [*TINY, f"tracking.uri={stack.tracking_uri}",
                                              f"supernet.stabilizer={stabilizer}"])
            run_local(cfg, tmp_path_factory.mktemp(f"stabilizer-{stabilizer}"))
        from mlflow import MlflowClient

        client = MlflowClient(stack.tracking_uri)
        yield client, client.get_experiment_by_name("ablation")
    finally:
        stack.down()


def _parents(client, experiment):
    runs = client.search_runs([experiment.experiment_id], max_results=200)
    return sorted((r for r in runs if PARENT_TAG not in r.data.tags),
                  key=lambda r: r.data.params["supernet.stabilizer"])


def test_parent_runs_carry_what_a_comparison_needs(ablation):
    client, experiment = ablation
    assert experiment.tags["mlflow.experimentKind"] == EXPERIMENT_KIND["mlflow.experimentKind"]
    parents = _parents(client, experiment)
    assert len(parents) == 2
    for run in parents:
        params, metrics = run.data.params, run.data.metrics
        assert params["data.dataset"] == "digits" and params["space.preset"] == "compact"
        assert params["space_fingerprint"] == run.data.tags["space_fingerprint"]
        assert params["supernet.optim.epochs"] == "1.0" and params["git_sha"]
        assert params["pipeline_version"] and params["search.objectives"] == "top1,madds"
        missing = [m for m in HEADLINE if m not in metrics]
        assert missing == []
        assert 0 < metrics["champion_test_top1"] <= 1 and metrics["champion_madds"] > 0
        assert run.info.status == "FINISHED"
        # the data as a dataset input, with its content digest and split sizes
        (data,) = [d.dataset for d in run.inputs.dataset_inputs]
        assert data.name == "digits" and data.digest == params["data_digest"]
        assert json.loads(data.profile)["train"] == 1149
    # the ablation differs in exactly the setting that was changed
    a, b = (p.data.params for p in parents)
    assert {k for k in a.keys() | b.keys() if a.get(k) != b.get(k)} == {"supernet.stabilizer"}


def test_tables_plots_and_models_are_visible_without_downloads(ablation):
    import mlflow

    client, experiment = ablation
    mlflow.set_tracking_uri(client.tracking_uri)  # load_table searches through the fluent API
    parent = _parents(client, experiment)[0]
    names = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"pareto_front.json", "leaderboard.json", "leaderboard.md", "plots"} <= names
    front = client.load_table(experiment.experiment_id, "pareto_front.json",
                              run_ids=[parent.info.run_id])
    assert list(front.columns)[:4] == ["arch", "top1", "madds", "params"] and len(front) >= 1
    children = client.search_runs([experiment.experiment_id],
                                  f"tags.`{PARENT_TAG}` = '{parent.info.run_id}'")
    evaluate = next(r for r in children if r.info.run_name == "evaluate")
    assert {"arch", "madds", "params"} <= set(evaluate.data.params)
    search = next(r for r in children if r.info.run_name == "search")
    table = client.load_table(experiment.experiment_id, "candidates.json",
                              run_ids=[search.info.run_id])
    assert len(table) == 4 and table["top1"].between(0, 1).all()
    assert [d.dataset.name for d in search.inputs.dataset_inputs] == ["digits"]


def test_kfp_mlflow_integration_run_is_adopted_as_the_parent(tmp_path, monkeypatch):
    """Under KFP's MLflow integration each task gets MLFLOW_RUN_ID, nested under the
    root run KFP opened: that root is the parent, no second one is opened, and KFP,
    not the exit handler, closes it."""
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    exp = client.create_experiment("kfp-managed")
    root = client.create_run(exp, run_name="kfp root").info.run_id
    task = client.create_run(exp, run_name="start-run", tags={PARENT_TAG: root}).info.run_id
    monkeypatch.setenv("MLFLOW_RUN_ID", task)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    cfg = load_pipeline_config(None, ["tracking.experiment=kfp-managed"])
    assert start_parent_run(cfg, "", "kfp-run-1", "nightly", "") == root
    runs = client.search_runs([exp])
    assert len(runs) == 2  # KFP's root and task runs only
    adopted = client.get_run(root)
    assert adopted.data.tags[KFP_OWNED_TAG] == "kfp"
    assert adopted.data.params["supernet.stabilizer"] == "True"
    # a component logs into the run KFP opened for its task
    tracker = Tracker.for_task("", "kfp-managed", "train_supernet", root)
    assert tracker.run_id == task
    tracker.metrics({"supernet/loss": 1.5})
    assert client.get_run(task).data.metrics["supernet/loss"] == 1.5
    assert finish_parent_run(cfg, uri, "kfp-run-1", "SUCCEEDED") == root
    assert client.get_run(root).info.status == "RUNNING"  # KFP closes it, not us
