"""Weight-sharing supernet: every choice of every layer, one path per forward."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from . import ops
from .space import Arch, SearchSpace


class Network(nn.Module):
    """Stem, separable block, searchable layers, head and classifier.

    Supernet and Subnet differ only in what ``layers`` holds, so their
    state_dict keys differ only by the choice token inside ``layers.<i>``.
    """

    def __init__(self, space: SearchSpace, layers: nn.Module, dropout: float = 0.0):
        super().__init__()
        self.space = space
        self.stem = ops.stem(space)
        self.separable = ops.separable(space)
        self.layers = layers
        self.head = ops.head(space)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.classifier = nn.Linear(space.head_out, space.num_classes)

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(self.head(x).mean((2, 3))))


class Supernet(Network):
    """Holds all choices; ``forward(x, arch)`` runs exactly one path.

    With ``stabilizer=True`` (SCARLET) each skip choice is a bare 1x1 conv;
    with ``stabilizer=False`` it is a plain identity (the paper's ablation).
    The defaults start every residual choice and every stabilizer as the
    identity (``zero_init_residual``, ``stabilizer_init="identity"``), so all
    paths begin as one network: without that, uniformly sampled paths stay
    near chance (docs/reproduction.md).
    """

    def __init__(self, space: SearchSpace, stabilizer: bool = True,
                 stabilizer_init: str = ops.STABILIZER_INIT, dropout: float = 0.0,
                 zero_init_residual: bool = True):
        layers = nn.ModuleList()
        for i in range(space.num_layers):
            shortcut = ops.layer_shortcut(space, i)  # one per layer, shared by its choices
            layers.append(nn.ModuleDict({
                space.choices[g].token: ops.build_choice(space, i, space.choices[g], stabilizer,
                                                         stabilizer_init, shortcut)
                for g in space.layer_choices(i)}))
        super().__init__(space, layers, dropout)
        self.stabilizer = stabilizer
        self.stabilizer_init = stabilizer_init
        self.zero_init_residual = zero_init_residual
        self.path_check: dict = {}  # sampled-path check of a trained supernet (load_supernet)
        self._tokens = space.tokens
        ops.init_weights(self, zero_init_residual)

    def forward(self, x: torch.Tensor, arch: str | Sequence[int]) -> torch.Tensor:
        genes = self.space.parse(arch)
        x = self.separable(self.stem(x))
        for layer, g in zip(self.layers, genes, strict=True):
            x = layer[self._tokens[g]](x)
        return self._logits(x)

    def path_modules(self, arch: str | Sequence[int]) -> list[nn.Module]:
        """The modules one path runs: shared parts plus its chosen choice ops."""
        genes = self.space.parse(arch)
        chosen = [layer[self._tokens[g]] for layer, g in zip(self.layers, genes, strict=True)]
        return [self.stem, self.separable, *chosen, self.head, self.classifier]

    def path_parameters(self, arch: str | Sequence[int]) -> list[nn.Parameter]:
        return [p for m in self.path_modules(arch) for p in m.parameters()]

    def subnet_state_dict(self, arch: str | Sequence[int], stabilizer: bool = False) -> dict:
        """State dict for ``Subnet(space, arch, stabilizer)``: the path's tensors.

        A skip's stabilizer is dropped unless ``stabilizer`` keeps it; a plain
        identity subnet then differs from the path by that linear map only.
        """
        genes = self.space.parse(arch)
        out = {}
        for key, value in self.state_dict().items():
            if not key.startswith("layers."):
                out[key] = value
                continue
            _, i, token, rest = key.split(".", 3)
            g = genes[int(i)]
            if token != self._tokens[g]:
                continue
            if g == self.space.skip_index and not stabilizer:
                continue
            out[f"layers.{i}.{rest}"] = value
        return out

    def choice_ops(self):
        """(layer index, gene, module) for every choice op: for warm-up and tables."""
        for i, layer in enumerate(self.layers):
            for g in self.space.layer_choices(i):
                yield i, g, layer[self._tokens[g]]

    @torch.no_grad()
    def _layer_inputs(self, batch: int, device, dtype, memory_format):
        s = self.space
        return [torch.randn(batch, spec.in_channels, spec.in_size, spec.in_size, device=device,
                            dtype=dtype).contiguous(memory_format=memory_format)
                for spec in s.layers]

    def warm_up(self, batch: int, device=None, memory_format=torch.contiguous_format,
                autocast_dtype: torch.dtype | None = None) -> int:
        """Run every choice op once forward and backward at its training shape.

        With cudnn.benchmark on, each op autotunes on first use; doing that
        here, once, keeps a fresh or resumed run from crawling through its
        first steps. BN running stats are restored afterwards and no grads
        are left behind. Returns the number of ops warmed.
        """
        device = torch.device(device) if device else next(self.parameters()).device
        bn_state = {k: v.clone() for k, v in self.state_dict().items()
                    if "running_" in k or "num_batches" in k}
        was_training = self.training
        self.train()
        inputs = self._layer_inputs(batch, device, torch.float32, memory_format)
        count = 0
        for i, _, module in self.choice_ops():
            x = inputs[i].detach().requires_grad_(True)
            with torch.autocast(device.type, dtype=autocast_dtype or torch.bfloat16,
                                enabled=autocast_dtype is not None):
                y = module(x)
            y.float().sum().backward()
            count += 1
        for p in self.parameters():
            p.grad = None
        self.load_state_dict(bn_state, strict=False)
        self.train(was_training)
        return count


def start_mismatch(source: Supernet, body: str, stabilizer: bool) -> str:
    """Why ``source`` cannot warm-start a supernet of the space with ``body``
    fingerprint and that ``stabilizer`` ("" when it can)."""
    if source.space.body_fingerprint != body:
        return ("it was trained for another search space (layers, strides, widths or choices "
                "differ)")
    if source.stabilizer != stabilizer:
        return f"it was trained with supernet.stabilizer={source.stabilizer}"
    return ""


def adopt_weights(target: Supernet, source: Supernet) -> list[str]:
    """Copy ``source``'s tensors into ``target`` where names and shapes agree: a
    warm start. Returns the names left as they were (the classifier, when the
    class counts differ). Refuses a source of other layers or skip kind."""
    if why := start_mismatch(source, target.space.body_fingerprint, target.stabilizer):
        raise ValueError(why)
    own = target.state_dict()
    taken = {k: v for k, v in source.state_dict().items()
             if k in own and own[k].shape == v.shape}
    fresh = sorted(set(own) - set(taken))
    if other := [k for k in fresh if not k.startswith("classifier.")]:
        raise ValueError(f"its tensors do not match this supernet's ({', '.join(other[:3])}"
                         f"{', ...' if len(other) > 3 else ''}): saved by another version?")
    target.load_state_dict(taken, strict=False)
    return fresh


def build_supernet(space: SearchSpace | None = None, *, stabilizer: bool = True,
                   stabilizer_init: str = ops.STABILIZER_INIT, dropout: float = 0.0,
                   zero_init_residual: bool = True) -> Supernet:
    return Supernet(space or SearchSpace.imagenet(), stabilizer, stabilizer_init, dropout,
                    zero_init_residual)


__all__ = ["Arch", "Network", "Supernet", "adopt_weights", "build_supernet", "start_mismatch"]
