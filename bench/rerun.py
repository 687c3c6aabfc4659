"""A scheduled run on unchanged data: the default pipeline twice, with kfp.local,
into one output folder (so one checkpoint_root and one MLflow store). Prints the
second run's time as a fraction of the first (goal: at most 0.35) and whether
both ended on the same Pareto front and the same champion. One JSON line.

    python bench/rerun.py [--set KEY=VALUE ...]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from scarletnas.config import load_pipeline_config
from scarletnas.pipeline.cli import run_local


def _front(run_dir: str) -> str:
    return next(Path(run_dir).rglob("search/front/front.csv")).read_text()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--dir", help="output folder (default: a new temporary one)")
    args = p.parse_args()
    from mlflow import MlflowClient

    cfg = load_pipeline_config(None, args.set)
    root = Path(args.dir or tempfile.mkdtemp(prefix="rerun-"))
    runs, seconds, champions = [], [], []
    for _ in range(2):
        started = time.perf_counter()
        runs.append(run_local(load_pipeline_config(None, args.set), root,
                              echo=sys.stderr))
        seconds.append(time.perf_counter() - started)
        client = MlflowClient(runs[-1]["tracking_uri"])
        champions.append(client.get_model_version_by_alias(
            cfg.tracking.registered_model, cfg.tracking.champion_alias).version)
    parents = client.search_runs(
        [client.get_experiment_by_name(cfg.tracking.experiment).experiment_id],
        filter_string="tags.champion_decision != ''", order_by=["start_time DESC"])
    second = parents[0].data.tags
    print(json.dumps({
        "first_s": round(seconds[0], 1), "second_s": round(seconds[1], 1),
        "ratio": round(seconds[1] / seconds[0], 3),
        "same_front": _front(runs[0]["run_dir"]) == _front(runs[1]["run_dir"]),
        "champion_versions": champions, "same_champion": champions[0] == champions[1],
        "second_run_decision": second.get("champion_decision"),
        "second_run_reason": second.get("champion_reason"),
        "reused": {k: v for k, v in second.items() if k.startswith("reused.")},
        "output": str(root)}))


if __name__ == "__main__":
    main()
