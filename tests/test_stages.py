"""The stages behind the components, called directly (no KFP)."""

import pytest

from scarletnas import stages
from scarletnas.config import load_pipeline_config
from scarletnas.tracking import Tracker
from scarletnas.train import load_supernet


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
    cfg, root, supernet, out = tiny_run
    manifest = stages.prepare_data(cfg, Tracker("", "", ""))
    assert manifest["num_classes"] == 10 and manifest["train"] + manifest["val"] == 1437
    assert out["steps"] == 17 and out["final_loss"] > 0 and (root / "ckpt.pt").exists()
    # one epoch is far too little: the supernet's own check must say so
    assert out["learned"] == 0 and out["sampled_top1_mean"] < 0.325
    check = load_supernet(supernet).path_check
    assert not check["learned"] and check["warning"].startswith("SUPERNET HAS NOT LEARNED")


def test_ranking_check_stage(tiny_run):
    cfg, _, supernet, _ = tiny_run
    report, markdown = stages.ranking_check(cfg, supernet, Tracker("", "", ""))
    assert report["n"] == 3 and len(report["archs"]) == 3
    assert markdown.count("| `") == 3 and "# Ranking check" in markdown
    # three archs can never give a significant tau: the report must lead with that
    assert report["kendall_p"] >= 0.05
    assert markdown.startswith("> **WARNING** RANKING NOT SIGNIFICANT")


def test_search_stage_with_latency_budget(tiny_run):
    cfg, root, supernet, _ = tiny_run
    out = stages.search(cfg, supernet, str(root / "search"), "", Tracker("", "", ""))
    assert len(out["selected"]) == 2
    page = (root / "search" / "pareto.html").read_text()
    assert out["warning"].startswith("SUPERNET HAS NOT LEARNED")
    assert page.index("class=warn") < page.index("<h2>")
    assert out["metrics"]["front_size"] >= 1


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
