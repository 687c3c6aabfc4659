import copy

import pytest

from scarletnas.config import (
    ConfigError,
    DataConfig,
    OptimConfig,
    PipelineConfig,
    RetrainConfig,
    SearchConfig,
    SupernetConfig,
    from_dict,
    load_pipeline_config,
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


def test_one_override_changes_only_the_key_it_names():
    """--set a.b=x merges onto the pipeline's defaults; the section's other keys stay."""
    defaults = to_dict(PipelineConfig())
    for override, key, value in [("supernet.stabilizer=false", ("supernet", "stabilizer"), False),
                                 ("search.generations=10", ("search", "generations"), 10),
                                 ("supernet.optim.lr=0.3", ("supernet", "optim", "lr"), 0.3)]:
        changed = to_dict(load_pipeline_config(None, [override]))
        expected = copy.deepcopy(defaults)
        node = expected
        for k in key[:-1]:
            node = node[k]
        node[key[-1]] = value
        assert changed == expected, override


def test_yaml_file_merges_key_by_key(tmp_path):
    path = tmp_path / "ablation.yaml"
    path.write_text("supernet:\n  stabilizer: false\n  optim:\n    lr: 0.2\nsearch:\n"
                    "  top_k: 1\n")
    cfg = load_pipeline_config(str(path))
    base = PipelineConfig()
    assert (cfg.supernet.stabilizer, cfg.supernet.optim.lr, cfg.search.top_k) == (False, 0.2, 1)
    assert cfg.supernet.optim.epochs == base.supernet.optim.epochs
    assert cfg.supernet.log_every == base.supernet.log_every
    assert cfg.search.population == base.search.population
    assert cfg.retrain == base.retrain and cfg.eval == base.eval


def test_merging_keeps_defaults_unshared():
    a = load_pipeline_config(None, ["supernet.optim.lr=0.3"])
    b = load_pipeline_config(None, [])
    assert b.supernet.optim.lr == PipelineConfig().supernet.optim.lr != a.supernet.optim.lr


@pytest.mark.parametrize("option,build", [
    ("data.dataset", lambda v: DataConfig(dataset=v, source="somewhere")),
    ("data.bad_images", lambda v: DataConfig(bad_images=v)),
    ("augment", lambda v: RetrainConfig(augment=v)),
    ("optim.optimizer", lambda v: OptimConfig(optimizer=v)),
    ("sampling", lambda v: SupernetConfig(sampling=v)),
    ("stabilizer_init", lambda v: SupernetConfig(stabilizer_init=v)),
    ("search.objectives", lambda v: SearchConfig(objectives=f"top1,{v}" if v != "top1"
                                                 else "top1,madds")),
])
def test_allowed_values_are_exactly_what_their_implementation_defines(option, build):
    """Each option accepts the names its implementation's registry holds, and
    nothing else: a name added there and not here (or here and not there) fails."""
    import importlib

    from scarletnas.config import CHOICES

    where, names = CHOICES[option]
    module, _, registry = where.partition(".")
    implemented = getattr(importlib.import_module(f"scarletnas.{module}"), registry)
    assert list(implemented) == list(names)
    for name in names:
        build(name)
    with pytest.raises(ConfigError, match="not supported|unknown"):
        build("no-such-thing")


def test_validating_a_config_imports_neither_torch_nor_pymoo():
    import subprocess
    import sys

    code = ("import sys; from scarletnas.config import load_pipeline_config; "
            "load_pipeline_config(None, ['data.dataset=imagefolder', 'data.source=/x', "
            "'search.objectives=top1,latency']); "
            "print(sorted(m for m in ('torch', 'pymoo') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "[]"
