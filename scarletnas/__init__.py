"""SCARLET-NAS: one-shot NAS with a stabilized skip choice, built for Kubeflow.

The model API below is imported on first use (PEP 562), so that the modules
which need no torch (the config, storage, the pipeline's commands) start fast.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "Cost": "complexity", "arch_cost": "complexity",
    "PRESETS": "space", "ArchError": "space", "SearchSpace": "space",
    "Subnet": "subnet", "build_subnet": "subnet", "load_released_state_dict": "subnet",
    "Supernet": "supernet", "build_supernet": "supernet",
}
__all__ = [*sorted(_EXPORTS), "__version__"]


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
