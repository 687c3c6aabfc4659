"""Deployable forms of a retrained subnet: a torch.export program (.pt2) and ONNX,
both with a dynamic batch dimension, each checked against the PyTorch model it
came from. Neither needs this package's classes nor unpickles code to load.
(TorchScript is deprecated in torch 2.14 in favour of torch.export.)"""

from __future__ import annotations

import io
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch import nn


def _dynamic_batch():
    return torch.export.Dim("batch", min=1, max=4096)


def export(model: nn.Module, input_size: int) -> torch.export.ExportedProgram:
    """torch.export in eval mode on CPU, any batch size: the one program the .pt2
    file, the ONNX file and the MLflow model are all made from."""
    model = model.cpu().eval()
    example = torch.randn(2, 3, input_size, input_size)
    return torch.export.export(model, (example,), dynamic_shapes={"x": {0: _dynamic_batch()}})


def save_program(program: torch.export.ExportedProgram, path: str | Path) -> Path:
    """The program as a .pt2 archive."""
    buf = io.BytesIO()
    torch.export.save(program, buf)
    _atomic_write(Path(path), buf.getvalue())
    return Path(path)


def export_program(model: nn.Module, input_size: int, path: str | Path) -> Path:
    """``export`` saved as a .pt2 archive."""
    return save_program(export(model, input_size), path)


def export_onnx(model: nn.Module | torch.export.ExportedProgram, input_size: int,
                path: str | Path, opset: int = 18) -> Path:
    """ONNX with a dynamic batch dimension, from a model or from its ``export``
    (which is not traced again)."""
    example = torch.randn(2, 3, input_size, input_size)
    if isinstance(model, torch.export.ExportedProgram):
        shapes = None  # the program's own: batch dynamic
    else:
        model = model.cpu().eval()
        shapes = {"x": {0: _dynamic_batch()}}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp, path.name)
        torch.onnx.export(model, (example,), str(out), input_names=["image"],
                          output_names=["logits"], opset_version=opset, dynamo=True,
                          dynamic_shapes=shapes, external_data=False, verbose=False)
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


def check_program(model: nn.Module, pt2_path: str | Path, input_size: int,
                  atol: float = 1e-5) -> float:
    """Max abs difference of the loaded .pt2 program's logits from the model's, at a
    batch size other than the one it was exported with; raises past ``atol``."""
    model = model.cpu().eval()
    x = torch.randn(5, 3, input_size, input_size, generator=torch.Generator().manual_seed(1))
    loaded = torch.export.load(str(pt2_path)).module()
    with torch.no_grad():
        diff = float((loaded(x) - model(x)).abs().max())
    if diff > atol:
        raise AssertionError(f"{pt2_path}: the exported program differs from PyTorch by "
                             f"{diff:.2e} (tolerance {atol:.0e})")
    return diff
