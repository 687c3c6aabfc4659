"""Building blocks: MBConv with optional SE, the fixed stem/head, the skip stabilizer.

Module order inside each block follows the authors' released models, so a
released checkpoint's tensors line up with ours one to one.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .space import Choice, SearchSpace

STABILIZER_INITS = ("kaiming", "identity")
# a stabilizer starts as a plain skip unless asked otherwise (supernet.stabilizer_init)
STABILIZER_INIT = "identity"


def conv_bn(cin: int, cout: int, kernel: int = 1, stride: int = 1, groups: int = 1,
            act: bool = True) -> list[nn.Module]:
    mods = [nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False),
            nn.BatchNorm2d(cout)]
    if act:
        mods.append(nn.ReLU6(inplace=True))
    return mods


def stem(space: SearchSpace) -> nn.Sequential:
    """3x3 conv, BN, ReLU6."""
    return nn.Sequential(*conv_bn(space.in_channels, space.stem_out, 3, space.stem_stride))


def separable(space: SearchSpace) -> nn.Sequential:
    """Fixed depthwise-separable block after the stem (no activation at the end)."""
    c = space.stem_out
    return nn.Sequential(*conv_bn(c, c, 3, groups=c),
                         *conv_bn(c, space.separable_out, 1, act=False))


def head(space: SearchSpace) -> nn.Sequential:
    """1x1 conv to the head width, BN, ReLU6 (pooling and classifier follow)."""
    return nn.Sequential(*conv_bn(space.layers[-1].out_channels, space.head_out, 1))


class SqueezeExcite(nn.Module):
    """SE on the hidden channels: pool, reduce, ReLU, expand, hard sigmoid, scale."""

    def __init__(self, channels: int, reduction: int = 4):
        super().__init__()
        reduced = max(1, channels // reduction)
        self.squeeze = nn.Conv2d(channels, reduced, 1, bias=True)
        self.excite = nn.Conv2d(reduced, channels, 1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean((2, 3), keepdim=True)
        s = nn.functional.relu(self.squeeze(s), inplace=True)
        return x * nn.functional.hardsigmoid(self.excite(s), inplace=True)


def projection(cin: int, cout: int, stride: int) -> nn.Sequential:
    """The shortcut of a layer that changes stride or width (``space.shortcut``):
    average-pool by the stride, then a 1x1 conv and BN where the width changes
    (as AttentiveNAS and BigNAS give every block one)."""
    mods: list[nn.Module] = []
    if stride > 1:
        mods.append(nn.AvgPool2d(stride, ceil_mode=True, count_include_pad=False))
    if cin != cout:
        mods += conv_bn(cin, cout, 1, act=False)
    return nn.Sequential(*mods)


class MBConv(nn.Module):
    """Inverted residual: 1x1 expand, kxk depthwise, optional SE, 1x1 project.

    Adds its input back when stride and width stay; else adds ``shortcut(x)``
    when given one (in a supernet all choices of a layer share that module).
    """

    def __init__(self, cin: int, cout: int, expansion: int, kernel: int, stride: int,
                 se: bool, se_reduction: int = 4, shortcut: nn.Module | None = None):
        super().__init__()
        hidden = cin * expansion
        self.residual = stride == 1 and cin == cout
        self.expand = nn.Sequential(nn.Conv2d(cin, hidden, 1, bias=False),
                                    nn.BatchNorm2d(hidden), nn.Hardswish(inplace=True))
        self.depthwise = nn.Sequential(
            nn.Conv2d(hidden, hidden, kernel, stride, kernel // 2, groups=hidden, bias=False),
            nn.BatchNorm2d(hidden), nn.Hardswish(inplace=True))
        self.se = SqueezeExcite(hidden, se_reduction) if se else nn.Identity()
        self.project = nn.Sequential(nn.Conv2d(hidden, cout, 1, bias=False),
                                     nn.BatchNorm2d(cout))
        self.shortcut = None if self.residual else shortcut

    @property
    def has_shortcut(self) -> bool:
        """Whether the block adds its input (or a projection of it) to its output."""
        return self.residual or self.shortcut is not None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.project(self.se(self.depthwise(self.expand(x))))
        if self.residual:
            return x + out
        return out if self.shortcut is None else self.shortcut(x) + out


class Stabilizer(nn.Conv2d):
    """SCARLET's equivariant learnable stabilizer: a bare 1x1 conv on a skip.

    Linear, so a subnet with it represents exactly what the plain-identity
    subnet does; it only makes skip features comparable to the other choices
    during supernet training. ``init='identity'`` starts it as a plain skip.
    """

    def __init__(self, channels: int, init: str = STABILIZER_INIT):
        if init not in STABILIZER_INITS:
            raise ValueError(f"unknown stabilizer init {init!r}; choose one of {STABILIZER_INITS}")
        super().__init__(channels, channels, 1, bias=False)
        self.init = init
        self.reset_parameters()

    def reset_parameters(self) -> None:
        if getattr(self, "init", "kaiming") == "identity":
            with torch.no_grad():
                self.weight.copy_(torch.eye(self.out_channels).view_as(self.weight))
        else:
            release_conv_init(self)


def layer_shortcut(space: SearchSpace, layer: int) -> nn.Module | None:
    """A fresh shortcut for ``layer`` if the space gives it one, else None."""
    spec = space.layers[layer]
    return projection(spec.in_channels, spec.out_channels, spec.stride) if spec.shortcut else None


def build_choice(space: SearchSpace, layer: int, choice: Choice, stabilizer: bool,
                 stabilizer_init: str = STABILIZER_INIT, shortcut: nn.Module | None = None
                 ) -> nn.Module:
    """The module one choice of one layer runs; ``shortcut`` shares a layer's
    projection shortcut between choices (else each block gets its own)."""
    spec = space.layers[layer]
    if choice.is_skip:
        return Stabilizer(spec.in_channels, stabilizer_init) if stabilizer else nn.Identity()
    return MBConv(spec.in_channels, spec.out_channels, choice.expansion, choice.kernel,
                  spec.stride, choice.se, space.se_reduction,
                  shortcut or layer_shortcut(space, layer))


def release_conv_init(conv: nn.Conv2d) -> None:
    n = conv.kernel_size[0] * conv.kernel_size[1] * conv.out_channels
    nn.init.normal_(conv.weight, 0.0, math.sqrt(2.0 / n))
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)


def init_weights(model: nn.Module, zero_init_residual: bool = False) -> None:
    """The released models' initialization (stabilizers keep their own).

    ``zero_init_residual`` zeroes the last BN scale of every residual MBConv,
    so each residual choice starts as the identity (see ``zero_residual_branches``).
    """
    for m in model.modules():
        if isinstance(m, Stabilizer):
            m.reset_parameters()
        elif isinstance(m, nn.Conv2d):
            release_conv_init(m)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            bound = 1.0 / math.sqrt(m.weight.size(0))
            nn.init.uniform_(m.weight, -bound, bound)
            nn.init.zeros_(m.bias)
    if zero_init_residual:
        zero_residual_branches(model)


def zero_residual_branches(model: nn.Module, projections: bool = True) -> int:
    """Zero the scale of the last BN of every MBConv with a shortcut (with
    ``projections=False``: only of those that add their input back); returns how many.

    Why: under weight sharing every residual choice of a layer adds its own
    unit-variance branch to the stream, so two paths that differ anywhere
    see different noise summed over every layer, and the shared weights
    never agree (docs/reproduction.md measures it: sampled paths stay near
    chance). Started at zero, each branch is the identity, every path begins
    as the same network and the branches grow only as far as the data asks.
    Goyal et al. (2017) use the same init for large-batch ResNets.

    ``projections=False`` leaves the blocks whose shortcut is a projection (the
    width-changing ones): a retrained arch of mostly skips would otherwise start
    as a linear network and learn late, or not at all in a short budget.
    """
    count = 0
    for m in model.modules():
        if isinstance(m, MBConv) and (m.residual or projections and m.has_shortcut):
            nn.init.zeros_(m.project[1].weight)
            count += 1
    return count
