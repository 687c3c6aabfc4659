"""The champion rule (champion.decide), case by case; the whole path through a
real MLflow server is in test_real_servers."""

import pytest

from scarletnas.champion import Incumbent, decide


def _new(top1, madds=100e6, version="7", **extra):
    return {"test_top1": top1, "madds": madds, "params": 1e6, "latency_ms_cpu_batch1": 2.0,
            "registered_version": version, **extra}


def _champion(top1, madds=100e6, **extra):
    return Incumbent(version="3", arch="e3k3", madds=madds, params=1e6, latency_ms=2.0,
                     test_top1=top1, **extra)


def test_first_model_becomes_champion():
    d = decide(_new(0.5), None, {})
    assert d.promote and d.reason == "v7 (50.0%) is the first champion"


def test_a_more_accurate_model_replaces_the_champion():
    d = decide(_new(0.912), _champion(0.901), {})
    assert d.promote and d.reason == "v7 (91.2%) beats champion v3 (90.1% on this run's test split)"


def test_a_less_accurate_model_leaves_the_champion_in_place():
    d = decide(_new(0.890), _champion(0.901), {})
    assert not d.promote
    assert d.reason == "champion v3 (90.1% on this run's test split) stays: v7 (89.0%) does " \
                       "not beat it"


@pytest.mark.parametrize("drop,promote", [(0.0, False), (0.005, False), (0.02, True)])
def test_a_smaller_less_accurate_model_wins_only_within_the_configured_drop(drop, promote):
    d = decide(_new(0.89, madds=50e6), _champion(0.90, madds=100e6), {}, max_top1_drop=drop)
    assert d.promote == promote, d.reason
    if promote:
        assert "1.0% less top-1 (tracking.max_top1_drop=0.02) for 50% of its multiply-adds" \
            in d.reason
    else:
        assert "smaller, but 1.0% less top-1 than tracking.max_top1_drop" in d.reason


def test_ties_go_to_the_smaller_model_only():
    assert decide(_new(0.9, madds=80e6), _champion(0.9, madds=100e6), {}).promote
    assert not decide(_new(0.9, madds=120e6), _champion(0.9, madds=100e6), {}).promote
    assert not decide(_new(0.9, madds=100e6), _champion(0.9, madds=100e6), {}).promote


def test_a_champion_over_this_runs_budget_gives_way_to_one_within_it():
    limits = {"madds": 90e6}
    d = decide(_new(0.80, madds=60e6), _champion(0.95, madds=100e6), limits)
    assert d.promote and "over this run's budget (madds)" in d.reason
    # not to a new model that is over the budget too
    assert not decide(_new(0.80, madds=95e6), _champion(0.95, madds=100e6), limits).promote


def test_a_champion_this_run_cannot_score_is_replaced_with_the_reason():
    broken = Incumbent(version="3", problem="it predicts 20 classes, this run's data has 10")
    d = decide(_new(0.5), broken, {})
    assert d.promote and d.reason.endswith("cannot score: it predicts 20 classes, this run's "
                                           "data has 10")


def test_the_same_version_is_already_champion():
    assert decide(_new(0.5, version="3"), _champion(0.6), {}).promote
