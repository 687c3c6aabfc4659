"""The ``scarlet-nas`` command line."""

from __future__ import annotations

import argparse
import json
import sys

from .space import ArchError, SearchSpace


def _space_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--space", default="imagenet", help="search space preset: imagenet or small")
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
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ArchError, ValueError) as e:
        print(f"scarlet-nas: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
