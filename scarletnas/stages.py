"""The pipeline's stages as plain functions: one per KFP component.

Each takes the validated ``PipelineConfig``, the prepared-data manifest that
prepare_data wrote (the one description of data and space, see ``manifest``)
and local paths or storage URIs; it does its work, logs to the given
``Tracker`` and returns plain data for the component to write as KFP outputs.
Nothing here imports KFP, so every stage runs and is tested without it, and
the CLI calls the same functions.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING

from . import layout, placement, reuse, storage
from . import manifest as prepared
from .config import PipelineConfig, to_dict
from .data import Batches, Splits
from .report import curve_png
from .space import SearchSpace
from .tracking import Tracker

if TYPE_CHECKING:
    from .nodes import Nodes

log = logging.getLogger("scarletnas")


def prepare_data(cfg: PipelineConfig, dataset_path: str, tracker: Tracker) -> dict:
    """Read and split the data once (failing early on bad data), write the manifest
    every later step reads, and record the space and data it fixes on this run and
    the parent run."""
    _, _, manifest = prepared.prepare(cfg)
    prepared.write(dataset_path, manifest)
    record_data(cfg, manifest, tracker)
    return manifest


def record_data(cfg: PipelineConfig, manifest: dict, tracker: Tracker) -> None:
    """What prepare_data records: the data on its run, and on the parent run what
    makes runs comparable (the space fingerprint, the data's digest, the dataset)."""
    tracker.params(cfg.data.as_used(), "data.")
    tracker.metrics({"data/train_images": manifest["train"], "data/val_images": manifest["val"],
                     "data/test_images": manifest["test"],
                     "data/skipped_images": len(manifest["skipped_images"])})
    tracker.table(manifest["skipped_images"], "skipped_images.json")  # none: nothing logged
    if "shards" in manifest:  # prepared into shards (or reusing them)
        tracker.metrics({"data/shards": manifest["shard_count"]})
        tracker.tags({"data.shards": manifest["shards"],
                      "data.shards_reused": str(manifest["shards_reused"]).lower()})
    fingerprint = manifest["space_fingerprint"]
    for run in (tracker, tracker.parent):  # what makes runs comparable, where they are compared
        run.tags({"space_fingerprint": fingerprint})
        run.params({"space_fingerprint": fingerprint, "data_digest": manifest["digest"]})
        run.dataset(manifest)


def record_prepared(cfg: PipelineConfig, dataset_path: str, step: Tracker,
                    minutes: float | None = None) -> None:
    """prepare_data's record in a pipeline run, made by the step after it (``step``
    is that step's run): KFP may take prepare_data's output from its cache, from an
    earlier run of the same config, so prepare_data takes no per-run input (such as
    the parent run) and logs nothing itself. The record is a child run
    ``prepare_data`` of ``step``'s parent, made once: a retried step finds the
    parent already holding the data's digest. ``minutes``: the preparation's."""
    if not step.active or not step.parent_run_id:
        return
    parent = step.parent.run()
    if parent is None or "data_digest" in parent.data.params:
        return
    tracker = Tracker(step.tracking_uri, cfg.tracking.experiment, "prepare_data",
                      parent_run_id=step.parent_run_id)
    record_data(cfg, prepared.read(dataset_path), tracker)
    if minutes is not None:
        tracker.metrics({"minutes": minutes})
        tracker.parent.metrics({"minutes/prepare_data": minutes})
    tracker.end()


def _open(cfg: PipelineConfig, dataset: str, tracker: Tracker):
    """The prepared splits and space, the data logged as this run's dataset input."""
    manifest = prepared.read(dataset)
    splits, space = prepared.open_prepared(cfg, manifest)
    tracker.dataset(manifest)
    return splits, space, manifest


def _log_png(tracker: Tracker, png: bytes, name: str) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp, name).write_bytes(png)
        tracker.artifact(Path(tmp, name), "plots")


def train_supernet(cfg: PipelineConfig, dataset: str, out_path: str, checkpoint_uri: str,
                   tracker: Tracker, nodes: Nodes | None = None) -> dict:
    """Train the supernet where the config places it (``placement.py``); rank 0
    writes ``out_path`` (on nodes: to S3 first, the nodes share nothing else).
    A supernet an earlier run trained from the same inputs is used instead
    (``reuse.py``)."""
    manifest = prepared.read(dataset)
    store = reuse.Store.for_run(cfg)
    parts = reuse.supernet_parts(cfg, manifest) if store else {}
    if store:
        found, why = store.find("supernet", parts)
        if found and (out := _reused_supernet(cfg, found, out_path, tracker)):
            return out
        reuse.announce(tracker, "supernet", None, why or "the stored supernet is unusable")
    body = SearchSpace.from_dict(manifest["space"]).body_fingerprint
    warm = _warm_start_uri(cfg, body, tracker, checkpoint_uri)
    work_path = storage.join(nodes.state, layout.SUPERNET) if nodes else out_path
    out = placement.run("train_supernet", cfg, cfg.supernet.device, tracker, nodes,
                        dataset=dataset, out_path=work_path, checkpoint_uri=checkpoint_uri,
                        warm_start_uri=warm)
    if work_path != out_path:
        storage.download_file(work_path, out_path)
    if store:
        store.put("supernet", parts, {layout.SUPERNET: out_path}, out, _made_by(tracker),
                  about={"space_body": body})
    return {**out, "reused": 0, "warm_started": int(bool(warm))}


def warm_start_source(cfg: PipelineConfig, body: str, tracker: Tracker) -> reuse.Found | None:
    """The stored supernet ``supernet.warm_start`` names (same layers and skip
    kind, any data), checked to load and said on the runs; None: train from
    scratch. A named run whose supernet cannot serve is an error (the user
    asked for that one); ``latest`` passes over unusable ones, with a warning."""
    wanted = cfg.supernet.warm_start
    if wanted == "off":
        return None
    if not cfg.checkpoint_root:
        raise ValueError(f"supernet.warm_start={wanted}: supernets are stored under "
                         "checkpoint_root, which this run does not set; set it or use off")
    store = reuse.Store(cfg.checkpoint_root)
    stored = store.records("supernet")
    if wanted == "latest":
        found = None
        for candidate in stored:
            if candidate.record.get("about", {}).get("space_body") != body:
                continue
            why = _unusable(cfg, candidate, body)
            if not why:
                found = candidate
                break
            log.warning("supernet: not warm-starting from %s: %s", candidate.folder, why)
        if found is None:
            log.info("supernet: no usable stored supernet of this search space to warm-start "
                     "from under %s: training from scratch", cfg.checkpoint_root)
            tracker.tags({"warm_start": "no: none stored for this space"})
            return None
    else:
        runs = [f for f in stored if f.record.get("made_by", {}).get("mlflow_run_id") == wanted]
        if not runs:
            raise ValueError(f"supernet.warm_start={wanted}: no supernet stored by that MLflow "
                             f"run under {store.root}/supernet (runs "
                             "store theirs when reuse is on); use latest, off, or the id of "
                             "the parent run that trained one")
        found = runs[0]
        if found.record.get("about", {}).get("space_body") != body:
            raise ValueError(f"supernet.warm_start={wanted}: that run's supernet has other "
                             "layers, strides, widths or choices than this run's space (the "
                             "compact space's stem changes stride at 24 px input); use "
                             "latest (the newest of this space) or off")
        if why := _unusable(cfg, found, body):
            raise ValueError(f"supernet.warm_start={wanted}: that run's supernet "
                             f"({found.folder}) cannot be used: {why}; use latest or off")
    text = f"from {found.source}"
    log.info("supernet: warm start %s", text)
    tracker.tags({"warm_start": text})
    tracker.parent.tags({"warm_start": text})
    return found


def _unusable(cfg: PipelineConfig, found: reuse.Found, body: str) -> str:
    """Why a stored supernet cannot start this run's ("" if it can): it must load
    and match the space's layers and ``supernet.stabilizer``."""
    from .checkpoint import load_supernet
    from .supernet import start_mismatch

    try:
        source = load_supernet(found.file(layout.SUPERNET))
    except (OSError, RuntimeError, ValueError, KeyError) as err:
        return f"it does not load ({str(err).splitlines()[0] if str(err) else type(err).__name__})"
    return start_mismatch(source, body, cfg.supernet.stabilizer)


def _warm_start_uri(cfg: PipelineConfig, body: str, tracker: Tracker, checkpoint_uri: str) -> str:
    """The stored supernet this step starts from ("" : scratch), decided once per
    step: a retry reads the first attempt's decision beside its checkpoint, so it
    resumes what that attempt began even if the store changed since."""
    decision = f"{checkpoint_uri}.warm_start.json" if checkpoint_uri else ""
    if decision and storage.exists(decision):
        made = json.loads(storage.read_bytes(decision))
        if made["uri"]:
            tracker.tags({"warm_start": made["text"]})
            tracker.parent.tags({"warm_start": made["text"]})
        return made["uri"]
    found = warm_start_source(cfg, body, tracker)
    uri = found.file(layout.SUPERNET) if found else ""
    if decision:
        storage.write_bytes(decision, json.dumps(
            {"uri": uri, "text": f"from {found.source}" if found else ""}).encode())
    return uri


def _made_by(tracker: Tracker) -> dict:
    return {"mlflow_run_id": tracker.parent.run_id or ""}


def _reused_supernet(cfg: PipelineConfig, found: reuse.Found, out_path: str,
                     tracker: Tracker) -> dict | None:
    """The stored supernet at ``out_path``, its figures logged again on this run
    (runs compare by them); None, with a warning, if it does not load."""
    from .checkpoint import load_supernet

    try:
        storage.download_file(found.file(layout.SUPERNET), out_path)
        supernet = load_supernet(out_path)
        if supernet.space.fingerprint != found.record["parts"]["space"]:
            raise ValueError("it was trained for another search space")
    except (OSError, RuntimeError, ValueError, KeyError) as err:
        log.warning("the stored supernet %s cannot be used (%s): training one instead",
                    found.folder, str(err).splitlines()[0] if str(err) else type(err).__name__)
        return None
    reuse.announce(tracker, "supernet", found, "")
    out = found.record["out"]
    tracker.parent.metrics({"supernet_final_loss": out["final_loss"],
                            "supernet_final_train_acc": out["final_train_acc"],
                            "supernet_steps": out["steps"]})
    check = supernet.path_check
    if check:
        tracker.metrics({f"supernet/sampled_top1_{k}": check[f"top1_{k}"]
                         for k in ("mean", "std", "min", "max")}, out["steps"])
        tags = {"supernet_learned": str(check["learned"]).lower()}
        tracker.tags(tags)
        tracker.parent.tags(tags)
        tracker.parent.metrics({"supernet_sampled_top1": check["top1_mean"]})
    return {**out, "reused": 1}


def train_supernet_on_ranks(cfg: PipelineConfig, dataset: str, out_path: str,
                            checkpoint_uri: str, tracker: Tracker,
                            warm_start_uri: str = "") -> dict:
    """The supernet's training on every rank of its group: from scratch, or from
    the stored supernet at ``warm_start_uri`` for ``warm_start_epochs``."""
    from .checkpoint import save_supernet
    from .launch import world
    from .train import extension_round, should_extend, warm_start_round
    from .train import train_supernet as train

    splits, space, manifest = _open(cfg, dataset, tracker)
    tracker.params(to_dict(cfg.supernet), "supernet.")
    tracker.tags({"space_fingerprint": space.fingerprint,
                  "stabilizer": cfg.supernet.stabilizer, "sampling": cfg.supernet.sampling})
    curve: list[tuple[int, float]] = []
    last: dict = {}
    done = [0]  # steps of the rounds before this one: one step axis for every round

    def on_metrics(metrics: dict, step: int) -> None:
        tracker.metrics(metrics, done[0] + step)
        if "supernet/loss" in metrics:
            curve.append((done[0] + step, metrics["supernet/loss"]))
            last.update(metrics)

    t = time.perf_counter()
    start = _warm_supernet(cfg, space, warm_start_uri) if warm_start_uri else None
    first = warm_start_round(cfg.supernet) if start else cfg.supernet  # extensions: as long
    supernet, result = train(space, splits, first, checkpoint_uri=checkpoint_uri or None,
                             callback=on_metrics, supernet=start)
    resumed_from, stopped_early = result.resumed_from, result.stopped_early
    check = check_supernet(cfg, supernet, splits, tracker, step=result.steps)
    checks = [check]
    while not stopped_early and (why := _agreed(should_extend(cfg.supernet, checks))):
        n = len(checks)
        log.info("supernet: training extension round %d of at most %d: %s", n,
                 cfg.supernet.extensions, why)
        done[0] += result.steps
        supernet, result = train(space, splits, extension_round(first, n, done[0]),
                                 checkpoint_uri=f"{checkpoint_uri}.round{n}"
                                 if checkpoint_uri else None, callback=on_metrics,
                                 supernet=supernet)
        stopped_early = result.stopped_early
        check = check_supernet(cfg, supernet, splits, tracker, step=done[0] + result.steps)
        checks.append(check)
    steps = done[0] + result.steps
    minutes = (time.perf_counter() - t) / 60
    if world()[0] == 0:
        save_supernet(out_path, supernet.cpu(), {"steps": steps, "path_check": check})
    _log_png(tracker, curve_png(curve, "supernet training loss", "loss"), "supernet_loss.png")
    out = {"steps": steps, "resumed_from_step": resumed_from, "extension_rounds": len(checks) - 1,
           "final_loss": last.get("supernet/loss", float("nan")),
           "final_train_acc": last.get("supernet/acc", float("nan")), "minutes": minutes}
    tracker.parent.metrics({"supernet_final_loss": out["final_loss"],
                            "supernet_final_train_acc": out["final_train_acc"],
                            "supernet_steps": steps})
    if check:
        out.update({"sampled_top1_mean": check["top1_mean"],
                    "sampled_top1_std": check["top1_std"], "learned": int(check["learned"])})
        for n, c in enumerate(checks[:-1]):  # scalars: KFP metrics take no lists
            out[f"sampled_top1_round{n}"] = c["top1_mean"]
    return out


def _warm_supernet(cfg: PipelineConfig, space, uri: str):
    """A supernet of ``space`` holding the stored one's weights (a new classifier
    when the class count changed)."""
    import torch

    from .checkpoint import load_supernet
    from .supernet import Supernet, adopt_weights

    source = load_supernet(uri)  # a local path or s3:// (storage reads either)
    s = cfg.supernet
    torch.manual_seed(s.seed)  # a new classifier starts alike on every rank
    supernet = Supernet(space, s.stabilizer, s.stabilizer_init,
                        zero_init_residual=s.zero_init_residual)
    fresh = adopt_weights(supernet, source)
    if fresh:
        log.info("supernet: warm start leaves %s as new (%d tensors): the class count "
                 "changed", ", ".join(sorted({k.split(".")[0] for k in fresh})), len(fresh))
    return supernet


def _agreed(decision: str) -> str:
    """Rank 0's decision, on every rank: their checks could differ by an image
    (cuDNN autotuning, bf16), and a rank that trains alone would hang the others."""
    import torch.distributed as dist

    from .launch import world

    if world()[1] == 1:
        return decision
    box = [decision]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def check_supernet(cfg: PipelineConfig, supernet, splits: Splits, tracker: Tracker,
                   step: int = 0) -> dict:
    """Score random paths of a trained supernet and say loudly if it has not learned:
    a warning in the log, MLflow metrics (at ``step``: one point per training
    round), and tags on this run and the parent run."""
    from .evaluate import sampled_path_check

    if not cfg.supernet.check_paths:
        return {}
    check = sampled_path_check(supernet, splits, cfg.eval, cfg.supernet.check_paths,
                               seed=cfg.search.seed, amp=cfg.supernet.amp)
    tracker.metrics({f"supernet/sampled_top1_{k}": check[f"top1_{k}"]
                     for k in ("mean", "std", "min", "max")}, step)
    tracker.metrics({"supernet/learned": int(check["learned"])}, step)
    tags = {"supernet_learned": str(check["learned"]).lower()}
    tracker.tags(tags)
    tracker.parent.tags(tags)
    tracker.parent.metrics({"supernet_sampled_top1": check["top1_mean"]})
    if check["warning"]:
        log.warning(check["warning"])
    return check


def _load_supernet(cfg: PipelineConfig, path: str, space):
    """The trained supernet, refused if it was trained for another space."""
    from .checkpoint import load_supernet
    from .launch import resolve_device

    supernet = load_supernet(path)
    if supernet.space.fingerprint != space.fingerprint:
        raise ValueError(f"{path} was trained for search space {supernet.space.fingerprint}, "
                         f"not this run's {space.fingerprint}: pass the supernet trained on "
                         "this run's prepared data")
    return supernet.to(resolve_device(cfg.supernet.device))


def ranking_check(cfg: PipelineConfig, dataset: str, supernet_path: str,
                  tracker: Tracker) -> tuple[dict, str]:
    """Kendall tau / Spearman of supernet vs stand-alone accuracy: (report, markdown).
    A tau that is not significantly positive heads the report as a warning."""
    import dataclasses

    import numpy as np

    from .evaluate import CandidateEvaluator
    from .ranking import ranking_check as check
    from .ranking import spread_archs
    from .report import ranking_markdown

    splits, space, _ = _open(cfg, dataset, tracker)
    supernet = _load_supernet(cfg, supernet_path, space)
    evaluator = CandidateEvaluator(supernet, splits, cfg.eval, seed=cfg.search.seed)
    archs = spread_archs(space, cfg.ranking.archs, np.random.default_rng(cfg.search.seed))
    optim = dataclasses.replace(cfg.retrain.optim, epochs=cfg.ranking.epochs, warmup_epochs=min(
        cfg.retrain.optim.warmup_epochs, cfg.ranking.epochs / 2))
    retrain = dataclasses.replace(cfg.retrain, optim=optim, log_every=10**6)
    report = check(space, evaluator, splits, archs, retrain,
                   progress=lambda i, row: tracker.metrics(
                       {"ranking/supernet_top1": row["supernet_top1"],
                        "ranking/standalone_top1": row["standalone_top1"]}, i),
                   close_within=cfg.ranking.close_points / 100)
    tracker.metrics({f"ranking/{k}": report[k] for k in ("kendall_tau", "spearman_rho")})
    close = report["close"]
    tracker.metrics({"ranking/close_archs": close["n"]} | (
        {"ranking/close_kendall_tau": close["kendall_tau"]} if "kendall_tau" in close else {}))
    tracker.dict(report, "ranking.json")
    significant = report["kendall_tau"] > 0 and report["kendall_p"] < 0.05
    tags = {"ranking_significant": str(significant).lower()}
    tracker.tags(tags)
    tracker.parent.tags(tags)
    tracker.parent.metrics({"ranking_kendall_tau": report["kendall_tau"],
                            "ranking_kendall_p": report["kendall_p"]})
    warning = ""
    if not significant:
        warning = (f"RANKING NOT SIGNIFICANT: Kendall tau {report['kendall_tau']:.3f} "
                   f"(p={report['kendall_p']:.3g}) over {report['n']} archs; the supernet's "
                   "order of archs may be noise.")
        if "predicted" in report["constant"]:
            warning = (f"RANKING NOT SIGNIFICANT: the supernet scored all {report['n']} archs "
                       f"the same ({report['archs'][0]['supernet_top1']:.3f}), so it ranks "
                       "nothing (tau reported as 0): it has not learned.")
        log.warning(warning)
    return report, ranking_markdown(report, cfg.ranking.epochs, warning)


def search(cfg: PipelineConfig, dataset: str, supernet_path: str, out_dir: str, state_uri: str,
           tracker: Tracker, nodes: Nodes | None = None) -> dict:
    """NSGA-II with the supernet where the config places it (``placement.py``);
    writes the front and plots under ``out_dir``."""
    store = reuse.Store.for_run(cfg)
    parts = reuse.search_parts(cfg, supernet_path) if store else {}
    if store:
        found, why = store.find("search", parts)
        if found:
            return _reused_search(found, out_dir, tracker)
        reuse.announce(tracker, "search", None, why)
    work_supernet, work_dir = supernet_path, out_dir
    if nodes:  # the supernet and the outputs go through S3, the one place the nodes share
        work_supernet = storage.join(nodes.state, layout.SUPERNET)
        work_dir = storage.join(nodes.state, "out")
        storage.upload_file(supernet_path, work_supernet)
    out = placement.run("search", cfg, cfg.supernet.device, tracker, nodes, dataset=dataset,
                        supernet_path=work_supernet, out_dir=work_dir, state_uri=state_uri)
    if nodes:
        for name, uri in out["files"].items():
            out["files"][name] = str(storage.download_file(uri, Path(out_dir, name)))
        _log_search_files(out["files"], tracker)
    if store:
        store.put("search", parts, out["files"], out, _made_by(tracker))
    return out


def _reused_search(found: reuse.Found, out_dir: str, tracker: Tracker) -> dict:
    """The stored search's outputs in ``out_dir``, logged on this run as a search's."""
    out = found.record["out"]
    files = {name: str(storage.download_file(found.file(name), Path(out_dir, name)))
             for name in found.record["files"]}
    reuse.announce(tracker, "search", found, "")
    _log_search_files(files, tracker)
    metrics = out["metrics"]
    tracker.parent.metrics({"search_hypervolume": metrics["hypervolume"],
                            "search_front_size": metrics["front_size"],
                            "search_evaluated": metrics["evaluated"]})
    return {**out, "files": files, "metrics": {**metrics, "reused": 1}}


def _log_search_files(files: dict, tracker: Tracker) -> None:
    for name in ("front.csv", "evaluated.csv", "pareto.html", "pareto.png"):
        if name in files and not storage.is_s3(files[name]):
            tracker.artifact(files[name], "search")
    if "pareto.png" in files and not storage.is_s3(files["pareto.png"]):
        tracker.parent.artifact(files["pareto.png"], "plots")


def search_on_ranks(cfg: PipelineConfig, dataset: str, supernet_path: str, out_dir: str,
                    state_uri: str, tracker: Tracker) -> dict:
    """The search on every rank of its group: each scores its share of a generation."""
    from .evaluate import across_ranks, make_scorer
    from .latency import build_latency_table
    from .launch import world
    from .report import COLUMNS, write_search_outputs
    from .search import run_search

    splits, space, _ = _open(cfg, dataset, tracker)
    supernet = _load_supernet(cfg, supernet_path, space)
    device = next(supernet.parameters()).device
    rank, ranks = world()
    # one process per GPU on several ranks (each has its own), else every GPU of the pod
    scorer = across_ranks(make_scorer(
        supernet, splits, cfg.eval, devices=None if device.type == "cuda" and ranks == 1
        else [device], seed=cfg.search.seed, amp=cfg.supernet.amp))
    warning = supernet.path_check.get("warning", "")  # the check run when it was trained
    # CPU batch-1, as evaluate measures it: one meaning of latency for budget and report
    latency = build_latency_table(space, "cpu") if cfg.search.needs_latency else None
    tracker.params(to_dict(cfg.search), "search.")
    result = run_search(space, scorer, cfg.search, latency=latency, state_uri=state_uri or None,
                        callback=lambda gen, stats: tracker.metrics(
                            {f"search/{k}": v for k, v in stats.items()}, gen))
    files = write_search_outputs(result, out_dir, warning=warning) if rank == 0 else {}
    _log_search_files(files, tracker)
    tracker.table([{c: r[c] for c in COLUMNS} for r in result.evaluated], "candidates.json")
    tracker.parent.table([{c: r[c] for c in COLUMNS} for r in result.front], "pareto_front.json")
    tracker.parent.metrics({"search_hypervolume": result.hypervolume[-1],
                            "search_front_size": len(result.front),
                            "search_evaluated": len(result.evaluated)})
    return {"selected": [r["arch"] for r in result.selected], "files": files, "warning": warning,
            "metrics": {"front_size": len(result.front), "evaluated": len(result.evaluated),
                        "hypervolume": result.hypervolume[-1],
                        "cache_hit_rate": result.cache_hit_rate,
                        "best_supernet_top1": max(r["top1"] for r in result.front)}}


def retrain(cfg: PipelineConfig, dataset: str, arch: str, out_dir: str, checkpoint_uri: str,
            tracker: Tracker, nodes: Nodes | None = None) -> dict:
    """Train ``arch`` from scratch where the config places it (``placement.py``);
    best.pt and final.pt land in ``out_dir`` (nodes keep them, with their state, in
    ``checkpoint_uri``)."""
    store = reuse.Store.for_run(cfg)
    parts = reuse.retrain_parts(cfg, prepared.read(dataset), arch) if store else {}
    if store:
        found, why = store.find("retrain", parts)
        if found:
            for name in found.record["files"]:
                storage.download_file(found.file(name), Path(out_dir, name))
            reuse.announce(tracker, "retrain", found, "", label=arch)
            tracker.params({"arch": arch})
            return {**found.record["out"], "reused": 1}
        reuse.announce(tracker, "retrain", None, why, label=arch)
    out = placement.run("retrain", cfg, cfg.retrain.device, tracker, nodes, dataset=dataset,
                        arch=arch, out_dir=checkpoint_uri if nodes else out_dir,
                        checkpoint_uri=checkpoint_uri)
    if nodes:
        _download_weights(checkpoint_uri, out_dir)
    if store:
        weights = {n: str(Path(out_dir, n)) for n in (layout.BEST, layout.FINAL)
                   if Path(out_dir, n).exists()}
        store.put("retrain", parts, weights, out, _made_by(tracker))
    return {**out, "reused": 0}


def retrain_on_ranks(cfg: PipelineConfig, dataset: str, arch: str, out_dir: str,
                     checkpoint_uri: str, tracker: Tracker) -> dict:
    """One arch's training from scratch on every rank of its group."""
    from .complexity import arch_cost
    from .launch import world
    from .train import train_subnet

    splits, space, _ = _open(cfg, dataset, tracker)
    cost = arch_cost(space, arch)
    tracker.params({"arch": arch, "madds": cost.madds, "params": cost.params})
    tracker.params(to_dict(cfg.retrain), "retrain.")
    tracker.tags({"arch": arch})
    work = checkpoint_uri or out_dir
    _, result = train_subnet(space, arch, splits, cfg.retrain, out_dir=work,
                             callback=tracker.metrics)
    if work != out_dir and world()[0] == 0:  # the state lives in storage; the model goes out
        _download_weights(work, out_dir)
    # train_subnet scores the weights at least once, at the end if max_steps stopped it
    # before an epoch's evaluation
    best = max((h for h in result.history if "val_top1" in h),
               key=lambda h: h["val_top1"], default={})
    return {"arch": arch, "steps": result.steps, "best_val_top1": best.get("val_top1"),
            "best_epoch": best.get("epoch")}


def _download_weights(work: str, out_dir: str) -> None:
    """best.pt, and final.pt unless the run stopped early (max_steps) and has none."""
    storage.download_file(storage.join(work, layout.BEST), Path(out_dir, layout.BEST))
    if storage.exists(storage.join(work, layout.FINAL)):
        storage.download_file(storage.join(work, layout.FINAL), Path(out_dir, layout.FINAL))


def evaluate(cfg: PipelineConfig, dataset: str, model_dir: str, export_dir: str,
             tracker: Tracker) -> dict:
    """Test accuracy, cost, measured latency, the torch.export program and ONNX
    files (each checked against the model), and the model logged and registered
    in MLflow: the model is exported once, and all three come from that program."""
    from .budget import budgets, within_budget
    from .checkpoint import load_weights
    from .complexity import arch_cost
    from .evaluate import accuracy
    from .export import check_onnx, check_program, export, export_onnx, save_program
    from .latency import model_latency_ms
    from .subnet import build_subnet

    splits, space, _ = _open(cfg, dataset, tracker)
    blob = load_weights(str(Path(model_dir, layout.BEST)))
    arch = blob["meta"]["arch"]
    model = build_subnet(arch, space=space, dropout=cfg.retrain.dropout)
    model.load_state_dict(blob["state_dict"])
    test = accuracy(model, Batches(splits, "test", train=False))
    cost = arch_cost(space, arch)
    latency_ms = model_latency_ms(model, space.input_size, "cpu", repeats=20)
    program = export(model, space.input_size)
    pt2 = save_program(program, Path(export_dir, layout.PROGRAM))
    onnx = export_onnx(program, space.input_size, Path(export_dir, layout.ONNX))
    summary = {
        "arch": arch, "test_top1": test["top1"], "test_top5": test["top5"],
        "test_loss": test["loss"], "val_top1": blob["meta"].get("val_top1"),
        "madds": cost.madds, "params": cost.params, "latency_ms_cpu_batch1": latency_ms,
        "onnx_max_abs_diff": check_onnx(model, onnx, space.input_size),
        "pt2_max_abs_diff": check_program(model, pt2, space.input_size),
        "within_budget": within_budget(
            {"madds": cost.madds, "params": cost.params, "latency_ms": latency_ms},
            budgets(cfg.search)),
    }
    return record_evaluated(cfg, summary, model, space.input_size, program, tracker)


def record_evaluated(cfg: PipelineConfig, summary: dict, model, input_size: int, program,
                     tracker: Tracker) -> dict:
    """evaluate's MLflow record of one model: its arch and cost as params, the model
    logged from ``program`` (its torch.export) and registered as
    tracking.registered_model, with ``summary``'s figures as the model's metrics.
    Returns ``summary`` with the registered version and the run's id."""
    from .tracking import log_model

    described = {k: summary[k] for k in ("arch", "madds", "params")}
    tracker.params(described)
    tracker.tags({"arch": summary["arch"]})
    # the figures go into the run with the logged model's id: the model's page shows them
    version = log_model(tracker, model, input_size,
                        registered_name=cfg.tracking.registered_model or None, params=described,
                        program=program,
                        metrics={k: v for k, v in summary.items()
                                 if isinstance(v, (int, float)) and not isinstance(v, bool)})
    return {**summary, "registered_version": version, "mlflow_run_id": tracker.run_id}


def summarize(cfg: PipelineConfig, summaries: list[dict], tracker: Tracker,
              warning: str = "", dataset: str | None = None) -> tuple[dict, str]:
    """Leaderboard (markdown) and the run's best model: best test top-1 within
    budget. It takes the champion alias only if it beats the serving champion,
    re-scored on this run's test split (``dataset``; champion.py's rule), else the
    challenger alias. ``warning`` (the supernet's, if it has not learned) heads the
    leaderboard."""
    from .report import leaderboard_markdown

    ranked = sorted(summaries, key=lambda s: (-s["test_top1"], s["madds"]))
    eligible = [s for s in ranked if s["within_budget"]] or ranked
    champion = eligible[0]
    decision, alias_set = None, False
    if champion.get("registered_version") and tracker.active:
        decision, alias_set = _crown(cfg, champion, tracker, dataset)
    footer = ""
    if alias_set:
        alias = cfg.tracking.champion_alias if decision.promote else cfg.tracking.challenger_alias
        footer = (f"Registered model `{cfg.tracking.registered_model}` version "
                  f"{champion['registered_version']} has alias `{alias}`: {decision.reason}.")
    markdown = leaderboard_markdown(ranked, champion, warning, footer)
    tracker.text(markdown, "leaderboard.md")
    tracker.dict({"champion": champion, "all": ranked}, "leaderboard.json")
    metrics = {"champion_test_top1": champion["test_top1"],
               "champion_test_top5": champion["test_top5"], "champion_madds": champion["madds"],
               "champion_params": champion["params"],
               "champion_latency_ms": champion["latency_ms_cpu_batch1"], "models": len(ranked)}
    tracker.metrics(metrics)
    tracker.parent.metrics(metrics)
    tracker.parent.table([{k: s[k] for k in ("arch", "test_top1", "test_top5", "madds", "params",
                                             "latency_ms_cpu_batch1", "within_budget")}
                          for s in ranked], "leaderboard.json")
    tracker.parent.text(markdown, "leaderboard.md")
    return {"champion": champion, "ranked": ranked, "metrics": metrics,
            "alias_set": alias_set, "promoted": bool(decision and decision.promote),
            "decision": decision.reason if decision else ""}, markdown


def _crown(cfg: PipelineConfig, best: dict, tracker: Tracker, dataset: str | None):
    """Give the run's best model the champion or the challenger alias (champion.py);
    the decision and the old champion's score go on the MLflow parent run."""
    from .budget import budgets
    from .champion import Decision, decide, find_incumbent
    from .tracking import set_alias

    t = cfg.tracking
    incumbent = None
    if dataset is not None:
        splits, space, _ = _open(cfg, dataset, Tracker("", "", ""))
        incumbent = find_incumbent(tracker.tracking_uri, t.registered_model, t.champion_alias,
                                   splits, space)
    decision = (decide(best, incumbent, budgets(cfg.search), t.max_top1_drop)
                if dataset is not None else Decision(True, "no test split to re-score the "
                                                           "champion on"))
    alias = t.champion_alias if decision.promote else t.challenger_alias
    alias_set = set_alias(tracker.tracking_uri, t.registered_model, alias,
                          best["registered_version"])
    log.info("%s", decision.reason)
    tracker.parent.tags({"champion_decision": "promoted" if decision.promote else "kept",
                         "champion_reason": decision.reason})
    if incumbent is not None and incumbent.test_top1 is not None:
        tracker.parent.metrics({"previous_champion_test_top1": incumbent.test_top1})
    return decision, alias_set


def component_context(config: str, parent_run_id: str, run_name: str,
                      **run_parameters) -> tuple[PipelineConfig, Tracker]:
    """What every component starts with: its validated config, with the run's
    parameters in place of the keys they stand for (config.RUN_PARAMETERS), and a
    child run (and its uncaught error recorded where a local run reads it)."""
    from .config import pipeline_config_from_json, with_run_parameters
    from .preflight import record_errors

    record_errors()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    cfg = with_run_parameters(pipeline_config_from_json(config), **run_parameters)
    return cfg, Tracker.for_task(cfg.tracking.uri, cfg.tracking.experiment, run_name,
                                 parent_run_id)
