"""The stages behind the components, called directly (no KFP)."""

import pytest

from scarletnas import stages
from scarletnas.config import load_pipeline_config
from scarletnas.tracking import Tracker


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("stages")
    cfg = load_pipeline_config(None, [
        "space.width_mult=0.25", "supernet.optim.epochs=1", "supernet.optim.warmup_epochs=0.2",
        "ranking.archs=3", "ranking.epochs=1", "search.generations=2",
        "search.population=6", "search.objectives=top1,madds,latency",
        "search.max_madds=6e6", "search.top_k=2"])
    supernet = str(root / "supernet.pt")
    out = stages.train_supernet(cfg, supernet, str(root / "ckpt.pt"), Tracker("", "", ""))
    return cfg, root, supernet, out


def test_prepare_and_train(tiny_run):
    cfg, root, _, out = tiny_run
    manifest = stages.prepare_data(cfg, Tracker("", "", ""))
    assert manifest["num_classes"] == 10 and manifest["train"] + manifest["val"] == 1437
    assert out["steps"] == 17 and out["final_loss"] > 0 and (root / "ckpt.pt").exists()


def test_ranking_check_stage(tiny_run):
    cfg, _, supernet, _ = tiny_run
    report, markdown = stages.ranking_check(cfg, supernet, Tracker("", "", ""))
    assert report["n"] == 3 and len(report["archs"]) == 3
    assert markdown.startswith("# Ranking check") and markdown.count("| `") == 3


def test_search_stage_with_latency_budget(tiny_run):
    cfg, root, supernet, _ = tiny_run
    out = stages.search(cfg, supernet, str(root / "search"), "", Tracker("", "", ""))
    assert len(out["selected"]) == 2
    assert (root / "search" / "pareto.html").exists()
    assert out["metrics"]["front_size"] >= 1
