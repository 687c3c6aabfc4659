"""Deterministic preconditions, checked before any step starts.

A run that cannot succeed (a budget no arch meets, a space that cannot be
built) fails at compile or submit time with the reason, instead of after the
supernet has trained. And a step that fails for a reason a retry cannot
change records it beside its checkpoint, so KFP's retries of that step end
at once instead of doing the work again.
"""

from __future__ import annotations

import json
import math
import os
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from . import layout, storage
from .budget import budgets
from .config import ConfigError, PipelineConfig
from .data import KNOWN_CLASSES
from .manifest import space_for
from .sampling import check_budget
from .shards import DATASETS, default_root

# errors that come back unchanged on a retry with the same inputs (bad config or
# data, an impossible budget, a bug); network, storage and device errors may not
DETERMINISTIC = (ValueError, TypeError, LookupError, ArithmeticError, AssertionError)
# the same, by name, for an error raised in a training process or on a TrainJob node
DETERMINISTIC_NAMES = {"ValueError", "TypeError", "KeyError", "IndexError", "ZeroDivisionError",
                       "AssertionError", "ConfigError", "DataError", "ArchError",
                       "CheckpointError"}


def deterministic(err: BaseException) -> bool:
    """Whether a retry would fail the same way. A training process's or TrainJob
    node's error (launch.WorkerError, trainjob.TrainJobError) carries its class name
    as ``kind``."""
    kind = getattr(err, "kind", None)
    if isinstance(kind, str):
        return kind in DETERMINISTIC_NAMES
    return isinstance(err, DETERMINISTIC)


def check(cfg: PipelineConfig) -> None:
    """Fail now if ``cfg`` cannot succeed. An image folder's class count is
    known only once it is read, so its budgets are checked at two classes,
    the cheapest a classifier can be (the search checks again on the data)."""
    _check_nodes(cfg)
    space = space_for(cfg, KNOWN_CLASSES.get(cfg.data.dataset, 2))
    check_geometry(space, cfg.space.preset)
    limits = budgets(cfg.search)
    try:
        check_budget(space, limits.get("madds"), limits.get("params"))
    except ValueError as err:
        raise ConfigError(f"search: {err} (space {cfg.space.preset}, width "
                          f"{cfg.space.width_mult}, {cfg.data.size}px)") from None


def check_cluster(cfg: PipelineConfig) -> None:
    """What a run on a cluster needs beyond ``check``: its steps run in pods that share
    nothing but S3, so the shards prepare_data writes must be there."""
    if cfg.data.dataset in DATASETS and not storage.is_s3(
            default_root(cfg.data, cfg.checkpoint_root)):
        raise ConfigError(f"data.dataset={cfg.data.dataset} on a cluster: every step reads "
                          "the shards "
                          "prepare_data writes, each from its own pod; set data.shard_root (or "
                          "checkpoint_root) to an s3://bucket/prefix location")


def _check_nodes(cfg: PipelineConfig) -> None:
    """A TrainJob's nodes share nothing with the step that starts it but S3."""
    res = cfg.resources
    key, nodes = max((("resources.nodes", res.nodes), ("resources.retrain_nodes",
                                                       res.retrain_nodes)), key=lambda kv: kv[1])
    if nodes == 1:
        return
    if not storage.is_s3(cfg.checkpoint_root):
        raise ConfigError(f"{key}={nodes}: the nodes of a TrainJob exchange the work, "
                          "checkpoints and results through checkpoint_root; set it to an "
                          "s3://bucket/prefix location")
    root = default_root(cfg.data, cfg.checkpoint_root)
    if cfg.data.dataset in DATASETS and not storage.is_s3(root):  # the nodes read the shards
        raise ConfigError(f"{key}={nodes}: data.shard_root={root!r} is a folder of one "
                          "pod, which the nodes cannot read; set it to an "
                          "s3://bucket/prefix location (or leave it empty: beside the "
                          "checkpoints)")


@contextmanager
def final_failure(state_dir: str, step: str) -> Iterator[None]:
    """Run a retried step so that a deterministic failure is final: recorded in
    ``state_dir`` and raised again by every retry, before it does any work."""
    if not state_dir:
        yield
        return
    record = storage.join(state_dir, layout.FAILED)
    if storage.exists(record):
        error = json.loads(storage.read_bytes(record))["error"]
        raise ConfigError(f"{step} already failed with an error a retry cannot change, so it "
                          f"is not run again: {error} (fix the cause and start a new run, or "
                          f"delete {record} to retry this one)")
    try:
        yield
    except Exception as err:
        if deterministic(err):
            storage.write_bytes(record, json.dumps({"step": step, "error": f"{err}",
                                                    "type": type(err).__name__}).encode())
        raise


# ---- the space fits the input ----------------------------------------------------------
def smallest_input(space) -> int:
    """The smallest input side the space can read: every stride-2 step (the stem's
    and the layers') halves the feature map, and the last must keep a pixel."""
    return 2 ** _halvings(space)


def _halvings(space) -> int:
    return (space.stem_stride == 2) + sum(s == 2 for s in space.layer_strides)


def check_geometry(space, preset: str = "") -> None:
    """Refuse an input too small for the space's reductions (a feature map of less
    than a pixel), naming the smallest input size that works."""
    need = smallest_input(space)
    if space.input_size >= need:
        return
    halvings = _halvings(space)
    where = ("the stem and " if space.stem_stride == 2 else "") + \
        f"{sum(s == 2 for s in space.layer_strides)} stride-2 layers"
    side = space.input_size / 2 ** halvings
    raise ConfigError(f"space.preset={preset or 'custom'} halves the input {halvings} times "
                      f"({where}): data.input_size={space.input_size} leaves a {side:g} px "
                      f"feature map; use data.input_size={need} or more, or space.preset=compact "
                      "for small images")


# ---- the image every step runs on -----------------------------------------------------------
# the OCI / Docker reference grammar (github.com/distribution/reference, regexp.go)
_ALNUM = r"[a-z0-9]+"
_PATH_COMPONENT = rf"{_ALNUM}(?:(?:[._]|__|-+){_ALNUM})*"
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_HOST = rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[a-fA-F0-9:]+\])"
_NAME = rf"(?:(?P<domain>{_HOST}(?::[0-9]+)?)/)?{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*"
_TAG = r"[\w][\w.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"
IMAGE_REFERENCE = re.compile(rf"(?P<name>{_NAME})(?::{_TAG})?(?:@{_DIGEST})?")


def check_image(ref: str) -> None:
    """Refuse a container image reference Kubernetes could not pull by (checked when
    the pipeline is compiled, not when its first pod starts)."""
    m = IMAGE_REFERENCE.fullmatch(ref)
    # a first part without '.', ':' or 'localhost' is a path, not a registry: lower case
    domain = m and m["domain"]
    if m and domain and not ("." in domain or ":" in domain or domain == "localhost") \
            and domain != domain.lower():
        m = None
    if not m or len(m["name"]) > 255:
        raise ConfigError(f"--image {ref!r} is not a container image reference: use "
                          "[REGISTRY/]NAME[:TAG][@sha256:DIGEST] with a lower-case name, e.g. "
                          "registry.example.com/team/scarlet-nas:0.1.0")


# ---- an image folder, before the run -------------------------------------------------------
SAMPLE = 64  # images opened to check they decode and to measure them


@dataclass
class ImageFolder:
    """What an image folder holds, from its listing and a sample of its images."""

    source: str
    classes: dict[str, int]  # class -> training images
    val_images: int
    sides: list[int] = field(default_factory=list)  # the shorter side of each sampled image

    @property
    def train_images(self) -> int:
        return sum(self.classes.values())

    def describe(self) -> str:
        names = ", ".join(list(self.classes)[:5]) + (", ..." if len(self.classes) > 5 else "")
        return (f"{self.source}: {len(self.classes)} classes ({names}), {self.train_images:,} "
                f"training and {self.val_images:,} test images")


def _image_problem(data: bytes) -> tuple[int, str]:
    """(shorter side, '') of an image Pillow decodes, or (0, why not)."""
    import io

    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as img:
            side = min(img.size)
            img.draft("RGB", (max(1, img.size[0] // 8), max(1, img.size[1] // 8)))
            img.load()
        return side, ""
    except UnidentifiedImageError:
        return 0, "not an image Pillow can read"
    except Exception as err:  # noqa: BLE001 - Pillow raises many kinds; each is the answer
        return 0, str(err).split("\n")[0][:80] or type(err).__name__


def check_image_folder(cfg: PipelineConfig, sample: int = SAMPLE) -> ImageFolder:
    """Fail now, naming the problem and the fix, if an image folder cannot make a run:
    it must exist, hold train/ with at least 2 class folders of images (each with
    enough for the validation split carved from it, together at least a batch) and
    val/ (the test split), and a sample of its images must decode."""
    from .shards import IMAGE_SUFFIXES, class_folders, source_folders

    data = cfg.data
    where = data.source.rstrip("/")
    layout = ("an image folder holds train/<class>/<images> and val/<class>/<images> "
              "(.jpg, .png, ...), one folder per class")
    if not storage.is_s3(where) and not os.path.isdir(where):
        raise ConfigError(f"{where}: no such folder; {layout}")
    listing = storage.list_objects(where)
    if not listing:
        raise ConfigError(f"{where} is empty; {layout}")
    found, _ = class_folders(listing, source_folders(where))  # as prepare_data will see it
    has_train = (os.path.isdir(os.path.join(where, "train")) if not storage.is_s3(where)
                 else any(e.key.startswith("train/") for e in listing))
    if not has_train:
        raise ConfigError(f"{where} has no train/ folder; {layout}")
    classes = {c: files for c, files in sorted(found["train"].items())}
    if len(classes) < 2:
        names = f" ({', '.join(classes)})" if classes else ""
        raise ConfigError(f"{where}/train has {len(classes)} class folder{names}: an image "
                          "folder needs at least 2 classes, one folder of images each "
                          "(train/<class>/...)")
    empty = [c for c, files in classes.items() if not files]
    if empty and data.bad_images == "fail":
        raise ConfigError(f"{where}/train: class folder(s) {empty[:10]} hold no images "
                          f"({', '.join(IMAGE_SUFFIXES)}): add images or remove the folder(s)")
    classes = {c: files for c, files in classes.items() if files}
    if len(classes) < 2:
        raise ConfigError(f"{where}/train has images in {len(classes)} class folder: an image "
                          "folder needs at least 2 classes")
    need = math.ceil(1 / data.val_fraction)
    few = {c: len(files) for c, files in classes.items() if len(files) < need}
    if few:
        named = ", ".join(f"{c} ({n})" for c, n in list(few.items())[:5])
        raise ConfigError(f"{where}/train: class folder(s) with fewer than {need} images: "
                          f"{named}; data.val_fraction={data.val_fraction:g} of each class's "
                          f"images are held out for validation, so each needs at least {need}: "
                          "add images (or raise data.val_fraction)")
    test = sum(len(files) for files in found["val"].values())
    if not test:
        raise ConfigError(f"{where}/val: {'no images' if found['val'] else 'missing'}; its "
                          f"images are the test split: {layout}")
    total = sum(len(files) for files in classes.values())
    train = total - max(1, round(data.val_fraction * total))
    for key, batch in (("supernet.optim.batch_size", cfg.supernet.optim.batch_size),
                       ("retrain.optim.batch_size", cfg.retrain.optim.batch_size)):
        if train < batch:
            raise ConfigError(f"{where}/train: {total} images leave {train} to train on after "
                              f"the validation split, fewer than one batch of {batch} "
                              f"({key}): add images or lower it, e.g. --set {key}="
                              f"{max(2, 2 ** int(math.log2(max(2, train // 2))))}")
    folder = ImageFolder(where, {c: len(files) for c, files in classes.items()}, test)
    picked = _spread([files for files in classes.values()], sample)
    bad = []
    for e in picked:
        side, why = _image_problem(storage.read_bytes(e.uri))
        if why:
            bad.append(f"train/{e.key.split('/', 1)[1]} ({why})")
        else:
            folder.sides.append(side)
    if bad and data.bad_images == "fail":
        raise ConfigError(f"{len(bad)} of {len(picked)} sampled images in {where} cannot be "
                          f"decoded: {'; '.join(bad[:3])}{' ...' if len(bad) > 3 else ''}; "
                          "replace or remove them, or set data.bad_images=skip to leave them out")
    return folder


def _spread(groups: list[list], n: int) -> list:
    """About ``n`` items taken evenly from every group (each in order)."""
    each = max(1, math.ceil(n / max(1, len(groups))))
    out = []
    for items in groups:
        step = max(1, len(items) // each)
        out += items[::step][:each]
    return out


def input_size_for(folder: ImageFolder, low: int = 8, high: int = 224) -> int:
    """An input size for the folder's images: the median shorter side of the sampled
    training images, rounded to a multiple of 8, within [low, high] (no sample: the
    default size of folders)."""
    from .config import DEFAULT_SIZE

    if not folder.sides:
        return DEFAULT_SIZE
    sides = sorted(folder.sides)
    median = sides[len(sides) // 2]
    return int(min(high, max(low, 8 * round(median / 8))))


# ---- a step's own error, for the one who started it ------------------------------------------
ERROR_FILE = "SCARLETNAS_ERROR_FILE"  # set by a local run for each step it starts
BAD_INPUT = (ValueError, storage.StorageError)  # bad config, data, files or places


def bad_input(err: BaseException) -> bool:
    """Whether an error is bad input a user fixes (its message says how), not a bug."""
    kind = getattr(err, "kind", None)
    if isinstance(kind, str) and kind:
        return kind in DETERMINISTIC_NAMES - {"TypeError", "KeyError", "IndexError",
                                              "ZeroDivisionError", "AssertionError"}
    return isinstance(err, BAD_INPUT)


def record_errors() -> None:
    """Write this process's uncaught error, as JSON, where ``$SCARLETNAS_ERROR_FILE``
    says (a local run sets it for each step, to report the step's own error)."""
    path = os.environ.get(ERROR_FILE)
    if not path or getattr(sys.excepthook, "records_errors", False):
        return
    previous = sys.excepthook

    def hook(kind, err, tb):
        try:
            with open(path, "w") as f:
                json.dump({"type": getattr(err, "kind", None) or kind.__name__,
                           "message": str(err), "bad_input": bad_input(err)}, f)
        except OSError:
            pass
        previous(kind, err, tb)

    hook.records_errors = True
    sys.excepthook = hook
