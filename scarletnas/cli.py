"""The ``scarlet-nas`` command line."""

from __future__ import annotations

import argparse
import json
import sys

from .space import ArchError, SearchSpace


def _space_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--space", default="imagenet",
                   help="search space preset: imagenet, small or compact")
    p.add_argument("--num-classes", type=int, help="override the preset's class count")
    p.add_argument("--input-size", type=int, help="override the preset's input resolution")


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


def _data_args(p: argparse.ArgumentParser, input_size: bool = True) -> None:
    p.add_argument("--data", default="digits", help="digits, cifar10 or imagefolder")
    p.add_argument("--source", default="", help="dataset folder or s3:// prefix")
    if input_size:
        p.add_argument("--input-size", type=int, help="image side (default: the space's)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    p.add_argument("--seed", type=int, default=0)


def _load_data(args, input_size: int):
    from .config import DataConfig
    from .data import load_splits

    return load_splits(DataConfig(dataset=args.data, source=args.source, input_size=input_size,
                                  seed=args.seed))


def cmd_train_supernet(args) -> int:
    from .checkpoint import save_supernet
    from .config import OptimConfig, SupernetConfig
    from .train import train_supernet

    space = _space(args)
    if args.width:
        space = space.with_(width_mult=args.width)
    splits = _load_data(args, args.input_size or space.input_size)
    space = space.with_(num_classes=splits.num_classes, input_size=splits.input_size)
    cfg = SupernetConfig(optim=OptimConfig(epochs=args.epochs, lr=args.lr,
                                           batch_size=args.batch_size,
                                           warmup_epochs=min(1.0, args.epochs / 10)),
                         sampling=args.sampling, stabilizer=not args.no_stabilizer,
                         stabilizer_init=args.stabilizer_init, seed=args.seed,
                         zero_init_residual=not args.no_zero_init_residual,
                         device=args.device)
    supernet, result = train_supernet(space, splits, cfg, checkpoint_uri=args.checkpoint)
    save_supernet(args.out, supernet.cpu(), {"steps": result.steps})
    print(json.dumps({"supernet": args.out, "steps": result.steps,
                      "space_fingerprint": space.fingerprint}))
    return 0


def cmd_search(args) -> int:
    from .checkpoint import load_supernet
    from .config import EvalConfig, SearchConfig
    from .evaluate import make_scorer
    from .report import write_search_outputs
    from .search import run_search
    from .train import resolve_device

    supernet = load_supernet(args.supernet)
    space = supernet.space
    splits = _load_data(args, args.input_size or space.input_size)
    if (splits.num_classes, splits.input_size) != (space.num_classes, space.input_size):
        raise ValueError(f"the supernet was trained for {space.num_classes} classes at "
                         f"{space.input_size}px but the data has {splits.num_classes} classes "
                         f"at {splits.input_size}px")
    cfg = SearchConfig(generations=args.generations, population=args.population,
                       objectives=args.objectives, max_madds=args.budget_madds or 0,
                       max_params=args.budget_params or 0, top_k=args.top_k, seed=args.seed)
    device = resolve_device(args.device)
    scorer = make_scorer(supernet, splits, EvalConfig(calib_batches=args.calib_batches,
                                                      val_images=args.val_images),
                         devices=None if device.type == "cuda" else [device], seed=args.seed)
    result = run_search(space, scorer, cfg, state_uri=args.state)
    outputs = write_search_outputs(result, args.out)
    print(json.dumps({"front": len(result.front), "evaluated": len(result.evaluated),
                      "hypervolume": result.hypervolume[-1],
                      "selected": [r["arch"] for r in result.selected], "outputs": outputs},
                     indent=1))
    return 0


def cmd_dev(args) -> int:
    from pathlib import Path

    from .devstack import Stack

    state = Path(args.dir, "state.json")
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
    sample.add_argument("--n", type=int, default=10, help="how many archs")
    sample.add_argument("--seed", type=int, default=0)
    sample.add_argument("--max-madds", type=float, help="multiply-add budget, e.g. 3e8")
    sample.add_argument("--max-params", type=float, help="parameter budget, e.g. 6e6")
    sample.add_argument("--json", action="store_true", help="print a JSON list with costs")
    _space_args(sample)
    sample.set_defaults(func=cmd_arch_sample)

    train = sub.add_parser("train-supernet", help="train a weight-sharing supernet")
    _space_args(train)
    _data_args(train, input_size=False)
    train.set_defaults(space="small")
    train.add_argument("--width", type=float, help="width multiplier of the space")
    train.add_argument("--epochs", type=float, default=30)
    train.add_argument("--lr", type=float, default=0.05)
    train.add_argument("--batch-size", type=int, default=64)
    train.add_argument("--sampling", default="uniform", help="uniform or fair")
    train.add_argument("--no-stabilizer", action="store_true", help="plain identity skips")
    train.add_argument("--stabilizer-init", default="identity", help="identity or kaiming")
    train.add_argument("--no-zero-init-residual", action="store_true",
                       help="start residual choices at the release init, not the identity")
    train.add_argument("--checkpoint", help="resume state URI (local or s3://)")
    train.add_argument("--out", required=True, help="where to write supernet.pt")
    train.set_defaults(func=cmd_train_supernet)

    search = sub.add_parser("search", help="NSGA-II search with a trained supernet")
    search.add_argument("--supernet", required=True, help="supernet.pt (local or s3://)")
    _data_args(search)
    search.add_argument("--budget-madds", type=float, help="multiply-add budget, e.g. 3e8")
    search.add_argument("--budget-params", type=float, help="parameter budget, e.g. 6e6")
    search.add_argument("--generations", type=int, default=20)
    search.add_argument("--population", type=int, default=32)
    search.add_argument("--objectives", default="top1,madds",
                        help="top1 plus any of madds, params (comma-separated)")
    search.add_argument("--top-k", type=int, default=3)
    search.add_argument("--calib-batches", type=int, default=8)
    search.add_argument("--val-images", type=int, default=0, help="0: the whole split")
    search.add_argument("--state", help="resume state URI, saved every generation")
    search.add_argument("--out", default="search-out", help="output folder or s3:// prefix")
    search.set_defaults(func=cmd_search)

    dev = sub.add_parser("dev", help="start/stop a local S3 server and MLflow server")
    dev.add_argument("action", choices=["up", "down"])
    dev.add_argument("--dir", default=".scarlet-nas-dev", help="data, logs and state")
    dev.add_argument("--s3-port", type=int, default=9000)
    dev.add_argument("--mlflow-port", type=int, default=5000)
    dev.set_defaults(func=cmd_dev)

    from .pipeline.cli import add_commands  # compile, run, upload, schedule, ui

    add_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ArchError, ValueError, RuntimeError) as e:
        print(f"scarlet-nas: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
