import math
import os

import pytest
import torch
import torch.multiprocessing as mp

from scarletnas.checkpoint import load_weights
from scarletnas.config import OptimConfig, RetrainConfig, SupernetConfig
from scarletnas.data import Batches
from scarletnas.evaluate import accuracy
from scarletnas.train import (
    lr_at,
    make_optimizer,
    param_groups,
    retrain_best,
    train_subnet,
    train_supernet,
)


class Preempted(Exception):
    pass


def _kill_at(step_to_die: int):
    def callback(metrics, step):
        if step >= step_to_die:
            raise Preempted(step)
    return callback


def _states_equal(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_lr_schedule_warms_up_then_decays_to_zero():
    lrs = [lr_at(s, 100, 10, 0.1) for s in range(100)]
    assert lrs[0] == pytest.approx(0.01) and lrs[9] == pytest.approx(0.1)
    assert lrs[10] == pytest.approx(0.1)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:], strict=False))
    assert lrs[-1] < 1e-3


def test_no_weight_decay_on_bn_and_biases(tiny_space):
    from scarletnas import Supernet

    net = Supernet(tiny_space)
    decay, rest = param_groups(net, 4e-5)
    assert all(p.ndim > 1 for p in decay["params"]) and rest["weight_decay"] == 0
    assert {id(p) for p in rest["params"]} == {
        id(m.weight) for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)} | {
        id(m.bias) for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)} | {
        id(p) for n, p in net.named_parameters() if n.endswith("bias")}
    sgd = make_optimizer(net, OptimConfig())
    assert sgd.defaults["nesterov"] and isinstance(sgd, torch.optim.SGD)
    assert isinstance(make_optimizer(net, OptimConfig(optimizer="rmsprop")), torch.optim.RMSprop)


def _supernet_cfg(**kw):
    base = dict(optim=OptimConfig(epochs=2, warmup_epochs=0.5, batch_size=64, lr=0.1),
                checkpoint_every=4, log_every=1, sampling="uniform")
    base.update(kw)
    return SupernetConfig(**base)


@pytest.mark.parametrize("sampling", ["uniform", "fair"])
def test_supernet_resume_is_bit_identical(tmp_path, tiny_space, digits, sampling):
    cfg = _supernet_cfg(sampling=sampling, optim=OptimConfig(
        epochs=1.5 if sampling == "uniform" else 0.6, warmup_epochs=0.2, batch_size=64, lr=0.1))
    reference, ref_result = train_supernet(tiny_space, digits, cfg)
    uri = str(tmp_path / "ckpt" / "checkpoint.pt")
    with pytest.raises(Preempted):  # killed at step 7: the checkpoint of step 4 survives
        train_supernet(tiny_space, digits, cfg, checkpoint_uri=uri, callback=_kill_at(7))
    assert [p.name for p in (tmp_path / "ckpt").iterdir()] == ["checkpoint.pt"]
    resumed, result = train_supernet(tiny_space, digits, cfg, checkpoint_uri=uri)
    assert result.resumed_from == 4 and result.steps == ref_result.steps
    assert _states_equal(reference, resumed)
    assert result.history == ref_result.history


def test_max_steps_stops_and_resumes(tmp_path, tiny_space, digits):
    uri = str(tmp_path / "checkpoint.pt")
    _, first = train_supernet(tiny_space, digits, _supernet_cfg(max_steps=5), checkpoint_uri=uri)
    assert first.steps == 5 and first.stopped_early
    _, done = train_supernet(tiny_space, digits, _supernet_cfg(max_steps=0), checkpoint_uri=uri)
    assert done.resumed_from == 5 and not done.stopped_early


def test_checkpoint_from_another_run_is_refused(tmp_path, tiny_space, digits):
    uri = str(tmp_path / "checkpoint.pt")
    train_supernet(tiny_space, digits, _supernet_cfg(max_steps=2), checkpoint_uri=uri)
    with pytest.raises(ValueError, match="belongs to a different run"):
        train_supernet(tiny_space, digits, _supernet_cfg(stabilizer=False), checkpoint_uri=uri)


def test_fair_step_trains_every_choice(tiny_space, digits):
    from scarletnas import Supernet

    torch.manual_seed(0)
    init = Supernet(tiny_space)  # the same init as train_supernet's (seed 0)
    # two steps: a residual branch starts with its last BN scale at zero, so its
    # inner weights get their first non-zero gradient in the second step
    supernet, _ = train_supernet(tiny_space, digits, _supernet_cfg(sampling="fair", max_steps=2))
    for (name, p), (_, q) in zip(supernet.named_parameters(), init.named_parameters(),
                                 strict=True):
        assert not torch.equal(p, q), f"{name} was not trained by the fair step"


def test_metrics_callback_reports_progress(tiny_space, digits):
    seen = []
    train_supernet(tiny_space, digits, _supernet_cfg(log_every=3, max_steps=6),
                   callback=lambda m, s: seen.append((s, m)))
    steps = [s for s, _ in seen]
    assert steps == [3, 6]
    m = seen[-1][1]
    assert set(m) == {"supernet/loss", "supernet/acc", "supernet/img_per_s", "supernet/lr",
                      "supernet/epoch"}
    per_epoch = len(digits.train) // 64  # 17 steps: warm-up is 8, step 6 still warms up
    assert m["supernet/epoch"] == 6 / per_epoch
    assert m["supernet/lr"] == lr_at(5, 2 * per_epoch, round(0.5 * per_epoch), 0.1)
    assert math.isclose(m["supernet/lr"], 0.1 * 6 / 8)
    assert 0 < m["supernet/acc"] <= 1 and m["supernet/img_per_s"] > 0
    assert 1.5 < m["supernet/loss"] < 3.0  # near ln 10 this early, and finite


def test_retrain_learns_digits_and_keeps_best_and_final(tmp_path, tiny_space, digits):
    cfg = RetrainConfig(optim=OptimConfig(epochs=6, warmup_epochs=0.5, batch_size=64, lr=0.1),
                        dropout=0.1, log_every=50)
    arch = tiny_space.parse("e3k3-e6k3se-skip-e3k5")
    model, result = train_subnet(tiny_space, arch, digits, cfg, out_dir=str(tmp_path))
    accs = [h["val_top1"] for h in result.history]
    assert len(accs) == 6 and max(accs) > 0.85
    best = load_weights(str(tmp_path / "best.pt"))
    assert best["meta"]["val_top1"] == max(accs) and best["meta"]["arch"] == "e3k3-e6k3se-skip-e3k5"
    final = load_weights(str(tmp_path / "final.pt"))
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in final["state_dict"].items())
    # what benchmarks of the pipeline's result score: the best epoch's weights, in eval mode
    chosen = retrain_best(tiny_space, arch, digits, cfg)
    assert not chosen.training
    assert accuracy(chosen, Batches(digits, "val", train=False))["top1"] == max(accs)


@pytest.mark.parametrize("zero_init", [True, False])
def test_retrain_starts_residual_blocks_as_the_identity_unless_told_not(tiny_space, digits,
                                                                       zero_init):
    """retrain.zero_init_residual: the last BN scale of every block that adds its input
    back starts at zero (after one step at a tiny lr it is still near zero), else at
    one; blocks with a projection shortcut keep theirs at one either way."""
    from scarletnas.ops import MBConv

    cfg = RetrainConfig(optim=OptimConfig(epochs=1, warmup_epochs=0, batch_size=64, lr=1e-6),
                        max_steps=1, zero_init_residual=zero_init)
    model, _ = train_subnet(tiny_space.with_(shortcut=True), "e3k3-e6k3se-e3k3-e3k5", digits,
                            cfg)
    blocks = [m for m in model.modules() if isinstance(m, MBConv)]
    residual = [m.project[1].weight.abs().max().item() for m in blocks if m.residual]
    projected = [m.project[1].weight.abs().min().item() for m in blocks
                 if m.shortcut is not None]
    assert residual and projected, "the arch needs both kinds of block for this check"
    assert all(s < 1e-3 for s in residual) if zero_init else all(s > 0.99 for s in residual)
    assert all(s > 0.99 for s in projected)


def test_retrain_resume_with_dropout_and_ema_is_bit_identical(tmp_path, tiny_space, digits):
    cfg = RetrainConfig(optim=OptimConfig(epochs=1, warmup_epochs=0.2, batch_size=64),
                        dropout=0.3, ema_decay=0.9, checkpoint_every=5, log_every=1,
                        augment="randaugment")
    arch = "e3k3-e6k3se-skip-e3k5"
    reference, _ = train_subnet(tiny_space, arch, digits, cfg, out_dir=str(tmp_path / "a"))
    with pytest.raises(Preempted):
        train_subnet(tiny_space, arch, digits, cfg, out_dir=str(tmp_path / "b"),
                     callback=_kill_at(8))
    assert not (tmp_path / "b" / "final.pt").exists()
    resumed, result = train_subnet(tiny_space, arch, digits, cfg, out_dir=str(tmp_path / "b"))
    assert result.resumed_from == 5
    assert _states_equal(reference, resumed)


def test_space_and_data_must_agree(tiny_space, digits):
    with pytest.raises(ValueError, match="expects 10 classes at 32px but the data has 10 "
                                         "classes at 16px"):
        train_supernet(tiny_space.with_(input_size=32), digits, _supernet_cfg())


# ---- multi-process data parallel (gloo on CPU, as torchrun would start it) --------------
def _ddp_worker(rank, world, init_file, out_dir, space_dict):
    import torch.distributed as dist

    from scarletnas import SearchSpace
    from scarletnas.config import DataConfig
    from scarletnas.data import load_splits

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank,
                            world_size=world)
    try:
        space = SearchSpace.from_dict(space_dict)
        splits = load_splits(DataConfig(input_size=16))
        cfg = _supernet_cfg(optim=OptimConfig(epochs=0.5, warmup_epochs=0.1, batch_size=32))
        supernet, result = train_supernet(space, splits, cfg)
        torch.save({"state": supernet.state_dict(), "steps": result.steps},
                   os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_two_process_data_parallel_keeps_ranks_in_sync(tmp_path, tiny_space):
    mp.spawn(_ddp_worker, args=(2, str(tmp_path / "init"), str(tmp_path), tiny_space.to_dict()),
             nprocs=2, join=True)
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert r0["steps"] == r1["steps"] > 0
    params = [k for k in r0["state"] if "running" not in k and "num_batches" not in k]
    assert all(torch.equal(r0["state"][k], r1["state"][k]) for k in params)
    # each rank saw its own shard, so BN statistics differ while weights agree
    assert any(not torch.equal(r0["state"][k], r1["state"][k]) for k in r0["state"]
               if "running_mean" in k)

