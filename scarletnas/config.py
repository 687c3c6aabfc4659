"""Typed configuration with validation that names the problem and the fix.

Every stage takes a dataclass from here. ``from_dict`` turns YAML/JSON
mappings (pipeline parameters, CLI overrides) into them, rejecting unknown
keys, wrong types and impossible values before any work starts.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import re
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path


class ConfigError(ValueError):
    """A configuration value that cannot work."""


# The names each option takes. The modules that implement the options key their
# registries by exactly these (CHOICES' second field names the registry; a test
# holds the two equal), so validating a config imports neither torch nor pymoo.
CHOICES = {
    "data.dataset": ("data.LOADERS", ("digits", "distorted-digits", "cifar10", "imagefolder")),
    "data.bad_images": ("data.BAD_IMAGE_POLICIES", ("fail", "skip")),
    "data.flip": ("data.FLIPS", ("auto", "on", "off")),
    "optim.optimizer": ("train.OPTIMIZERS", ("sgd", "rmsprop")),
    "augment": ("data.AUGMENTS", ("none", "basic", "randaugment", "autoaugment")),
    "sampling": ("sampling.SAMPLERS", ("uniform", "fair")),
    "stabilizer_init": ("ops.STABILIZER_INITS", ("kaiming", "identity")),
    "search.objectives": ("search.OBJECTIVES", ("top1", "madds", "params", "latency")),
}


def allowed(option: str) -> list[str]:
    """The values ``option`` (a key of CHOICES) takes."""
    return list(CHOICES[option][1])


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise ConfigError(msg)


# Kubernetes' own formats (apimachinery validation): what the API server would reject
# at run time is rejected here, at compile time
_NAME = r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?"
_DNS = r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?(\.[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)*"
QUALIFIED_NAME = re.compile(rf"({_DNS}/)?{_NAME}")
EXTENDED_RESOURCE = re.compile(rf"{_DNS}/{_NAME}")
LABEL_VALUE = re.compile(rf"({_NAME})?")
MLFLOW_RUN_ID = re.compile(r"[0-9a-f]{32}")
# string settings whose value may be the word on or off (YAML 1.1 reads them as bools)
ON_OFF_WORDS = ("supernet.warm_start", "data.flip")
QUANTITY = re.compile(r"(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+|[KMGTPE]i|[mkMGTPE])?")
TAINT_EFFECTS = ("NoSchedule", "PreferNoSchedule", "NoExecute")
# URI schemes MLflow can track to; an empty URI means a local sqlite store
TRACKING_SCHEMES = ("http", "https", "file", "sqlite", "postgresql", "mysql", "mssql",
                    "databricks")


def _scheme(value: str) -> str:
    """The URI scheme of ``value`` ('' for a plain path)."""
    head, sep, _ = value.partition("://")
    if sep:
        return head.lower()
    return value.split(":", 1)[0].lower() if re.match(r"[a-z][a-z0-9+.-]+:", value) else ""


def _location(name: str, value: str) -> None:
    """A folder or s3:// prefix: nothing else can be read or written by the steps."""
    _check(_scheme(value) in ("", "s3"), f"{name}={value!r}: use a local folder or an "
           "s3://bucket/prefix (no other storage scheme is supported)")
    if _scheme(value) == "s3":
        _check(bool(value[5:].split("/", 1)[0]), f"{name}={value!r} names no bucket: use "
               "s3://BUCKET/PREFIX")


def _choice(name: str, value: str) -> None:
    options = allowed(name)
    _check(value in options, f"{name}={value!r} is not supported; choose one of {options}")


# data.input_size=0 means the data's own side: the bundled 8x8 digits (and the
# distorted copies made from them) and CIFAR-10's 32x32 as they are; image folders,
# whose side only their images tell, at DEFAULT_SIZE (`run --data DIR` fits it)
NATIVE_SIZES = {"digits": 8, "distorted-digits": 8, "cifar10": 32}
DEFAULT_SIZE = 16
# data.flip=auto: horizontal flips for every data set but these, whose mirror
# images are other symbols (or none)
UNFLIPPED = ("digits", "distorted-digits")


@dataclass
class DataConfig:
    dataset: str = "digits"
    source: str = ""  # folder or s3:// prefix (cifar10, imagefolder); unused for digits
    # the side images are resized to; 0: the data's own (``size``, NATIVE_SIZES)
    input_size: int = 0
    val_fraction: float = 0.2  # carved from the training set, for search and model selection
    test_fraction: float = 0.2  # digits (and distorted-digits) only: the others ship a test split
    eval_batch_size: int = 256
    workers: int = 0  # loader processes for imagefolder
    gpu_decode: bool = False  # imagefolder: decode JPEGs batched on the training device
    cache_dir: str = ""  # where s3:// sources and shards are cached; default: a temp folder
    bad_images: str = "fail"  # image folders: fail on an image that does not decode, or skip
    # horizontal flips in training (``flips``): auto follows the data (UNFLIPPED);
    # off where a mirror image is another class
    flip: str = "auto"
    # image folders are prepared once into shards (WebDataset tars + an index) that
    # every step streams: where they go (default: <checkpoint_root>/shards when that
    # is in S3, else a local folder), how big each is, the shortest side images are
    # stored at (0: as they are), and how many shards each training pass mixes
    shard_root: str = ""
    shard_mb: float = 256
    shard_image_size: int = 0
    shuffle_shards: int = 4
    seed: int = 0

    def __post_init__(self):
        _choice("data.dataset", self.dataset)
        _choice("data.bad_images", self.bad_images)
        _choice("data.flip", self.flip)
        _check(self.input_size == 0 or self.input_size >= 8,
               f"data.input_size={self.input_size}: use at least 8 (or 0: the data's own size)")
        _check(0 < self.val_fraction < 1, "data.val_fraction must be between 0 and 1")
        _check(0 <= self.test_fraction < 1, "data.test_fraction must be in [0, 1)")
        _check(self.val_fraction + self.test_fraction < 0.9,
               "data.val_fraction + data.test_fraction leave too little to train on")
        _check(self.eval_batch_size >= 1, "data.eval_batch_size must be >= 1")
        _check(self.workers >= 0, "data.workers must be >= 0")
        _location("data.source", self.source)
        _location("data.shard_root", self.shard_root)
        _check(self.shard_mb > 0, f"data.shard_mb={self.shard_mb}: must be positive")
        _check(self.shard_image_size == 0 or self.shard_image_size >= self.size,
               f"data.shard_image_size={self.shard_image_size}: use 0 (store images as "
               f"they are) or at least data.input_size={self.size}")
        _check(self.shuffle_shards >= 1, "data.shuffle_shards must be >= 1")
        _check(_scheme(self.cache_dir) == "", f"data.cache_dir={self.cache_dir!r}: use a "
               "local folder (s3:// sources are synced into it)")
        if self.dataset not in ("digits", "distorted-digits"):
            _check(bool(self.source), f"data.source is empty: {self.dataset} needs a folder "
                   "or s3:// prefix holding the dataset")

    @property
    def size(self) -> int:
        """The input side in px: ``input_size``, or the data's own where it is 0. The
        digits keep their 8 px: upscaled they only cost compute (docs/reproduction.md,
        "16 px images")."""
        return self.input_size or NATIVE_SIZES.get(self.dataset, DEFAULT_SIZE)

    @property
    def flips(self) -> bool:
        """Whether training flips images: ``flip``, or the data's own rule where it
        is auto."""
        return {"on": True, "off": False}.get(self.flip, self.dataset not in UNFLIPPED)

    def as_used(self) -> dict:
        """The settings as a run records them: the input size and the flips
        resolved, so runs compare by what they used, not by a 0 or an auto."""
        return {**dataclasses.asdict(self), "input_size": self.size,
                "flip": "on" if self.flips else "off"}


@dataclass
class OptimConfig:
    optimizer: str = "sgd"
    lr: float = 0.1  # for batch_size; scale it with the batch
    batch_size: int = 64  # per process
    epochs: float = 15
    # at least this many steps, whatever the epochs give: a small data set (a user's
    # first folder of a few hundred images) still trains long enough to learn
    min_steps: int = 0
    warmup_epochs: float = 1.0
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 4e-5  # not applied to BN parameters and biases
    label_smoothing: float = 0.1

    def __post_init__(self):
        _choice("optim.optimizer", self.optimizer)
        _check(self.lr > 0, f"optim.lr={self.lr}: must be positive")
        _check(self.batch_size >= 2, "optim.batch_size must be >= 2 (BatchNorm needs a batch)")
        _check(self.epochs > 0, f"optim.epochs={self.epochs}: must be positive")
        _check(self.min_steps >= 0, f"optim.min_steps={self.min_steps}: must be >= 0")
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
        _choice("augment", self.augment)
        _check(self.log_every >= 1, "log_every must be >= 1")
        _check(self.checkpoint_every >= 1, "checkpoint_every must be >= 1")
        _check(self.max_steps >= 0, "max_steps must be >= 0")


@dataclass
class SupernetConfig(RunConfig):
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(epochs=18, min_steps=600))
    log_every: int = 10
    sampling: str = "uniform"  # uniform (SPOS) or fair (FairNAS strict fairness)
    stabilizer: bool = True
    stabilizer_init: str = "identity"  # or kaiming (a fresh conv)
    zero_init_residual: bool = True  # every residual choice starts as the identity
    warm_up_ops: bool = True  # CUDA: run every choice op once before training
    check_paths: int = 20  # random paths scored after training to tell if it learned
    # while the sampled paths are below half-way from chance to 100% and the last
    # round raised them by at least min_gain, train another round of the same length
    # (a cosine restart at half the lr), at most this many times; 0 (or no path
    # check): one schedule
    extensions: int = 3
    min_gain: float = 0.02
    # start from a supernet an earlier run stored (reuse on, a checkpoint_root):
    # off; latest (the newest of this space, on any data); or the MLflow run id of
    # the run that trained it. It then trains warm_start_epochs at half the lr.
    warm_start: str = "off"
    warm_start_epochs: float = 6

    def __post_init__(self):
        super().__post_init__()
        _check(self.warm_start in ("off", "latest") or bool(MLFLOW_RUN_ID.fullmatch(
            self.warm_start)), f"supernet.warm_start={self.warm_start!r}: use off, latest or "
            "the MLflow run id (32 hex digits) of the run whose supernet to start from")
        _check(self.warm_start_epochs > 0 and (self.warm_start == "off" or
                                               self.warm_start_epochs <= self.optim.epochs),
               f"supernet.warm_start_epochs={self.warm_start_epochs}: must be positive and at "
               f"most supernet.optim.epochs ({self.optim.epochs})")
        _choice("sampling", self.sampling)
        _choice("stabilizer_init", self.stabilizer_init)
        _check(self.check_paths >= 0, "supernet.check_paths must be >= 0 (0: no check)")
        _check(self.extensions >= 0, "supernet.extensions must be >= 0 (0: one schedule)")
        _check(0 <= self.min_gain < 1, "supernet.min_gain must be in [0, 1)")


@dataclass
class RetrainConfig(RunConfig):
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(epochs=15, min_steps=400))
    dropout: float = 0.1
    ema_decay: float = 0.0  # 0: off; e.g. 0.9998 on ImageNet
    eval_every_epochs: int = 1  # validation for best-checkpoint selection
    # every block that adds its input back starts as the identity, so a deep arch
    # trains in a short budget (docs/reproduction.md, "A harder proxy")
    zero_init_residual: bool = True

    def __post_init__(self):
        super().__post_init__()
        _check(0 <= self.dropout < 1, "dropout must be in [0, 1)")
        _check(0 <= self.ema_decay < 1, "ema_decay must be in [0, 1)")
        _check(self.eval_every_epochs >= 1, "eval_every_epochs must be >= 1")


@dataclass
class EvalConfig:
    """BN recalibration and validation of one candidate with supernet weights."""

    calib_batches: int = 4
    calib_batch_size: int = 64
    val_images: int = 0  # 0: the whole validation split

    def __post_init__(self):
        _check(self.calib_batches >= 1, "eval.calib_batches must be >= 1 (BN statistics "
               "must be recalibrated for every candidate)")
        _check(self.calib_batch_size >= 2, "eval.calib_batch_size must be >= 2")
        _check(self.val_images >= 0, "eval.val_images must be >= 0")


@dataclass
class SearchConfig:
    """NSGA-II over the supernet. Budgets of 0 mean no budget."""

    generations: int = 4
    population: int = 12
    objectives: str = "top1,madds"  # comma-separated, from OBJECTIVES; top1 always first
    max_madds: float = 0
    max_params: float = 0
    max_latency_ms: float = 0
    crossover_prob: float = 0.9
    mutation_prob: float = 0.0  # per gene; 0: 1 / number of layers
    top_k: int = 2  # archs picked from the front for retraining
    seed: int = 0

    def __post_init__(self):
        _check(self.generations >= 1, "search.generations must be >= 1")
        _check(self.population >= 4, "search.population must be >= 4")
        names = self.objective_names
        objectives = allowed("search.objectives")
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
    # a shortcut (pool + 1x1 conv) on the layers that change width or stride, so
    # every layer is residual and weight sharing learns; false: the paper's network
    shortcut: bool = True

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
    # tau is also reported over the archs within this many percentage points of the
    # best stand-alone one: the close archs a user picks among
    close_points: float = 5

    def __post_init__(self):
        _check(self.archs >= 3, "ranking.archs must be >= 3 to correlate rankings")
        _check(self.epochs > 0, "ranking.epochs must be positive")
        _check(self.close_points > 0, f"ranking.close_points={self.close_points}: must be "
               "positive (percentage points below the best stand-alone arch)")


@dataclass
class TrackingConfig:
    uri: str = ""  # MLflow tracking URI; empty: a sqlite store beside the local run's outputs
    experiment: str = "scarlet-nas"
    registered_model: str = "scarlet-nas"  # retrained models are registered under this name
    champion_alias: str = "champion"
    # a run's best model that does not beat the champion (on this run's test split,
    # the champion re-scored there) gets this alias instead (README, "Champion and
    # challenger")
    challenger_alias: str = "challenger"
    # test top-1 (a fraction) a new model with fewer multiply-adds may give up against
    # the champion and still replace it; 0: only a more accurate or equal, smaller one
    max_top1_drop: float = 0.0

    def __post_init__(self):
        scheme = _scheme(self.uri)
        _check(not self.uri or scheme in TRACKING_SCHEMES,
               f"tracking.uri={self.uri!r}: use an http(s):// MLflow server (or one of "
               f"{', '.join(TRACKING_SCHEMES)}), or leave it empty for a local sqlite store")
        _check(bool(self.experiment.strip()), "tracking.experiment is empty: name the MLflow "
               "experiment, e.g. scarlet-nas")
        _check(bool(self.registered_model.strip()) and not set("/:%") & set(
            self.registered_model), f"tracking.registered_model={self.registered_model!r}: "
            "name the registered model without '/', ':' or '%', e.g. scarlet-nas")
        for name in ("champion_alias", "challenger_alias"):
            alias = getattr(self, name)
            _check(bool(re.fullmatch(r"[A-Za-z_][A-Za-z0-9_\-]*", alias))
                   and not re.fullmatch(r"latest|v\d+", alias, re.I),
                   f"tracking.{name}={alias!r}: an MLflow alias starts with a letter or '_', "
                   "holds letters, digits, '_' and '-', and is not latest or v<N>")
        _check(self.challenger_alias != self.champion_alias, "tracking.challenger_alias must "
               f"differ from tracking.champion_alias ({self.champion_alias!r})")
        _check(0 <= self.max_top1_drop < 1, f"tracking.max_top1_drop={self.max_top1_drop}: "
               "use a fraction of test top-1 in [0, 1), e.g. 0.005 (0: never trade accuracy "
               "for size)")


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
    # CPU and memory of the steps without GPUs (start_run, prepare_data, evaluate, summarize,
    # finish_run), requested and limited alike: Guaranteed QoS, counted by a namespace quota,
    # and evaluate measures latency on cores of its own
    step_cpu: str = "2"
    step_memory: str = "8Gi"
    # retrains (each with its evaluation) running at once; 0: every selected arch at once
    retrain_parallelism: int = 0
    # Secret with AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and AWS_ENDPOINT_URL
    s3_secret: str = "scarlet-nas-s3"
    # Secret with MLFLOW_TRACKING_USERNAME/PASSWORD (the manifests' MLflow requires a login):
    # the pipeline's own account, not the admin's (`scarlet-nas mlflow-user` makes it);
    # empty: a tracking server without authentication
    mlflow_secret: str = "scarlet-nas-mlflow-pipeline"
    retries: int = 3  # for train_supernet and search, which resume from checkpoints
    # training processes per pod (train_supernet, retrain): 0 = one per visible GPU (1 without)
    processes: int = 0
    # > 1: train_supernet and the search run as Kubeflow Trainer TrainJobs on this many
    # nodes, each with the resources above (cluster runs; needs Kubeflow Trainer and an
    # s3:// checkpoint_root)
    nodes: int = 1
    retrain_nodes: int = 1  # the same for each retrain
    trainer_runtime: str = "torch-distributed"  # the ClusterTrainingRuntime the TrainJobs use
    pending_timeout: int = 3600  # seconds a TrainJob may wait for nodes before it fails
    # seconds a TrainJob may run once started (7 days); then it is stopped and the step fails
    trainjob_deadline: int = 604800
    # Kueue LocalQueue that admits the TrainJobs (label kueue.x-k8s.io/queue-name); "": none
    queue: str = ""
    # the API token the step that starts a TrainJob (and no other) mounts
    # (manifests/base/trainjob-launcher.yaml)
    launcher_token_secret: str = "scarlet-nas-trainjob-launcher-token"
    # the account a TrainJob's nodes run as: the pipeline's (S3 through IRSA on AWS)
    service_account: str = "scarlet-nas-runner"

    def __post_init__(self):
        _check(0 <= self.gpus <= 16, f"resources.gpus={self.gpus}: KFP accepts 0..16 "
               "accelerators per task (0 runs the GPU steps on CPU)")
        _check(self.gpus == 0 or bool(EXTENDED_RESOURCE.fullmatch(self.gpu_type)),
               f"resources.gpu_type={self.gpu_type!r} is not a Kubernetes extended resource "
               "name: use e.g. nvidia.com/gpu or amd.com/gpu")
        for name in ("cpu_limit", "memory_limit", "shm_size", "step_cpu", "step_memory"):
            value = getattr(self, name)
            _check(bool(QUANTITY.fullmatch(value)) and float(re.match(r"[\d.]+", value)[0]) > 0,
                   f"resources.{name}={value!r} is not a positive Kubernetes quantity: use "
                   "e.g. 8, 500m (CPU) or 32G, 4Gi (memory)")
        for name in ("cpu_limit", "step_cpu"):  # the forms KFP's compiler takes
            _check(bool(re.fullmatch(r"(\d*\.)?\d+m?", getattr(self, name))),
                   f"resources.{name}={getattr(self, name)!r}: write CPUs as KFP takes them, "
                   "e.g. 2, 0.5 or 500m")
        for name in ("memory_limit", "step_memory"):
            _check(bool(re.fullmatch(r"\d+([EPTGMK]i?)?", getattr(self, name))),
                   f"resources.{name}={getattr(self, name)!r}: write memory as KFP takes it, "
                   "a whole number with an optional unit, e.g. 8Gi or 8G")
        _check(self.retrain_parallelism >= 0, "resources.retrain_parallelism must be >= 0 (0: "
               "every selected arch at once)")
        _check(self.retries >= 0, "resources.retries must be >= 0")
        _check(self.processes >= 0, "resources.processes must be >= 0 (0: one per visible GPU)")
        for name in ("nodes", "retrain_nodes"):
            _check(1 <= getattr(self, name) <= 1000, f"resources.{name}={getattr(self, name)}: "
                   "use 1 (one pod) or the number of nodes of a Kubeflow Trainer TrainJob")
        _check(bool(re.fullmatch(_DNS, self.trainer_runtime)) and len(self.trainer_runtime) <= 253,
               f"resources.trainer_runtime={self.trainer_runtime!r} is not a Kubernetes name: "
               "use a ClusterTrainingRuntime such as torch-distributed")
        _check(self.pending_timeout > 0, "resources.pending_timeout must be > 0 seconds")
        _check(self.trainjob_deadline > 0, "resources.trainjob_deadline must be > 0 seconds")
        # a label value that Kueue also takes as a LocalQueue name (a DNS subdomain)
        _check(not self.queue or bool(LABEL_VALUE.fullmatch(self.queue)
                                      and re.fullmatch(_DNS, self.queue)),
               f"resources.queue={self.queue!r} is not a Kueue LocalQueue name usable as a "
               "label value: use at most 63 lower-case letters, digits, '-' and '.', starting "
               "and ending with a letter or digit")
        if self.node_selector:
            key, _, value = self.node_selector.partition("=")
            _check("=" in self.node_selector and "=" not in value
                   and bool(QUALIFIED_NAME.fullmatch(key)) and bool(LABEL_VALUE.fullmatch(value)),
                   f"resources.node_selector={self.node_selector!r}: use label=value with a "
                   "Kubernetes label key and value, e.g. nvidia.com/gpu.product=NVIDIA-H100")
        if self.toleration:
            kv, _, effect = self.toleration.rpartition(":")
            key, _, value = kv.partition("=")
            _check(effect in TAINT_EFFECTS and bool(QUALIFIED_NAME.fullmatch(key))
                   and bool(LABEL_VALUE.fullmatch(value)),
                   f"resources.toleration={self.toleration!r}: use key=value:Effect or "
                   f"key:Effect, with Effect one of {', '.join(TAINT_EFFECTS)}")
        for name, kind in (("s3_secret", "Secret"), ("mlflow_secret", "Secret"),
                           ("launcher_token_secret", "Secret"),
                           ("service_account", "ServiceAccount")):
            value = getattr(self, name)
            _check(not value or bool(re.fullmatch(_DNS, value)) and len(value) <= 253,
                   f"resources.{name}={value!r} is not a Kubernetes {kind} name: use lower-case "
                   "letters, digits, '-' and '.'")


@dataclass
class PipelineConfig:
    """Everything a pipeline run needs.

    Each section's defaults are its dataclass's: the local run, on a laptop in
    minutes. Larger runs start from a named config (``NAMED_CONFIGS``).
    """

    data: DataConfig = field(default_factory=DataConfig)
    space: SpaceConfig = field(default_factory=SpaceConfig)
    supernet: SupernetConfig = field(default_factory=SupernetConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    ranking: RankingConfig = field(default_factory=RankingConfig)
    retrain: RetrainConfig = field(default_factory=RetrainConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    resources: ResourcesConfig = field(default_factory=ResourcesConfig)
    checkpoint_root: str = ""  # s3://bucket/prefix in a cluster; resumable state goes here
    # use the supernet, search and retrained models an earlier run made from the same
    # data, space, settings and code (stored under checkpoint_root/reuse); false: make
    # them all afresh
    reuse: bool = True

    def __post_init__(self):
        _location("checkpoint_root", self.checkpoint_root)


# pipeline parameters that stand for a config key, so a run started from the KFP UI
# can change them without editing the config's JSON: in a run the parameter wins,
# and the config's value is only the parameter's compiled default
RUN_PARAMETERS = {"tracking_uri": "tracking.uri", "checkpoint_root": "checkpoint_root",
                  "run_ranking": "ranking.enabled"}


def with_run_parameters(cfg: PipelineConfig, **values) -> PipelineConfig:
    """``cfg`` as a pipeline run's steps use it: the run's parameters in place of the
    keys they stand for (RUN_PARAMETERS), validated as any setting is."""
    data: dict = {}
    for name, value in values.items():
        _set_path(data, RUN_PARAMETERS[name], value)
    return from_dict(PipelineConfig, data, base=cfg)


def _set_path(data: dict, dotted: str, value) -> None:
    keys = dotted.split(".")
    node = data
    for k in keys[:-1]:
        node = node.setdefault(k, {})
        if not isinstance(node, dict):
            raise ConfigError(f"--set {dotted}: {k} is not a section")
    node[keys[-1]] = value


def _unique_key_loader():
    """yaml.SafeLoader that refuses a key given twice in one mapping (PyYAML
    would keep the last silently, so a setting could change without a word)."""
    import yaml

    class UniqueKeyLoader(yaml.SafeLoader):
        def construct_mapping(self, node, deep=False):
            seen = set()
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=deep)
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"key {key!r} is given twice", key_node.start_mark)
                seen.add(key)
            return super().construct_mapping(node, deep)

    return UniqueKeyLoader


def yaml_problem(err) -> str:
    """PyYAML's multi-line error as one line: what is wrong, and where."""
    mark = getattr(err, "problem_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
    return f"{getattr(err, 'problem', None) or err}{where}"


def read_yaml(path: str):
    """A YAML file's contents, with an error naming the file for anything unreadable."""
    import yaml

    try:
        with open(path) as f:
            return yaml.load(f, Loader=_unique_key_loader())  # noqa: S506 (a SafeLoader)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} not found") from None
    except IsADirectoryError:
        raise ConfigError(f"config file {path} is a directory: pass a YAML file") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"config file {path} cannot be read: {err}") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"config file {path} is not valid YAML: {yaml_problem(err)}") from None


# configs shipped in the package, picked by name wherever a config file is taken
CONFIG_DIR = Path(__file__).parent / "configs"


def named_configs() -> list[str]:
    """The names of the shipped configs (``--config imagenet``)."""
    return sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))


def config_mapping(name_or_path: str, _seen: tuple[str, ...] = ()) -> dict:
    """The settings a config file (or a shipped config's name) holds, with the
    config its ``base`` key names merged beneath them, key by key."""
    named = name_or_path in named_configs()
    path = CONFIG_DIR / f"{name_or_path}.yaml" if named else Path(name_or_path)
    if not named and not path.exists() and "/" not in name_or_path \
            and not path.suffix:
        raise ConfigError(f"--config {name_or_path}: no such file, and no shipped config of "
                          f"that name; shipped: {', '.join(named_configs())}")
    data = read_yaml(str(path)) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of sections")
    base = data.pop("base", None)
    if base is None:
        return data
    _check(isinstance(base, str) and bool(base), f"config file {path}: base must name a "
           f"shipped config ({', '.join(named_configs())}) or another YAML file")
    if base not in named_configs() and not Path(base).is_absolute():
        base = str(path.parent / base)  # a file beside this one
    _check(str(path) not in _seen, f"config file {path}: its base chain comes back to it")
    return _merged(config_mapping(base, (*_seen, str(path))), data)


def _merged(under: dict, over: dict) -> dict:
    out = dict(under)
    for key, value in over.items():
        both = isinstance(value, dict) and isinstance(out.get(key), dict)
        out[key] = _merged(out[key], value) if both else value
    return out


def load_pipeline_config(path: str | None = None, overrides: typing.Sequence[str] = ()
                         ) -> PipelineConfig:
    """A config (a YAML file or a shipped config's name; optional) plus
    ``key.sub=value`` overrides, validated."""
    import yaml

    data = config_mapping(path) if path else {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: use key.sub=value, e.g. search.generations=10")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError as err:
            raise ConfigError(f"--set {item!r}: the value is not valid YAML "
                              f"({yaml_problem(err)})") from None
        _set_path(data, key.strip(), value)
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
        number = None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            number = float(value)
        elif isinstance(value, str):  # YAML 1.1 reads 3e8 (no dot) as a string
            try:
                number = float(value)
            except ValueError:
                pass
        if number is None:
            raise ConfigError(f"{path} must be a number, got {value!r}")
        if not math.isfinite(number):
            raise ConfigError(f"{path}={value!r}: must be a finite number")
        return number
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, bool) and path in ON_OFF_WORDS:
            return "on" if value else "off"
        raise ConfigError(f"{path} must be a string, got {value!r}")
    return value


def to_dict(cfg) -> dict:
    return dataclasses.asdict(cfg)
