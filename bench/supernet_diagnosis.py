"""Why the 19-layer space did not learn: budget or structure? One row per experiment.

The control the diagnosis needs: hold every layer at one choice except the
width-changing layers (no residual there in the paper's network), let 0, 1,
2, 4 and then all 6 of them draw their choice per step, and count the steps
until the running training accuracy of the sampled paths passes 50%. Steps
that grow roughly linearly with the mixed layers would mean budget; a
collapse means structure. Then the levers, each changing one thing against
the baseline (every layer mixing): the projection shortcut
(``space.shortcut``), a lower learning rate, strict-fair sampling.
Each row ends with the mean top-1 of random paths as trained (BN recalibrated,
val split).

    python bench/supernet_diagnosis.py --steps 300 --jobs 2
"""

from __future__ import annotations

import argparse
import json
import time
from concurrent.futures import ProcessPoolExecutor

EXPERIMENTS = {  # name: (width-changing layers that mix: int or "all" layers, overrides)
    "0 width-changing layers mix (residual layers mix)": (0, {}),
    "1 width-changing layer mixes": (1, {}),
    "2 width-changing layers mix": (2, {}),
    "4 width-changing layers mix": (4, {}),
    "6 width-changing layers mix (= every layer: baseline)": ("all", {}),
    "baseline, lr 0.025 (SPOS/FairNAS rate at batch 64)": ("all", {"lr": 0.025}),
    # 13 paths a step: the same number of path updates in 1/13 of the steps
    "baseline, strict-fair sampling (FairNAS), equal path updates": ("all", {"sampling": "fair"}),
    "baseline + projection shortcuts (space.shortcut)": ("all", {"shortcut": True}),
}


def run(name: str, args) -> dict:
    import numpy as np
    import torch

    from scarletnas import SearchSpace
    from scarletnas.config import DataConfig, EvalConfig, OptimConfig, SupernetConfig
    from scarletnas.data import load_splits
    from scarletnas.evaluate import CandidateEvaluator, sampled_path_check
    from scarletnas.sampling import make_sampler
    from scarletnas.supernet import Supernet
    from scarletnas.train import _train_batches, fit

    torch.set_num_threads(1)
    mixing, over = EXPERIMENTS[name]
    splits = load_splits(DataConfig(dataset=args.dataset, input_size=args.input_size))
    space = SearchSpace.small(num_classes=splits.num_classes, input_size=splits.input_size,
                              width_mult=args.width, shortcut=over.get("shortcut", False))
    per_epoch = len(splits.train) // 64
    sampling = over.get("sampling", "uniform")
    steps = args.steps // len(make_sampler(sampling, space).paths(0))
    cfg = SupernetConfig(optim=OptimConfig(lr=over.get("lr", args.lr), batch_size=64,
                                           epochs=steps / per_epoch,
                                           warmup_epochs=min(1, steps / per_epoch / 2)),
                         seed=args.seed, device="cpu", log_every=10,
                         sampling=sampling)
    torch.manual_seed(cfg.seed)
    supernet = Supernet(space, cfg.stabilizer, cfg.stabilizer_init)
    sampler = make_sampler(cfg.sampling, space, cfg.seed)
    changing = [i for i, layer in enumerate(space.layers) if not layer.residual]
    fixed = space.parse("SCARLET-A") if space.num_layers == 19 else (0,) * space.num_layers
    if mixing == "all":
        paths_for_step = sampler.paths
    else:
        mixed = set(changing[:mixing]) | {i for i, layer in enumerate(space.layers)
                                          if layer.residual}

        def paths_for_step(step):
            return [tuple(g if i in mixed else fixed[i] for i, g in enumerate(path))
                    for path in sampler.paths(step)]
    curve: list[tuple[int, float]] = []
    t = time.perf_counter()
    fit(supernet, _train_batches(splits, cfg, torch.device("cpu")), cfg,
        paths_for_step=paths_for_step, desc="supernet",
        callback=lambda m, s: curve.append((s, m["supernet/acc"])) if "supernet/acc" in m
        else None)
    seconds = time.perf_counter() - t
    reached = next((s for s, acc in curve if acc >= 0.5), None)
    if mixing == "all":
        top1 = [sampled_path_check(supernet, splits, EvalConfig(), args.paths,
                                   seed=args.seed)[k] for k in ("top1_mean", "top1_min")]
    else:  # paths as trained: the held layers' other choices never saw a step
        evaluator = CandidateEvaluator(supernet, splits, EvalConfig(), seed=args.seed)
        scores = [evaluator(paths_for_step(10**6 + i)[0])["top1"] for i in range(args.paths)]
        top1 = [float(np.mean(scores)), float(np.min(scores))]
    return {"experiment": name, "steps": steps, "seconds": round(seconds),
            "steps_to_50pct_train_acc": reached, "final_train_acc": round(curve[-1][1], 3),
            "sampled_top1_mean": round(top1[0], 4), "sampled_top1_min": round(top1[1], 4)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--experiments", nargs="+", default=list(EXPERIMENTS),
                   choices=list(EXPERIMENTS), metavar="NAME")
    p.add_argument("--dataset", default="digits")
    p.add_argument("--input-size", type=int, default=16)
    p.add_argument("--width", type=float, default=0.5)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--paths", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--jobs", type=int, default=2, help="experiments run at once, 1 thread each")
    args = p.parse_args()
    with ProcessPoolExecutor(args.jobs) as pool:
        rows = list(pool.map(run, args.experiments, [args] * len(args.experiments)))
    for row in rows:
        print(json.dumps(row), flush=True)
    print(f"\n| experiment ({args.dataset} {args.input_size}px) | steps "
          "| steps to 50% train acc | final train acc | sampled top-1 mean (min) |")
    print("|---|---|---|---|---|")
    for r in rows:
        reached = r["steps_to_50pct_train_acc"] or "not reached"
        print(f"| {r['experiment']} | {r['steps']} | {reached} | "
              f"{100 * r['final_train_acc']:.1f}% | {100 * r['sampled_top1_mean']:.1f}% "
              f"({100 * r['sampled_top1_min']:.1f}%) |")


if __name__ == "__main__":
    main()
