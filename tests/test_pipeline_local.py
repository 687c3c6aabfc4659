"""The default pipeline, end to end, as `make run` executes it (kfp.local)."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from scarletnas.config import DataConfig, load_pipeline_config
from scarletnas.data import Batches, load_splits
from scarletnas.pipeline.cli import run_local


@pytest.fixture(scope="module")
def local_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("local")
    out = run_local(load_pipeline_config(), root)
    return root, out


def test_pareto_front_is_non_empty_and_non_dominated(local_run):
    _, out = local_run
    front_json = Path(out["pareto_png"]).with_name("front.json")
    front = json.loads(front_json.read_text())["front"]
    assert front
    for a in front:
        assert not any(b["top1"] >= a["top1"] and b["madds"] <= a["madds"]
                       and (b["top1"], b["madds"]) != (a["top1"], a["madds"]) for b in front)
    assert Path(out["pareto_png"]).read_bytes()[:4] == b"\x89PNG"
    assert "data:image/png;base64," in Path(out["pareto_html"]).read_text()


def test_retrained_models_are_accurate_and_exported(local_run):
    import onnxruntime as ort

    _, out = local_run
    board = Path(out["leaderboard"]).read_text()
    assert "(champion)" in board
    summaries = [json.loads(p.read_text()) for p in
                 Path(out["run_dir"]).rglob("evaluate/summary")]
    assert len(summaries) == 2
    best = max(summaries, key=lambda s: s["test_top1"])
    assert best["test_top1"] >= 0.9
    assert all(s["onnx_max_abs_diff"] < 1e-4 for s in summaries)
    splits = load_splits(DataConfig(input_size=16))
    x, y = next(iter(Batches(splits, "test", 64, train=False)))
    onnx_files = [Path(p) for p in out["exported_models"] if p.endswith(".onnx")]
    pt2_files = [Path(p) for p in out["exported_models"] if p.endswith(".pt2")]
    assert len(onnx_files) == len(pt2_files) == 2
    assert not any(p.endswith(".torchscript.pt") for p in out["exported_models"])
    for onnx_path, pt2_path in zip(sorted(onnx_files), sorted(pt2_files), strict=True):
        session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
        logits = session.run(None, {"image": x.numpy()})[0]
        program = torch.export.load(str(pt2_path)).module()
        with torch.no_grad():
            np.testing.assert_allclose(program(x).numpy(), logits, atol=1e-4)
        assert (logits.argmax(1) == y.numpy()).mean() > 0.8


def test_mlflow_holds_the_run_hierarchy_and_the_champion(local_run):
    import mlflow
    import onnxruntime as ort
    from mlflow import MlflowClient

    _, out = local_run
    client = MlflowClient(out["tracking_uri"])
    exp = client.get_experiment_by_name("scarlet-nas")
    runs = client.search_runs([exp.experiment_id], max_results=100)
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 1
    parent = parents[0]
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["kfp.run_id"] and parent.data.tags["stabilizer"] == "True"
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    # the tag that says which runs are comparable agrees between the parent and its steps
    fingerprints = {r.data.tags.get("space_fingerprint") for r in children
                    if r.info.run_name in ("prepare_data", "train_supernet")}
    assert fingerprints == {parent.data.tags["space_fingerprint"]}
    names = sorted(r.info.run_name for r in children)
    assert names[:3] == ["evaluate", "evaluate", "prepare_data"]
    assert {"search", "summarize", "train_supernet"} <= set(names)
    trained = next(r for r in children if r.info.run_name == "train_supernet")
    history = client.get_metric_history(trained.info.run_id, "supernet/loss")
    assert len(history) > 5 and history[-1].step > history[0].step
    # the champion loads back from the registry (pt2: no unpickling) and computes
    # exactly what its exported ONNX file computes, at any batch size
    mlflow.set_tracking_uri(out["tracking_uri"])
    version = client.get_model_version_by_alias("scarlet-nas", "champion")
    logged_by = client.get_run(version.run_id).data.params  # the evaluate run of that model
    assert {"arch", "madds", "params"} <= set(logged_by)
    model = mlflow.pytorch.load_model("models:/scarlet-nas@champion")
    summaries = {json.loads(p.read_text())["mlflow_run_id"]: p.parent
                 for p in Path(out["run_dir"]).rglob("evaluate/summary")}
    onnx_path = summaries[version.run_id] / "exported" / "model.onnx"
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    x = torch.randn(3, 3, 16, 16)
    with torch.no_grad():
        np.testing.assert_allclose(model(x).numpy(), session.run(None, {"image": x.numpy()})[0],
                                   atol=1e-4)
