import copy
import dataclasses

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


def test_the_default_input_size_is_the_datas_own_and_follows_the_dataset():
    """data.input_size=0 resolves per dataset, also after an override switches the
    dataset (the default is never frozen at the digits' 8 px); a size set wins, and
    what a run logs for comparison is the size used."""
    from scarletnas.tracking import comparison_params

    sizes = {name: load_pipeline_config(None, [f"data.dataset={name}", "data.source=/d"]).data.size
             for name in ("digits", "distorted-digits", "cifar10", "imagefolder")}
    assert sizes == {"digits": 8, "distorted-digits": 8, "cifar10": 32, "imagefolder": 16}
    assert DataConfig().input_size == 0 and DataConfig().size == 8
    assert DataConfig(input_size=24).size == 24
    assert comparison_params(PipelineConfig())["data.input_size"] == 8
    with pytest.raises(ConfigError, match="use at least 8 \\(or 0: the data's own size\\)"):
        DataConfig(input_size=4)


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


# ---- one set of defaults, and the shipped configs ----------------------------------------
def test_a_run_gets_each_sections_own_dataclass_defaults():
    """PipelineConfig builds every section with its class's defaults, so the
    defaults a run gets are the ones the dataclass says (no second set)."""
    from scarletnas import config

    sections = [f for f in dataclasses.fields(config.PipelineConfig)
                if f.default_factory is not dataclasses.MISSING]
    assert len(sections) == 9
    for f in sections:  # the class itself, not a function building a variant of it
        assert f.default_factory is getattr(config, f.type), f.name
    cfg = config.PipelineConfig()  # the local run's figures, as the README's table gives them
    assert (cfg.supernet.optim.epochs, cfg.supernet.optim.min_steps, cfg.supernet.extensions,
            cfg.retrain.optim.epochs, cfg.retrain.optim.min_steps, cfg.retrain.dropout,
            cfg.search.generations, cfg.search.population, cfg.search.top_k,
            cfg.eval.calib_batches) == (18, 600, 3, 15, 400, 0.1, 4, 12, 2, 4)


def test_every_layer_starts_the_stabilizer_as_the_config_does():
    import inspect

    from scarletnas import ops, subnet, supernet
    from scarletnas.config import SupernetConfig

    assert SupernetConfig().stabilizer_init == ops.STABILIZER_INIT == "identity"
    for fn, arg in ((ops.Stabilizer, "init"), (ops.build_choice, "stabilizer_init"),
                    (subnet.Subnet, "stabilizer_init"), (supernet.Supernet, "stabilizer_init"),
                    (supernet.build_supernet, "stabilizer_init")):
        assert inspect.signature(fn).parameters[arg].default == ops.STABILIZER_INIT, fn


def test_shipped_configs_by_name():
    from scarletnas.config import PipelineConfig, load_pipeline_config, named_configs

    assert named_configs() == ["imagenet", "imagenet-nodes", "local"]
    assert load_pipeline_config("local") == PipelineConfig()
    one = load_pipeline_config("imagenet")
    assert (one.space.preset, one.data.input_size, one.data.dataset, one.resources.gpus,
            one.resources.nodes, one.search.population) == ("imagenet", 224, "imagefolder", 8,
                                                             1, 100)
    assert one.checkpoint_root.startswith("s3://") and one.tracking.uri.startswith("http://")
    many = load_pipeline_config("imagenet-nodes", ["data.source=s3://mine/imgs"])
    assert (many.resources.nodes, many.resources.retrain_nodes) == (4, 2)
    # its base's settings stay where it names only some keys of a section
    assert (many.supernet.optim.lr, many.supernet.optim.epochs, many.supernet.optim.batch_size
            ) == (1.6, one.supernet.optim.epochs, one.supernet.optim.batch_size)
    assert many.data.source == "s3://mine/imgs" and many.space == one.space


def test_a_users_config_can_start_from_a_shipped_one_or_a_file(tmp_path):
    from scarletnas.config import load_pipeline_config

    (tmp_path / "team.yaml").write_text("base: imagenet\ndata: {source: s3://team/imagenet}\n")
    (tmp_path / "mine.yaml").write_text("base: team.yaml\nsearch: {generations: 5}\n")
    cfg = load_pipeline_config(str(tmp_path / "mine.yaml"))
    assert (cfg.search.generations, cfg.search.population, cfg.data.source,
            cfg.space.preset) == (5, 100, "s3://team/imagenet", "imagenet")
    (tmp_path / "a.yaml").write_text("base: b.yaml\n")
    (tmp_path / "b.yaml").write_text("base: a.yaml\n")
    with pytest.raises(ConfigError, match="base chain comes back"):
        load_pipeline_config(str(tmp_path / "a.yaml"))
    (tmp_path / "c.yaml").write_text("base: 3\n")
    with pytest.raises(ConfigError, match="base must name a shipped config"):
        load_pipeline_config(str(tmp_path / "c.yaml"))
    with pytest.raises(ConfigError, match="no shipped config of that name; shipped: imagenet, "):
        load_pipeline_config("imagenet-big")


def test_config_command_prints_what_a_run_gets(capsys):
    import yaml

    from scarletnas.cli import main
    from scarletnas.config import PipelineConfig, from_dict, load_pipeline_config

    assert main(["config", "imagenet-nodes", "--set", "search.top_k=4"]) == 0
    printed = from_dict(PipelineConfig, yaml.safe_load(capsys.readouterr().out))
    assert printed == load_pipeline_config("imagenet-nodes", ["search.top_k=4"])


def test_the_deploy_guides_configs_load(tmp_path):
    """The configs docs/deploy.md tells users to write are valid as written."""
    import re
    from pathlib import Path

    from scarletnas.config import load_pipeline_config

    text = (Path(__file__).parents[1] / "docs" / "deploy.md").read_text()
    blocks = [b for b in re.findall(r"```yaml\n(.*?)```", text, re.S) if b.startswith("base:")]
    assert len(blocks) == 2
    loaded = []
    for i, block in enumerate(blocks):
        (tmp_path / f"{i}.yaml").write_text(block)
        loaded.append(load_pipeline_config(str(tmp_path / f"{i}.yaml")))
    assert loaded[0].data.source == loaded[1].data.source == "s3://mlpipeline/datasets/imagenet100"
    assert (loaded[0].resources.nodes, loaded[1].resources.nodes) == (1, 2)
    assert loaded[1].checkpoint_root.startswith("s3://")


def test_a_runs_parameters_replace_the_keys_they_stand_for():
    """tracking_uri, checkpoint_root and run_ranking are pipeline parameters and
    config keys: in a run the parameter wins, everywhere, validated like the key."""
    from scarletnas.config import RUN_PARAMETERS, PipelineConfig, with_run_parameters

    base = load_pipeline_config(None, ["checkpoint_root=s3://compiled/ck",
                                       "tracking.uri=http://compiled:5000"])
    cfg = with_run_parameters(base, tracking_uri="http://run:5000", checkpoint_root="",
                              run_ranking=True)
    assert (cfg.tracking.uri, cfg.checkpoint_root, cfg.ranking.enabled) == \
        ("http://run:5000", "", True)
    assert cfg.tracking.experiment == base.tracking.experiment and cfg.search == base.search
    assert with_run_parameters(base) == base
    with pytest.raises(ConfigError, match="checkpoint_root='gs://b/x': use a local folder or"):
        with_run_parameters(PipelineConfig(), checkpoint_root="gs://b/x")
    assert set(RUN_PARAMETERS) == {"tracking_uri", "checkpoint_root", "run_ranking"}
