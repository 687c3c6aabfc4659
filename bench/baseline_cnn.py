"""The bar a NAS result must clear: a plain small CNN trained with the pipeline's
own retrain recipe (same steps, lr schedule, augmentation, label smoothing) on
the same splits, scored on the test split the leaderboard uses at its best
validation epoch, as the pipeline scores its models (the last epoch's score is
printed too).

The CNN: five 3x3 conv-BN-ReLU layers (32-64-128-128-256 channels, stride 2 at
the 2nd and 4th), global average pooling, one linear layer. Prints one JSON line.

    python bench/baseline_cnn.py --set data.dataset=imagefolder --set data.source=DIR
"""

from __future__ import annotations

import argparse
import copy
import json
import time

import torch
from torch import nn

from scarletnas.config import load_pipeline_config
from scarletnas.data import Batches, load_splits
from scarletnas.evaluate import accuracy
from scarletnas.train import fit


def plain_cnn(num_classes: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    widths = (3, 32, 64, 128, 128, 256)
    for i, (cin, cout) in enumerate(zip(widths, widths[1:], strict=False)):
        layers += [nn.Conv2d(cin, cout, 3, 2 if i in (1, 3) else 1, 1, bias=False),
                   nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(widths[-1], num_classes))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="pipeline config overrides (the data and retrain settings)")
    args = p.parse_args()
    cfg = load_pipeline_config(None, args.set)
    splits = load_splits(cfg.data)
    run = cfg.retrain
    torch.manual_seed(run.seed)
    model = plain_cnn(splits.num_classes)
    batches = Batches(splits, "train", run.optim.batch_size, train=True, augment=run.augment,
                      seed=run.seed)
    val = Batches(splits, "val", 256, train=False)
    best: dict = {"val_top1": -1.0}

    def keep_best(epoch: int, history: list[dict]) -> dict:
        """The pipeline's rule: the weights of the best validation epoch are the result."""
        top1 = accuracy(model, val)["top1"]
        if top1 > best["val_top1"]:
            best.update(val_top1=top1, epoch=epoch + 1, state=copy.deepcopy(model.state_dict()))
        return {"val_top1": top1}

    started = time.time()
    result = fit(model, batches, run, on_epoch_end=keep_best, desc="plain CNN")
    test = Batches(splits, "test", 256, train=False)
    final = accuracy(model, test)["top1"]
    model.load_state_dict(best["state"])
    print(json.dumps({"bench": "baseline_cnn", "data": cfg.data.source or cfg.data.dataset,
                      "input_size": cfg.data.size, "classes": splits.num_classes,
                      "steps": result.steps, "test_top1": round(accuracy(model, test)["top1"], 4),
                      "best_epoch": best["epoch"], "final_test_top1": round(final, 4),
                      "seconds": round(time.time() - started)}))


if __name__ == "__main__":
    main()
