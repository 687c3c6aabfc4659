"""Persistence of training state and weights, local or in S3, written atomically.

``Checkpoint`` is the resume state of one run; ``save_weights``/``load_weights``
hold a model's weights with the metadata that rebuilds it (arch, space),
and ``save_supernet``/``load_supernet`` do the same for a supernet. Every
load uses ``weights_only=True``: nothing a bucket hands us is unpickled.
"""

from __future__ import annotations

import io

import torch
from torch import nn

from . import storage
from .space import SearchSpace
from .supernet import Supernet


class CheckpointError(ValueError):
    """A file that should hold saved torch state does not."""


def _load(uri: str) -> dict:
    """torch.load with ``weights_only``, every failure naming the file."""
    import pickle
    import zipfile

    raw = storage.read_bytes(uri)
    if not raw:
        raise CheckpointError(f"{uri}: empty file (0 bytes); pass a file saved by scarlet-nas")
    try:
        state = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise CheckpointError(f"{uri}: refused to load: it holds Python objects besides "
                              "tensors and plain data, and nothing here is unpickled; pass a "
                              "file saved by scarlet-nas") from None
    except (EOFError, RuntimeError, zipfile.BadZipFile, ValueError) as err:
        why = str(err).split(". ")[0] or "ends too early"
        raise CheckpointError(f"{uri}: not a complete torch file ({why}); it may be "
                              "truncated or not a checkpoint: write it again") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{uri}: holds a {type(state).__name__}, not saved scarlet-nas "
                              "state")
    return state


class Checkpoint:
    """The resume state of one run at one URI (local path or s3://)."""

    def __init__(self, uri: str | None):
        self.uri = uri

    def load(self) -> dict | None:
        if not self.uri or not storage.exists(self.uri):
            return None
        return _load(self.uri)

    def save(self, state: dict) -> None:
        if self.uri:
            buf = io.BytesIO()
            torch.save(state, buf)
            storage.write_bytes(self.uri, buf.getvalue())


def save_weights(uri: str, model: nn.Module, meta: dict) -> None:
    """Write a model's weights with metadata (arch, space, metrics) atomically."""
    buf = io.BytesIO()
    torch.save({"state_dict": model.state_dict(), "meta": meta}, buf)
    storage.write_bytes(uri, buf.getvalue())


def load_weights(uri: str) -> dict:
    return _load(uri)


def save_supernet(uri: str, supernet: Supernet, extra: dict | None = None) -> None:
    """Weights plus what is needed to rebuild the supernet (space, stabilizer)."""
    save_weights(uri, supernet, {"kind": "supernet", "space": supernet.space.to_dict(),
                                 "stabilizer": supernet.stabilizer,
                                 "stabilizer_init": supernet.stabilizer_init, **(extra or {})})


def load_supernet(uri: str) -> Supernet:
    """Rebuild a supernet saved by ``save_supernet`` (loaded with weights_only)."""
    blob = load_weights(uri)
    meta = blob.get("meta", {})
    if not isinstance(meta, dict) or meta.get("kind") != "supernet":
        kind = meta.get("kind") if isinstance(meta, dict) else None
        raise CheckpointError(f"{uri} is not a supernet checkpoint (kind={kind!r}); pass the "
                              "supernet.pt written by supernet training")
    supernet = Supernet(SearchSpace.from_dict(meta["space"]), meta["stabilizer"],
                        meta["stabilizer_init"])
    supernet.load_state_dict(blob["state_dict"])
    supernet.path_check = meta.get("path_check", {})  # the check run when it was saved
    return supernet
