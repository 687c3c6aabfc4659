import numpy as np
import pytest
import torch
from scipy import stats
from torch import nn

from scarletnas import Supernet, build_subnet
from scarletnas.complexity import arch_cost
from scarletnas.config import EvalConfig
from scarletnas.data import Batches
from scarletnas.evaluate import CandidateEvaluator, accuracy, recalibrate_bn
from scarletnas.ranking import close_rank_correlation, rank_correlation, spread_archs, truth_ceiling


class FixedLogits(nn.Module):
    def __init__(self, logits):
        super().__init__()
        self.logits = logits

    def forward(self, x):
        return self.logits[: len(x)]


def test_accuracy_counts_top1_top5_and_loss():
    logits = torch.tensor([[9.0, 1, 0, 0, 0, 0, 0],   # right at top-1
                           [0.0, 9, 8, 7, 6, 5, 1],   # label 6: outside top-5
                           [0.0, 9, 8, 7, 6, 5, 1],   # label 4: inside top-5
                           [1.0, 0, 0, 0, 0, 0, 0]])  # label 0: top-1
    y = torch.tensor([0, 6, 4, 0])
    out = accuracy(FixedLogits(logits), [(torch.zeros(4, 1), y)])
    assert out["top1"] == 0.5 and out["top5"] == 0.75 and out["images"] == 4
    assert out["loss"] == pytest.approx(nn.functional.cross_entropy(logits, y).item())


def test_recalibration_sets_bn_to_the_calibration_mean(tiny_space, digits):
    supernet = Supernet(tiny_space)
    calib = list(Batches(digits, "train", 50, train=True, augment="none", seed=0).epoch(0))[:3]
    arch = tiny_space.parse("e3k3-e6k3se-skip-e3k5")
    recalibrate_bn(supernet, arch, calib)
    with torch.no_grad():
        feats = torch.cat([supernet.stem[0](x) for x, _ in calib])
    bn = supernet.stem[1]
    assert torch.allclose(bn.running_mean, feats.mean((0, 2, 3)), atol=1e-5)
    assert bn.momentum == 0.1 and int(bn.num_batches_tracked) == 3
    off_path = supernet.layers[0]["e6k7se"].expand[1]
    assert int(off_path.num_batches_tracked) == 0  # other choices untouched


def test_candidate_score_equals_the_inheriting_subnet(tiny_space, digits):
    supernet = Supernet(tiny_space)
    evaluator = CandidateEvaluator(supernet, digits, EvalConfig(calib_batches=3,
                                                                calib_batch_size=64))
    arch = tiny_space.parse("e6k5-e3k3se-skip-e6k7se")
    first = evaluator(arch)
    other = evaluator(tiny_space.parse("e3k3-e3k3-e3k3-e3k3"))
    assert evaluator(arch) == first  # recalibration makes scoring order-independent
    assert other != first
    assert first["images"] == len(digits.val)
    evaluator(arch)
    subnet = build_subnet(arch, supernet=supernet, stabilizer=True)
    assert accuracy(subnet, evaluator.val) == first


def test_val_images_limit(tiny_space, digits):
    evaluator = CandidateEvaluator(Supernet(tiny_space), digits,
                                   EvalConfig(calib_batches=1, calib_batch_size=32,
                                              val_images=100))
    assert evaluator(tiny_space.parse("e3k3-e3k3-e3k3-e3k3"))["images"] == 100


def test_rank_correlation():
    perfect = rank_correlation([1, 2, 3, 4, 5], [10, 20, 30, 40, 50])
    assert perfect["kendall_tau"] == pytest.approx(1)
    assert perfect["spearman_rho"] == pytest.approx(1)
    reverse = rank_correlation([1, 2, 3, 4, 5], [5, 4, 3, 2, 1])
    assert reverse["kendall_tau"] == pytest.approx(-1)
    one_swap = rank_correlation([1, 2, 3, 4], [1, 2, 4, 3])
    assert one_swap["kendall_tau"] == pytest.approx(4 / 6) and one_swap["n"] == 4
    with pytest.raises(ValueError, match="at least 3"):
        rank_correlation([1, 2], [1, 2])


def test_rank_correlation_of_constant_scores_is_defined():
    """An untrained supernet scores every arch the same: no order, so tau and rho
    are 0 with p = 1 (scipy would say NaN), and the result names the flat side."""
    flat = rank_correlation([0.1, 0.1, 0.1, 0.1], [0.5, 0.7, 0.6, 0.9])
    assert flat["kendall_tau"] == 0.0 and flat["spearman_rho"] == 0.0
    assert flat["kendall_p"] == 1.0 and flat["constant"] == ["predicted"]
    assert rank_correlation([1, 2, 3], [4, 5, 6])["constant"] == []


def test_close_archs_are_ranked_apart_from_the_spread():
    """A supernet that only tells the bad archs from the good ones ranks the whole
    spread well and the close archs (within 5 points of the best) not at all."""
    actual = [0.60, 0.70, 0.86, 0.87, 0.88, 0.89, 0.90]
    predicted = [0.10, 0.20, 0.34, 0.33, 0.32, 0.31, 0.30]  # the close ones reversed
    assert rank_correlation(predicted, actual)["kendall_tau"] > 0
    close = close_rank_correlation(predicted, actual, within=0.05)
    assert close["n"] == 5 and close["within"] == 0.05
    assert close["kendall_tau"] == pytest.approx(-1)
    # 0.85 is exactly 5 points below 0.90: it counts as close
    assert close_rank_correlation([1, 2, 3], [0.85, 0.88, 0.90], 0.05)["n"] == 3
    few = close_rank_correlation(predicted, actual, within=0.015)
    assert few == {"within": 0.015, "n": 2}


def test_the_truth_ceiling_is_what_an_exact_ranker_reaches_against_noisy_retrains():
    """Archs with known true accuracies, each 'retrained' with two seeds of normal
    noise: the ceiling must predict the tau of the true values against the
    seeds' mean, and seed_tau that of one seed against the other."""
    rng = np.random.default_rng(0)
    true = rng.normal(0.80, 0.010, 400)
    seeds = true[:, None] + rng.normal(0, 0.010, (400, 2))
    c = truth_ceiling(seeds, within=1.0)
    assert c["n"] == 400 and c["seeds"] == 2
    assert c["seed_noise"] == pytest.approx(0.010, rel=0.1)
    measured = stats.kendalltau(true, seeds.mean(1)).statistic
    assert c["ceiling"] == pytest.approx(measured, abs=0.04)
    assert c["ceiling"] == pytest.approx(0.61, abs=0.05)  # r = sqrt(1 / 1.5): 2/pi asin(r) = 0.61
    assert c["seed_tau"] == pytest.approx(stats.kendalltau(seeds[:, 0], seeds[:, 1]).statistic)
    assert c["seed_tau"] < c["ceiling"]


def test_a_noiseless_truth_allows_a_perfect_ranking_and_one_seed_is_refused():
    c = truth_ceiling([[0.80, 0.80], [0.82, 0.82], [0.85, 0.85], [0.60, 0.60]], within=0.05)
    assert c["n"] == 3 and c["ceiling"] == pytest.approx(1) and c["seed_tau"] == pytest.approx(1)
    assert truth_ceiling([[0.80, 0.81], [0.60, 0.60]], within=0.05) == {
        "within": 0.05, "n": 1, "seeds": 2}
    with pytest.raises(ValueError, match="at least 2 seeds"):
        truth_ceiling([[0.8], [0.9], [0.7]], within=0.05)


def test_the_ranking_report_says_how_close_archs_are_ordered():
    from scarletnas.report import close_line

    actual = [0.60, 0.86, 0.88, 0.90]
    ranked = close_line(close_rank_correlation([0.1, 0.2, 0.3, 0.4], actual, 0.05))
    assert ranked.startswith("Among the 3 close archs (within 5 points of the best): Kendall "
                             "tau **1.000**")
    few = close_line(close_rank_correlation([0.1, 0.2, 0.3, 0.4], actual, 0.03))
    assert "2, too few to correlate" in few and "ranking.archs" in few
    flat = close_line(close_rank_correlation([0.1, 0.3, 0.3, 0.3], actual, 0.05))
    assert "scores them all the same" in flat


def test_spread_archs_cover_the_madds_range(imagenet_space):
    archs = spread_archs(imagenet_space, 12, np.random.default_rng(0))
    madds = [arch_cost(imagenet_space, a).madds for a in archs]
    assert len(set(archs)) == 12 and madds == sorted(madds)
    assert madds[-1] - madds[0] > 150e6


def test_ranking_check_end_to_end(tiny_space, digits):
    from scarletnas.config import OptimConfig, RetrainConfig
    from scarletnas.ranking import ranking_check

    supernet = Supernet(tiny_space)
    evaluator = CandidateEvaluator(supernet, digits, EvalConfig(calib_batches=2,
                                                                calib_batch_size=64))
    archs = spread_archs(tiny_space, 3, np.random.default_rng(0))
    seen = []
    report = ranking_check(tiny_space, evaluator, digits, archs,
                           RetrainConfig(optim=OptimConfig(epochs=1, warmup_epochs=0.2),
                                         log_every=100),
                           progress=lambda i, row: seen.append(i))
    assert seen == [0, 1, 2] and report["n"] == 3
    assert [r["arch"] for r in report["archs"]] == [tiny_space.format(a) for a in archs]
    assert all(0 <= r["standalone_top1"] <= 1 for r in report["archs"])
    assert -1 <= report["kendall_tau"] <= 1


def test_eval_batch_size_reaches_candidate_scoring_and_validation(tiny_space):
    """data.eval_batch_size sizes every inference-only pass (it used to be a fixed 256)."""
    from scarletnas.config import DataConfig
    from scarletnas.data import load_splits

    splits = load_splits(DataConfig(dataset="digits", input_size=16, eval_batch_size=100))
    evaluator = CandidateEvaluator(Supernet(tiny_space), splits, EvalConfig(calib_batches=1))
    sizes = [len(y) for _, y in evaluator.val]
    assert sizes[:-1] == [100] * (len(sizes) - 1) and sum(sizes) == len(splits.val)
    assert [len(y) for _, y in Batches(splits, "test", train=False)][0] == 100
