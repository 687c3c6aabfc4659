"""Accuracy of a network, and of a candidate arch scored with supernet weights.

A path of a supernet shares its BatchNorm layers with every other path, so
their running statistics fit no path in particular. Before scoring a
candidate its path's BN statistics (shared stem and head included) are reset
and recomputed as a cumulative average over K training batches in train
mode, without gradients; then it is scored in eval mode. Calibration and
validation batches are loaded to the device once and reused for every
candidate, so all candidates see the same images.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor

import torch
from torch import nn
from torch.nn import functional as F

from .config import EvalConfig
from .data import Batches, Splits
from .sampling import random_population
from .supernet import Supernet


@torch.no_grad()
def accuracy(model: nn.Module, batches: Iterable, *, amp: bool = True, path=None) -> dict:
    """top1, top5 (fractions), mean cross-entropy and image count, in eval mode."""
    was_training = model.training
    model.eval()
    try:
        return score(model if path is None else lambda x: model(x, path), batches, amp=amp)
    finally:
        model.train(was_training)


def score(predict, batches: Iterable, *, amp: bool = True) -> dict:
    """``accuracy`` of any function from images to logits, as it is (a loaded
    torch.export program has no train/eval switch: it was exported in eval mode)."""
    correct1 = correct5 = loss_sum = 0.0
    n = 0
    with torch.no_grad():
        for x, y in batches:
            with torch.autocast(x.device.type, dtype=torch.bfloat16,
                                enabled=amp and x.device.type == "cuda"):
                logits = predict(x)
            logits = logits.float()
            loss_sum += F.cross_entropy(logits, y, reduction="sum").item()
            top = logits.topk(min(5, logits.shape[1]), dim=1).indices
            correct1 += (top[:, 0] == y).sum().item()
            correct5 += (top == y[:, None]).any(1).sum().item()
            n += y.numel()
    if n == 0:
        raise ValueError("no images to evaluate on: the split is empty")
    return {"top1": correct1 / n, "top5": correct5 / n, "loss": loss_sum / n, "images": n}


def _path_bns(supernet: Supernet, arch) -> list[nn.BatchNorm2d]:
    return [m for mod in supernet.path_modules(arch) for m in mod.modules()
            if isinstance(m, nn.modules.batchnorm._BatchNorm)]


@torch.no_grad()
def recalibrate_bn(supernet: Supernet, arch, batches: Sequence[tuple[torch.Tensor, torch.Tensor]],
                   amp: bool = True) -> None:
    """Reset the path's BN statistics and recompute them over ``batches``."""
    bns = _path_bns(supernet, arch)
    momenta = [bn.momentum for bn in bns]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative average over the calibration batches
    was_training = supernet.training
    supernet.train()
    try:
        for x, _ in batches:
            with torch.autocast(x.device.type, dtype=torch.bfloat16,
                                enabled=amp and x.device.type == "cuda"):
                supernet(x, arch)
    finally:
        for bn, m in zip(bns, momenta, strict=True):
            bn.momentum = m
        supernet.train(was_training)


class CandidateEvaluator:
    """Scores archs with a trained supernet: BN recalibration, then validation.

    Calibration uses the first K batches of a seeded, un-augmented order of
    the training split; validation the first ``val_images`` of the val split.
    """

    def __init__(self, supernet: Supernet, splits: Splits, cfg: EvalConfig, *,
                 device: torch.device | None = None, seed: int = 0, amp: bool = True,
                 channels_last: bool = False):
        self.supernet, self.cfg, self.amp = supernet, cfg, amp
        device = device or next(supernet.parameters()).device
        calib = Batches(splits, "train", cfg.calib_batch_size, train=True, augment="none",
                        seed=seed, device=device, channels_last=channels_last)
        self.calib = [b for _, b in zip(range(cfg.calib_batches), calib.epoch(0), strict=False)]
        val = Batches(splits, "val", train=False, device=device,
                      channels_last=channels_last, limit=cfg.val_images)
        self.val = list(val)

    def __call__(self, arch) -> dict:
        recalibrate_bn(self.supernet, arch, self.calib, self.amp)
        return accuracy(self.supernet, self.val, amp=self.amp, path=arch)


def make_scorer(supernet: Supernet, splits: Splits, cfg: EvalConfig, *,
                devices: Sequence[torch.device] | None = None, seed: int = 0,
                amp: bool = True) -> Callable[[list], list[dict]]:
    """A batch scorer for the search: archs -> metrics, in order.

    With several devices (default: every visible GPU) each gets its own copy
    of the supernet and calibration/validation data, and a generation's archs
    are split round-robin across them, one thread per device.
    """
    if devices is None:
        n = torch.cuda.device_count()
        devices = [torch.device("cuda", i) for i in range(n)] or [torch.device("cpu")]
    channels_last = devices[0].type == "cuda"
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    evaluators = [
        CandidateEvaluator((supernet if i == 0 else copy.deepcopy(supernet)).to(
            d, memory_format=fmt), splits, cfg, device=d, seed=seed, amp=amp,
            channels_last=channels_last)
        for i, d in enumerate(devices)]
    if len(evaluators) == 1:
        return lambda archs: [evaluators[0](a) for a in archs]
    pool = ThreadPoolExecutor(len(evaluators))

    def score(archs: list) -> list[dict]:
        shards = [archs[i::len(evaluators)] for i in range(len(evaluators))]
        results = list(pool.map(lambda ev, shard: [ev(a) for a in shard], evaluators, shards))
        out = [None] * len(archs)
        for i, shard_result in enumerate(results):
            out[i::len(evaluators)] = shard_result
        return out
    return score


def across_ranks(score: Callable[[list], list[dict]]) -> Callable[[list], list[dict]]:
    """``score`` with each call's archs split round-robin across the ranks of the
    process group (a TrainJob's processes): every rank scores its share and gets
    all the scores, so each runs the same search in step."""
    import torch.distributed as dist

    from .launch import world

    rank, size = world()
    if size == 1:
        return score

    def scored(archs: list) -> list[dict]:
        parts: list = [None] * size
        dist.all_gather_object(parts, score(archs[rank::size]))
        out: list = [None] * len(archs)
        for r, part in enumerate(parts):
            out[r::size] = part
        return out
    return scored


# A supernet has learned when its random paths score at least this far from
# chance toward 100% (10 classes: 32.5%; 1000 classes: 25%). Below it, its
# scores rank noise and the search's front means nothing.
LEARNED_FRACTION = 0.25


def learned_threshold(num_classes: int) -> float:
    chance = 1.0 / num_classes
    return chance + LEARNED_FRACTION * (1.0 - chance)


def sampled_path_check(supernet: Supernet, splits: Splits, cfg: EvalConfig, n: int, *,
                       seed: int = 0, amp: bool = True) -> dict:
    """Score ``n`` uniformly random paths (BN recalibrated): did weight sharing learn?

    Returns the mean, std, min and max top-1, chance, the threshold and
    ``learned``; ``warning`` is a sentence for logs and reports, or "".
    """
    import numpy as np

    device = next(supernet.parameters()).device
    evaluator = CandidateEvaluator(supernet, splits, cfg, device=device, seed=seed, amp=amp,
                                   channels_last=device.type == "cuda")
    archs = random_population(supernet.space, n, np.random.default_rng((seed, 7)))
    top1 = np.array([evaluator(tuple(int(g) for g in a))["top1"] for a in archs])
    chance = 1.0 / supernet.space.num_classes
    threshold = learned_threshold(supernet.space.num_classes)
    learned = bool(top1.mean() >= threshold)
    warning = "" if learned else (
        f"SUPERNET HAS NOT LEARNED: {n} random paths score {100 * top1.mean():.1f}% mean "
        f"top-1 (chance {100 * chance:.1f}%, needed {100 * threshold:.1f}%); its ranking of "
        "archs is noise. Train it longer (supernet.optim.epochs) or check the recipe "
        "(docs/reproduction.md).")
    return {"paths": n, "top1_mean": float(top1.mean()), "top1_std": float(top1.std()),
            "top1_min": float(top1.min()), "top1_max": float(top1.max()), "chance": chance,
            "threshold": threshold, "learned": learned, "warning": warning}
