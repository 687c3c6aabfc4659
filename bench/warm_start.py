"""Warm start when the data grew: what does starting from last week's supernet save?

A generated image folder grows by ``--growth`` (default 15%) between two runs
(the same images plus new ones, same classes). "Last week's" supernet is
trained from scratch on the smaller folder with the default recipe. On the
grown folder, the same recipe from scratch is set against the warm start
(``supernet.warm_start``: the old supernet's weights, ``warm_start_epochs`` at
half the lr). Each is scored along the way by the pipeline's sampled-path
check (BN recalibrated random paths); the figure is the steps each needs to
reach the same sampled-path accuracy (the lower of the two final ones).
Ranking: every supernet scores the same archs spread over the MAdds range;
Kendall tau of each against the scratch one (a second scratch seed gives the
noise floor of that agreement), and (``--standalone N``) against N archs
trained stand-alone (kept in ``--dir``, so a rerun trains them once). Prints
JSON lines, then a summary line.

    python bench/warm_start.py [--classes 10 --side 32 --per-class 200] [--standalone 8]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from scarletnas.config import load_pipeline_config
from scarletnas.data import Batches, load_splits
from scarletnas.evaluate import CandidateEvaluator, accuracy, sampled_path_check
from scarletnas.manifest import build_space
from scarletnas.ranking import rank_correlation, spread_archs
from scarletnas.supernet import Supernet, adopt_weights
from scarletnas.synthetic import write_shapes
from scarletnas.train import train_subnet, train_supernet, warm_start_round


def _splits(cfg, root: Path, per_class: int, args):
    folder = write_shapes(root, args.classes, args.side, per_class, args.val_per_class)
    data = dataclasses.replace(cfg.data, dataset="imagefolder", source=str(folder),
                               input_size=args.side, shard_root=str(root) + "-shards")
    return load_splits(data)


def _train(label: str, space, splits, scfg, cfg, start=None, every: int = 2):
    """Train one schedule; sampled-path check every ``every`` epochs and at the end.
    Returns the supernet and its curve [(steps, top1 mean)]."""
    curve: list[tuple[int, float]] = []
    steps_per_epoch = max(1, len(splits.train) // scfg.optim.batch_size)
    t = time.perf_counter()

    def on_epoch_end(supernet, epoch: int) -> dict:
        if (epoch + 1) % every == 0:
            check = sampled_path_check(supernet, splits, cfg.eval, 10, seed=1, amp=False)
            curve.append(((epoch + 1) * steps_per_epoch, check["top1_mean"]))
            supernet.train()
        return {}

    supernet, result = train_supernet(space, splits, scfg, supernet=start,
                                      on_epoch_end=on_epoch_end)
    final = sampled_path_check(supernet, splits, cfg.eval, 20, seed=1, amp=False)
    # min_steps stretches the epochs to whole ones, and the last stops at the step floor
    curve = [(min(s, result.steps), a) for s, a in curve if s < result.steps]
    curve.append((result.steps, final["top1_mean"]))
    row = {"run": label, "steps": result.steps, "sampled_top1": round(final["top1_mean"], 4),
           "seconds": round(time.perf_counter() - t, 1),
           "curve": [(s, round(a, 4)) for s, a in curve]}
    print(json.dumps(row), flush=True)
    return supernet, row


def _standalone(root: Path, space, arch, splits, cfg) -> float:
    """Val top-1 of ``arch`` trained stand-alone with the retrain recipe, kept in
    ``root``/standalone.json: a rerun of the bench trains each arch once."""
    cache = root / "standalone.json"
    known = json.loads(cache.read_text()) if cache.exists() else {}
    key = f"{space.fingerprint}/{splits.digest()}/{space.format(arch)}"
    if key not in known:
        model, _ = train_subnet(space, arch, splits, cfg.retrain)
        known[key] = accuracy(model, Batches(splits, "val", 256, train=False))["top1"]
        cache.write_text(json.dumps(known, indent=1))
    print(json.dumps({"arch": space.format(arch), "standalone_top1": round(known[key], 4)}),
          flush=True)
    return known[key]


def steps_to(curve: list[tuple[int, float]], target: float) -> int | None:
    """The first step at which the curve reaches ``target`` (None: never)."""
    return next((s for s, a in curve if a >= target - 1e-9), None)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--side", type=int, default=32)
    p.add_argument("--per-class", type=int, default=200, help="training images before growth")
    p.add_argument("--val-per-class", type=int, default=60)
    p.add_argument("--growth", type=float, default=0.15)
    p.add_argument("--archs", type=int, default=20, help="archs both supernets rank")
    p.add_argument("--standalone", type=int, default=0,
                   help="archs also trained stand-alone for tau (0: none)")
    p.add_argument("--dir", help="where the image folders go (default: a temporary folder)")
    args = p.parse_args()
    cfg = load_pipeline_config(None, [f"data.input_size={args.side}", *args.set])
    root = Path(args.dir or tempfile.mkdtemp(prefix="warm-start-"))
    old = _splits(cfg, root / "old", args.per_class, args)
    new = _splits(cfg, root / "grown", round(args.per_class * (1 + args.growth)), args)
    space = build_space(cfg, new)
    s = cfg.supernet
    last_week, _ = _train("last week: scratch, old data", space, old, s, cfg)
    scratch, scratch_row = _train("grown data: scratch", space, new, s, cfg)
    # the noise floor of ranking agreement: the same recipe with another seed
    other_seed, _ = _train("grown data: scratch, seed 1", space, new,
                           dataclasses.replace(s, seed=s.seed + 1), cfg)
    start = Supernet(space, s.stabilizer, s.stabilizer_init,
                     zero_init_residual=s.zero_init_residual)
    adopt_weights(start, last_week)
    warm, warm_row = _train("grown data: warm start", space, new, warm_start_round(s), cfg,
                            start, every=1)

    # the same sampled-path accuracy: the lower of the two final ones
    target = min(warm_row["sampled_top1"], scratch_row["sampled_top1"])
    archs = spread_archs(space, args.archs, np.random.default_rng(3))
    nets = {"warm": warm, "scratch_seed1": other_seed, "last_week": last_week}
    scores = {name: [CandidateEvaluator(net, new, cfg.eval, seed=1, amp=False)(a)["top1"]
                     for a in archs] for name, net in {"scratch": scratch, **nets}.items()}
    summary = {
        "data": f"shapes-{args.classes} {args.side}px, {args.per_class} -> "
                f"{round(args.per_class * (1 + args.growth))} train images per class",
        "warm_start_epochs": s.warm_start_epochs, "epochs": s.optim.epochs,
        "warm_steps": warm_row["steps"], "warm_sampled_top1": warm_row["sampled_top1"],
        "scratch_steps": scratch_row["steps"], "scratch_sampled_top1":
            scratch_row["sampled_top1"], "same_top1": target,
        "warm_steps_to_same": steps_to(warm_row["curve"], target),
        "scratch_steps_to_same": steps_to(scratch_row["curve"], target),
        **{f"tau_{name}_vs_scratch": rank_correlation(scores[name], scores["scratch"])
           for name in nets},
    }
    summary["warm_step_fraction"] = round(
        summary["warm_steps_to_same"] / summary["scratch_steps_to_same"], 3)
    if args.standalone:
        picked = [archs[i] for i in np.linspace(0, len(archs) - 1, args.standalone).astype(int)]
        index = [archs.index(a) for a in picked]
        alone = [_standalone(root, space, arch, new, cfg) for arch in picked]
        for name in scores:
            summary[f"tau_{name}_vs_standalone"] = rank_correlation(
                [scores[name][i] for i in index], alone)
    print(json.dumps({"summary": summary}, default=float), flush=True)


if __name__ == "__main__":
    main()
