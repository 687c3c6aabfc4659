"""Standalone network for one arch, as retrained and deployed after search."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from . import ops
from .space import SearchSpace
from .supernet import Network, Supernet


class Subnet(Network):
    """One architecture. Skips are plain identities, as in the released models,
    unless ``stabilizer=True`` keeps the 1x1 stabilizer (to reproduce a
    supernet path exactly)."""

    def __init__(self, space: SearchSpace, arch: str | Sequence[int], stabilizer: bool = False,
                 stabilizer_init: str = ops.STABILIZER_INIT, dropout: float = 0.0):
        genes = space.parse(arch)
        super().__init__(space, nn.Sequential(*(
            ops.build_choice(space, i, space.choices[g], stabilizer, stabilizer_init)
            for i, g in enumerate(genes))), dropout)
        self.arch = genes
        self.arch_string = space.format(genes)
        ops.init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._logits(self.layers(self.separable(self.stem(x))))


def build_subnet(arch: str | Sequence[int], num_classes: int | None = None, *,
                 space: SearchSpace | None = None, input_size: int | None = None,
                 stabilizer: bool = False, supernet: Supernet | None = None,
                 dropout: float = 0.0) -> Subnet:
    """Build the standalone network for ``arch`` (a string, preset name or genes).

    ``space`` defaults to the supernet's, else the paper's ImageNet space;
    ``num_classes`` and ``input_size`` override it. With ``supernet`` the
    subnet inherits the path's weights (and the supernet's stabilizer init).
    """
    space = space or (supernet.space if supernet is not None else SearchSpace.imagenet())
    changes = {k: v for k, v in (("num_classes", num_classes), ("input_size", input_size))
               if v is not None}
    if changes:
        space = space.with_(**changes)
    init = supernet.stabilizer_init if supernet is not None else ops.STABILIZER_INIT
    net = Subnet(space, arch, stabilizer=stabilizer, stabilizer_init=init, dropout=dropout)
    if supernet is not None:
        if supernet.space.to_dict() != space.to_dict():
            raise ValueError("cannot inherit weights: the subnet's search space differs from "
                             "the supernet's; build it without num_classes/input_size overrides")
        if stabilizer and not supernet.stabilizer:
            raise ValueError("the supernet has plain identity skips: there is no stabilizer "
                             "to keep; build the subnet with stabilizer=False")
        net.load_state_dict(supernet.subnet_state_dict(net.arch, stabilizer=stabilizer))
    return net


def load_released_state_dict(model: Subnet, state_dict: Mapping[str, torch.Tensor]) -> None:
    """Load a checkpoint of the authors' released SCARLET models into ``model``.

    Their modules are named differently but hold the same tensors in the same
    order, so tensors are paired by position and every shape is checked.
    A leading ``module.`` (DataParallel) is ignored.
    """
    if "state_dict" in state_dict and isinstance(state_dict["state_dict"], Mapping):
        state_dict = state_dict["state_dict"]
    theirs = [(k.removeprefix("module."), v) for k, v in state_dict.items()]
    ours = list(model.state_dict().items())
    if len(theirs) != len(ours):
        raise ValueError(
            f"checkpoint holds {len(theirs)} tensors but {model.arch_string} has {len(ours)}: "
            "is it the released model for this same architecture and class count?")
    mapped = {}
    for (our_key, our_val), (their_key, their_val) in zip(ours, theirs, strict=True):
        if tuple(our_val.shape) != tuple(their_val.shape):
            raise ValueError(
                f"shape mismatch: checkpoint tensor {their_key} is {tuple(their_val.shape)} but "
                f"{our_key} is {tuple(our_val.shape)}; check the arch and num_classes")
        mapped[our_key] = their_val
    model.load_state_dict(mapped)
