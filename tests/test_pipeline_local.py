"""The default pipeline, end to end, as `make run` executes it (kfp.local), and
what a local run prints."""

import contextlib
import io
import json
import re
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from scarletnas.cli import build_parser, main
from scarletnas.data import Batches, load_splits
from scarletnas.pipeline.cli import _local_config, run_local
from scarletnas.synthetic import write_stripes

pytestmark = pytest.mark.slow  # end to end: `make test-fast` leaves it out


@pytest.fixture(scope="module")
def local_run(tmp_path_factory):
    """The one end-to-end run the tests share, as a user runs it on a folder of their
    own images (`run --local --data DIR`): a generated folder the defaults were not
    tuned on (stripes at 6 orientations, 8 px: 16 px images cost the compact space 4x
    the compute, more than the suite has; a plain CNN scores about 91% on it). Its
    root, outputs, what it printed, and its config."""
    root = tmp_path_factory.mktemp("local")
    folder = write_stripes(root / "stripes", num_classes=6, side=8, train_per_class=150,
                           val_per_class=40, seed=3)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        cfg = _local_config(build_parser().parse_args(["run", "--local", "--data", str(folder)]))
    out = run_local(cfg, root, echo=printed)
    return root, out, printed.getvalue(), cfg


def test_a_local_run_prints_one_line_per_step_then_the_results(local_run):
    root, out, printed, _ = local_run
    lines = printed.splitlines()
    steps = [line.split()[0] for line in lines if re.match(r"[a-z-]+ +[\d.]+ (s|min)", line)]
    assert steps[:4] == ["start-run", "prepare-data", "train-supernet", "search"]
    assert sorted(steps[4:8]) == ["evaluate", "evaluate", "retrain", "retrain"]
    assert steps[8:] == ["summarize", "finish-run"]
    for headline in (r"data: +.*/stripes: 6 classes \(stripes-000, stripes-018, stripes-036, "
                     r"stripes-054, stripes-072, ...\), 900 training and 240 test images",
                     r"prepare-data +[\d.]+ s  prepared imagefolder data: 6 classes, 720 train / "
                     r"180 val / 240 test images at 8 px",
                     r"train-supernet .* sampled-path accuracy \d+\.\d% ± \d+\.\d%",
                     r"search .* Pareto front of \d+, hypervolume [\d.]+",
                     r"retrain .* retrained [a-z0-9-]+: val accuracy \d+\.\d%",
                     r"evaluate .* evaluated [a-z0-9-]+: test accuracy \d+\.\d%"):
        assert re.search(f"^{headline}", printed, re.M), headline
    assert "(champion)" in printed  # the leaderboard
    assert f"outputs:   {out['run_dir']}" in printed
    assert lines[-1] == f"MLflow UI: scarlet-nas ui --output-dir {root}"
    # none of KFP's own output: no executor input, no warnings meant for other setups
    assert len(lines) < 40
    assert "executor" not in printed.lower() and '"outputs": {' not in printed
    assert "Warning" not in printed and "DockerRunner" not in printed
    # which is kept, per step, under the run's outputs
    logs = Path(out["logs"])
    assert "Got executor_input" in next(logs.glob("*-prepare-data.log")).read_text()
    assert "DockerRunner" in (logs / "kfp.log").read_text()


def test_the_supernet_learns_on_images_the_defaults_were_not_tuned_on(local_run):
    """Its sampled paths pass the learned check (no warning) and score far above
    chance (1/6), and at least 60% of what the retrained champion scores; the
    champion is near what a plain CNN reaches (91%; measured: sampled paths 78-80%,
    champion 91-92%)."""
    _, out, printed, _ = local_run
    assert "NOT LEARNED" not in printed
    sampled = float(re.search(r"sampled-path accuracy (\d+\.\d)%", printed).group(1)) / 100
    champion = max(json.loads(p.read_text())["test_top1"]
                   for p in Path(out["run_dir"]).rglob("evaluate/summary"))
    assert sampled >= 0.6 and sampled >= 0.6 * champion and champion >= 0.8, (sampled, champion)


def test_a_failed_step_ends_the_run_with_its_own_error(tmp_path, capsys):
    """A CIFAR-10 folder without its batches passes every check made before the run;
    prepare_data finds it out. The step's own error is the last line, naming it."""
    code = main(["run", "--local", "--output-dir", str(tmp_path / "run"), "--set",
                 "data.dataset=cifar10", "--set", f"data.source={tmp_path}"])
    out, err = capsys.readouterr()
    assert code == 1
    assert err.strip().splitlines()[-1] == (
        f"scarlet-nas: error: prepare-data failed: {tmp_path}/data_batch_1: missing; a "
        "CIFAR-10 folder holds data_batch_1..5 and test_batch (the python version)")
    assert re.search(r"^prepare-data +[\d.]+ s  FAILED \(its log: .*02-prepare-data\.log\)$",
                     out, re.M)
    assert re.search(r"^finish-run ", out, re.M)  # the exit handler closed the MLflow run
    assert "Traceback" not in out + err  # bad input: the traceback is in the step's log
    log = next((tmp_path / "run" / "logs").rglob("02-prepare-data.log")).read_text()
    assert "Traceback" in log and "data_batch_1: missing" in log


def _own_images(root: Path, size=(70, 50), per_class=40) -> Path:
    from PIL import Image

    for split, n in (("train", per_class), ("val", 3)):
        for c in ("cat", "dog"):
            (root / split / c).mkdir(parents=True)
            for i in range(n):
                Image.new("RGB", size, (30 * i % 255, 90, 0)).save(root / split / c / f"{i}.png")
    return root


def test_data_short_form_picks_the_folder_and_an_input_size(tmp_path, capsys):
    """`run --local --data DIR`: an image folder at DIR, at an input size fitted to its
    images (the median shorter side, 50 px, to a multiple of 8), said on the way; a
    size that is set wins. Nothing runs until the config is resolved."""
    folder = _own_images(tmp_path / "mine")
    cfg = _local_config(build_parser().parse_args(["run", "--local", "--data", str(folder)]))
    assert (cfg.data.dataset, cfg.data.source, cfg.data.input_size) == (
        "imagefolder", str(folder), 48)
    said = capsys.readouterr().out
    assert f"{folder}: 2 classes (cat, dog), 80 training and 6 test images" in said
    assert "input size 48 px: the median shorter side of 64 sampled training images is 50 px" \
        in said
    assert "flips on: training mirrors images left to right (--set data.flip=off" in said
    cfg = _local_config(build_parser().parse_args(
        ["run", "--local", "--data", str(folder), "--set", "data.input_size=24",
         "--set", "data.flip=off"]))
    said = capsys.readouterr().out
    assert cfg.data.input_size == 24 and cfg.data.flip == "off"
    assert "input size" not in said and "flips" not in said
    cfg = _local_config(build_parser().parse_args(  # 0 is the default: the images' own
        ["run", "--local", "--data", str(folder), "--set", "data.input_size=0"]))
    assert cfg.data.input_size == 48


def test_pareto_front_is_non_empty_and_non_dominated(local_run):
    _, out, _, _ = local_run
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

    _, out, _, cfg = local_run
    board = Path(out["leaderboard"]).read_text()
    assert "(champion)" in board
    summaries = [json.loads(p.read_text()) for p in
                 Path(out["run_dir"]).rglob("evaluate/summary")]
    assert len(summaries) == 2
    best = max(summaries, key=lambda s: s["test_top1"])
    assert best["test_top1"] >= 0.65, best  # chance: 1/6; 80.0% measured at 400 steps
    assert all(s["onnx_max_abs_diff"] < 1e-4 and s["pt2_max_abs_diff"] < 1e-5 for s in summaries)
    splits = load_splits(cfg.data)  # the shards the run prepared
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
        assert (logits.argmax(1) == y.numpy()).mean() > 0.35


def test_mlflow_holds_the_run_hierarchy_and_the_champion(local_run):
    import mlflow
    import onnxruntime as ort
    from mlflow import MlflowClient

    _, out, _, cfg = local_run
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
    # one torch.export made all three: MLflow logged the very program of model.pt2
    logged = Path(mlflow.artifacts.download_artifacts("models:/scarlet-nas@champion"))
    assert _members(logged / "data" / "model.pt2") == _members(onnx_path.with_suffix(".pt2"))
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    x = torch.randn(3, 3, cfg.data.size, cfg.data.size)
    with torch.no_grad():
        np.testing.assert_allclose(model(x).numpy(), session.run(None, {"image": x.numpy()})[0],
                                   atol=1e-4)


def _members(pt2: Path) -> dict[str, bytes]:
    """A .pt2 archive's files (under its top folder, which is named after the file)."""
    with zipfile.ZipFile(pt2) as z:
        return {name.split("/", 1)[1]: z.read(name) for name in z.namelist()}
