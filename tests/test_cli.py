import json
import subprocess
import sys
from pathlib import Path

from scarletnas.cli import main


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_arch_show_table(capsys):
    code, out, _ = run(capsys, "arch", "show", "SCARLET-A")
    assert code == 0
    assert "e3k7-e6k5-e3k5-e3k7se" in out
    assert "total: 365.3M multiply-adds, 6.71M params" in out
    numbered = [ln for ln in out.splitlines() if ln.split() and ln.split()[0].isdigit()]
    assert [int(ln.split()[0]) for ln in numbered] == list(range(1, 20))


def test_arch_show_json(capsys):
    code, out, _ = run(capsys, "arch", "show", "SCARLET-C", "--json")
    data = json.loads(out)
    assert code == 0 and data["madds"] == 280082912 and data["params"] == 6073684
    assert len(data["layers"]) == 19 and data["layers"][3]["choice"] == "skip"


def test_arch_show_other_space(capsys):
    code, out, _ = run(capsys, "arch", "show", "SCARLET-A", "--space", "small", "--num-classes",
                       "10", "--input-size", "16", "--json")
    data = json.loads(out)
    assert data["num_classes"] == 10 and data["layers"][-1]["out"] == [160, 4, 4]


def test_arch_show_bad_input_is_a_clear_error(capsys):
    code, _, err = run(capsys, "arch", "show", "e3k3-e3k3")
    assert code == 2 and "arch has 2 layer(s) but the search space has 19" in err
    code, _, err = run(capsys, "arch", "show", "SCARLET-A", "--space", "tiny")
    assert code == 2 and "unknown search space 'tiny'" in err


def test_arch_sample(capsys):
    code, out, _ = run(capsys, "arch", "sample", "--n", "5", "--seed", "3", "--max-madds",
                       "250e6", "--json")
    archs = json.loads(out)
    assert code == 0 and len(archs) == 5
    assert all(a["madds"] <= 250e6 for a in archs)
    code, again, _ = run(capsys, "arch", "sample", "--n", "5", "--seed", "3", "--max-madds",
                         "250e6")
    assert again.split() == [a["arch"] for a in archs]
    code, _, err = run(capsys, "arch", "sample", "--max-madds", "1e6")
    assert code == 2 and "below the smallest arch" in err


def test_console_script_is_installed():
    script = Path(sys.executable).parent / "scarlet-nas"
    proc = subprocess.run([str(script), "arch", "show", "SCARLET-B", "--json"],
                          capture_output=True, text=True, check=True)
    assert json.loads(proc.stdout)["madds"] == 326853440


def test_library_commands_run_without_the_pipeline_stack():
    """`arch show`/`arch sample` are the library's: they must work where kfp,
    kfp-kubernetes, MLflow and boto3 cannot even be imported."""
    code = (
        "import sys\n"
        "for name in ('kfp', 'kfp.dsl', 'kfp.kubernetes', 'mlflow', 'boto3', 'kubernetes'):\n"
        "    sys.modules[name] = None  # any import of these now fails\n"
        "from scarletnas.cli import main\n"
        "assert main(['arch', 'show', 'SCARLET-A']) == 0\n"
        "assert main(['arch', 'sample', '--n', '2', '--space', 'compact']) == 0\n"
        "assert not any(m.startswith('scarletnas.components') for m in sys.modules)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "365.3M multiply-adds" in proc.stdout


def test_train_supernet_then_search_run_the_pipeline_stages(tmp_path, capsys):
    """The CLI's train-supernet and search are the pipeline's stages: same config
    keys and defaults, the prepared-data manifest beside the supernet, and the
    search reads data and space from it."""
    supernet = tmp_path / "sn" / "supernet.pt"
    assert main(["train-supernet", "--out", str(supernet), "--epochs", "1", "--width", "0.25",
                 "--no-stabilizer", "--set", "supernet.optim.warmup_epochs=0.2",
                 "--set", "supernet.optim.min_steps=0", "--set", "supernet.check_paths=3",
                 "--set", "supernet.extensions=0",
                 # the release init without shortcuts: one epoch leaves it near chance
                 "--no-zero-init-residual", "--set", "space.shortcut=false"]) == 0
    trained = json.loads(capsys.readouterr().out)
    assert trained["steps"] == 17 and trained["learned"] == 0
    manifest = json.loads((tmp_path / "sn" / "dataset.json").read_text())
    assert manifest["space_config"] == {"preset": "compact", "width_mult": 0.25,
                                        "allow_skip": True, "shortcut": False}
    assert main(["search", "--supernet", str(supernet), "--generations", "2", "--population",
                 "6", "--top-k", "1", "--out", str(tmp_path / "out")]) == 0
    found = json.loads(capsys.readouterr().out)
    assert len(found["selected"]) == 1 and found["metrics"]["evaluated"] == 12
    assert found["warning"].startswith("SUPERNET HAS NOT LEARNED")
    assert (tmp_path / "out" / "pareto.html").exists()
    # another run's manifest describes another space: refused, naming both spaces
    other = tmp_path / "other.json"
    other.write_text(json.dumps({**manifest, "space_config": {**manifest["space_config"],
                                                              "width_mult": 0.5}}))
    assert main(["search", "--supernet", str(supernet), "--dataset", str(other)]) == 2
    assert "prepare_data published search space" in capsys.readouterr().err


def test_dev_state_is_private_and_down_signals_only_its_own_processes(tmp_path):
    """The state file holds the stack's keys (0600); a pid recorded there that now
    belongs to another process is not signalled."""
    import os
    import stat
    import subprocess
    import sys

    from scarletnas.devstack import Stack, _started

    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"],
                             start_new_session=True)  # as the stack starts its servers
    try:
        stack = Stack(str(tmp_path), pids={"mlflow": other.pid},
                      started={str(other.pid): "not-its-start-time"})
        stack.save(tmp_path / "state.json")
        assert stat.S_IMODE(os.stat(tmp_path / "state.json").st_mode) == 0o600
        Stack.load(tmp_path / "state.json").down()
        assert other.poll() is None  # still running: not ours any more
        mine = Stack(str(tmp_path), pids={"mlflow": other.pid},
                     started={str(other.pid): _started(other.pid)})
        mine.down()
        assert other.wait(timeout=20) is not None
    finally:
        other.kill()
