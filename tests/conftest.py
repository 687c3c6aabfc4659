import numpy as np
import pytest
import torch

from scarletnas import SearchSpace


@pytest.fixture(scope="session")
def imagenet_space() -> SearchSpace:
    return SearchSpace.imagenet()


@pytest.fixture(scope="session")
def small_space() -> SearchSpace:
    """The small space at 16 px: every code path, a fraction of the compute."""
    return SearchSpace.small(input_size=16)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


@pytest.fixture(autouse=True)
def _seed_torch():
    torch.manual_seed(0)
