"""SCARLET-NAS: one-shot NAS with a stabilized skip choice, built for Kubeflow."""

from .complexity import Cost, arch_cost
from .space import PRESETS, ArchError, SearchSpace
from .subnet import Subnet, build_subnet, load_released_state_dict
from .supernet import Supernet, build_supernet

__version__ = "0.1.0"

__all__ = ["PRESETS", "ArchError", "Cost", "SearchSpace", "Subnet", "Supernet", "arch_cost",
           "build_subnet", "build_supernet", "load_released_state_dict", "__version__"]
