"""Typed configuration with validation that names the problem and the fix.

Every stage takes a dataclass from here. ``from_dict`` turns YAML/JSON
mappings (pipeline parameters, CLI overrides) into them, rejecting unknown
keys, wrong types and impossible values before any work starts.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field


class ConfigError(ValueError):
    """A configuration value that cannot work."""


def allowed(module: str, name: str) -> list[str]:
    """The allowed values of an option, defined once next to what they name
    (e.g. ``data.LOADERS`` for ``data.dataset``); imported when validating, so
    this module stays importable by the modules it describes."""
    import importlib

    return list(getattr(importlib.import_module(f"scarletnas.{module}"), name))


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise ConfigError(msg)


def _choice(name: str, value: str, module: str, registry: str) -> None:
    options = allowed(module, registry)
    _check(value in options, f"{name}={value!r} is not supported; choose one of {options}")


@dataclass
class DataConfig:
    dataset: str = "digits"
    source: str = ""  # folder or s3:// prefix (cifar10, imagefolder); unused for digits
    input_size: int = 16
    val_fraction: float = 0.2  # carved from the training set, for search and model selection
    test_fraction: float = 0.2  # digits (and distorted-digits) only: the others ship a test split
    eval_batch_size: int = 256
    workers: int = 0  # loader processes for imagefolder
    gpu_decode: bool = False  # imagefolder: decode JPEGs batched on the training device
    cache_dir: str = ""  # where s3:// sources are synced; default: a temp folder
    seed: int = 0

    def __post_init__(self):
        _choice("data.dataset", self.dataset, "data", "LOADERS")
        _check(self.input_size >= 8, f"data.input_size={self.input_size}: use at least 8")
        _check(0 < self.val_fraction < 1, "data.val_fraction must be between 0 and 1")
        _check(0 <= self.test_fraction < 1, "data.test_fraction must be in [0, 1)")
        _check(self.val_fraction + self.test_fraction < 0.9,
               "data.val_fraction + data.test_fraction leave too little to train on")
        _check(self.eval_batch_size >= 1, "data.eval_batch_size must be >= 1")
        _check(self.workers >= 0, "data.workers must be >= 0")
        if self.dataset not in ("digits", "distorted-digits"):
            _check(bool(self.source), f"data.source is empty: {self.dataset} needs a folder "
                   "or s3:// prefix holding the dataset")


@dataclass
class OptimConfig:
    optimizer: str = "sgd"
    lr: float = 0.05  # for batch_size; scale it with the batch
    batch_size: int = 64  # per process
    epochs: float = 30
    warmup_epochs: float = 1.0
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 4e-5  # not applied to BN parameters and biases
    label_smoothing: float = 0.1

    def __post_init__(self):
        _choice("optim.optimizer", self.optimizer, "train", "OPTIMIZERS")
        _check(self.lr > 0, f"optim.lr={self.lr}: must be positive")
        _check(self.batch_size >= 2, "optim.batch_size must be >= 2 (BatchNorm needs a batch)")
        _check(self.epochs > 0, f"optim.epochs={self.epochs}: must be positive")
        _check(0 <= self.warmup_epochs < self.epochs,
               "optim.warmup_epochs must be >= 0 and below optim.epochs")
        _check(0 <= self.momentum < 1, "optim.momentum must be in [0, 1)")
        _check(self.weight_decay >= 0, "optim.weight_decay must be >= 0")
        _check(0 <= self.label_smoothing < 1, "optim.label_smoothing must be in [0, 1)")


@dataclass
class RunConfig:
    """What every training run shares: schedule, logging, checkpoints, device."""

    optim: OptimConfig = field(default_factory=OptimConfig)
    augment: str = "basic"
    seed: int = 0
    log_every: int = 20  # steps between metric callbacks
    checkpoint_every: int = 200  # steps between checkpoints (and at each epoch end)
    device: str = "auto"  # auto: cuda when available
    amp: bool = True  # bf16 autocast, CUDA only
    channels_last: bool = True
    max_steps: int = 0  # stop early after this many steps in total (0: the full schedule)

    def __post_init__(self):
        _choice("augment", self.augment, "data", "AUGMENTS")
        _check(self.log_every >= 1, "log_every must be >= 1")
        _check(self.checkpoint_every >= 1, "checkpoint_every must be >= 1")
        _check(self.max_steps >= 0, "max_steps must be >= 0")


@dataclass
class SupernetConfig(RunConfig):
    sampling: str = "uniform"  # uniform (SPOS) or fair (FairNAS strict fairness)
    stabilizer: bool = True
    stabilizer_init: str = "identity"  # or kaiming (a fresh conv)
    zero_init_residual: bool = True  # every residual choice starts as the identity
    warm_up_ops: bool = True  # CUDA: run every choice op once before training
    check_paths: int = 20  # random paths scored after training to tell if it learned

    def __post_init__(self):
        super().__post_init__()
        _choice("sampling", self.sampling, "sampling", "SAMPLERS")
        _choice("stabilizer_init", self.stabilizer_init, "ops", "STABILIZER_INITS")
        _check(self.check_paths >= 0, "supernet.check_paths must be >= 0 (0: no check)")


@dataclass
class RetrainConfig(RunConfig):
    dropout: float = 0.2
    ema_decay: float = 0.0  # 0: off; e.g. 0.9998 on ImageNet
    eval_every_epochs: int = 1  # validation for best-checkpoint selection

    def __post_init__(self):
        super().__post_init__()
        _check(0 <= self.dropout < 1, "dropout must be in [0, 1)")
        _check(0 <= self.ema_decay < 1, "ema_decay must be in [0, 1)")
        _check(self.eval_every_epochs >= 1, "eval_every_epochs must be >= 1")


@dataclass
class EvalConfig:
    """BN recalibration and validation of one candidate with supernet weights."""

    calib_batches: int = 8
    calib_batch_size: int = 128
    val_images: int = 0  # 0: the whole validation split

    def __post_init__(self):
        _check(self.calib_batches >= 1, "eval.calib_batches must be >= 1 (BN statistics "
               "must be recalibrated for every candidate)")
        _check(self.calib_batch_size >= 2, "eval.calib_batch_size must be >= 2")
        _check(self.val_images >= 0, "eval.val_images must be >= 0")


@dataclass
class SearchConfig:
    """NSGA-II over the supernet. Budgets of 0 mean no budget."""

    generations: int = 20
    population: int = 32
    objectives: str = "top1,madds"  # comma-separated, from OBJECTIVES; top1 always first
    max_madds: float = 0
    max_params: float = 0
    max_latency_ms: float = 0
    crossover_prob: float = 0.9
    mutation_prob: float = 0.0  # per gene; 0: 1 / number of layers
    top_k: int = 3  # archs picked from the front for retraining
    seed: int = 0

    def __post_init__(self):
        _check(self.generations >= 1, "search.generations must be >= 1")
        _check(self.population >= 4, "search.population must be >= 4")
        names = self.objective_names
        objectives = allowed("search", "OBJECTIVES")
        unknown = [n for n in names if n not in objectives]
        _check(not unknown, f"search.objectives: unknown {unknown}; choose from {objectives}")
        _check(names[:1] == ["top1"] and len(set(names)) == len(names) and len(names) >= 2,
               "search.objectives must start with top1 and add at least one of madds, params, "
               "latency, each once (e.g. 'top1,madds')")
        for name in ("max_madds", "max_params", "max_latency_ms"):
            _check(getattr(self, name) >= 0, f"search.{name} must be >= 0 (0: no budget)")
        _check(0 <= self.crossover_prob <= 1, "search.crossover_prob must be in [0, 1]")
        _check(0 <= self.mutation_prob <= 1, "search.mutation_prob must be in [0, 1]")
        _check(1 <= self.top_k <= self.population, "search.top_k must be in 1..population")

    @property
    def objective_names(self) -> list[str]:
        return [n.strip() for n in self.objectives.split(",") if n.strip()]

    @property
    def needs_latency(self) -> bool:
        return "latency" in self.objective_names or self.max_latency_ms > 0


@dataclass
class SpaceConfig:
    """The search space; classes and input size come from the data."""

    preset: str = "compact"  # compact (the local default), small (19 layers) or imagenet
    width_mult: float = 0.5
    allow_skip: bool = True

    def __post_init__(self):
        from .space import SearchSpace

        _check(self.preset in SearchSpace.PRESETS, f"space.preset={self.preset!r} is not "
               f"supported; choose one of {list(SearchSpace.PRESETS)}")
        _check(self.width_mult > 0, "space.width_mult must be positive")


@dataclass
class RankingConfig:
    enabled: bool = False
    archs: int = 6  # archs spread over the MAdds range, each trained stand-alone
    epochs: float = 5

    def __post_init__(self):
        _check(self.archs >= 3, "ranking.archs must be >= 3 to correlate rankings")
        _check(self.epochs > 0, "ranking.epochs must be positive")


@dataclass
class TrackingConfig:
    uri: str = ""  # MLflow tracking URI; empty: a sqlite store beside the local run's outputs
    experiment: str = "scarlet-nas"
    registered_model: str = "scarlet-nas"  # retrained models are registered under this name
    champion_alias: str = "champion"


@dataclass
class ResourcesConfig:
    """Compile-time settings of the Kubernetes pods (ignored by local runs)."""

    gpu_type: str = "nvidia.com/gpu"
    gpus: int = 1  # per GPU step: train_supernet, ranking_check, search, retrain
    cpu_limit: str = "8"
    memory_limit: str = "32G"
    node_selector: str = ""  # "label=value" for the GPU steps
    toleration: str = ""  # "key=value:Effect" or "key:Effect", for the GPU steps
    shm_size: str = "4Gi"  # /dev/shm for data-loader workers
    # Secret with AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and AWS_ENDPOINT_URL
    s3_secret: str = "scarlet-nas-s3"
    mlflow_secret: str = ""  # optional Secret with MLFLOW_TRACKING_USERNAME/PASSWORD
    retries: int = 3  # for train_supernet and search, which resume from checkpoints

    def __post_init__(self):
        _check(0 <= self.gpus <= 16, f"resources.gpus={self.gpus}: KFP accepts 0..16 "
               "accelerators per task (0 runs the GPU steps on CPU)")
        _check(bool(self.gpu_type.strip()) or self.gpus == 0,
               "resources.gpu_type is empty: use e.g. nvidia.com/gpu")
        _check(self.retries >= 0, "resources.retries must be >= 0")
        if self.node_selector:
            _check(self.node_selector.count("=") == 1,
                   "resources.node_selector must look like label=value")
        if self.toleration:
            _check(":" in self.toleration, "resources.toleration must look like "
                   "key=value:Effect or key:Effect (Effect: NoSchedule, PreferNoSchedule, "
                   "NoExecute)")


def _local_supernet() -> SupernetConfig:
    return SupernetConfig(optim=OptimConfig(epochs=18, warmup_epochs=1, lr=0.1), log_every=10)


def _local_retrain() -> RetrainConfig:
    return RetrainConfig(optim=OptimConfig(epochs=15, warmup_epochs=1, lr=0.1), dropout=0.1,
                         log_every=20)


@dataclass
class PipelineConfig:
    """Everything a pipeline run needs; the defaults run on a laptop in minutes."""

    data: DataConfig = field(default_factory=DataConfig)
    space: SpaceConfig = field(default_factory=SpaceConfig)
    supernet: SupernetConfig = field(default_factory=_local_supernet)
    eval: EvalConfig = field(default_factory=lambda: EvalConfig(calib_batches=4,
                                                                calib_batch_size=64))
    search: SearchConfig = field(default_factory=lambda: SearchConfig(
        generations=4, population=12, top_k=2))
    ranking: RankingConfig = field(default_factory=RankingConfig)
    retrain: RetrainConfig = field(default_factory=_local_retrain)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    resources: ResourcesConfig = field(default_factory=ResourcesConfig)
    checkpoint_root: str = ""  # s3://bucket/prefix in a cluster; resumable state goes here


def _set_path(data: dict, dotted: str, value) -> None:
    keys = dotted.split(".")
    node = data
    for k in keys[:-1]:
        node = node.setdefault(k, {})
        if not isinstance(node, dict):
            raise ConfigError(f"--set {dotted}: {k} is not a section")
    node[keys[-1]] = value


def load_pipeline_config(path: str | None = None, overrides: typing.Sequence[str] = ()
                         ) -> PipelineConfig:
    """A YAML file (optional) plus ``key.sub=value`` overrides, validated."""
    import yaml

    data: dict = {}
    if path:
        try:
            with open(path) as f:
                data = yaml.safe_load(f) or {}
        except FileNotFoundError:
            raise ConfigError(f"config file {path} not found") from None
        except yaml.YAMLError as err:
            raise ConfigError(f"config file {path} is not valid YAML: {err}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"config file {path} must hold a mapping of sections")
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: use key.sub=value, e.g. search.generations=10")
        key, raw = item.split("=", 1)
        _set_path(data, key.strip(), yaml.safe_load(raw) if raw.strip() else "")
    return from_dict(PipelineConfig, data)


def pipeline_config_from_json(text: str) -> PipelineConfig:
    return from_dict(PipelineConfig, json.loads(text))


T = typing.TypeVar("T")


def from_dict(cls: type[T], data: Mapping | None, where: str = "", base: T | None = None) -> T:
    """Build ``cls`` from a mapping, checking keys and types recursively.

    Keys the mapping leaves out keep their value in ``base`` (default: ``cls()``),
    section by section, so ``supernet.stabilizer=false`` changes that one key and
    leaves the pipeline's supernet epochs and lr as they were.
    """
    data = dict(data or {})
    base = cls() if base is None else base
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise ConfigError(f"unknown key(s) {', '.join(where + k for k in unknown)}; "
                          f"valid keys: {', '.join(names)}")
    kwargs = {name: copy.deepcopy(getattr(base, name)) for name in names}
    for name, value in data.items():
        kwargs[name] = _coerce(hints[name], value, where + name, kwargs[name])
    return cls(**kwargs)


def _coerce(tp, value, path: str, current=None):
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, Mapping):
            raise ConfigError(f"{path} must be a mapping, got {type(value).__name__}")
        return from_dict(tp, value, path + ".", base=current)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{path} must be true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"{path} must be an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads 3e8 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{path} must be a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{path} must be a string, got {value!r}")
    return value


def to_dict(cfg) -> dict:
    return dataclasses.asdict(cfg)
