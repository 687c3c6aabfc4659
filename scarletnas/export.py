"""Deployable forms of a retrained subnet: TorchScript and ONNX, each checked
against the PyTorch model it came from."""

from __future__ import annotations

import io
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch import nn


def export_torchscript(model: nn.Module, input_size: int, path: str | Path) -> Path:
    """Trace in eval mode on CPU (the nets have no data-dependent control flow)."""
    model = model.cpu().eval()
    example = torch.randn(1, 3, input_size, input_size)
    with torch.no_grad():
        traced = torch.jit.trace(model, example)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    torch.jit.save(traced, buf)
    _atomic_write(path, buf.getvalue())
    return path


def export_onnx(model: nn.Module, input_size: int, path: str | Path, opset: int = 18) -> Path:
    """ONNX with a dynamic batch dimension."""
    model = model.cpu().eval()
    example = torch.randn(2, 3, input_size, input_size)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp, "model.onnx")
        batch = torch.export.Dim("batch", min=1, max=4096)
        torch.onnx.export(model, (example,), str(out), input_names=["image"],
                          output_names=["logits"], opset_version=opset, dynamo=True,
                          dynamic_shapes={"x": {0: batch}}, external_data=False,
                          verbose=False)
        _atomic_write(path, out.read_bytes())
    return path


def _atomic_write(path: Path, data: bytes) -> None:
    from .storage import write_bytes

    write_bytes(str(path), data)


def check_onnx(model: nn.Module, onnx_path: str | Path, input_size: int, batch: int = 8,
               atol: float = 1e-4) -> float:
    """Max abs difference of ONNX Runtime's logits from PyTorch's; raises past ``atol``."""
    import onnxruntime as ort

    model = model.cpu().eval()
    x = torch.randn(batch, 3, input_size, input_size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = model(x).numpy()
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    diff = float(np.abs(got - expected).max())
    if diff > atol:
        raise AssertionError(f"{onnx_path}: ONNX Runtime differs from PyTorch by {diff:.2e} "
                             f"(tolerance {atol:.0e})")
    return diff


def check_torchscript(model: nn.Module, ts_path: str | Path, input_size: int) -> float:
    model = model.cpu().eval()
    x = torch.randn(4, 3, input_size, input_size, generator=torch.Generator().manual_seed(1))
    loaded = torch.jit.load(str(ts_path))
    with torch.no_grad():
        return float((loaded(x) - model(x)).abs().max())
