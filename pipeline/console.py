"""What a local run prints.

kfp.local prints everything it does: each task's whole executor input (the
executor logs it), KFP's log lines and output listings, warnings meant for
other setups (a base image without "python" in its name, resource settings a
local runner ignores), and each step's own log, progress bars included. By
default a local run prints one line per step instead (its name, what it did,
how long it took and its headline figures) and, at the end, the leaderboard
and where the outputs are. Everything else goes to log files under the run's
output folder: ``logs/NN-<step>.log`` for each step's own output and
``logs/kfp.log`` for KFP's. ``verbose`` prints KFP's output as before (and
still keeps the step logs).

A step that fails reports its own error: each step process gets
``$SCARLETNAS_ERROR_FILE`` (``preflight.record_errors`` writes the uncaught
error there), so the run can end with that one line, naming the step.

kfp.local has no hook for any of this: ``LocalConsole`` wraps its two
functions that run a task (``task_dispatcher.run_single_task_implementation``)
and its process (``subprocess_task_handler.run_local_subprocess``) while a
run is in progress, and restores them after.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
import subprocess
import sys
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from scarletnas.preflight import ERROR_FILE

WIDTH = 15  # the step name column


@dataclass
class Failure:
    step: str
    message: str
    bad_input: bool  # the step's own error says what to fix; else its traceback matters
    log: Path
    traceback: str  # the end of the step's log, from its last traceback on


class StepFailed(RuntimeError):
    """A step of a local run failed; the message is the step's own error."""

    exit_status = 1

    def __init__(self, failure: Failure):
        super().__init__(f"{failure.step} failed: {failure.message}")
        self.failure = failure


def duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, s = divmod(round(seconds), 60)
    return f"{minutes} min {s:02d} s"


def _pct(x) -> str:
    return f"{100 * float(x):.1f}%"


def _meta(outputs: dict, name: str) -> dict:
    artifact = outputs.get(name)
    return dict(getattr(artifact, "metadata", None) or {})


def headline(step: str, outputs: dict) -> str:
    """What a finished step did, with its figures, from its KFP outputs."""
    m = _meta(outputs, "metrics")
    if step == "start-run":
        run_id = outputs.get("Output") or ""
        return f"opened MLflow run {run_id[:12]}" if run_id else "started (untracked)"
    if step == "prepare-data":
        d = _meta(outputs, "dataset")
        return (f"prepared {d.get('dataset', 'the')} data: {int(d.get('num_classes', 0))} "
                f"classes, {int(m.get('train_images', 0)):,} train / "
                f"{int(m.get('val_images', 0)):,} val / {int(m.get('test_images', 0)):,} test "
                f"images at {int(d.get('input_size', 0))} px")
    if step == "train-supernet":
        did = "reused an earlier run's supernet" if m.get("reused") else "trained the supernet"
        text = f"{did} ({int(m.get('steps', 0)):,} steps)"
        if "sampled_top1_mean" in m:
            text += (f": sampled-path accuracy {_pct(m['sampled_top1_mean'])} "
                     f"± {_pct(m.get('sampled_top1_std', 0))}")
            if not m.get("learned", 1):
                text += " (NOT LEARNED: see the warning in its log)"
        return text
    if step == "ranking-check":
        return (f"ranking check: Kendall tau {m.get('kendall_tau', float('nan')):.3f} "
                f"(p={m.get('kendall_p', float('nan')):.3g})")
    if step == "search":
        did = "reused an earlier run's search of" if m.get("reused") else "searched"
        return (f"{did} {int(m.get('evaluated', 0)):,} archs: Pareto front of "
                f"{int(m.get('front_size', 0))}, hypervolume {m.get('hypervolume', 0):.4g}")
    if step == "retrain":
        arch = _meta(outputs, "model").get("arch", "?")
        did = "reused an earlier run's retrain of" if m.get("reused") else "retrained"
        return f"{did} {arch}: val accuracy {_pct(m.get('best_val_top1', 0))}"
    if step == "evaluate":
        arch = _meta(outputs, "exported").get("arch", "?")
        return (f"evaluated {arch}: test accuracy {_pct(m.get('test_top1', 0))}, "
                f"{m.get('madds', 0) / 1e6:.1f}M MAdds, "
                f"{m.get('latency_ms_cpu_batch1', 0):.2f} ms (CPU, batch 1); exported pt2 + ONNX")
    if step == "summarize":
        text = (f"ranked {int(m.get('models', 0))} models: best test accuracy "
                f"{_pct(m.get('champion_test_top1', 0))}")
        if m.get("promoted") == 0:
            text += "; the registered champion stays (this one is the challenger)"
        return text
    if step == "finish-run":
        return "closed the MLflow run"
    return "done"


_RAISED = re.compile(r"^([A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt)\w*): (.*)$")


def _from_log(text: str) -> tuple[str, str]:
    """(error line, traceback) of the last traceback in a step's log."""
    start = text.rfind("Traceback (most recent call last):")
    if start < 0:
        return "", ""
    tail = text[start:].rstrip()
    for line in reversed(tail.splitlines()):
        m = _RAISED.match(line)
        if m:
            return m[3], tail
    return tail.splitlines()[-1], tail


class LocalConsole:
    """For the length of a local run (a context manager): brief output to ``echo``,
    KFP's own output to log files under ``logs`` unless ``verbose``."""

    def __init__(self, logs: Path, verbose: bool = False, echo: TextIO | None = None):
        self.logs, self.verbose = Path(logs), verbose
        self.echo = echo
        self.failures: list[Failure] = []
        self._count = itertools.count(1)
        self._lock = threading.Lock()
        self._task = threading.local()
        self._stack = contextlib.ExitStack()

    # ---- entering and leaving -----------------------------------------------------------
    def __enter__(self) -> LocalConsole:
        from kfp.local import subprocess_task_handler, task_dispatcher

        self.logs.mkdir(parents=True, exist_ok=True)
        self.echo = self.echo or sys.stdout
        try:
            self._patch(task_dispatcher, "run_single_task_implementation", self._run_task)
            self._patch(subprocess_task_handler, "run_local_subprocess", self._run_process)
            if not self.verbose:  # KFP's logging, prints and warnings: into kfp.log
                kfp_log = self._stack.enter_context(open(self.logs / "kfp.log", "a"))
                self._stack.enter_context(contextlib.redirect_stdout(kfp_log))
                self._stack.enter_context(contextlib.redirect_stderr(kfp_log))
                self._stack.enter_context(warnings.catch_warnings())
                warnings.showwarning = lambda message, category, filename, lineno, file=None, \
                    line=None: kfp_log.write(warnings.formatwarning(message, category, filename,
                                                                    lineno, line))
        except BaseException:  # leave kfp as it was
            self._stack.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self._stack.close()

    def _patch(self, module, name: str, replacement) -> None:
        original = getattr(module, name)
        setattr(module, name, replacement)
        self._stack.callback(setattr, module, name, original)
        setattr(self, f"_original_{name}", original)

    def say(self, line: str = "") -> None:
        with self._lock:
            print(line, file=self.echo, flush=True)

    # ---- a task, and its process ---------------------------------------------------------
    def _run_task(self, **kwargs):
        from kfp.local import executor_input_utils, status

        step = executor_input_utils.get_local_task_resource_name(kwargs["component_name"])
        n = next(self._count)
        log = self.logs / f"{n:02d}-{step}.log"
        errors = self.logs / f"{n:02d}-{step}.error.json"
        errors.unlink(missing_ok=True)
        self._task.files, self._task.seconds = (log, errors), None
        started = time.perf_counter()
        outputs, state = self._original_run_single_task_implementation(**kwargs)
        # the step's own time: its process's, as _run_process measured it (kfp.local's
        # work around the process left out); the whole call only for a step whose
        # process never started
        took = duration(self._task.seconds or time.perf_counter() - started)
        if state == status.Status.SUCCESS:
            self.say(f"{step:<{WIDTH}} {took:>10}  {headline(step, outputs)}")
        else:
            failure = self._failure(step, log, errors)
            self.failures.append(failure)
            self.say(f"{step:<{WIDTH}} {took:>10}  FAILED (its log: {log})")
        return outputs, state

    def _failure(self, step: str, log: Path, errors: Path) -> Failure:
        text = log.read_text(errors="replace") if log.exists() else ""
        line, traceback = _from_log(text)
        try:
            recorded = json.loads(errors.read_text())
            return Failure(step, " ".join(recorded["message"].split()) or recorded["type"],
                           bool(recorded["bad_input"]), log, traceback)
        except (OSError, ValueError, KeyError):
            last = (text.strip().splitlines() or ["(no output)"])[-1]
            return Failure(step, line or f"exited with an error; the last line of its log: "
                           f"{last}", False, log, traceback)

    def _run_process(self, full_command: list[str], env_vars: dict | None = None) -> int:
        """kfp.local's run_local_subprocess, its output kept in the step's log (and
        printed as kfp.local prints it, if verbose)."""
        log, errors = getattr(self._task, "files", (self.logs / "task.log", None))
        env = {**os.environ, **(env_vars or {})}
        if errors:
            env[ERROR_FILE] = str(errors)
        started = time.perf_counter()
        with open(log, "a") as out, subprocess.Popen(
                full_command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                bufsize=1, env=env) as process:
            for line in process.stdout:
                out.write(line)
                if self.verbose:
                    print(line, end="")  # indented by kfp.local, as its own
            if self.verbose:
                print("\n")
            code = process.wait()
        self._task.seconds = time.perf_counter() - started
        return code

    # ---- the end ---------------------------------------------------------------------------
    def failed(self) -> StepFailed | None:
        return StepFailed(self.failures[0]) if self.failures else None

    def summary(self, outputs: dict, output_dir: Path) -> None:
        """The leaderboard, and where the outputs, logs and MLflow UI are."""
        board = outputs.get("leaderboard")
        if board:
            self.say()
            for line in Path(board).read_text().rstrip().splitlines():
                self.say(line)
        self.say()
        self.say(f"outputs:   {outputs['run_dir']}")
        folders = {Path(p).parent for p in outputs.get("exported_models", [])}
        if folders:  # one line for them all: the loop's iterations as a wildcard
            where = sorted({re.sub(r"iteration-\d+", "iteration-*", str(f)) for f in folders})
            self.say(f"models:    {len(folders)}, each exported as model.pt2 and model.onnx in "
                     f"{' '.join(where)}")
        self.say(f"logs:      {self.logs}")
        self.say(f"MLflow UI: scarlet-nas ui --output-dir {output_dir}")
