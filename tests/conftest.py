import os

import numpy as np
import pytest
import torch

from scarletnas import SearchSpace

# `make test` runs the suite in two pytest-xdist workers, a module per worker at a
# time. Each worker (and each process it starts) keeps to one thread, so two torch
# jobs never contend for the same cores: oversubscribed, torch's threads spin and a
# step takes several times as long.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)

# the modules that take longest start first, so that no worker is left with one at the end
FIRST = ("test_pipeline_local", "test_mlflow_compare", "test_trainjob", "test_distributed",
         "test_shards")


def pytest_collection_modifyitems(items):
    def rank(item):
        name = item.module.__name__.rpartition(".")[2]
        return FIRST.index(name) if name in FIRST else len(FIRST)

    items.sort(key=rank)  # stable: the order within each module is kept


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


@pytest.fixture(scope="session")
def tiny_space() -> SearchSpace:
    """Four searchable layers (two may skip): fast enough to train in tests."""
    return SearchSpace(num_classes=10, input_size=16, stem_channels=16, stem_stride=1,
                       separable_channels=8, layer_channels=(8, 16, 16, 24),
                       layer_strides=(1, 2, 1, 2), head_channels=64)


@pytest.fixture(scope="session")
def digits():
    from scarletnas.config import DataConfig
    from scarletnas.data import load_splits

    return load_splits(DataConfig(dataset="digits", input_size=16))


@pytest.fixture(scope="session")
def digits8():
    """The digits at their own 8 px: the pipeline's default for them."""
    from scarletnas.config import DataConfig
    from scarletnas.data import load_splits

    return load_splits(DataConfig(dataset="digits"))


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """A real S3 server (SeaweedFS) and MLflow server on 127.0.0.1, one per test module."""
    from scarletnas.devstack import Stack

    s = Stack(str(tmp_path_factory.mktemp("stack"))).up()
    yield s
    s.down()


@pytest.fixture(scope="session")
def deployed(tmp_path_factory):
    """MLflow as the base manifests deploy it (basic-auth, the allowed hosts) on
    127.0.0.1, and those hosts: started once, for test_mlflow_security and
    test_mlflow_pipeline_user (each uses experiments and models of its own)."""
    from .test_mlflow_security import start_deployed

    stack, hosts = start_deployed(tmp_path_factory.mktemp("deployed"))
    yield stack, hosts
    stack.down()


@pytest.fixture
def s3_env(stack, monkeypatch):
    """This process's S3 client pointed at the module's real S3 server."""
    from scarletnas import storage

    for k, v in stack.env().items():
        monkeypatch.setenv(k, v)
    storage._client.cache_clear()
    yield stack
    storage._client.cache_clear()
