"""Storage and tracking against real servers started on 127.0.0.1: SeaweedFS's
S3 gateway and an MLflow tracking server whose artifacts live in that S3."""

import logging
import os
import threading
import time
import urllib.request

import numpy as np
import pytest
import torch

from scarletnas import storage
from scarletnas.config import DataConfig, OptimConfig, SupernetConfig
from scarletnas.data import load_splits
from scarletnas.devstack import BUCKET, Stack
from scarletnas.tracking import Tracker, find_parent_run, log_model, set_alias
from scarletnas.train import train_supernet

from .test_data import write_cifar


def test_storage_round_trip(s3_env, tmp_path):
    uri = f"s3://{BUCKET}/t/obj.bin"
    storage.write_bytes(uri, b"payload")
    assert storage.read_bytes(uri) == b"payload" and storage.exists(uri)
    assert storage.list_prefix(f"s3://{BUCKET}/t") == [uri]
    big = tmp_path / "big.bin"
    big.write_bytes(np.random.default_rng(0).bytes(70 * 2**20))  # multipart (> 64 MiB)
    storage.upload_file(big, f"s3://{BUCKET}/t/big.bin")
    back = storage.download_file(f"s3://{BUCKET}/t/big.bin", tmp_path / "back.bin")
    assert back.read_bytes() == big.read_bytes()
    storage.delete(uri)
    assert not storage.exists(uri)


def test_storage_errors_name_object_and_cause(s3_env, monkeypatch):
    with pytest.raises(storage.StorageError, match="s3://no-such-bucket/k: the bucket does not"):
        storage.write_bytes("s3://no-such-bucket/k", b"x")
    with pytest.raises(storage.StorageError, match=f"s3://{BUCKET}/missing: no such object"):
        storage.read_bytes(f"s3://{BUCKET}/missing")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "intruder")
    storage._client.cache_clear()
    with pytest.raises(storage.StorageError, match="access key is not known"):
        storage.read_bytes(f"s3://{BUCKET}/anything")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    storage._client.cache_clear()
    with pytest.raises(storage.StorageError, match="S3 endpoint http://127.0.0.1:9 unreachable"):
        storage.read_bytes(f"s3://{BUCKET}/anything")


def test_datasets_from_s3(s3_env, tmp_path):
    root = write_cifar(tmp_path / "cifar")
    for f in root.iterdir():
        storage.upload_file(f, f"s3://{BUCKET}/datasets/cifar/{f.name}")
    splits = load_splits(DataConfig(dataset="cifar10", source=f"s3://{BUCKET}/datasets/cifar",
                                    cache_dir=str(tmp_path / "cache"), input_size=32))
    assert len(splits.test) == 20
    with pytest.raises(ValueError, match="no objects under this prefix"):
        load_splits(DataConfig(dataset="cifar10", source=f"s3://{BUCKET}/datasets/none",
                               cache_dir=str(tmp_path / "cache")))


def test_supernet_checkpoints_to_s3_and_resumes(s3_env, tiny_space, digits):
    cfg = SupernetConfig(optim=OptimConfig(epochs=0.8, warmup_epochs=0.2, batch_size=64),
                         checkpoint_every=3, log_every=1)
    reference, _ = train_supernet(tiny_space, digits, cfg)
    uri = f"s3://{BUCKET}/runs/r1/supernet/checkpoint.pt"

    def die(metrics, step):
        if step == 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_supernet(tiny_space, digits, cfg, checkpoint_uri=uri, callback=die)
    resumed, result = train_supernet(tiny_space, digits, cfg, checkpoint_uri=uri)
    assert result.resumed_from == 3
    a, b = reference.state_dict(), resumed.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_s3_server_dies_during_a_checkpoint_write(tmp_path, monkeypatch):
    """Overwrite a checkpoint while the server is killed: the write fails with
    a clear error, and after a restart the old checkpoint is intact."""
    own = Stack(str(tmp_path / "own"))
    own.start_s3()
    try:
        for k, v in own.env().items():
            monkeypatch.setenv(k, v)
        monkeypatch.setenv("AWS_MAX_ATTEMPTS", "2")
        storage._client.cache_clear()
        uri = f"s3://{BUCKET}/ckpt/checkpoint.pt"
        storage.write_bytes(uri, b"old complete checkpoint")
        errors = []
        big = np.random.default_rng(1).bytes(300 * 2**20)

        def write():
            try:
                storage.write_bytes(uri, big)
            except storage.StorageError as err:
                errors.append(err)

        writer = threading.Thread(target=write)
        writer.start()
        time.sleep(0.3)
        own.stop("s3")
        writer.join(timeout=120)
        assert not writer.is_alive()
        assert errors and "checkpoint.pt" in str(errors[0])
        own.start_s3(own.s3_port)
        storage._client.cache_clear()
        assert storage.read_bytes(uri) == b"old complete checkpoint"
    finally:
        own.down()
        storage._client.cache_clear()


def test_mlflow_round_trip(stack, monkeypatch, tmp_path, tiny_space):
    for k, v in stack.env().items():
        monkeypatch.setenv(k, v)
    uri = stack.tracking_uri
    parent = Tracker(uri, "roundtrip", "pipeline run", tags={"kfp.run_id": "run-42",
                                                              "stabilizer": True})
    child = Tracker(uri, "roundtrip", "train_supernet", parent_run_id=parent.run_id)
    for step in range(5):
        child.metrics({"supernet/loss": 2.0 - 0.1 * step}, step)
    child.params({"optim": {"lr": 0.05}, "sampling": "uniform"})
    payload = bytes(range(256)) * 40
    (tmp_path / "curve.bin").write_bytes(payload)
    child.artifact(tmp_path / "curve.bin", "plots")
    from scarletnas import build_subnet

    version = log_model(child, build_subnet("e3k3-e6k3se-skip-e3k5", space=tiny_space), 16,
                        registered_name="roundtrip-model")
    assert version == "1" and set_alias(uri, "roundtrip-model", "champion", version)
    child.end()
    parent.end()

    import mlflow
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    run = client.get_run(child.run_id)
    assert run.data.tags["mlflow.parentRunId"] == parent.run_id
    assert run.data.params["optim.lr"] == "0.05" and run.info.status == "FINISHED"
    history = client.get_metric_history(child.run_id, "supernet/loss")
    assert [m.step for m in history] == [0, 1, 2, 3, 4]
    assert history[-1].value == pytest.approx(1.6)
    got = mlflow.artifacts.download_artifacts(run_id=child.run_id,
                                              artifact_path="plots/curve.bin",
                                              dst_path=str(tmp_path / "dl"), tracking_uri=uri)
    assert open(got, "rb").read() == payload
    mlflow.set_tracking_uri(uri)
    model = mlflow.pytorch.load_model("models:/roundtrip-model@champion")
    assert model(torch.randn(2, 3, 16, 16)).shape == (2, 10)
    assert find_parent_run(uri, "roundtrip", "run-42") == parent.run_id
    # the artifacts really live in the S3 server behind MLflow
    keys = storage.list_prefix(f"s3://{BUCKET}/mlflow")
    assert any(k.endswith("plots/curve.bin") for k in keys)


def test_training_survives_the_tracking_server_dying(tmp_path, monkeypatch, caplog, tiny_space,
                                                      digits):
    own = Stack(str(tmp_path / "own"))
    own.start_s3()
    own.start_mlflow()
    for k, v in own.env().items():
        monkeypatch.setenv(k, v)
    tracker = Tracker(own.tracking_uri, "dying", "train_supernet")
    assert tracker.active
    killed = []

    def log_and_kill(metrics, step):
        tracker.metrics(metrics, step)
        if step == 3 and not killed:
            own.stop("mlflow")
            killed.append(step)

    cfg = SupernetConfig(optim=OptimConfig(epochs=0.5, warmup_epochs=0.1, batch_size=64),
                         log_every=1)
    try:
        with caplog.at_level(logging.WARNING, logger="scarletnas.tracking"):
            _, result = train_supernet(tiny_space, digits, cfg, callback=log_and_kill)
            tracker.end()
        assert result.steps > 3 and not result.stopped_early
        assert not tracker.active
        assert "MLflow tracking disabled, the work continues untracked" in caplog.text
        with pytest.raises(OSError):
            urllib.request.urlopen(own.tracking_uri + "/health", timeout=2)
    finally:
        own.down()


def test_unreachable_tracking_server_at_start(caplog):
    with caplog.at_level(logging.WARNING, logger="scarletnas.tracking"):
        tracker = Tracker("http://127.0.0.1:9", "x", "y")
    assert not tracker.active
    tracker.metrics({"a": 1.0})  # a no-op, not an error
    assert "unreachable" in caplog.text
    assert os.environ.get("MLFLOW_HTTP_REQUEST_MAX_RETRIES") == "2"


def test_the_champion_alias_moves_only_to_a_model_that_beats_it(stack, monkeypatch, tmp_path,
                                                                caplog):
    """Four scheduled runs against one registry: the first model becomes champion;
    a worse one gets the challenger alias and leaves the champion (re-scored on the
    run's test split) in place; a better one moves it; a champion that no longer
    loads is replaced with a warning, never a failed run."""
    import mlflow
    from mlflow import MlflowClient

    from scarletnas import manifest as prepared
    from scarletnas import stages
    from scarletnas.champion import find_incumbent
    from scarletnas.config import load_pipeline_config
    from scarletnas.subnet import build_subnet

    for k, v in stack.env().items():
        monkeypatch.setenv(k, v)
    uri = stack.tracking_uri
    cfg = load_pipeline_config(None, [f"tracking.uri={uri}", "tracking.experiment=crowned",
                                      "tracking.registered_model=crowned"])
    dataset = str(tmp_path / "dataset.json")
    stages.prepare_data(cfg, dataset, Tracker("", "", ""))
    splits, space = prepared.open_prepared(cfg, prepared.read(dataset))
    client = MlflowClient(uri)
    arch = "e3k3-e6k3se-skip-e3k5-e3k3-e6k5-e3k7se-skip"

    def scheduled_run(claimed_top1: float, planted: bool = False):
        """One run's evaluate (registering a model said to score ``claimed_top1``)
        and summarize; returns what summarize decided and the parent run's tags."""
        parent = Tracker(uri, "crowned", "pipeline run")
        child = Tracker(uri, "crowned", "evaluate", parent_run_id=parent.run_id)
        model = build_subnet(arch, space=space)  # untrained: about chance on the test split
        summary = stages.record_evaluated(cfg, {
            "arch": arch, "test_top1": claimed_top1, "test_top5": 1.0, "madds": 5e6,
            "params": 1e5, "latency_ms_cpu_batch1": 1.0, "within_budget": True}, model,
            space.input_size, None, child)
        child.end()
        summarizing = Tracker(uri, "crowned", "summarize", parent_run_id=parent.run_id)
        out, markdown = stages.summarize(cfg, [summary], summarizing, dataset=dataset)
        summarizing.end()
        parent.end()
        return out, markdown, client.get_run(parent.run_id).data, summary["registered_version"]

    def alias(name):
        return client.get_model_version_by_alias("crowned", name).version

    out, _, parent, v1 = scheduled_run(0.5)
    assert out["promoted"] and alias("champion") == v1 == "1"
    assert parent.tags["champion_decision"] == "promoted"
    assert out["decision"] == "v1 (50.0%) is the first champion"

    out, markdown, parent, v2 = scheduled_run(0.0)  # worse than chance: v1 must win
    assert not out["promoted"] and alias("champion") == v1 and alias("challenger") == v2
    rescored = parent.metrics["previous_champion_test_top1"]
    assert 0.0 < rescored < 0.5  # really scored on the test split, not read from v1's run
    assert parent.tags["champion_decision"] == "kept"
    assert f"has alias `challenger`: champion v1 ({100 * rescored:.1f}% on this run's test " \
           f"split) stays: v2 (0.0%) does not beat it." in markdown

    out, _, parent, v3 = scheduled_run(0.99)
    assert out["promoted"] and alias("champion") == v3 == "3"
    assert parent.tags["champion_reason"].startswith("v3 (99.0%) beats champion v1")

    # the champion's files disappear from the store: the run goes on and replaces it
    mlflow.set_tracking_uri(uri)
    model_id = client.get_model_version("crowned", v3).source.removeprefix("models:/")
    program = [k for k in storage.list_prefix(f"s3://{BUCKET}/mlflow")
               if f"/{model_id}/" in k and k.endswith("model.pt2")]
    assert len(program) == 1
    storage.delete(program[0])
    with caplog.at_level(logging.WARNING, logger="scarletnas.champion"):
        out, _, parent, v4 = scheduled_run(0.0)
    assert out["promoted"] and alias("champion") == v4
    assert "replaces champion v3, which this run cannot score" in out["decision"]
    assert "cannot be scored on this run's data" in caplog.text
    # a champion for other data (its signature says so) is not scored on this one
    other = find_incumbent(uri, "crowned", "champion", splits, space.with_(num_classes=7))
    assert (other.version, other.test_top1) == (v4, None)
    assert other.problem == "it predicts 10 classes, this run's data has 7"
