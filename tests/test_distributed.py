"""Every device of a pod: the training steps run as several processes (gloo on
CPU here, NCCL on GPUs) started by torch's elastic launcher from inside the step.

BatchNorm statistics are per process (no SyncBatchNorm), so a step equals one
process's step on the global batch exactly only where BatchNorm does not
depend on the batch: with running statistics (eval mode), as checked here.
"""

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from scarletnas import SearchSpace, launch, manifest, stages
from scarletnas.checkpoint import load_supernet
from scarletnas.config import load_pipeline_config
from scarletnas.supernet import Supernet
from scarletnas.tracking import Tracker

from .short_runs import NO_STEP_FLOOR

pytestmark = pytest.mark.slow  # end to end: `make test-fast` leaves it out


def _one_step(x, y, genes):
    """One real training step (train._train_step) from a seeded supernet, each
    rank on its share of the global batch; the updated weights."""
    from torch import nn

    from scarletnas.config import OptimConfig
    from scarletnas.launch import world
    from scarletnas.train import _Running, _train_step, make_optimizer

    rank, size = world()
    torch.manual_seed(0)
    model = Supernet(SearchSpace.compact()).eval()  # BN: running statistics
    share = len(x) // size
    part = slice(rank * share, (rank + 1) * share)
    opt = make_optimizer(model, OptimConfig(lr=0.5, momentum=0.0, weight_decay=0.0))
    _train_step(model, opt, nn.CrossEntropyLoss(), x[part], y[part], [genes], 0.5, False,
                _Running("cpu"), None)
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_a_two_process_step_equals_one_process_on_the_global_batch(digits):
    x = (digits.train.images[:16].float() / 255 - 0.5) * 4
    y = digits.train.labels[:16]
    genes = (0, 3, 12, 5, 7, 1, 12, 9)
    single = _one_step(x, y, genes)
    double = launch.run(_one_step, (x, y, genes), 2)
    assert single.keys() == double.keys()
    torch.manual_seed(0)
    initial = Supernet(SearchSpace.compact()).state_dict()
    moved = [k for k in single if not torch.allclose(single[k], initial[k], atol=1e-4)]
    assert len(moved) > 10  # the step changed the weights of the path
    for k in single:  # equal to float tolerance (the sums run in another order)
        torch.testing.assert_close(double[k], single[k], rtol=1e-5, atol=1e-6)


def _cfg(tmp_path, processes, *extra):
    return load_pipeline_config(None, [
        "supernet.optim.epochs=3", "supernet.optim.warmup_epochs=0.5", "supernet.device=cpu",
        *NO_STEP_FLOOR, "supernet.check_paths=4", "retrain.optim.epochs=10",
        "retrain.optim.warmup_epochs=0.5",
        "retrain.device=cpu", f"resources.processes={processes}", *extra])


def test_two_processes_train_the_supernet_and_a_subnet(tmp_path):
    """Half the steps at twice the global batch (batch_size is per process);
    rank 0 alone writes; the subnet's accuracy matches one process's at the same
    global batch within seed noise."""
    results = {}
    for n, batch in ((1, 128), (2, 64)):
        cfg = _cfg(tmp_path, n, f"supernet.optim.batch_size={batch}",
                   f"retrain.optim.batch_size={batch}")
        _, _, described = manifest.prepare(cfg)
        dataset = str(tmp_path / f"dataset{n}.json")
        manifest.write(dataset, described)
        out = stages.train_supernet(cfg, dataset, str(tmp_path / f"sn{n}.pt"), "",
                                    Tracker("", "", "supernet"))
        model = tmp_path / f"model{n}"
        model.mkdir()
        sub = stages.retrain(cfg, dataset, "e3k3-e6k3se-skip-e3k5-e3k3-e6k5-e3k7se-skip",
                             str(model), "", Tracker("", "", "retrain"))
        results[n] = (out, sub)
        assert load_supernet(str(tmp_path / f"sn{n}.pt")).path_check["paths"] == 4
        assert {"best.pt", "final.pt"} <= {p.name for p in model.iterdir()}
    (one, sub1), (two, sub2) = results[1], results[2]
    assert one["steps"] == two["steps"] == 3 * (len(manifest.prepare(_cfg(tmp_path, 1))[0]
                                                     .train) // 128)
    print({n: (r[0]["final_loss"], r[0]["sampled_top1_mean"], r[1]["best_val_top1"])
           for n, r in results.items()})
    assert two["final_loss"] < math.log(10) and abs(one["final_loss"] - two["final_loss"]) < 0.15
    assert sub2["best_val_top1"] > 0.8
    assert abs(sub1["best_val_top1"] - sub2["best_val_top1"]) < 0.05


def test_a_failing_process_fails_the_step_with_its_error(tmp_path):
    cfg = _cfg(tmp_path, 2, "supernet.optim.batch_size=5000")
    _, _, described = manifest.prepare(cfg)
    manifest.write(str(tmp_path / "dataset.json"), described)
    started = time.monotonic()
    with pytest.raises(launch.WorkerError, match="training process [01] failed: DataError: "
                                                 "the train split has .* images per process"):
        stages.train_supernet(cfg, str(tmp_path / "dataset.json"), str(tmp_path / "sn.pt"), "",
                              Tracker("", "", "supernet"))
    assert time.monotonic() - started < 120  # failed, not hung
    assert not (tmp_path / "sn.pt").exists()


def _train_cli(tmp_path, name, checkpoint):
    """train-supernet with two processes, as its own process group."""
    args = [sys.executable, "-m", "scarletnas.cli", "train-supernet", "--out",
            str(tmp_path / name / "supernet.pt"), "--epochs", "6", "--device", "cpu",
            "--checkpoint", str(checkpoint), "--set", "resources.processes=2",
            "--set", "supernet.checkpoint_every=3", "--set", "supernet.check_paths=0",
            "--set", "supernet.optim.warmup_epochs=0.5", "--set", "supernet.optim.min_steps=0"]
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            start_new_session=True, env={**os.environ, "OMP_NUM_THREADS": "1"})


def test_a_killed_two_process_run_resumes_bit_exact(tmp_path):
    reference = _train_cli(tmp_path, "reference", tmp_path / "reference.ckpt")
    assert reference.wait(timeout=600) == 0
    victim = _train_cli(tmp_path, "resumed", tmp_path / "resumed.ckpt")
    deadline = time.monotonic() + 300
    while not (tmp_path / "resumed.ckpt").exists() and victim.poll() is None:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    os.killpg(victim.pid, signal.SIGKILL)  # the launcher and both training processes
    victim.wait()
    assert not (tmp_path / "resumed" / "supernet.pt").exists()
    again = _train_cli(tmp_path, "resumed", tmp_path / "resumed.ckpt")
    out, _ = again.communicate(timeout=600)
    assert again.returncode == 0
    resumed_from = json.loads(out)["resumed_from_step"]
    assert resumed_from > 0 and resumed_from % 3 == 0
    a = load_supernet(str(tmp_path / "reference" / "supernet.pt")).state_dict()
    b = load_supernet(str(tmp_path / "resumed" / "supernet.pt")).state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert Path(tmp_path / "resumed" / "dataset.json").exists()
