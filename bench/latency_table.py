"""How well the latency lookup table predicts measured batch-1 latency.

Builds the table (per-op times, calibrated on 8 whole archs), then measures
20 other random archs as built networks. Prints one JSON object with the
relative error and the rank correlation.

    python bench/latency_table.py [--device cuda] [--space imagenet]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
from scipy.stats import kendalltau

from scarletnas import SearchSpace, build_subnet
from scarletnas.latency import build_latency_table, device_name, model_latency_ms
from scarletnas.sampling import random_population


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--space", default="small")
    p.add_argument("--input-size", type=int, help="default: 224 (imagenet) / 32 (small)")
    p.add_argument("--archs", type=int, default=20)
    p.add_argument("--repeats", type=int, default=30)
    args = p.parse_args()
    size = args.input_size or (224 if args.space == "imagenet" else 32)
    space = SearchSpace.named(args.space, input_size=size)
    device = torch.device(args.device)
    t = time.perf_counter()
    table = build_latency_table(space, device, repeats=args.repeats, seed=1)
    build_s = time.perf_counter() - t
    archs = [tuple(int(g) for g in r) for r in
             random_population(space, args.archs, np.random.default_rng(2))]
    predicted = np.array([table.predict(a) for a in archs])
    measured = np.array([model_latency_ms(build_subnet(a, space=space), size, device,
                                          args.repeats) for a in archs])
    rel = np.abs(predicted / measured - 1)
    print(json.dumps({
        "bench": "latency_table", "device": device_name(device), "space": args.space,
        "input_size": size, "archs": args.archs, "table_build_s": round(build_s, 1),
        "calibration": round(table.calibration, 3),
        "measured_ms_range": [round(float(measured.min()), 3), round(float(measured.max()), 3)],
        "mean_abs_rel_error": round(float(rel.mean()), 4),
        "max_abs_rel_error": round(float(rel.max()), 4),
        "kendall_tau": round(float(kendalltau(predicted, measured).statistic), 3),
    }))


if __name__ == "__main__":
    main()
