"""Warm start (supernet.warm_start): a run on grown data starts from the latest
stored supernet of its space, or from the one a named run stored, and says so;
weights move over where their shapes agree."""

import logging

import pytest
import torch

from scarletnas import SearchSpace, reuse, stages
from scarletnas.checkpoint import load_supernet, save_supernet
from scarletnas.config import ConfigError, load_pipeline_config
from scarletnas.supernet import Supernet, adopt_weights
from scarletnas.tracking import Tracker
from scarletnas.train import warm_start_round

from .test_reuse import TINY

RUN_ID = "0123456789abcdef0123456789abcdef"


def _cfg(root, *more):
    return load_pipeline_config(None, [*TINY, "supernet.warm_start_epochs=0.25",
                                       f"checkpoint_root={root}", *more])


def test_weights_move_over_where_shapes_agree_and_the_classifier_is_new_for_new_classes():
    old = Supernet(SearchSpace.compact(num_classes=10, width_mult=0.25))
    new = Supernet(SearchSpace.compact(num_classes=12, width_mult=0.25))
    fresh = adopt_weights(new, old)
    assert fresh == ["classifier.bias", "classifier.weight"]
    mine, theirs = new.state_dict(), old.state_dict()
    assert all(torch.equal(mine[k], theirs[k]) for k in mine if k not in fresh)
    with pytest.raises(ValueError, match="another search space"):
        adopt_weights(Supernet(SearchSpace.compact(width_mult=0.5)), old)
    with pytest.raises(ValueError, match="stabilizer=True"):
        adopt_weights(Supernet(SearchSpace.compact(width_mult=0.25), stabilizer=False), old)


def test_a_warm_start_is_a_shorter_restart_at_half_the_lr():
    cfg = load_pipeline_config(None, ["supernet.warm_start=latest"]).supernet
    warm = warm_start_round(cfg)
    assert warm.optim.epochs == cfg.warm_start_epochs == 6
    assert warm.optim.lr == cfg.optim.lr / 2 and warm.optim.warmup_epochs == 0
    assert warm.optim.min_steps == 200  # 600 x 6/18: the floor shrinks with the epochs
    assert warm.seed != cfg.seed  # other paths than the run it starts from


@pytest.mark.parametrize("setting,message", [
    ("supernet.warm_start=yes", "use off, latest or the MLflow run id"),
    ("supernet.warm_start=abc", "use off, latest or the MLflow run id"),
    ("supernet.warm_start_epochs=40 supernet.warm_start=latest", "at most supernet.optim.epochs"),
    ("supernet.warm_start_epochs=0", "must be positive"),
])
def test_bad_warm_start_settings_are_refused(setting, message):
    with pytest.raises(ConfigError, match=message):
        load_pipeline_config(None, setting.split())


def test_off_is_off_though_yaml_reads_it_as_false():
    assert load_pipeline_config(None, ["supernet.warm_start=off"]).supernet.warm_start == "off"
    assert load_pipeline_config(None, [f"supernet.warm_start={RUN_ID}"]).supernet.warm_start \
        == RUN_ID


def _prepared(cfg, path):
    stages.prepare_data(cfg, str(path), Tracker("", "", ""))
    return str(path)


def test_a_run_on_grown_data_warm_starts_and_a_rerun_of_it_is_reused(tmp_path, caplog):
    ck = tmp_path / "ck"
    last_week = _cfg(ck, "supernet.seed=5")
    out1 = stages.train_supernet(last_week, _prepared(last_week, tmp_path / "d1.json"),
                                 str(tmp_path / "a.pt"), "", Tracker("", "", ""))
    # the data grew (a smaller validation share leaves more to train on): no reuse,
    # but a warm start from last week's supernet
    grown = _cfg(ck, "data.val_fraction=0.15", "supernet.warm_start=latest",
                 "supernet.warm_start_epochs=0.25")
    dataset = _prepared(grown, tmp_path / "d2.json")
    with caplog.at_level(logging.INFO, logger="scarletnas"):
        out2 = stages.train_supernet(grown, dataset, str(tmp_path / "b.pt"), "",
                                     Tracker("", "", ""))
    assert (out2["reused"], out2["warm_started"]) == (0, 1)
    assert "supernet: warm start from the run of" in caplog.text
    assert out2["steps"] < out1["steps"]
    scratch = _cfg(ck, "data.val_fraction=0.15", "reuse=false")
    out3 = stages.train_supernet(scratch, dataset, str(tmp_path / "c.pt"), "",
                                 Tracker("", "", ""))
    assert out3["warm_started"] == 0
    a, b, c = (load_supernet(str(tmp_path / n)).state_dict() for n in ("a.pt", "b.pt", "c.pt"))
    convs = [k for k in a if k.startswith("layers.") and k.endswith(".0.weight")
             and a[k].dim() == 4]
    # the choices the short warm round did not sample still hold last week's weights
    # (seed 5); a scratch run (seed 0) shares none of them
    kept = sum(torch.equal(a[k], b[k]) for k in convs)
    assert kept > len(convs) // 4, (kept, len(convs))
    assert not any(torch.equal(a[k], c[k]) for k in convs)
    # the same grown data again: the warm-started supernet is reused, not warmed again
    again = stages.train_supernet(grown, dataset, str(tmp_path / "e.pt"), "",
                                  Tracker("", "", ""))
    assert again["reused"] == 1
    assert (tmp_path / "e.pt").read_bytes() == (tmp_path / "b.pt").read_bytes()


def _store(ck, run_id, body, weights):
    reuse.Store(str(ck)).put("supernet", {"k": run_id}, {"supernet.pt": str(weights)}, {},
                             {"mlflow_run_id": run_id}, about={"space_body": body})


def test_a_named_run_must_have_stored_a_usable_supernet_of_this_space(tmp_path):
    ck = tmp_path / "ck"
    cfg = _cfg(ck, f"supernet.warm_start={RUN_ID}")
    space = SearchSpace.compact(width_mult=0.25)
    with pytest.raises(ValueError, match="no supernet stored by that MLflow run"):
        stages.warm_start_source(cfg, space.body_fingerprint, Tracker("", "", ""))
    save_supernet(str(tmp_path / "s.pt"), Supernet(space))
    _store(ck, RUN_ID, space.body_fingerprint, tmp_path / "s.pt")
    found = stages.warm_start_source(cfg, space.body_fingerprint, Tracker("", "", ""))
    assert found.source.startswith(f"run {RUN_ID}")
    with pytest.raises(ValueError, match="other layers, strides, widths or choices"):
        stages.warm_start_source(cfg, "another", Tracker("", "", ""))
    with pytest.raises(ValueError, match="trained with supernet.stabilizer=True"):
        stages.warm_start_source(_cfg(ck, f"supernet.warm_start={RUN_ID}",
                                      "supernet.stabilizer=false"),
                                 space.body_fingerprint, Tracker("", "", ""))
    assert stages.warm_start_source(_cfg(ck, "supernet.warm_start=latest"), "another",
                                    Tracker("", "", "")) is None  # none of that space
    with pytest.raises(ValueError, match="does not set"):
        stages.warm_start_source(_cfg("", "supernet.warm_start=latest"),
                                 space.body_fingerprint, Tracker("", "", ""))


def test_latest_passes_over_a_newer_stored_supernet_that_cannot_serve(tmp_path, caplog):
    ck = tmp_path / "ck"
    space = SearchSpace.compact(width_mult=0.25)
    good, other = "a" * 32, "b" * 32
    save_supernet(str(tmp_path / "good.pt"), Supernet(space))
    _store(ck, good, space.body_fingerprint, tmp_path / "good.pt")
    (tmp_path / "broken.pt").write_bytes(b"not a checkpoint")
    _store(ck, other, space.body_fingerprint, tmp_path / "broken.pt")  # the newest
    cfg = _cfg(ck, "supernet.warm_start=latest")
    with caplog.at_level(logging.WARNING, logger="scarletnas"):
        found = stages.warm_start_source(cfg, space.body_fingerprint, Tracker("", "", ""))
    assert found.source.startswith(f"run {good}")
    assert "not warm-starting from" in caplog.text and "does not load" in caplog.text
    # a named run whose supernet does not load is an error, not a silent scratch run
    with pytest.raises(ValueError, match="cannot be used: it does not load"):
        stages.warm_start_source(_cfg(ck, f"supernet.warm_start={other}"),
                                 space.body_fingerprint, Tracker("", "", ""))


def test_a_retried_step_keeps_its_first_attempts_start(tmp_path):
    """The first attempt found nothing to start from; a supernet stored since does
    not change what the retry resumes (a checkpoint of a scratch run)."""
    ck = tmp_path / "ck"
    space = SearchSpace.compact(width_mult=0.25)
    cfg = _cfg(ck, "supernet.warm_start=latest")
    checkpoint = str(tmp_path / "state" / "supernet.ckpt")
    (tmp_path / "state").mkdir()
    body = space.body_fingerprint
    assert stages._warm_start_uri(cfg, body, Tracker("", "", ""), checkpoint) == ""
    save_supernet(str(tmp_path / "s.pt"), Supernet(space))
    _store(ck, RUN_ID, body, tmp_path / "s.pt")
    assert stages._warm_start_uri(cfg, body, Tracker("", "", ""), checkpoint) == ""
    # a step of another run (another state folder) does start from it
    assert stages._warm_start_uri(cfg, body, Tracker("", "", ""),
                                  str(tmp_path / "other.ckpt")).endswith("supernet.pt")
