"""Batch-1 inference latency: measured on a built model, or predicted from a
lookup table of every (layer, choice) op at its input shape, built once.

The table makes latency as cheap to score as MAdds during the search. Ops
timed one by one cost more than the same ops run back to back in a network
(call overhead, cold caches), so the raw sum over-predicts by a roughly
constant factor; ``build_latency_table`` measures a few whole random archs
and scales the table by the median ratio. What is left is the predictor's
error, which ``bench/latency_table.py`` and the tests measure.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from . import ops
from .space import SearchSpace


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


CPU_THREADS = 1  # batch-1 CPU latency is measured on one core: stable, and what edge sees


@torch.inference_mode()
def measure_ms(fn: Callable[[], object], device: torch.device, repeats: int = 30,
               warmup: int = 5) -> float:
    """Median wall time of ``fn()`` in milliseconds, after warm-up."""
    threads = torch.get_num_threads()
    if device.type == "cpu":
        torch.set_num_threads(CPU_THREADS)
    try:
        for _ in range(warmup):
            fn()
        _sync(device)
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            fn()
            _sync(device)
            times.append((time.perf_counter() - t) * 1e3)
    finally:
        torch.set_num_threads(threads)
    return statistics.median(times)


def model_latency_ms(model: nn.Module, input_size: int, device="cpu", repeats: int = 30,
                     in_channels: int = 3) -> float:
    device = torch.device(device)
    model = model.to(device).eval()
    x = torch.randn(1, in_channels, input_size, input_size, device=device)
    return measure_ms(lambda: model(x), device, repeats)


class _Fixed(nn.Module):
    """Stem + separable (``front``) or head + pool + classifier (``back``)."""

    def __init__(self, space: SearchSpace, part: str):
        super().__init__()
        self.part = part
        if part == "front":
            self.body = nn.Sequential(ops.stem(space), ops.separable(space))
        else:
            self.head = ops.head(space)
            self.classifier = nn.Linear(space.head_out, space.num_classes)

    def forward(self, x):
        if self.part == "front":
            return self.body(x)
        return self.classifier(self.head(x).mean((2, 3)))


@dataclass
class LatencyTable:
    """Per-op batch-1 latencies (ms) of one space on one device."""

    space_fingerprint: str
    device: str
    fixed_ms: float
    table_ms: list[list[float | None]]  # [layer][gene], None where not allowed; calibrated
    calibration: float = 1.0  # the factor already applied to fixed_ms and table_ms

    def predict(self, arch: Sequence[int]) -> float:
        return self.fixed_ms + sum(self.table_ms[i][g] for i, g in enumerate(arch))

    def predict_many(self, genes: np.ndarray) -> np.ndarray:
        table = np.array([[np.nan if v is None else v for v in row] for row in self.table_ms])
        return self.fixed_ms + table[np.arange(table.shape[0]), np.asarray(genes)].sum(axis=1)

    def scaled(self, factor: float) -> LatencyTable:
        return LatencyTable(self.space_fingerprint, self.device, self.fixed_ms * factor,
                            [[None if v is None else v * factor for v in row]
                             for row in self.table_ms], self.calibration * factor)

    def to_dict(self) -> dict:
        return {"space_fingerprint": self.space_fingerprint, "device": self.device,
                "fixed_ms": self.fixed_ms, "table_ms": self.table_ms,
                "calibration": self.calibration}

    @classmethod
    def from_dict(cls, d: dict) -> LatencyTable:
        return cls(d["space_fingerprint"], d["device"], d["fixed_ms"], d["table_ms"],
                   d.get("calibration", 1.0))


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    import platform

    return f"cpu ({platform.machine()}, {CPU_THREADS} thread)"


def build_latency_table(space: SearchSpace, device="cpu", repeats: int = 20,
                        stabilizer: bool = False, calibration_archs: int = 8,
                        seed: int = 0) -> LatencyTable:
    """Time every choice op of every layer at its batch-1 input shape, then
    calibrate the sum on ``calibration_archs`` whole random networks."""
    device = torch.device(device)
    table: list[list[float | None]] = []
    for spec in space.layers:
        x = torch.randn(1, spec.in_channels, spec.in_size, spec.in_size, device=device)
        row: list[float | None] = [None] * len(space.choices)
        for g in space.layer_choices(spec.index):
            module = ops.build_choice(space, spec.index, space.choices[g], stabilizer)
            module = module.to(device).eval()
            row[g] = measure_ms(lambda m=module, x=x: m(x), device, repeats)
        table.append(row)
    front = _Fixed(space, "front").to(device).eval()
    back = _Fixed(space, "back").to(device).eval()
    x0 = torch.randn(1, space.in_channels, space.input_size, space.input_size, device=device)
    last = space.layers[-1]
    x1 = torch.randn(1, last.out_channels, last.out_size, last.out_size, device=device)
    fixed = (measure_ms(lambda: front(x0), device, repeats)
             + measure_ms(lambda: back(x1), device, repeats))
    raw = LatencyTable(space.fingerprint, device_name(device), fixed, table)
    if not calibration_archs:
        return raw
    from .sampling import random_population
    from .subnet import build_subnet

    archs = random_population(space, calibration_archs, np.random.default_rng(seed))
    ratios = [model_latency_ms(build_subnet(tuple(a), space=space), space.input_size, device,
                               repeats) / raw.predict(a) for a in archs]
    return raw.scaled(float(np.median(ratios)))
