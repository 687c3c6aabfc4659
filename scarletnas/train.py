"""Training loops: the supernet (one or m paths per step) and standalone subnets.

Both share ``fit``: SGD/RMSProp with per-step linear warm-up and cosine decay,
label smoothing, no weight decay on BN parameters and biases, bf16 autocast
and channels_last on CUDA, a progress bar and a metrics callback, and
checkpoints that make a run preemptible: every ``checkpoint_every`` steps and
at each epoch end the whole state (weights, optimizer, EMA, step, running
metrics, history, RNG) is written atomically, and a restarted run continues
from it with bit-identical results. Data order and path sampling are pure
functions of (seed, epoch/step), so they need no saved state.

Several processes (``launch.py`` starts one per GPU from inside a pipeline step;
``torchrun`` works too): every rank trains the same path on its own
shard of each batch and the path's gradients are all-reduced as one flat
bucket. That is what DDP would do, minus its per-step search for the
parameters the path did not use.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
from torch import nn
from tqdm.auto import tqdm

from . import layout, ops, storage
from .checkpoint import Checkpoint, save_weights
from .config import OptimConfig, RetrainConfig, RunConfig, SupernetConfig, to_dict
from .data import Batches, Splits
from .launch import resolve_device, world
from .sampling import make_sampler
from .space import SearchSpace
from .subnet import Subnet, build_subnet
from .supernet import Supernet

MetricsCallback = Callable[[dict, int], None]


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Decay conv/linear weights only; BN parameters and biases are 1-D."""
    decay = [p for p in model.parameters() if p.ndim > 1]
    rest = [p for p in model.parameters() if p.ndim <= 1]
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": rest, "weight_decay": 0.0}]


OPTIMIZERS = {
    "sgd": lambda groups, cfg: torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum,
                                               nesterov=cfg.nesterov and cfg.momentum > 0),
    # the EfficientNet/MnasNet recipe's settings
    "rmsprop": lambda groups, cfg: torch.optim.RMSprop(groups, lr=cfg.lr, alpha=0.9, eps=1e-3,
                                                       momentum=cfg.momentum),
}


def make_optimizer(model: nn.Module, cfg: OptimConfig) -> torch.optim.Optimizer:
    return OPTIMIZERS[cfg.optimizer](param_groups(model, cfg.weight_decay), cfg)


def lr_at(step: int, total: int, warmup: int, base: float) -> float:
    """Linear warm-up from base/warmup to base, then cosine decay to zero."""
    if step < warmup:
        return base * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * base * (1.0 + math.cos(math.pi * progress))


@dataclass
class FitResult:
    steps: int
    history: list[dict] = field(default_factory=list)  # one entry per finished epoch
    resumed_from: int = 0
    stopped_early: bool = False


class _Running:
    """Loss/accuracy/throughput since the last report."""

    def __init__(self, device):
        self.stats = torch.zeros(3, device=device, dtype=torch.float64)  # loss*n, correct, n
        self.t0 = time.perf_counter()

    def add(self, loss: torch.Tensor, logits: torch.Tensor, y: torch.Tensor) -> None:
        n = y.numel()
        self.stats += torch.stack([loss.detach().double() * n,
                                   (logits.argmax(1) == y).sum().double(),
                                   torch.tensor(float(n), device=y.device, dtype=torch.float64)])

    def report(self) -> dict:
        stats = self.stats.clone()
        if world()[1] > 1:
            dist.all_reduce(stats)
        loss, correct, n = stats.tolist()
        elapsed = time.perf_counter() - self.t0
        self.stats.zero_()
        self.t0 = time.perf_counter()
        return {"loss": loss / max(n, 1), "acc": correct / max(n, 1),
                "img_per_s": n / max(elapsed, 1e-9)}


def _allreduce_grads(model: nn.Module, world_size: int) -> None:
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    if not grads:
        return
    flat = torch._utils._flatten_dense_tensors(grads)
    dist.all_reduce(flat)
    flat /= world_size
    for g, synced in zip(grads, torch._utils._unflatten_dense_tensors(flat, grads), strict=True):
        g.copy_(synced)


@dataclass
class _Schedule:
    """Steps of a run: per epoch, in total, of warm-up, and where this call stops."""

    per_epoch: int
    total: int
    warmup: int
    stop_at: int

    @classmethod
    def of(cls, run: RunConfig, per_epoch: int) -> _Schedule:
        total = max(1, math.ceil(run.optim.epochs * per_epoch), run.optim.min_steps)
        return cls(per_epoch, total, int(round(run.optim.warmup_epochs * per_epoch)),
                   min(total, run.max_steps) if run.max_steps else total)

    def epoch_done(self, step: int) -> bool:
        return step % self.per_epoch == 0 or step == self.total


def _resume(ckpt: Checkpoint, fingerprint: dict | None, model: nn.Module,
            opt: torch.optim.Optimizer, ema: nn.Module | None, running: _Running,
            result: FitResult, device: torch.device) -> None:
    """Restore everything a checkpoint holds, so the run continues bit-identically."""
    state = ckpt.load()
    if state is None:
        return
    if fingerprint is not None and state.get("fingerprint") != fingerprint:
        raise ValueError(f"checkpoint {ckpt.uri} belongs to a different run (its config, space "
                         "or arch differ); use a new checkpoint location or delete it to start "
                         "over")
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["optimizer"])
    if ema is not None and state.get("ema") is not None:
        ema.load_state_dict(state["ema"])
    torch.set_rng_state(state["rng_cpu"])
    if device.type == "cuda" and state.get("rng_cuda") is not None:
        torch.cuda.set_rng_state(state["rng_cuda"], device)
    running.stats.copy_(state["running"].to(device))
    result.history = list(state["history"])
    result.resumed_from = int(state["step"])


def _snapshot(step: int, model: nn.Module, opt: torch.optim.Optimizer, ema: nn.Module | None,
              running: _Running, result: FitResult, fingerprint: dict | None,
              device: torch.device) -> dict:
    return {"step": step, "model": model.state_dict(), "optimizer": opt.state_dict(),
            "ema": ema.state_dict() if ema is not None else None,
            "rng_cpu": torch.get_rng_state(),
            "rng_cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
            "running": running.stats.cpu(), "history": result.history,
            "fingerprint": fingerprint}


def _train_step(model: nn.Module, opt: torch.optim.Optimizer, loss_fn: nn.Module, x, y,
                paths: Sequence, lr: float, autocast: bool, running: _Running,
                ema: nn.Module | None) -> None:
    """One optimizer step: the gradients of every path of the step, summed (and
    averaged over ranks), then the update and the EMA."""
    for group in opt.param_groups:
        group["lr"] = lr
    opt.zero_grad(set_to_none=True)
    for path in paths:
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=autocast):
            logits = model(x) if path is None else model(x, path)
            loss = loss_fn(logits, y)
        loss.backward()
        running.add(loss, logits, y)
    world_size = world()[1]
    if world_size > 1:
        _allreduce_grads(model, world_size)
    opt.step()
    if ema is not None:
        ema.update_parameters(model)


def fit(model: nn.Module, batches: Batches, run: RunConfig, *,
        paths_for_step: Callable[[int], Sequence] | None = None,
        checkpoint_uri: str | None = None, callback: MetricsCallback | None = None,
        on_epoch_end: Callable[[int, list[dict]], dict] | None = None,
        ema: nn.Module | None = None,
        fingerprint: dict | None = None, desc: str = "train") -> FitResult:
    """Train ``model`` on ``batches`` following ``run``; resume from the checkpoint.

    ``paths_for_step(step)`` gives the supernet paths of a step (their
    gradients are summed); without it the model is called as ``model(x)``.
    ``on_epoch_end(epoch, history)`` returns metrics stored in the history
    (e.g. validation accuracy); ``fingerprint`` must match a checkpoint's.
    """
    device = batches.device
    rank = world()[0]
    plan = _Schedule.of(run, len(batches))
    opt = make_optimizer(model, run.optim)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=run.optim.label_smoothing)
    autocast = run.amp and device.type == "cuda"
    paths_for_step = paths_for_step or (lambda step: [None])
    ckpt = Checkpoint(checkpoint_uri)
    running = _Running(device)
    result = FitResult(steps=0)
    _resume(ckpt, fingerprint, model, opt, ema, running, result, device)

    def report(metrics: dict, step: int) -> None:
        if callback and rank == 0:
            callback({f"{desc}/{k}": v for k, v in metrics.items()}, step)

    step = result.resumed_from
    model.train()
    bar = tqdm(total=plan.total, initial=step, desc=desc, disable=rank != 0,
               dynamic_ncols=True, mininterval=2.0)
    try:
        while step < plan.stop_at:
            epoch, first = divmod(step, plan.per_epoch)
            for x, y in batches.epoch(epoch, start=first):
                lr = lr_at(step, plan.total, plan.warmup, run.optim.lr)
                _train_step(model, opt, loss_fn, x, y, paths_for_step(step), lr, autocast,
                            running, ema)
                step += 1
                bar.update(1)
                epoch_done = plan.epoch_done(step)
                if step % run.log_every == 0 or epoch_done:
                    metrics = {**running.report(), "lr": lr, "epoch": step / plan.per_epoch}
                    bar.set_postfix(loss=f"{metrics['loss']:.3f}", acc=f"{metrics['acc']:.3f}",
                                    refresh=False)
                    report(metrics, step)
                if epoch_done:
                    entry = {"epoch": epoch + 1, "step": step}
                    if on_epoch_end is not None:
                        entry.update(on_epoch_end(epoch, result.history))
                        model.train()
                    result.history.append(entry)
                    if len(entry) > 2:
                        report({f"epoch_{k}": v for k, v in entry.items()
                                if k not in ("epoch", "step")}, step)
                if rank == 0 and (epoch_done or step % run.checkpoint_every == 0
                                  or step == plan.stop_at):
                    ckpt.save(_snapshot(step, model, opt, ema, running, result, fingerprint,
                                        device))
                if step >= plan.stop_at:
                    break
    finally:
        bar.close()
    result.steps = step
    result.stopped_early = step < plan.total
    return result


def _fingerprint(kind: str, space: SearchSpace, cfg: RunConfig, arch: str = "") -> dict:
    """What a checkpoint must agree on to be resumed: all but where to stop
    and how often to log."""
    config = to_dict(cfg)
    for key in ("max_steps", "log_every", "checkpoint_every", "device",
                "check_paths", "extensions", "min_gain"):  # decided after a schedule ends
        config.pop(key, None)
    return {"kind": kind, "arch": arch, "space": space.to_dict(), "config": config}


def _check_space(space: SearchSpace, splits: Splits) -> None:
    if space.num_classes != splits.num_classes or space.input_size != splits.input_size:
        raise ValueError(
            f"the search space expects {space.num_classes} classes at {space.input_size}px but "
            f"the data has {splits.num_classes} classes at {splits.input_size}px: build the "
            "space with space.with_(num_classes=..., input_size=...)")


def _train_batches(splits: Splits, cfg: RunConfig, device: torch.device) -> Batches:
    """This rank's shuffled, augmented share of the training split."""
    rank, world_size = world()
    return Batches(splits, "train", cfg.optim.batch_size, train=True, augment=cfg.augment,
                   seed=cfg.seed, device=device, rank=rank, world=world_size,
                   channels_last=cfg.channels_last)


def _prepare(model: nn.Module, device: torch.device, run: RunConfig) -> nn.Module:
    fmt = torch.channels_last if run.channels_last else torch.contiguous_format
    return model.to(device, memory_format=fmt)


def train_supernet(space: SearchSpace, splits: Splits, cfg: SupernetConfig, *,
                   checkpoint_uri: str | None = None, callback: MetricsCallback | None = None,
                   on_epoch_end: Callable[[Supernet, int], dict] | None = None,
                   supernet: Supernet | None = None) -> tuple[Supernet, FitResult]:
    """Train a weight-sharing supernet with uniform or strict-fair path sampling;
    a fresh one, or ``supernet`` further (an extension round)."""
    _check_space(space, splits)
    device = resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)
    if supernet is None:
        supernet = Supernet(space, cfg.stabilizer, cfg.stabilizer_init,
                            zero_init_residual=cfg.zero_init_residual)
    supernet = _prepare(supernet, device, cfg)
    batches = _train_batches(splits, cfg, device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        if cfg.warm_up_ops:
            supernet.warm_up(cfg.optim.batch_size, device,
                             torch.channels_last if cfg.channels_last else torch.contiguous_format,
                             torch.bfloat16 if cfg.amp else None)
    sampler = make_sampler(cfg.sampling, space, cfg.seed)
    result = fit(supernet, batches, cfg, paths_for_step=sampler.paths,
                 checkpoint_uri=checkpoint_uri, callback=callback,
                 on_epoch_end=(lambda e, _: on_epoch_end(supernet, e)) if on_epoch_end else None,
                 fingerprint=_fingerprint("supernet", space, cfg),
                 desc="supernet")
    return supernet, result


def extension_round(cfg: SupernetConfig, round_: int, steps_done: int) -> SupernetConfig:
    """The schedule of extension ``round_`` (1, 2, ...): as long as the first, a cosine
    restart from lr / 2**round_ without warm-up, and other paths and data order;
    ``max_steps`` still caps the whole run (``steps_done`` so far)."""
    optim = dataclasses.replace(cfg.optim, lr=cfg.optim.lr / 2 ** round_, warmup_epochs=0)
    return dataclasses.replace(cfg, optim=optim, seed=cfg.seed + 1000 * round_,
                               max_steps=max(1, cfg.max_steps - steps_done) if cfg.max_steps
                               else 0)


def warm_start_round(cfg: SupernetConfig) -> SupernetConfig:
    """The schedule of a warm-started supernet: like extension round 1 (a cosine
    restart from lr / 2 without warm-up, other paths) but ``warm_start_epochs``
    long; ``min_steps`` shrinks by the same fraction as the epochs."""
    first = extension_round(cfg, 1, 0)
    fraction = cfg.warm_start_epochs / cfg.optim.epochs
    optim = dataclasses.replace(first.optim, epochs=cfg.warm_start_epochs,
                                min_steps=math.ceil(cfg.optim.min_steps * fraction))
    return dataclasses.replace(first, optim=optim, max_steps=cfg.max_steps)


def should_extend(cfg: SupernetConfig, checks: list[dict]) -> str:
    """Why another round is worth training after ``checks`` (one sampled-path check
    per round so far), or "" to stop."""
    if len(checks) > cfg.extensions or not checks[-1]:  # no check: nothing to go on
        return ""
    top1, chance = checks[-1]["top1_mean"], checks[-1]["chance"]
    target = chance + 0.5 * (1 - chance)
    if top1 >= target:
        return ""
    if len(checks) > 1 and top1 - checks[-2]["top1_mean"] < cfg.min_gain:
        return ""
    return (f"sampled paths score {100 * top1:.1f}%, below half-way from chance to 100% "
            f"({100 * target:.1f}%)" + (f", up {100 * (top1 - checks[-2]['top1_mean']):.1f} pp "
                                        "in the last round" if len(checks) > 1 else ""))


def train_subnet(space: SearchSpace, arch, splits: Splits, cfg: RetrainConfig, *,
                 out_dir: str | None = None, callback: MetricsCallback | None = None
                 ) -> tuple[Subnet, FitResult]:
    """Retrain one architecture from scratch; keep the best (by validation
    top-1) and final weights under ``out_dir`` as best.pt and final.pt."""
    from .evaluate import accuracy

    _check_space(space, splits)
    device = resolve_device(cfg.device)
    rank = world()[0]
    torch.manual_seed(cfg.seed)
    net = build_subnet(arch, space=space, dropout=cfg.dropout)
    if cfg.zero_init_residual:
        ops.zero_residual_branches(net, projections=False)
    model = _prepare(net, device, cfg)
    ema = None
    if cfg.ema_decay > 0:
        from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

        ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema_decay),
                            use_buffers=True)
    batches = _train_batches(splits, cfg, device)
    val = Batches(splits, "val", train=False, device=device,
                  channels_last=cfg.channels_last)
    meta = {"arch": space.format(model.arch), "space": space.to_dict()}
    best_uri = layout.inside(out_dir, layout.BEST) or None

    def evaluated(epoch: float, history: list[dict]) -> dict:
        """Validation metrics of the weights now; best.pt when they beat ``history``'s."""
        scored = ema.module if ema is not None else model
        metrics = {f"val_{k}": v for k, v in accuracy(scored, val, amp=cfg.amp).items()}
        best = max((h.get("val_top1", -1.0) for h in history), default=-1.0)
        if best_uri and rank == 0 and metrics["val_top1"] > best:
            save_weights(best_uri, scored, {**meta, **metrics, "epoch": epoch})
        return metrics

    schedule = _Schedule.of(cfg, len(batches))
    last_epoch = math.ceil(schedule.total / schedule.per_epoch)

    def on_epoch_end(epoch: int, history: list[dict]) -> dict:
        if (epoch + 1) % cfg.eval_every_epochs and (epoch + 1) < last_epoch:
            return {}
        return evaluated(epoch + 1, history)

    checkpoint_uri = layout.inside(out_dir, layout.CHECKPOINT) or None
    result = fit(model, batches, cfg, checkpoint_uri=checkpoint_uri, callback=callback,
                 on_epoch_end=on_epoch_end, ema=ema, desc="retrain",
                 fingerprint=_fingerprint("subnet", space, cfg, meta["arch"]))
    if not any("val_top1" in h for h in result.history):
        # stopped (max_steps) before any epoch's evaluation: score the weights it has, so
        # the run reports a validation accuracy and best.pt, what evaluate reads, exists
        epoch = round(result.steps / len(batches), 4)
        metrics = evaluated(epoch, result.history)
        result.history.append({"epoch": epoch, "step": result.steps, **metrics})
        if callback and rank == 0:
            callback({f"retrain/epoch_{k}": v for k, v in metrics.items()}, result.steps)
    final = ema.module if ema is not None else model
    if out_dir and rank == 0 and not result.stopped_early:
        save_weights(storage.join(out_dir, layout.FINAL), final, {**meta, "steps": result.steps})
    return final, result


def retrain_best(space: SearchSpace, arch, splits: Splits, cfg: RetrainConfig) -> Subnet:
    """The arch retrained as the pipeline hands it to evaluate: at its best validation
    epoch (best.pt), not its last. On small folders the two can differ by 10 points
    (docs/benchmarks.md), so a benchmark of what users get scores this one."""
    import tempfile

    from .checkpoint import load_weights

    with tempfile.TemporaryDirectory() as tmp:
        train_subnet(space, arch, splits, cfg, out_dir=tmp)
        blob = load_weights(storage.join(tmp, layout.BEST))
    model = build_subnet(arch, space=space, dropout=cfg.dropout)
    model.load_state_dict(blob["state_dict"])
    return model.eval()
