"""Look at what users see in the MLflow UI: run the pipeline locally as a baseline and
its stabilizer ablation into one tracking store, start the MLflow UI on it, and
save headless-Chromium screenshots of the experiment's runs table, the compare
view of the two pipeline runs, and one parent run.

    python bench/mlflow_ui_screenshots.py --out docs/mlflow [--set key=value ...]

Needs the `chromium` binary (Debian: apt-get install chromium). Prints JSON with
the pages and screenshots.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from scarletnas.config import load_pipeline_config
from scarletnas.devstack import free_port
from scarletnas.pipeline.cli import run_local
from scarletnas.tracking import PARENT_TAG, UI_MODE


def run_pair(root: Path, overrides: list[str]) -> None:
    """The baseline and its ablation, into one sqlite store under ``root``."""
    for ablation in ([], ["supernet.stabilizer=false"]):
        run_local(load_pipeline_config(None, [*overrides, *ablation]), root)


def start_ui(db: Path, port: int) -> subprocess.Popen:
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    proc = subprocess.Popen([sys.executable, "-m", "mlflow", "ui", "--backend-store-uri",
                             f"sqlite:///{db}", "--host", "127.0.0.1", "--port", str(port)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 90
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2):
                return proc
        except OSError:
            time.sleep(1)
    proc.kill()
    raise RuntimeError(f"the MLflow UI did not start on port {port}")


def screenshot(url: str, path: Path, size: str = "1680,1050") -> None:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if not chromium:
        raise SystemExit("chromium not found: apt-get install chromium")
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu",
                        "--hide-scrollbars", f"--user-data-dir={profile}",
                        f"--window-size={size}", "--virtual-time-budget=20000",
                        f"--screenshot={path}", url],
                       check=True, capture_output=True, timeout=180)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="docs/mlflow")
    p.add_argument("--root", help="tracking store of earlier runs (default: run the pair)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    root = Path(args.root or tempfile.mkdtemp(prefix="mlflow-ui-"))
    if not args.root:
        run_pair(root, args.set)
    from mlflow import MlflowClient

    db = root / "mlflow.db"
    client = MlflowClient(f"sqlite:///{db}")
    exp = client.get_experiment_by_name(load_pipeline_config().tracking.experiment)
    parents = [r for r in client.search_runs([exp.experiment_id], max_results=500)
               if PARENT_TAG not in r.data.tags][:2]
    port = free_port()
    ui = start_ui(db, port)
    base = f"http://127.0.0.1:{port}/#/experiments/{exp.experiment_id}"
    ids = json.dumps([r.info.run_id for r in parents])
    run = f"{base}/runs/{parents[0].info.run_id}"
    mode = f"workflowType={UI_MODE}"
    pages = {  # name: (url, window size): tall pages show what is below the fold
        "runs.png": (f"{base}/runs?{mode}", "1680,700"),
        "compare.png": (f"http://127.0.0.1:{port}/#/compare-runs?runs={ids}"
                        f"&experiments={json.dumps([exp.experiment_id])}&{mode}", "1680,3400"),
        "parent_run.png": (f"{run}?{mode}", "1680,1500"),
        "parent_pareto_table.png": (f"{run}/artifacts/pareto_front.json?{mode}", "1680,900"),
        "parent_pareto_plot.png": (f"{run}/artifacts/plots/pareto.png?{mode}", "1680,1000"),
    }
    try:
        for name, (url, size) in pages.items():
            screenshot(url, out / name, size)
    finally:
        ui.terminate()
    print(json.dumps({"store": str(db), "pages": {k: u for k, (u, _) in pages.items()},
                      "screenshots": [str(out / n) for n in pages]}, indent=1))


if __name__ == "__main__":
    main()
