"""The stages behind the components, called directly (no KFP)."""

import csv
import dataclasses
import json
import math

import pytest
import torch

from scarletnas import stages
from scarletnas.checkpoint import load_supernet
from scarletnas.config import load_pipeline_config
from scarletnas.data import DataError
from scarletnas.manifest import open_prepared
from scarletnas.tracking import Tracker

from .short_runs import NO_STEP_FLOOR


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("stages")
    cfg = load_pipeline_config(None, [
        "space.width_mult=0.25", "supernet.optim.epochs=1", "supernet.optim.warmup_epochs=0.2",
        "supernet.extensions=0", "ranking.archs=3",
        # without shortcuts one epoch leaves the supernet near chance (the warnings)
        "space.shortcut=false", "ranking.epochs=1", "search.generations=2",
        "search.population=6", "search.objectives=top1,madds,latency",
        "search.max_madds=6e6", "search.max_latency_ms=50", "search.top_k=2",
        "retrain.optim.epochs=1", "retrain.optim.warmup_epochs=0.2", *NO_STEP_FLOOR])
    dataset = str(root / "dataset.json")
    manifest = stages.prepare_data(cfg, dataset, Tracker("", "", ""))
    supernet = str(root / "supernet.pt")
    out = stages.train_supernet(cfg, dataset, supernet, str(root / "ckpt.pt"),
                                Tracker("", "", ""))
    return cfg, root, supernet, out, dataset, manifest


def test_prepare_and_train(tiny_run):
    cfg, root, supernet, out, dataset, manifest = tiny_run
    assert json.loads((root / "dataset.json").read_text()) == manifest
    assert manifest["num_classes"] == 10 and manifest["train"] + manifest["val"] == 1437
    assert manifest["space_fingerprint"] == load_supernet(supernet).space.fingerprint
    # one epoch already moves the loss below chance (ln 10) and the accuracy above it
    assert out["steps"] == 17 and out["final_loss"] < math.log(10)
    assert out["final_train_acc"] > 0.15
    assert torch.load(root / "ckpt.pt", weights_only=True)["step"] == 17
    # one epoch from the release init is far too little: the check must say so, and
    # travels with the supernet
    assert out["learned"] == 0 and out["sampled_top1_mean"] < 0.325
    check = load_supernet(supernet).path_check
    assert check["top1_mean"] == out["sampled_top1_mean"] and check["paths"] == 20
    assert out["learned"] == int(check["learned"]) == int(check["top1_mean"] >= 0.325)
    assert (check["warning"] == "") == check["learned"]


def test_ranking_check_stage(tiny_run):
    cfg, _, supernet, _, dataset, _ = tiny_run
    report, markdown = stages.ranking_check(cfg, dataset, supernet, Tracker("", "", ""))
    assert report["n"] == 3 and len(report["archs"]) == 3
    assert markdown.count("| `") == 3 and "# Ranking check" in markdown
    actual = sorted(r["standalone_top1"] for r in report["archs"])
    assert report["close"]["n"] == sum(a >= actual[-1] - 0.05 - 1e-12 for a in actual)
    assert "close archs (within 5 points of the best)" in markdown
    # three archs can never give a significant tau: the report must lead with that
    assert report["kendall_p"] >= 0.05
    assert markdown.startswith("> **WARNING** RANKING NOT SIGNIFICANT")


def test_search_stage_with_latency_budget(tiny_run):
    cfg, root, supernet, _, dataset, _ = tiny_run
    out = stages.search(cfg, dataset, supernet, str(root / "search"), "", Tracker("", "", ""))
    assert len(out["selected"]) == 2
    front = list(csv.DictReader((root / "search" / "front.csv").open()))
    assert front and all(float(r["latency_ms"]) <= 50 and int(r["madds"]) <= 6e6 for r in front)
    page = (root / "search" / "pareto.html").read_text()
    assert out["warning"].startswith("SUPERNET HAS NOT LEARNED")
    assert page.index("class=warn") < page.index("<h2>")
    assert out["metrics"]["front_size"] >= 1


def test_evaluate_checks_every_budget_the_search_checks(tiny_run):
    """within_budget and the search's feasibility are one function: a latency
    budget the model misses makes it out of budget, as it would in the search."""
    cfg, root, _, _, dataset, _ = tiny_run
    arch = "-".join(["e3k3"] * 8)
    model_dir = root / "model"
    stages.retrain(cfg, dataset, arch, str(model_dir), "", Tracker("", "", ""))
    fits = stages.evaluate(cfg, dataset, str(model_dir), str(root / "export"),
                           Tracker("", "", ""))
    assert fits["arch"] == arch and fits["within_budget"]
    assert fits["latency_ms_cpu_batch1"] < cfg.search.max_latency_ms
    slow = dataclasses.replace(cfg, search=dataclasses.replace(cfg.search, max_latency_ms=1e-4))
    over = stages.evaluate(slow, dataset, str(model_dir), str(root / "export"),
                           Tracker("", "", ""))
    assert over["madds"] <= slow.search.max_madds and not over["within_budget"]


def test_leaderboard_leads_with_the_supernet_warning():
    cfg = load_pipeline_config(None, [])
    row = {"arch": "e3k3-" * 7 + "e3k3", "test_top1": 0.9, "test_top5": 1.0, "madds": 2e6,
           "params": 1e5, "latency_ms_cpu_batch1": 1.0, "within_budget": True}
    _, plain = stages.summarize(cfg, [row], Tracker("", "", ""))
    assert plain.startswith("# SCARLET-NAS leaderboard")
    _, warned = stages.summarize(cfg, [row], Tracker("", "", ""),
                                 warning="SUPERNET HAS NOT LEARNED: test")
    assert warned.startswith("> **WARNING** SUPERNET HAS NOT LEARNED: test\n")
    assert warned.endswith(plain)


def test_retrain_stopped_before_its_first_evaluation_scores_what_it_has(tmp_path):
    """retrain.max_steps ending inside the first epoch: no epoch was evaluated, so the
    stage scores the weights it has at the end and keeps them as best.pt (what
    evaluate reads); final.pt, written only by a finished schedule, is not there."""
    from scarletnas.checkpoint import load_weights

    cfg = load_pipeline_config(None, ["space.width_mult=0.25", "retrain.optim.epochs=2",
                                      *NO_STEP_FLOOR,
                                      "retrain.optim.batch_size=16", "retrain.max_steps=2",
                                      "retrain.log_every=1"])
    dataset = str(tmp_path / "dataset.json")
    stages.prepare_data(cfg, dataset, Tracker("", "", ""))
    arch = "-".join(["e3k3"] * 8)
    work, model_dir = tmp_path / "ckpt", tmp_path / "model"  # the pipeline's layout
    out = stages.retrain(cfg, dataset, arch, str(model_dir), str(work), Tracker("", "", ""))
    assert out["steps"] == 2 and 0 < out["best_epoch"] < 1
    assert 0 <= out["best_val_top1"] <= 1
    best = load_weights(str(model_dir / "best.pt"))
    assert best["meta"]["arch"] == arch and best["meta"]["val_top1"] == out["best_val_top1"]
    assert best["meta"]["epoch"] == out["best_epoch"]
    assert not (model_dir / "final.pt").exists() and not (work / "final.pt").exists()


def test_a_step_refuses_data_or_config_that_differs_from_the_prepared(tiny_run, tmp_path):
    """Every step reads the manifest and checks it: a changed source, another data
    setting or another space is an error naming it, not a silently different run."""
    cfg, root, supernet, _, dataset, manifest = tiny_run
    splits, space = open_prepared(cfg, dataset)
    assert space.fingerprint == manifest["space_fingerprint"]
    assert len(splits.val) == manifest["val"] == 288
    older = tmp_path / "older.json"  # written before manifests said which flips
    older.write_text(json.dumps({k: v for k, v in manifest.items() if k != "flip"}))
    assert manifest["flip"] == "off" and len(open_prepared(cfg, str(older))[0].val) == 288
    flipped = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, flip="on"))
    with pytest.raises(DataError, match=r"data settings differ from prepare_data's in "
                                        r"\['flip'\]"):
        open_prepared(flipped, dataset)
    shrunk = tmp_path / "shrunk.json"
    shrunk.write_text(json.dumps({**manifest, "train": manifest["train"] - 1}))
    with pytest.raises(DataError, match="the data changed since prepare_data described it"):
        open_prepared(cfg, str(shrunk))
    other_data = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, val_fraction=0.3))
    with pytest.raises(DataError, match=r"data settings differ from prepare_data's in "
                                        r"\['val_fraction'\]"):
        open_prepared(other_data, dataset)
    wider = dataclasses.replace(cfg, space=dataclasses.replace(cfg.space, width_mult=0.5))
    with pytest.raises(DataError, match="prepare_data published search space"):
        stages.search(wider, dataset, supernet, str(tmp_path), "", Tracker("", "", ""))
    (tmp_path / "junk.json").write_text("not json")
    with pytest.raises(DataError, match="is not a prepared-data manifest"):
        open_prepared(cfg, str(tmp_path / "junk.json"))
    with pytest.raises(DataError, match="no prepared-data manifest at"):
        open_prepared(cfg, str(tmp_path / "missing.json"))


def test_supernet_extension_rounds_train_until_the_paths_climb_no_more(tmp_path):
    """A one-epoch schedule at a low lr leaves the paths far below half-way: more
    rounds run (other paths, half the lr each) until the rule says stop, each
    resumable from its own checkpoint; a rerun resumes them all and ends on the
    same supernet."""
    cfg = load_pipeline_config(None, [
        "space.width_mult=0.25", "supernet.optim.epochs=1", "supernet.optim.warmup_epochs=0.2",
        "supernet.extensions=2", "supernet.min_gain=0", "supernet.check_paths=4",
        "supernet.optim.lr=0.01", *NO_STEP_FLOOR,
        "eval.calib_batches=2"])
    dataset = str(tmp_path / "dataset.json")
    stages.prepare_data(cfg, dataset, Tracker("", "", ""))
    out = stages.train_supernet(cfg, dataset, str(tmp_path / "a.pt"), str(tmp_path / "ck.pt"),
                                Tracker("", "", ""))
    from scarletnas.train import should_extend

    rounds = out["extension_rounds"]
    assert 1 <= rounds <= 2 and out["steps"] == (1 + rounds) * 17
    history = [out[f"sampled_top1_round{n}"] for n in range(rounds)] + [out["sampled_top1_mean"]]
    assert f"sampled_top1_round{rounds}" not in out
    checks = [{"top1_mean": t, "chance": 0.1} for t in history]
    # the loop obeys its rule: each round but the last asked for another, the last did not
    assert all(should_extend(cfg.supernet, checks[:n]) for n in range(1, len(checks)))
    assert should_extend(cfg.supernet, checks) == ""
    for name in ["ck.pt"] + [f"ck.pt.round{n}" for n in range(1, rounds + 1)]:
        assert torch.load(tmp_path / name, weights_only=True)["step"] == 17
    again = stages.train_supernet(cfg, dataset, str(tmp_path / "b.pt"), str(tmp_path / "ck.pt"),
                                  Tracker("", "", ""))
    assert {k: v for k, v in again.items() if k.startswith("sampled")} == {
        k: v for k, v in out.items() if k.startswith("sampled")}
    assert again["resumed_from_step"] == 17
    a, b = load_supernet(str(tmp_path / "a.pt")), load_supernet(str(tmp_path / "b.pt"))
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(),
                                                 b.state_dict().values(), strict=True))


@pytest.mark.parametrize(("history", "extend"), [
    ([0.30], True),                 # below half-way (55% for 10 classes): one more round
    ([0.60], False),                # past half-way: done
    ([0.30, 0.40], True),           # still climbing by 10 pp
    ([0.30, 0.31], False),          # climbing by less than min_gain: done
    ([0.1, 0.2, 0.3, 0.4], False),  # extensions (3) spent
])
def test_when_another_round_is_trained(history, extend):
    from scarletnas.config import SupernetConfig
    from scarletnas.train import should_extend

    checks = [{"top1_mean": t, "chance": 0.1} for t in history]
    why = should_extend(SupernetConfig(extensions=3, min_gain=0.02), checks)
    assert bool(why) == extend
    if extend:
        assert "below half-way from chance to 100% (55.0%)" in why
    assert should_extend(SupernetConfig(extensions=0), checks[:1]) == ""
