"""The SCARLET search space and the one arch codec used everywhere.

An architecture is a tuple of choice indices ("genes"), one per searchable
layer, indexing ``SearchSpace.choices``. Humans see it as a string of tokens
joined by "-", e.g. ``e3k7-e6k5se-skip-...``; ``SearchSpace.parse`` and
``SearchSpace.format`` convert between the two and are the only place an arch
is validated. Which layers may skip is derived from strides and widths.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields, replace
from functools import cached_property

Arch = tuple[int, ...]

SKIP_TOKEN = "skip"
_TOKEN_RE = re.compile(r"^e(\d+)k(\d+)(?:\+?(se))?$")


class ArchError(ValueError):
    """An arch string or gene tuple that does not fit the search space."""


@dataclass(frozen=True)
class Choice:
    """One candidate op of a layer: an MBConv, or the skip (expansion 0)."""

    expansion: int = 0
    kernel: int = 0
    se: bool = False

    @property
    def is_skip(self) -> bool:
        return self.expansion == 0

    @property
    def token(self) -> str:
        if self.is_skip:
            return SKIP_TOKEN
        return f"e{self.expansion}k{self.kernel}" + ("se" if self.se else "")

    @classmethod
    def from_token(cls, token: str) -> Choice | None:
        """The choice a token names, or None if it is no valid token at all."""
        token = token.strip().lower()
        if token in (SKIP_TOKEN, "identity"):
            return cls()
        m = _TOKEN_RE.match(token)
        if not m:
            return None
        return cls(int(m.group(1)), int(m.group(2)), m.group(3) is not None)


@dataclass(frozen=True)
class Layer:
    """Geometry of one searchable layer, derived from the space."""

    index: int  # 0-based
    in_channels: int
    out_channels: int
    stride: int
    in_size: int  # spatial side of the input feature map
    can_skip: bool
    shortcut: bool = False  # a projection shortcut (width or stride changes, space.shortcut)

    @property
    def residual(self) -> bool:
        """Stride and width stay: a block here adds its input back (the identity)."""
        return self.stride == 1 and self.in_channels == self.out_channels


    @property
    def out_size(self) -> int:
        return conv_out_size(self.in_size, self.stride)


def conv_out_size(size: int, stride: int) -> int:
    """Side of a 'same'-padded conv's output (padding k//2, odd k)."""
    return (size - 1) // stride + 1


def make_divisible(value: float, divisor: int = 8) -> int:
    """Round a channel count to a multiple of ``divisor`` (MobileNet rule)."""
    new = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if new < 0.9 * value:
        new += divisor
    return new


IMAGENET_CHANNELS = (32, 32, 40, 40, 40, 40, 80, 80, 80, 80,
                     96, 96, 96, 96, 192, 192, 192, 192, 320)
IMAGENET_STRIDES = (2, 1, 2, 1, 1, 1, 2, 1, 1, 1,
                    1, 1, 1, 1, 2, 1, 1, 1, 1)
STEM_HALVES_FROM = 24  # the compact space's stem is stride 2 only from this input side


@dataclass(frozen=True)
class SearchSpace:
    """A SCARLET-style space: stem, separable block, searchable layers, head.

    The defaults are the paper's ImageNet space. Small inputs (digits,
    CIFAR) use the same code with a stride-1 stem and fewer stride-2 layers,
    so feature maps keep a useful size.
    """

    num_classes: int = 1000
    input_size: int = 224
    in_channels: int = 3
    stem_channels: int = 32
    stem_stride: int = 2
    separable_channels: int = 16
    layer_channels: tuple[int, ...] = IMAGENET_CHANNELS
    layer_strides: tuple[int, ...] = IMAGENET_STRIDES
    head_channels: int = 1280
    width_mult: float = 1.0
    expansions: tuple[int, ...] = (3, 6)
    kernels: tuple[int, ...] = (3, 5, 7)
    se_options: tuple[bool, ...] = (False, True)
    allow_skip: bool = True
    se_reduction: int = 4
    # a shortcut on every layer that changes width or stride (average pool by the
    # stride, 1x1 conv + BN), shared by all its choices: every layer becomes
    # residual, so weight sharing can learn (docs/reproduction.md); False is
    # the paper's network, which has no residual there
    shortcut: bool = False

    def __post_init__(self):
        object.__setattr__(self, "layer_channels", tuple(int(c) for c in self.layer_channels))
        object.__setattr__(self, "layer_strides", tuple(int(s) for s in self.layer_strides))
        for name in ("expansions", "kernels", "se_options"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        problems = []
        if self.num_classes < 2:
            problems.append(f"num_classes={self.num_classes}: need at least 2 classes")
        if self.input_size < 1:
            problems.append(f"input_size={self.input_size}: must be positive")
        if len(self.layer_channels) != len(self.layer_strides):
            problems.append(
                f"{len(self.layer_channels)} layer_channels but {len(self.layer_strides)} "
                "layer_strides: give one stride per layer")
        if not self.layer_channels:
            problems.append("no searchable layers: layer_channels is empty")
        if any(s not in (1, 2) for s in (self.stem_stride, *self.layer_strides)):
            problems.append("strides must be 1 or 2")
        if any(k % 2 == 0 or k < 1 for k in self.kernels):
            problems.append(f"kernels {self.kernels}: use odd sizes such as 3, 5, 7")
        if any(e < 1 for e in self.expansions):
            problems.append(f"expansions {self.expansions}: use integers >= 1")
        if not self.width_mult > 0:
            problems.append(f"width_mult={self.width_mult}: must be positive")
        if not (self.expansions and self.kernels and self.se_options):
            problems.append("the choice set is empty: give expansions, kernels and se_options")
        if problems:
            raise ValueError("invalid search space: " + "; ".join(problems))

    # ---- construction -------------------------------------------------
    @classmethod
    def imagenet(cls, num_classes: int = 1000, **overrides) -> SearchSpace:
        """The paper's space at 224x224."""
        return cls(num_classes=num_classes, **overrides)

    @classmethod
    def small(cls, num_classes: int = 10, input_size: int = 32, width_mult: float = 0.5,
              **overrides) -> SearchSpace:
        """Same 19 layers for 16-32 px inputs: stride-1 stem, stride 2 only at
        layers 3 and 7 (32 -> 16 -> 8), half width, smaller head. At width 0.5
        the layers that may skip are the same as in the ImageNet space."""
        strides = tuple(2 if i in (2, 6) else 1 for i in range(len(IMAGENET_STRIDES)))
        kw = dict(num_classes=num_classes, input_size=input_size, width_mult=width_mult,
                  stem_stride=1, layer_strides=strides, head_channels=256)
        kw.update(overrides)
        return cls(**kw)

    @classmethod
    def compact(cls, num_classes: int = 10, input_size: int = 16, width_mult: float = 0.5,
                **overrides) -> SearchSpace:
        """8 layers in two stages for 8-32 px inputs: the local default.

        Stem, four layers, a stride-2 transition, three more; every layer but
        the transition may skip. The stem halves the input only from
        ``STEM_HALVES_FROM`` px: below that its layers would see 8 px and then
        4 px maps, where a subnet on 16 px shapes scored 56.1% against 80.6%
        with a stride-1 stem (docs/reproduction.md, "16 px images"). Why not
        ``small``'s 19 layers locally: with shortcuts they learn too, but from
        24 px their archs cost 3-6x the MAdds, and the local recipe (steps,
        checks, retrain) was measured on these eight layers.
        """
        stem_stride = 2 if input_size >= STEM_HALVES_FROM else 1
        kw = dict(num_classes=num_classes, input_size=input_size, width_mult=width_mult,
                  stem_channels=64, stem_stride=stem_stride, separable_channels=64,
                  layer_channels=(64,) * 4 + (96,) * 4, layer_strides=(1,) * 4 + (2,) + (1,) * 3,
                  head_channels=256)
        kw.update(overrides)
        return cls(**kw)

    PRESETS = ("compact", "small", "imagenet")  # the classmethods ``named`` builds

    @classmethod
    def named(cls, name: str, **overrides) -> SearchSpace:
        if name.lower() not in cls.PRESETS:
            raise ValueError(f"unknown search space {name!r}; choose one of {list(cls.PRESETS)}")
        return getattr(cls, name.lower())(**overrides)

    def to_dict(self) -> dict:
        d = asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    @classmethod
    def from_dict(cls, data: dict) -> SearchSpace:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(
                f"unknown search space field(s) {sorted(unknown)}; known: {sorted(known)}")
        return cls(**data)

    def with_(self, **changes) -> SearchSpace:
        return replace(self, **changes)

    @cached_property
    def fingerprint(self) -> str:
        """Short stable hash: two runs compare only if their spaces agree."""
        blob = json.dumps(self.to_dict(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:12]

    @cached_property
    def body_fingerprint(self) -> str:
        """The fingerprint blind to class count and input size: two spaces that
        share it have weights of the same shapes but the classifier's, so a
        supernet of one can warm-start the other (data that grew a class)."""
        body = {k: v for k, v in self.to_dict().items() if k not in ("num_classes", "input_size")}
        return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:12]

    # ---- geometry -----------------------------------------------------
    def _width(self, channels: int) -> int:
        return make_divisible(channels * self.width_mult)

    @property
    def stem_out(self) -> int:
        return self._width(self.stem_channels)

    @property
    def separable_out(self) -> int:
        return self._width(self.separable_channels)

    @property
    def head_out(self) -> int:
        """Head width; like MobileNetV2 it is not narrowed below its base."""
        return make_divisible(self.head_channels * max(1.0, self.width_mult))

    @property
    def stem_size(self) -> int:
        return conv_out_size(self.input_size, self.stem_stride)

    @cached_property
    def layers(self) -> tuple[Layer, ...]:
        out, cin, size = [], self.separable_out, self.stem_size
        for i, (c, s) in enumerate(zip(self.layer_channels, self.layer_strides, strict=True)):
            cout = self._width(c)
            same = s == 1 and cin == cout
            out.append(Layer(i, cin, cout, s, size, can_skip=self.allow_skip and same,
                             shortcut=self.shortcut and not same))
            cin, size = cout, conv_out_size(size, s)
        return tuple(out)

    @property
    def num_layers(self) -> int:
        return len(self.layer_channels)

    @property
    def final_size(self) -> int:
        return self.layers[-1].out_size

    # ---- choices ------------------------------------------------------
    @cached_property
    def choices(self) -> tuple[Choice, ...]:
        """Every MBConv choice (expansion, kernel, SE order), then skip last."""
        mb = tuple(Choice(e, k, se) for e, k, se in
                   itertools.product(self.expansions, self.kernels, self.se_options))
        return mb + ((Choice(),) if self.allow_skip else ())

    @property
    def tokens(self) -> tuple[str, ...]:
        return tuple(c.token for c in self.choices)

    @cached_property
    def skip_index(self) -> int | None:
        return len(self.choices) - 1 if self.allow_skip else None

    @cached_property
    def num_choices(self) -> tuple[int, ...]:
        """How many choices each layer offers (skip last, so genes < this)."""
        n_mb = len(self.choices) - (1 if self.allow_skip else 0)
        return tuple(n_mb + (1 if layer.can_skip else 0) for layer in self.layers)

    def layer_choices(self, layer: int) -> tuple[int, ...]:
        return tuple(range(self.num_choices[layer]))

    @property
    def skippable_layers(self) -> tuple[int, ...]:
        """1-based numbers of layers that may skip (as the paper counts)."""
        return tuple(layer.index + 1 for layer in self.layers if layer.can_skip)

    @property
    def size(self) -> int:
        """Number of distinct architectures in the space."""
        n = 1
        for c in self.num_choices:
            n *= c
        return n

    # ---- codec --------------------------------------------------------
    def parse(self, arch: str | Sequence[int] | Sequence[str]) -> Arch:
        """Arch string, preset name, token list or gene tuple -> validated genes."""
        if isinstance(arch, str):
            preset = preset_arch(arch)
            tokens = (preset or arch).strip().split("-")
            if tokens == [""]:
                tokens = []
        else:
            tokens = list(arch)
        if len(tokens) != self.num_layers:
            raise ArchError(
                f"arch has {len(tokens)} layer(s) but the search space has {self.num_layers}: "
                f"give one choice per layer joined by '-', e.g. "
                f"{'-'.join([self.tokens[0]] * min(3, self.num_layers))}-...")
        genes = []
        for i, tok in enumerate(tokens):
            genes.append(self._gene(i, tok))
        return tuple(genes)

    def _gene(self, layer: int, tok: str | int) -> int:
        if isinstance(tok, str):
            choice = Choice.from_token(tok)
            if choice is None or choice not in self.choices:
                raise ArchError(
                    f"unknown choice {tok!r} at layer {layer + 1}; valid choices: "
                    f"{', '.join(self.tokens)}")
            gene = self.choices.index(choice)
        else:
            gene = int(tok)
            if not 0 <= gene < len(self.choices):
                raise ArchError(
                    f"gene {gene} at layer {layer + 1} is out of range: "
                    f"use 0..{len(self.choices) - 1}")
        if gene >= self.num_choices[layer]:
            spec = self.layers[layer]
            reasons = []
            if spec.stride != 1:
                reasons.append(f"stride {spec.stride}")
            if spec.in_channels != spec.out_channels:
                reasons.append(f"channels change {spec.in_channels}->{spec.out_channels}")
            why = " and ".join(reasons) or "this search space has no skip choice"
            raise ArchError(
                f"layer {layer + 1} cannot skip ({why}); skip is allowed only at layers "
                f"{_ranges(self.skippable_layers)}")
        return gene

    def format(self, arch: Sequence[int]) -> str:
        genes = self.parse(tuple(int(g) for g in arch))
        return "-".join(self.choices[g].token for g in genes)

    def describe(self, arch: Sequence[int]) -> list[Choice]:
        return [self.choices[g] for g in self.parse(tuple(arch))]


def _ranges(numbers: Sequence[int]) -> str:
    """(2, 4, 5, 6, 8) -> '2, 4-6, 8'."""
    if not numbers:
        return "none"
    parts, start, prev = [], numbers[0], numbers[0]
    for n in (*numbers[1:], None):
        if n is not None and n == prev + 1:
            prev = n
            continue
        parts.append(str(start) if start == prev else f"{start}-{prev}")
        if n is not None:
            start = prev = n
    return ", ".join(parts)


# The released architectures (paper-spec.md), in our token syntax.
PRESETS: dict[str, str] = {
    "SCARLET-A": "e3k7-e6k5-e3k5-e3k7se-e6k3se-e3k5se-e6k3se-e3k3-e3k7se-e3k7-"
                 "e3k5-e3k7se-e3k3-e3k7se-e6k3se-e6k5se-e3k3se-e6k3se-e6k7se",
    "SCARLET-B": "e3k3se-e3k5se-e3k3se-e6k7se-e3k3-e3k5-e6k7se-e3k3se-skip-e3k5-"
                 "e3k3se-e3k3se-e6k7se-e3k3se-e6k5se-e6k5se-skip-e6k7se-e6k5se",
    "SCARLET-C": "e3k5se-e3k3se-e3k5se-skip-skip-e3k3-e6k7se-e3k3se-e3k3se-e3k5-"
                 "e3k7se-e3k7-e3k3se-e3k7se-e3k3se-skip-e6k3se-e6k7se-e6k5se",
}


def preset_arch(name: str) -> str | None:
    """The arch string of a preset (case and '-'/'_' insensitive), else None."""
    key = name.strip().upper().replace("_", "-")
    return PRESETS.get(key)
