"""The ``scarlet-nas`` command line."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from . import layout
from .space import ArchError, SearchSpace


def count(text: str) -> int:
    """argparse type: a whole number >= 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not >= 1")
    return value


def budget(text: str) -> float:
    """argparse type: a finite positive number (3e8, 6000000)."""
    import math

    value = float(text)
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"{text} is not a finite number > 0")
    return value


def _space_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--space", default="imagenet",
                   help="search space preset: imagenet, small or compact")
    p.add_argument("--num-classes", type=count, help="override the preset's class count")
    p.add_argument("--input-size", type=count, help="override the preset's input resolution")


def _space(args) -> SearchSpace:
    overrides = {k: v for k, v in (("num_classes", args.num_classes),
                                   ("input_size", args.input_size)) if v is not None}
    return SearchSpace.named(args.space, **overrides)


def _human(n: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.2f}{unit}"
    return str(int(n))


def cmd_arch_show(args) -> int:
    from .complexity import Cost, arch_cost, fixed_parts, layer_report

    space = _space(args)
    genes = space.parse(args.arch)
    arch = space.format(genes)
    total = arch_cost(space, genes)
    rows = layer_report(space, genes)
    if args.json:
        print(json.dumps({"arch": arch, "space": args.space, "space_fingerprint": space.fingerprint,
                          "num_classes": space.num_classes, "input_size": space.input_size,
                          "madds": total.madds, "params": total.params, "layers": rows},
                         indent=2))
        return 0
    parts = fixed_parts(space)
    shape = "{}x{}x{}".format
    print(f"{arch}\n{args.space} space, {space.input_size}x{space.input_size} input, "
          f"{space.num_classes} classes\n")
    print(f"{'layer':<11}{'choice':<9}{'input':<13}{'output':<13}{'stride':>6}"
          f"{'MAdds':>10}{'params':>10}")

    def line(name, choice, cin, cout, stride, cost):
        print(f"{name:<11}{choice:<9}{cin:<13}{cout:<13}{stride:>6}"
              f"{_human(cost.madds):>10}{_human(cost.params):>10}")

    stem_in = shape(space.in_channels, space.input_size, space.input_size)
    stem_out = shape(space.stem_out, space.stem_size, space.stem_size)
    line("stem", "conv3x3", stem_in, stem_out, space.stem_stride, parts["stem"])
    line("separable", "dw3x3", stem_out, shape(space.separable_out, space.stem_size,
                                                space.stem_size), 1, parts["separable"])

    for r in rows:
        line(str(r["layer"]), r["choice"], shape(*r["in"]), shape(*r["out"]), r["stride"],
             Cost(r["madds"], r["params"]))
    last = space.layers[-1]
    line("head", "conv1x1", shape(last.out_channels, last.out_size, last.out_size),
         shape(space.head_out, last.out_size, last.out_size), 1, parts["head"])
    line("classifier", "linear", str(space.head_out), str(space.num_classes), "",
         parts["classifier"])
    print(f"\ntotal: {total.madds / 1e6:.1f}M multiply-adds, {total.params / 1e6:.2f}M params")
    return 0


def cmd_arch_sample(args) -> int:
    import numpy as np

    from .complexity import arch_cost
    from .sampling import sample_archs

    space = _space(args)
    archs = sample_archs(space, args.n, np.random.default_rng(args.seed),
                         max_madds=args.max_madds, max_params=args.max_params)
    if args.json:
        out = []
        for a in archs:
            c = arch_cost(space, a)
            out.append({"arch": space.format(a), "madds": c.madds, "params": c.params})
        print(json.dumps(out, indent=2))
    else:
        for a in archs:
            print(space.format(a))
    return 0


def config_args(p: argparse.ArgumentParser) -> None:
    """--config and --set, the same for every command that takes pipeline settings."""
    from .config import named_configs

    p.add_argument("--config", metavar="FILE_OR_NAME",
                   help="YAML file of pipeline settings (sections as in PipelineConfig; each "
                        "key it names overrides the default; `base: NAME` starts from a "
                        f"shipped config), or a shipped config: {', '.join(named_configs())} "
                        "(`scarlet-nas config NAME` prints one in full)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override one setting, e.g. --set search.generations=10")


def _pipeline_config(args, flags: dict[str, str]):
    """The pipeline's config (file, then --set), then the command's own flags:
    the same settings and defaults as a pipeline run."""
    from . import preflight
    from .config import load_pipeline_config

    overrides = [f"{key}={json.dumps(getattr(args, dest))}" for dest, key in flags.items()
                 if getattr(args, dest) is not None]
    cfg = load_pipeline_config(args.config, [*args.set, *overrides])
    preflight.check(cfg)
    return cfg


TRAIN_FLAGS = {"data": "data.dataset", "source": "data.source", "space": "space.preset",
               "width": "space.width_mult", "epochs": "supernet.optim.epochs",
               "lr": "supernet.optim.lr", "batch_size": "supernet.optim.batch_size",
               "sampling": "supernet.sampling", "stabilizer": "supernet.stabilizer",
               "stabilizer_init": "supernet.stabilizer_init",
               "zero_init_residual": "supernet.zero_init_residual", "device": "supernet.device",
               "seed": "supernet.seed"}
SEARCH_FLAGS = {"budget_madds": "search.max_madds", "budget_params": "search.max_params",
                "budget_latency_ms": "search.max_latency_ms",
                "generations": "search.generations", "population": "search.population",
                "objectives": "search.objectives", "top_k": "search.top_k",
                "calib_batches": "eval.calib_batches", "val_images": "eval.val_images",
                "device": "supernet.device", "seed": "search.seed"}


def _tracker(cfg, name: str):
    from .tracking import Tracker

    return Tracker(cfg.tracking.uri, cfg.tracking.experiment, name)


def cmd_train_supernet(args) -> int:
    """The pipeline's prepare_data and train_supernet stages, run here."""
    import logging

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from . import stages
    from .storage import check_writable

    cfg = _pipeline_config(args, TRAIN_FLAGS)
    dataset = str(Path(args.out).with_name(layout.DATASET))
    for uri in (args.out, args.checkpoint):  # before the work, not after it
        if uri:
            check_writable(uri)
    with _tracker(cfg, "prepare_data") as tracker:
        stages.prepare_data(cfg, dataset, tracker)
    with _tracker(cfg, "train_supernet") as tracker:
        out = stages.train_supernet(cfg, dataset, args.out, args.checkpoint or "", tracker)
    print(json.dumps({"supernet": args.out, "dataset": dataset, **out}, indent=1))
    return 0


def cmd_search(args) -> int:
    """The pipeline's search stage, on the data and space the supernet was trained on."""
    from . import manifest, stages
    from .storage import check_writable, join

    dataset = args.dataset or str(Path(args.supernet).with_name(layout.DATASET))
    cfg = manifest.adopt(_pipeline_config(args, SEARCH_FLAGS), manifest.read(dataset))
    for uri in (join(args.out, "front.json"), args.state):  # before the work, not after it
        if uri:
            check_writable(uri)
    with _tracker(cfg, "search") as tracker:
        out = stages.search(cfg, dataset, args.supernet, args.out, args.state or "", tracker)
    print(json.dumps(out, indent=1))
    return 0


def cmd_dev(args) -> int:
    from .devstack import STATE_FILE, Stack

    state = Path(args.dir, STATE_FILE)
    if args.action == "down":
        if not state.exists():
            print(f"nothing to stop: {state} not found")
            return 0
        Stack.load(state).down()
        state.unlink()
        print("stopped the local S3 and MLflow servers")
        return 0
    if state.exists():
        raise RuntimeError(f"a stack is already up ({state}); run `scarlet-nas dev down` first")
    Path(args.dir).mkdir(parents=True, exist_ok=True)
    stack = Stack(str(Path(args.dir).absolute()))
    try:
        stack.start_s3(args.s3_port)
        stack.start_mlflow(args.mlflow_port)
    except BaseException:
        stack.down()
        raise
    stack.save(state)
    print("# S3 (SeaweedFS) and MLflow are up; export these to use them:")
    for k, v in stack.env().items():
        print(f"export {k}={v}")
    print(f"# bucket: s3://scarlet-nas   MLflow UI: {stack.tracking_uri}")
    return 0


def cmd_config(args) -> int:
    """Every setting a run would get, as YAML: a start for one's own config file."""
    import yaml

    from .config import load_pipeline_config, to_dict

    cfg = load_pipeline_config(args.config, args.set)
    print(yaml.safe_dump(to_dict(cfg), sort_keys=False), end="")
    return 0


def cmd_make_shapes(args) -> int:
    from .synthetic import write_shapes, write_stripes

    if Path(args.dir).exists() and any(Path(args.dir).iterdir()):
        raise ValueError(f"{args.dir} is not empty: give a new folder for the generated images")
    write = write_stripes if args.stripes else write_shapes
    count = {} if args.classes is None else {"num_classes": args.classes}  # else its default
    root = write(args.dir, side=args.size, train_per_class=args.train,
                 val_per_class=args.val, seed=args.seed, **count)
    classes = sum(1 for _ in (root / "train").iterdir())
    print(f"wrote {classes} classes x ({args.train} train + {args.val} val) images of "
          f"{args.size} px to {root}; try it: scarlet-nas run --local --data {root}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="scarlet-nas", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    arch = sub.add_parser("arch", help="inspect and sample architectures")
    arch_sub = arch.add_subparsers(dest="arch_command", required=True)
    show = arch_sub.add_parser("show", help="per-layer table, MAdds and params of an arch")
    show.add_argument("arch", help="preset name (SCARLET-A/B/C) or arch string e3k7-e6k5se-...")
    show.add_argument("--json", action="store_true", help="print one JSON object")
    _space_args(show)
    show.set_defaults(func=cmd_arch_show)

    sample = arch_sub.add_parser("sample", help="random valid archs, optionally within budgets")
    sample.add_argument("--n", type=count, default=10, help="how many archs")
    sample.add_argument("--seed", type=int, default=0)
    sample.add_argument("--max-madds", type=budget, help="multiply-add budget, e.g. 3e8")
    sample.add_argument("--max-params", type=budget, help="parameter budget, e.g. 6e6")
    sample.add_argument("--json", action="store_true", help="print a JSON list with costs")
    _space_args(sample)
    sample.set_defaults(func=cmd_arch_sample)

    train = sub.add_parser("train-supernet", help="train a weight-sharing supernet (the "
                           "pipeline's prepare_data and train_supernet steps, run here)")
    config_args(train)
    train.add_argument("--data", help="digits, distorted-digits, cifar10 or imagefolder")
    train.add_argument("--source", help="dataset folder or s3:// prefix")
    train.add_argument("--space", help="search space preset: compact, small or imagenet")
    train.add_argument("--width", type=float, help="width multiplier of the space")
    train.add_argument("--epochs", type=float)
    train.add_argument("--lr", type=float)
    train.add_argument("--batch-size", type=int)
    train.add_argument("--sampling", help="uniform or fair")
    train.add_argument("--no-stabilizer", dest="stabilizer", action="store_const", const=False,
                       help="plain identity skips (the paper's ablation)")
    train.add_argument("--stabilizer-init", help="identity or kaiming")
    train.add_argument("--no-zero-init-residual", dest="zero_init_residual",
                       action="store_const", const=False,
                       help="start residual choices at the release init, not the identity")
    train.add_argument("--device", help="auto, cpu, cuda, cuda:1, ...")
    train.add_argument("--seed", type=int)
    train.add_argument("--checkpoint", help="resume state URI (local or s3://)")
    train.add_argument("--out", required=True,
                       help="where to write supernet.pt (the prepared data's manifest, "
                            "dataset.json, goes beside it)")
    train.set_defaults(func=cmd_train_supernet)

    search = sub.add_parser("search", help="NSGA-II search with a trained supernet (the "
                            "pipeline's search step, run here)")
    config_args(search)
    search.add_argument("--supernet", required=True, help="supernet.pt (local or s3://)")
    search.add_argument("--dataset", help="prepared-data manifest (default: the dataset.json "
                                          "written beside the supernet)")
    search.add_argument("--budget-madds", type=float, help="multiply-add budget, e.g. 3e8")
    search.add_argument("--budget-params", type=float, help="parameter budget, e.g. 6e6")
    search.add_argument("--budget-latency-ms", type=float,
                        help="CPU batch-1 latency budget in ms")
    search.add_argument("--generations", type=int)
    search.add_argument("--population", type=int)
    search.add_argument("--objectives", help="top1 plus any of madds, params, latency")
    search.add_argument("--top-k", type=int)
    search.add_argument("--calib-batches", type=int)
    search.add_argument("--val-images", type=int, help="0: the whole split")
    search.add_argument("--device", help="auto, cpu, cuda, ...")
    search.add_argument("--seed", type=int)
    search.add_argument("--state", help="resume state URI, saved every generation")
    search.add_argument("--out", default="search-out", help="output folder or s3:// prefix")
    search.set_defaults(func=cmd_search)

    config = sub.add_parser("config", help="print every setting a run gets from a config "
                            "(a shipped one by name, or a file) and --set, as YAML")
    config.add_argument("config", nargs="?", metavar="FILE_OR_NAME",
                        help="a shipped config (local, the default; imagenet; imagenet-nodes) "
                             "or a YAML file")
    config.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override one setting, e.g. --set search.generations=10")
    config.set_defaults(func=cmd_config)

    shapes = sub.add_parser("make-shapes", help="write a generated image folder (shapes in "
                            "2-20 classes, or stripes in 2-7, any size) to try the pipeline on")
    shapes.add_argument("dir")
    shapes.add_argument("--classes", type=int,
                        help="2..20, default 10 (stripes: 2..7, default 6)")
    shapes.add_argument("--stripes", action="store_true",
                        help="oriented stripes, one class per orientation, instead of shapes: "
                        "learnable at 8 px")
    shapes.add_argument("--size", type=int, default=32, help="image side in pixels")
    shapes.add_argument("--train", type=int, default=200, help="training images per class")
    shapes.add_argument("--val", type=int, default=60, help="validation images per class")
    shapes.add_argument("--seed", type=int, default=0)
    shapes.set_defaults(func=cmd_make_shapes)

    dev = sub.add_parser("dev", help="start/stop a local S3 server and MLflow server")
    dev.add_argument("action", choices=["up", "down"])
    dev.add_argument("--dir", default=".scarlet-nas-dev", help="data, logs and state")
    dev.add_argument("--s3-port", type=int, default=9000)
    dev.add_argument("--mlflow-port", type=int, default=5000)
    dev.set_defaults(func=cmd_dev)

    from .pipeline.cli import add_commands  # compile, run, upload, schedule, ui

    add_commands(sub)
    return parser


def describe_error(err: BaseException) -> str | None:
    """One line for an error a user can fix (bad input, a missing or unwritable
    file, an unreachable server); None for a bug, which keeps its traceback."""
    if isinstance(err, (ArchError, ValueError, RuntimeError)):
        return str(err)
    if isinstance(err, OSError):
        where = f"{err.filename}: " if err.filename else ""
        return f"{where}{err.strerror or err}"
    return None


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except Exception as err:
        message = describe_error(err)
        if message is None:
            raise
        print(f"scarlet-nas: error: {message}", file=sys.stderr)
        return getattr(err, "exit_status", 2)  # 2: refused; a failed local run's step: 1


if __name__ == "__main__":
    sys.exit(main())
