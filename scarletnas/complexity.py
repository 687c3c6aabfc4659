"""Multiply-adds and parameters of an arch, computed without building a model.

Convention (the paper's): multiply-adds of conv and linear layers, SE
included, BN and activations not. Params are every trainable tensor,
BN affine parameters included (what ``model.parameters()`` counts).
Per-layer costs are tabulated once per space, so scoring a population is a
table lookup and a sum.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
from torch import nn

from .space import Choice, SearchSpace


@dataclass(frozen=True)
class Cost:
    madds: int = 0
    params: int = 0

    def __add__(self, other: Cost) -> Cost:
        return Cost(self.madds + other.madds, self.params + other.params)


def _conv(cin: int, cout: int, k: int, out_size: int, groups: int = 1, bias: bool = False,
          bn: bool = True) -> Cost:
    weights = cout * (cin // groups) * k * k
    return Cost(weights * out_size * out_size,
                weights + (cout if bias else 0) + (2 * cout if bn else 0))


def choice_cost(space: SearchSpace, layer: int, choice: Choice, stabilizer: bool = False) -> Cost:
    """Cost of one choice at one layer (skip: zero, or the 1x1 stabilizer)."""
    spec = space.layers[layer]
    if choice.is_skip:
        c = spec.in_channels
        return _conv(c, c, 1, spec.in_size, bn=False) if stabilizer else Cost()
    hidden = spec.in_channels * choice.expansion
    cost = (_conv(spec.in_channels, hidden, 1, spec.in_size)
            + _conv(hidden, hidden, choice.kernel, spec.out_size, groups=hidden)
            + _conv(hidden, spec.out_channels, 1, spec.out_size))
    if choice.se:
        reduced = max(1, hidden // space.se_reduction)
        cost = (cost + _conv(hidden, reduced, 1, 1, bias=True, bn=False)
                + _conv(reduced, hidden, 1, 1, bias=True, bn=False))
    if spec.shortcut and spec.in_channels != spec.out_channels:  # pooling counts nothing
        cost = cost + _conv(spec.in_channels, spec.out_channels, 1, spec.out_size)
    return cost


def fixed_parts(space: SearchSpace) -> dict[str, Cost]:
    """Stem, separable block, head and classifier: the same for every arch."""
    c0, c1 = space.stem_out, space.separable_out
    return {
        "stem": _conv(space.in_channels, c0, 3, space.stem_size),
        "separable": (_conv(c0, c0, 3, space.stem_size, groups=c0)
                      + _conv(c0, c1, 1, space.stem_size)),
        "head": _conv(space.layers[-1].out_channels, space.head_out, 1, space.final_size),
        "classifier": Cost(space.head_out * space.num_classes,
                           space.head_out * space.num_classes + space.num_classes),
    }


def fixed_cost(space: SearchSpace) -> Cost:
    return sum(fixed_parts(space).values(), Cost())


@lru_cache(maxsize=32)
def cost_table(space: SearchSpace, stabilizer: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(madds, params) arrays of shape (layers, choices); -1 where a choice is
    not allowed at a layer. Cached per space: build once, look up often."""
    shape = (space.num_layers, len(space.choices))
    madds = np.full(shape, -1, dtype=np.int64)
    params = np.full(shape, -1, dtype=np.int64)
    for i in range(space.num_layers):
        for g in space.layer_choices(i):
            c = choice_cost(space, i, space.choices[g], stabilizer)
            madds[i, g], params[i, g] = c.madds, c.params
    madds.setflags(write=False)
    params.setflags(write=False)
    return madds, params


def arch_cost(space: SearchSpace, arch: str | Sequence[int], stabilizer: bool = False) -> Cost:
    genes = space.parse(arch)
    madds, params = cost_table(space, stabilizer)
    rows = np.arange(space.num_layers)
    fixed = fixed_cost(space)
    return Cost(fixed.madds + int(madds[rows, genes].sum()),
                fixed.params + int(params[rows, genes].sum()))


def population_cost(space: SearchSpace, genes: np.ndarray,
                    stabilizer: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Vectorized (madds, params) of an (N, layers) integer array of valid archs."""
    genes = np.asarray(genes, dtype=np.int64)
    madds, params = cost_table(space, stabilizer)
    rows = np.arange(space.num_layers)
    fixed = fixed_cost(space)
    return (fixed.madds + madds[rows, genes].sum(axis=1),
            fixed.params + params[rows, genes].sum(axis=1))


def bounds(space: SearchSpace) -> tuple[Cost, Cost]:
    """The smallest and largest (madds, params) any arch in the space can have."""
    madds, params = cost_table(space)
    fixed = fixed_cost(space)
    lo = Cost(fixed.madds + int(np.where(madds < 0, np.iinfo(np.int64).max, madds).min(1).sum()),
              fixed.params + int(np.where(params < 0, np.iinfo(np.int64).max, params)
                                 .min(1).sum()))
    hi = Cost(fixed.madds + int(madds.max(1).sum()), fixed.params + int(params.max(1).sum()))
    return lo, hi


def layer_report(space: SearchSpace, arch: str | Sequence[int]) -> list[dict]:
    """Per-layer rows (choice, shapes, costs) for tables and JSON."""
    genes = space.parse(arch)
    rows = []
    for spec, g in zip(space.layers, genes, strict=True):
        choice = space.choices[g]
        c = choice_cost(space, spec.index, choice)
        rows.append({"layer": spec.index + 1, "choice": choice.token,
                     "in": [spec.in_channels, spec.in_size, spec.in_size],
                     "out": [spec.out_channels, spec.out_size, spec.out_size],
                     "stride": spec.stride, "madds": c.madds, "params": c.params})
    return rows


def count_with_hooks(model: nn.Module, input_size: int, in_channels: int = 3,
                     forward_kwargs: dict | None = None) -> Cost:
    """Count a built model by running it: an independent check of the tables."""
    total = [0]

    def conv_hook(m: nn.Conv2d, _inp, out):
        k = m.kernel_size[0] * m.kernel_size[1]
        total[0] += out[0].numel() * (m.in_channels // m.groups) * k

    def linear_hook(m: nn.Linear, _inp, out):
        total[0] += m.in_features * m.out_features

    handles = []
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            handles.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.Linear):
            handles.append(m.register_forward_hook(linear_hook))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(1, in_channels, input_size, input_size), **(forward_kwargs or {}))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return Cost(total[0], sum(p.numel() for p in model.parameters()))
