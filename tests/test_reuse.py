"""Reuse by content (reuse.py): a step finds what an earlier run made from the
same inputs, refuses it when any input differs (and says which), and falls
back to making it when the stored one is broken."""

import json
import logging
from pathlib import Path

import pytest
import torch

from scarletnas import reuse, stages
from scarletnas.checkpoint import load_supernet
from scarletnas.config import load_pipeline_config
from scarletnas.devstack import BUCKET
from scarletnas.tracking import Tracker

from .short_runs import NO_STEP_FLOOR

TINY = ["space.width_mult=0.25", "supernet.optim.epochs=0.5", "supernet.optim.warmup_epochs=0.1",
        "supernet.extensions=0", "supernet.check_paths=2", "eval.calib_batches=1",
        "search.generations=1", "search.population=4", "search.top_k=1",
        "retrain.optim.epochs=0.5", "retrain.optim.warmup_epochs=0.1", *NO_STEP_FLOOR]
MANIFEST = {"digest": "d1", "space_fingerprint": "s1", "flip": "on"}


def _cfg(root, *more):
    return load_pipeline_config(None, [*TINY, f"checkpoint_root={root}", *more])


@pytest.mark.parametrize("changed,why", [
    ({"manifest": {**MANIFEST, "digest": "d2"}}, "the data (d1 -> d2)"),
    ({"manifest": {**MANIFEST, "space_fingerprint": "s2"}}, "the search space (s1 -> s2)"),
    ({"manifest": {**MANIFEST, "flip": "off"}}, "data.flip (on -> off)"),
    ({"set": ["supernet.optim.lr=0.05"]}, "supernet.optim.lr (0.1 -> 0.05)"),
    ({"set": ["resources.processes=4"]}, "processes.processes (0 -> 4)"),
    ({"code": "other"}, "the code"),
])
def test_reuse_is_refused_when_any_input_differs(tmp_path, monkeypatch, changed, why):
    cfg = _cfg(tmp_path)
    store = reuse.Store.for_run(cfg)
    (tmp_path / "supernet.pt").write_bytes(b"weights")
    parts = reuse.supernet_parts(cfg, MANIFEST)
    store.put("supernet", parts, {"supernet.pt": str(tmp_path / "supernet.pt")},
              {"steps": 9}, {"mlflow_run_id": "abc"})
    found, _ = store.find("supernet", reuse.supernet_parts(cfg, MANIFEST))
    assert found and found.record["out"] == {"steps": 9} and found.source.startswith("run abc")
    if "code" in changed:
        monkeypatch.setattr(reuse, "code_version", lambda: changed["code"])
    other = reuse.supernet_parts(_cfg(tmp_path, *changed.get("set", [])),
                                 changed.get("manifest", MANIFEST))
    found, message = store.find("supernet", other)
    assert found is None
    assert message.startswith(why) and message.endswith("changed since the last stored "
                                                        "supernet"), message


def test_settings_that_only_say_how_a_step_runs_keep_the_key(tmp_path):
    a = reuse.supernet_parts(_cfg(tmp_path), MANIFEST)
    b = reuse.supernet_parts(_cfg(tmp_path, "supernet.log_every=1", "supernet.device=cpu",
                                  "supernet.checkpoint_every=5", "tracking.uri=http://x:5000",
                                  "retrain.optim.lr=0.3"), MANIFEST)
    assert reuse.key_of(a) == reuse.key_of(b)
    assert reuse.Store.for_run(_cfg(tmp_path, "reuse=false")) is None
    assert reuse.Store.for_run(_cfg("")) is None  # no checkpoint_root: nowhere to keep it


def test_a_rerun_reuses_supernet_search_and_retrain_and_records_it(tmp_path, caplog):
    """The stages on unchanged inputs: the second time each finds the first's result
    (identical files), and a broken stored supernet is trained again with a warning."""
    cfg = _cfg(tmp_path / "ck")
    dataset = str(tmp_path / "dataset.json")
    stages.prepare_data(cfg, dataset, Tracker("", "", ""))

    def run(name):
        folder = tmp_path / name
        folder.mkdir()
        t = Tracker("", "", "")
        sup = stages.train_supernet(cfg, dataset, str(folder / "supernet.pt"), "", t)
        found = stages.search(cfg, dataset, str(folder / "supernet.pt"), str(folder / "front"),
                              "", t)
        arch = found["selected"][0]
        trained = stages.retrain(cfg, dataset, arch, str(folder / "model"), "", t)
        return folder, sup, found, trained

    first, sup1, search1, retrain1 = run("first")
    assert (sup1["reused"], retrain1["reused"]) == (0, 0)
    second, sup2, search2, retrain2 = run("second")
    assert (sup2["reused"], retrain2["reused"]) == (1, 1)
    assert sup2["sampled_top1_mean"] == sup1["sampled_top1_mean"]
    assert search2["selected"] == search1["selected"]
    assert (second / "front" / "front.csv").read_text() == (first / "front" / "front.csv"
                                                            ).read_text()
    for a, b in ((first / "supernet.pt", second / "supernet.pt"),
                 (first / "model" / "best.pt", second / "model" / "best.pt")):
        assert a.read_bytes() == b.read_bytes(), a.name

    # the stored supernet is damaged: the next run trains one, with a warning
    stored = next((tmp_path / "ck" / "reuse" / "supernet").rglob("supernet.pt"))
    stored.write_bytes(b"not a checkpoint")
    third = tmp_path / "third"
    third.mkdir()
    with caplog.at_level(logging.WARNING, logger="scarletnas"):
        again = stages.train_supernet(cfg, dataset, str(third / "supernet.pt"), "",
                                      Tracker("", "", ""))
    assert again["reused"] == 0 and "cannot be used" in caplog.text
    assert load_supernet(str(third / "supernet.pt")).space.fingerprint
    # and stores a good one again, in a folder of its own; one whose files are gone
    # is not offered at all
    store = reuse.Store.for_run(cfg)
    parts = reuse.supernet_parts(cfg, json.loads(Path(dataset).read_text()))
    found, _ = store.find("supernet", parts)
    assert found.file("supernet.pt") != str(stored)
    assert load_supernet(found.file("supernet.pt")).path_check
    Path(found.file("supernet.pt")).unlink()
    assert store.find("supernet", parts) == (None, "the stored supernet lacks supernet.pt")


def test_the_store_lives_in_s3(s3_env, tmp_path):
    cfg = _cfg(f"s3://{BUCKET}/reuse-test")
    store = reuse.Store.for_run(cfg)
    weights = tmp_path / "best.pt"
    torch.save({"w": torch.ones(2)}, weights)
    parts = reuse.retrain_parts(cfg, MANIFEST, "e3k3-skip")
    assert store.find("retrain", parts) == (None, "no retrain stored yet for this arch")
    store.put("retrain", parts, {"best.pt": str(weights)}, {"steps": 3}, {})
    found, _ = store.find("retrain", parts)
    assert found.folder.startswith(f"s3://{BUCKET}/reuse-test/reuse/retrain/")
    other = reuse.retrain_parts(_cfg(f"s3://{BUCKET}/reuse-test", "retrain.dropout=0.3"),
                                MANIFEST, "e3k3-skip")
    assert store.find("retrain", other) == (
        None, "retrain.dropout (0.1 -> 0.3) changed since the last stored retrain")
