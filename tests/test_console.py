"""What a local run prints, piece by piece (a whole run's output is checked in
test_pipeline_local, on the run the tests there share)."""

import json
import os
import subprocess
import sys

import pytest
from kfp import dsl

from scarletnas.pipeline.console import LocalConsole, duration, headline


@pytest.mark.parametrize("raised,bad_input", [
    ("DataError('/x: no such folder')", True), ("KeyError('k')", False)])
def test_a_steps_own_error_is_recorded_for_the_run_that_started_it(tmp_path, raised,
                                                                   bad_input):
    """Each step process of a local run writes its uncaught error where
    $SCARLETNAS_ERROR_FILE says; its traceback still goes to its log."""
    errors = tmp_path / "error.json"
    code = ("from scarletnas.preflight import record_errors\n"
            "from scarletnas.data import DataError\n"
            f"record_errors()\nraise {raised}\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, "SCARLETNAS_ERROR_FILE": str(errors)})
    assert done.returncode == 1 and "Traceback" in done.stderr
    recorded = json.loads(errors.read_text())
    assert recorded["type"] == raised.split("(")[0] and recorded["bad_input"] == bad_input
    assert recorded["message"] in ("/x: no such folder", "'k'")


def test_a_step_that_recorded_nothing_is_reported_from_its_log(tmp_path):
    log = tmp_path / "01-start-run.log"
    log.write_text("[KFP Executor] Got executor_input: {}\nTraceback (most recent call last):\n"
                   '  File "x.py", line 1, in <module>\nmlflow.exceptions.MlflowException: '
                   "no such table: experiments\n")
    failure = LocalConsole(tmp_path)._failure("start-run", log, tmp_path / "missing.json")
    assert failure.message == "no such table: experiments" and not failure.bad_input
    assert failure.traceback.startswith("Traceback") and "executor_input" not in failure.traceback


def test_headlines_say_what_a_step_did_with_its_figures():
    metrics = dsl.Metrics(name="metrics")
    for k, v in {"test_top1": 0.9734, "madds": 3.2e6, "latency_ms_cpu_batch1": 0.81}.items():
        metrics.log_metric(k, v)
    exported = dsl.Model(name="exported", metadata={"arch": "e3k3-skip"})
    assert headline("evaluate", {"metrics": metrics, "exported": exported}) == (
        "evaluated e3k3-skip: test accuracy 97.3%, 3.2M MAdds, 0.81 ms (CPU, batch 1); "
        "exported pt2 + ONNX")
    assert headline("start-run", {"Output": ""}) == "started (untracked)"
    assert (duration(7.46), duration(200)) == ("7.5 s", "3 min 20 s")
