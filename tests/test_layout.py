"""One module owns where a run's files live: the paths it builds, and no other
module spelling the names it owns."""

import re
from pathlib import Path

import pytest

from scarletnas import layout

ROOT = Path(__file__).resolve().parents[1]


def test_a_steps_state_sits_under_the_root_and_run_and_is_empty_without_a_root():
    assert layout.step_state("s3://b/runs", "r1", "supernet") == "s3://b/runs/r1/supernet"
    key = layout.retrain_key("e3k3-skip")
    assert re.fullmatch(r"[0-9a-f]{12}", key) and key == layout.retrain_key("e3k3-skip")
    assert key != layout.retrain_key("e3k3-e3k3")
    assert layout.step_state("/tmp/c", "r1", "retrain", key) == f"/tmp/c/r1/retrain/{key}"
    assert layout.step_state("", "r1", "search") == ""  # nothing resumes
    assert layout.inside("", layout.CHECKPOINT) == ""
    assert layout.inside("s3://b/x/", layout.SEARCH_STATE) == "s3://b/x/state.json"
    with pytest.raises(ValueError, match="'evaluate' keeps no state"):
        layout.step_state("s3://b", "r1", "evaluate")


def test_a_local_runs_folder_holds_its_outputs_checkpoints_logs_and_mlflow(tmp_path):
    run = layout.LocalRun(tmp_path)
    parts = [run.pipeline_root, run.checkpoints, run.mlflow_db, run.mlartifacts]
    assert all(p.parent == tmp_path for p in parts) and len({p.name for p in parts}) == 4
    logs = run.new_logs()
    assert logs.parent == tmp_path / "logs" and re.fullmatch(r"\d{8}-\d{6}", logs.name)


def test_no_other_module_spells_the_names_of_a_runs_files():
    owned = {v for k, v in vars(layout).items() if k.isupper() and isinstance(v, str)
             and "." in v}
    spelled = []
    for path in [*ROOT.glob("scarletnas/*.py"), *ROOT.glob("components/*.py"),
                 *ROOT.glob("pipeline/*.py")]:
        if path.name == "layout.py":
            continue
        for n, line in enumerate(path.read_text().splitlines(), 1):
            spelled += [f"{path.relative_to(ROOT)}:{n}: {name}" for name in owned
                        if f'"{name}"' in line]
    assert spelled == []
