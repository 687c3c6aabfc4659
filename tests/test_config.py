import pytest

from scarletnas.config import (
    ConfigError,
    DataConfig,
    OptimConfig,
    RetrainConfig,
    SupernetConfig,
    from_dict,
    to_dict,
)


def test_from_dict_builds_nested_configs():
    cfg = from_dict(SupernetConfig, {"optim": {"lr": 0.1, "epochs": 3}, "sampling": "fair",
                                     "max_steps": 10.0})
    assert cfg.optim.lr == 0.1 and cfg.optim.epochs == 3.0 and cfg.sampling == "fair"
    assert cfg.max_steps == 10 and isinstance(cfg.max_steps, int)
    assert from_dict(OptimConfig, {"lr": "5e-2"}).lr == 0.05  # YAML reads 5e-2 as a string
    assert from_dict(SupernetConfig, to_dict(cfg)) == cfg


@pytest.mark.parametrize("cls,data,msg", [
    (SupernetConfig, {"sampler": "fair"}, "unknown key\\(s\\) sampler; valid keys: optim"),
    (SupernetConfig, {"optim": {"learning_rate": 1}}, "unknown key\\(s\\) optim.learning_rate"),
    (SupernetConfig, {"optim": {"lr": "fast"}}, "optim.lr must be a number, got 'fast'"),
    (SupernetConfig, {"stabilizer": "yes"}, "stabilizer must be true or false"),
    (SupernetConfig, {"optim": {"batch_size": 1.5}}, "optim.batch_size must be an integer"),
    (SupernetConfig, {"sampling": "greedy"}, "sampling='greedy' is not supported"),
    (SupernetConfig, {"optim": 3}, "optim must be a mapping"),
    (OptimConfig, {"lr": -1}, "optim.lr=-1.0: must be positive"),
    (OptimConfig, {"epochs": 1, "warmup_epochs": 2}, "warmup_epochs must be >= 0 and below"),
    (RetrainConfig, {"dropout": 1.5}, "dropout must be in"),
    (DataConfig, {"dataset": "mnist"}, "data.dataset='mnist' is not supported"),
    (DataConfig, {"dataset": "cifar10"}, "data.source is empty: cifar10 needs a folder"),
])
def test_bad_config_is_a_clear_error(cls, data, msg):
    with pytest.raises(ConfigError, match=msg):
        from_dict(cls, data)
