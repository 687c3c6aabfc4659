"""Datasets, splits and batch iterators.

- ``digits``: scikit-learn's bundled 8x8 digits (real data, no download).
- ``cifar10``: the CIFAR-10 python batches (data_batch_1..5, test_batch) from
  a folder or an s3:// prefix, prepared once into PNG shards, held in memory.
- ``imagefolder``: ``train/<class>/*.jpg`` and ``val/<class>/*.jpg`` (or .png,
  .webp, ...: stored as JPEG in the shards), local or
  under an s3:// prefix, prepared once into shards that every step streams
  (``shards``).

The search's validation split is carved from the training set, seeded; the
test split (digits: held out; the others: their own test/val set) is only for
final evaluation.

Batch order is a pure function of (seed, epoch): ``Batches.epoch(e, start)``
replays epoch ``e`` from batch ``start``, and every random augmentation is
seeded by (seed, epoch, batch or sample). A resumed run sees exactly the
batches the interrupted one would have, whatever the worker count.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import pickle
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch.nn import functional as F

from . import storage
from .config import DataConfig

if TYPE_CHECKING:
    from .shards import ShardSet

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".JPG", ".JPEG")


class DataError(ValueError):
    """Missing, empty or corrupt data; the message names the file or prefix."""


def seed_for(*parts: int) -> int:
    """A 63-bit seed mixed from integers (stable across runs and platforms)."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(2, np.uint64)[0]
               >> np.uint64(1))


# ---- in-memory sets (digits, CIFAR) -----------------------------------------------
@dataclass
class TensorSet:
    images: torch.Tensor  # uint8 (N, C, H, W) at the input size
    labels: torch.Tensor  # int64 (N,)

    def __len__(self) -> int:
        return len(self.labels)


@dataclass(frozen=True)
class Loading:
    """How batches of these splits are read: every ``Batches`` over them uses it,
    so ``data.workers`` and friends reach training, retraining and evaluation alike."""

    workers: int = 0  # loader processes (image folders)
    gpu_decode: bool = False  # image folders: decode JPEGs batched on the device
    eval_batch_size: int = 256  # batches that only run inference
    shuffle_shards: int = 4  # image folders: shards a training pass mixes at a time

    @classmethod
    def of(cls, cfg: DataConfig) -> Loading:
        return cls(cfg.workers, cfg.gpu_decode, cfg.eval_batch_size, cfg.shuffle_shards)


@dataclass
class Splits:
    train: TensorSet | ShardSet
    val: TensorSet | ShardSet
    test: TensorSet | ShardSet
    num_classes: int
    input_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    flip: bool  # training flips images horizontally: only where a mirror image keeps its class
    name: str = ""
    loading: Loading = field(default_factory=Loading)

    def describe(self) -> dict:
        return {"dataset": self.name, "num_classes": self.num_classes,
                "input_size": self.input_size, "train": len(self.train), "val": len(self.val),
                "test": len(self.test), "flip": "on" if self.flip else "off"}

    def digest(self) -> str:
        """A fingerprint of the splits' content: pixels and labels of in-memory sets;
        class folder, file name and label of image folders (where their shards are
        does not count)."""
        h = hashlib.sha256()
        for part in (self.train, self.val, self.test):
            if isinstance(part, TensorSet):
                h.update(part.images.contiguous().numpy().tobytes())
            else:
                h.update(part.names_blob)
            h.update(part.labels.numpy().tobytes())
        return h.hexdigest()[:16]


def _stratified_split(labels: np.ndarray, fraction: float, seed: int):
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(labels))
    keep, held = train_test_split(idx, test_size=fraction, random_state=seed, stratify=labels)
    return np.sort(keep), np.sort(held)


def _resize(images: torch.Tensor, size: int) -> torch.Tensor:
    if images.shape[-1] == size:
        return images
    out = F.interpolate(images.float(), size=(size, size), mode="bilinear", antialias=True,
                        align_corners=False)
    return out.round().clamp(0, 255).to(torch.uint8)


def _channel_stats(images: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std (in [0, 1]) of a uint8 training split, for normalising."""
    pixels = images.float().div(255)
    return (tuple(pixels.mean((0, 2, 3)).tolist()),
            tuple(pixels.std((0, 2, 3)).clamp_min(1e-3).tolist()))


def split_train(train_x, train_y, test_x, test_y, cfg: DataConfig) -> dict:
    """split -> (images, labels): the validation split carved from train, stratified."""
    keep, val = _stratified_split(train_y, cfg.val_fraction, cfg.seed)
    return {"train": (train_x[keep], train_y[keep]), "val": (train_x[val], train_y[val]),
            "test": (test_x, test_y)}


def tensor_splits(name: str, parts: dict, cfg: DataConfig, num_classes: int) -> Splits:
    """In-memory splits from uint8 (N, C, H, W) arrays, at the input size, normalised
    by the training split's channel statistics."""
    sets = {p: TensorSet(_resize(torch.from_numpy(np.ascontiguousarray(x)), cfg.size),
                         torch.from_numpy(np.asarray(y, np.int64))) for p, (x, y) in parts.items()}
    mean, std = _channel_stats(sets["train"].images)
    return Splits(sets["train"], sets["val"], sets["test"], num_classes, cfg.size, mean,
                  std, cfg.flips, name)


def _tensor_splits(name, train_x, train_y, test_x, test_y, cfg: DataConfig,
                   num_classes) -> Splits:
    return tensor_splits(name, split_train(train_x, train_y, test_x, test_y, cfg), cfg,
                         num_classes)


def load_digits(cfg: DataConfig) -> Splits:
    """scikit-learn's digits: 1,797 8x8 images (0-16), grey replicated to 3 channels."""
    from sklearn.datasets import load_digits as sk_digits

    d = sk_digits()
    images = (d.images * (255.0 / 16.0)).round().astype(np.uint8)[:, None].repeat(3, axis=1)
    labels = d.target.astype(np.int64)
    rest, test = _stratified_split(labels, cfg.test_fraction, cfg.seed + 1)
    return _tensor_splits("digits", images[rest], labels[rest], images[test], labels[test], cfg,
                          10)


DISTORTED_COPIES = 4  # distorted versions of every digits image, per split


def distort(images: torch.Tensor, copies: int, seed: int) -> torch.Tensor:
    """``copies`` seeded random distortions of each uint8 image: a random affine
    warp (rotation up to 30 degrees, scale 0.8-1.2, shift up to 15%), a dark
    occluding square of a third of the side, and pixel noise."""
    gen = torch.Generator().manual_seed(seed)
    x = images.float().repeat(copies, 1, 1, 1)
    n, _, h, w = x.shape
    angle = (torch.rand(n, generator=gen) * 2 - 1) * (torch.pi / 6)
    scale = 0.8 + 0.4 * torch.rand(n, generator=gen)
    shift = (torch.rand(n, 2, generator=gen) * 2 - 1) * 0.3  # grid units: 2 = the image
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1),
                         torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    side = max(1, h // 3)
    oy = torch.randint(0, h - side + 1, (n,), generator=gen)
    ox = torch.randint(0, w - side + 1, (n,), generator=gen)
    rows = torch.arange(h)[None, :, None]
    cols = torch.arange(w)[None, None, :]
    mask = ((rows >= oy[:, None, None]) & (rows < oy[:, None, None] + side)
            & (cols >= ox[:, None, None]) & (cols < ox[:, None, None] + side))
    x = x.masked_fill(mask[:, None], 0.0)
    x = x + torch.randn((n, 1, h, w), generator=gen) * 40.0  # grey noise, as the digits
    return x.round().clamp(0, 255).to(torch.uint8)


def load_distorted_digits(cfg: DataConfig) -> Splits:
    """A harder proxy made from the bundled digits, no download: the digits
    splits (split first, so no source image crosses splits), each image
    replaced by ``DISTORTED_COPIES`` seeded random distortions. Stand-alone
    accuracies spread across archs far beyond seed noise, which plain digits
    (96-99% for every arch) cannot show (docs/reproduction.md)."""
    base = load_digits(cfg)

    def hard(part: TensorSet, salt: int) -> TensorSet:
        return TensorSet(distort(part.images, DISTORTED_COPIES, seed_for(cfg.seed, salt)),
                         part.labels.repeat(DISTORTED_COPIES))

    train, val, test = hard(base.train, 1), hard(base.val, 2), hard(base.test, 3)
    mean, std = _channel_stats(train.images)
    return Splits(train, val, test, 10, cfg.size, mean, std, cfg.flips, "distorted-digits")


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles plain containers and numpy arrays only: a dataset file from a
    user or a bucket must not be able to run code."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"),
               ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype"),
               ("_codecs", "encode")}  # protocol-2 pickles of arrays store bytes this way

    def find_class(self, module, name):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def _read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        with path.open("rb") as f:
            d = _ArrayUnpickler(f, encoding="bytes").load()
        data = np.asarray(d[b"data"], dtype=np.uint8)
        labels = np.asarray(d[b"labels"], dtype=np.int64)
    except FileNotFoundError:
        raise DataError(f"{path}: missing; a CIFAR-10 folder holds data_batch_1..5 and "
                        "test_batch (the python version)") from None
    except (pickle.UnpicklingError, EOFError, KeyError, TypeError, ValueError) as err:
        raise DataError(f"{path}: not a CIFAR-10 python batch ({err}); expected a pickled "
                        "dict with b'data' (N x 3072 uint8) and b'labels'") from None
    if data.ndim != 2 or data.shape[1] != 3072 or len(data) != len(labels) or len(data) == 0:
        raise DataError(f"{path}: b'data' has shape {data.shape} for {len(labels)} labels; "
                        "expected N x 3072 with N labels, N > 0")
    return data.reshape(-1, 3, 32, 32), labels


def _local_source(cfg: DataConfig) -> Path:
    cache = cfg.cache_dir or Path(tempfile.gettempdir(), "scarletnas-data")
    try:
        root = storage.sync_to_local(cfg.source, cache)
    except storage.StorageError as err:
        raise DataError(f"cannot read dataset source: {err}") from err
    if not root.is_dir():
        raise DataError(f"{cfg.source}: no such folder")
    return root


def read_cifar10(cfg: DataConfig) -> dict:
    """The CIFAR-10 python batches at ``data.source``, split (see ``split_train``)."""
    root = _local_source(cfg)
    parts = [_read_cifar_batch(root / f"data_batch_{i}") for i in range(1, 6)]
    train_x = np.concatenate([p[0] for p in parts])
    train_y = np.concatenate([p[1] for p in parts])
    test_x, test_y = _read_cifar_batch(root / "test_batch")
    if train_y.min() < 0 or max(train_y.max(), test_y.max()) > 9:
        raise DataError(f"{root}: CIFAR-10 labels must be 0..9")
    return split_train(train_x, train_y, test_x, test_y, cfg)


def load_prepared(cfg: DataConfig) -> Splits:
    """An image folder or CIFAR-10, prepared into shards (or the shards prepared from
    the same source and settings earlier) at ``data.shard_root`` and read from them."""
    from . import shards

    index, _ = shards.prepare(cfg, shards.default_root(cfg))
    return shards.open_index(index, cfg)


def jpeg_problem(err: RuntimeError) -> str:
    """What torchvision's decode_jpeg error says, without its source location."""
    return str(err).rsplit(", ", 1)[-1].strip()


LOADERS = {"digits": load_digits, "distorted-digits": load_distorted_digits,
           "cifar10": load_prepared, "imagefolder": load_prepared}
# classes of the datasets that fix them; an image folder has as many as class folders
KNOWN_CLASSES = {"digits": 10, "distorted-digits": 10, "cifar10": 10}
# what data preparation does with an image that does not decode
BAD_IMAGE_POLICIES = {"fail": "stop, naming every bad file", "skip": "leave them out, reported"}


def load_splits(cfg: DataConfig) -> Splits:
    """The configured dataset's splits, read as ``cfg`` says."""
    return with_loading(LOADERS[cfg.dataset](cfg), cfg)


# data.flip (resolved by DataConfig.flips, which every loader reads)
FLIPS = {"auto": "each data set's rule (config.UNFLIPPED)", "on": "flip",
         "off": "never flip: a mirror image is another class"}


def with_loading(splits: Splits, cfg: DataConfig) -> Splits:
    return dataclasses.replace(splits, loading=Loading.of(cfg))


# ---- augmentation ------------------------------------------------------------------
def random_crop_flip(x: torch.Tensor, gen: torch.Generator, flip: bool) -> torch.Tensor:
    """Batched pad-and-crop (pad = size/8, reflect) and optional horizontal flip."""
    b, _, h, w = x.shape
    pad = max(1, h // 8)
    padded = F.pad(x.float(), (pad, pad, pad, pad), mode="reflect")
    oy = torch.randint(0, 2 * pad + 1, (b,), generator=gen)
    ox = torch.randint(0, 2 * pad + 1, (b,), generator=gen)
    rows = (oy[:, None] + torch.arange(h))[:, None, :, None]
    cols = (ox[:, None] + torch.arange(w))[:, None, None, :]
    channels = torch.arange(x.shape[1])[None, :, None, None]
    out = padded[torch.arange(b)[:, None, None, None], channels, rows, cols]
    if flip:
        mask = torch.rand(b, generator=gen) < 0.5
        out[mask] = out[mask].flip(-1)
    return out.to(x.dtype)


AUGMENTS = ("none", "basic", "randaugment", "autoaugment")  # basic: crop and flip only


def _policy(augment: str):
    """The torchvision policy applied before crop and flip, if any."""
    from torchvision.transforms import v2

    if augment == "randaugment":
        return v2.RandAugment()
    if augment == "autoaugment":
        return v2.AutoAugment(v2.AutoAugmentPolicy.IMAGENET)
    return None


def augment_batch(x: torch.Tensor, augment: str, seed: int, flip: bool) -> torch.Tensor:
    """Augment a uint8 batch deterministically from ``seed``."""
    if augment == "none":
        return x
    gen = torch.Generator().manual_seed(seed)
    policy = _policy(augment)
    if policy is not None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            x = torch.stack([policy(img) for img in x])
    return random_crop_flip(x, gen, flip)


# ---- batch iterators ----------------------------------------------------------------
class Batches:
    """Batches of one split, replayable by (epoch, start batch).

    ``train=True``: shuffled per epoch, augmented, last partial batch
    dropped, sharded over ``world`` ranks. ``train=False``: in order, no
    augmentation, every image once.
    """

    def __init__(self, splits: Splits, which: str, batch_size: int | None = None, *, train: bool,
                 augment: str = "none", seed: int = 0, device: str | torch.device = "cpu",
                 rank: int = 0, world: int = 1, channels_last: bool = False, limit: int = 0):
        """``batch_size`` None: the splits' inference batch size (``data.eval_batch_size``)."""
        if batch_size is None:
            batch_size = splits.loading.eval_batch_size
        self.data = getattr(splits, which)
        self.splits, self.which = splits, which
        self.batch_size, self.train, self.augment, self.seed = batch_size, train, augment, seed
        self.device = torch.device(device)
        self.rank, self.world = rank, world
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.workers, self.gpu_decode = splits.loading.workers, splits.loading.gpu_decode
        n = len(self.data) if not limit else min(limit, len(self.data))
        self.count = n // world if train else n
        if train and not isinstance(self.data, TensorSet):  # every rank reads its own shards
            self.count = min(self.count, self.data.per_rank(world))
        if train and self.count < batch_size:
            raise DataError(f"the {which} split has {self.count} images per process, fewer "
                            f"than one batch of {batch_size}: lower the batch size")
        mean = torch.tensor(splits.mean, device=self.device).view(1, -1, 1, 1)
        std = torch.tensor(splits.std, device=self.device).view(1, -1, 1, 1)
        self._scale = (1.0 / (255.0 * std))
        self._shift = -mean / std

    def __len__(self) -> int:
        full, rest = divmod(self.count, self.batch_size)
        return full if self.train else full + (rest > 0)

    def order(self, epoch: int) -> torch.Tensor:
        if not self.train:
            return torch.arange(self.count)
        if not isinstance(self.data, TensorSet):
            return self.data.train_order(self.seed, epoch, self.rank, self.world,
                                         self.splits.loading.shuffle_shards, self.count)
        gen = torch.Generator().manual_seed(seed_for(self.seed, epoch))
        perm = torch.randperm(len(self.data), generator=gen)
        return perm[self.rank::self.world][: self.count]

    def _finish(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        non_blocking = self.device.type == "cuda"
        x = x.to(self.device, non_blocking=non_blocking).float() * self._scale + self._shift
        return (x.contiguous(memory_format=self.memory_format),
                y.to(self.device, non_blocking=non_blocking))

    def epoch(self, epoch: int = 0, start: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = self.order(epoch)
        if isinstance(self.data, TensorSet):
            yield from self._tensor_epoch(order, epoch, start)
        else:
            yield from self._shard_epoch(order, epoch, start)

    def __iter__(self):
        return self.epoch(0)

    def _tensor_epoch(self, order, epoch, start):
        for b in range(start, len(self)):
            idx = order[b * self.batch_size:(b + 1) * self.batch_size]
            x = self.data.images[idx]
            if self.train:
                x = augment_batch(x, self.augment, seed_for(self.seed, epoch, b, self.rank),
                                  self.splits.flip)
            yield self._finish(x, self.data.labels[idx])

    def _shard_epoch(self, order, epoch, start):
        from torch.utils.data import DataLoader

        from .shards import ShardFeed

        index = order[start * self.batch_size:len(self) * self.batch_size].tolist()
        batches = [index[k:k + self.batch_size] for k in range(0, len(index), self.batch_size)]
        items = [(i, seed_for(self.seed, epoch, i)) for i in index]
        dataset = _JpegDataset(self.data, self.splits.input_size, self.train, self.augment,
                               self.splits.flip, raw=self.gpu_decode)
        loader = DataLoader(items, batch_size=self.batch_size, num_workers=self.workers,
                            collate_fn=dataset.collate, pin_memory=self.device.type == "cuda",
                            persistent_workers=False)
        # evaluation splits stay cached: the search reads them once per candidate
        feed = ShardFeed(self.data, batches, ahead=self.splits.loading.shuffle_shards,
                         evict=self.train)
        try:
            for b, (x, y) in enumerate(loader):
                if self.gpu_decode:
                    x = dataset.decode_on(x, self.device)
                feed.done(b, batches[b])
                yield self._finish(x, y)
        finally:
            feed.close()


# up to this input size image folders train as CIFAR does (the whole image, padded
# random crops, flips); above it as ImageNet does (RandomResizedCrop, 0.875 centre crop)
SMALL_IMAGES = 64


class _JpegDataset:
    """Reads, decodes and augments JPEGs; each sample seeded by (seed, epoch, index)."""

    def __init__(self, data: ShardSet, size: int, train: bool, augment: str, flip: bool,
                 raw: bool):
        from torchvision.transforms import v2

        self.data, self.size, self.train, self.raw = data, size, train, raw
        small = size <= SMALL_IMAGES
        if train and augment != "none":  # none: as evaluated (BN calibration, users' choice)
            # RandomResizedCrop keeps as little as 8% of an image: right for ImageNet's
            # objects, but at CIFAR scale it crops away what tells the classes apart
            steps = ([v2.Resize(size, antialias=True), v2.CenterCrop(size),
                      v2.RandomCrop(size, padding=max(1, size // 8), padding_mode="reflect")]
                     if small else [v2.RandomResizedCrop(size, antialias=True)])
            if flip:
                steps.append(v2.RandomHorizontalFlip())
            policy = _policy(augment)
            if policy is not None:
                steps.append(policy)
            self.transform = v2.Compose(steps)
        else:
            resize = size if small else int(round(size / 0.875))
            self.transform = v2.Compose([v2.Resize(resize, antialias=True), v2.CenterCrop(size)])

    def _read(self, i: int) -> torch.Tensor:
        return self.data.read(i)

    def _decode(self, i: int, raw: torch.Tensor, device="cpu") -> torch.Tensor:
        from torchvision.io import ImageReadMode, decode_jpeg

        try:
            return decode_jpeg(raw, mode=ImageReadMode.RGB, device=device)
        except RuntimeError as err:
            raise DataError(f"{self.data.name(i)}: cannot decode JPEG "
                            f"({jpeg_problem(err)})") from None

    def collate(self, items):
        labels = torch.stack([self.data.labels[i] for i, _ in items])
        if self.raw:
            return [(i, s, self._read(i)) for i, s in items], labels
        out = []
        for i, s in items:
            img = self._decode(i, self._read(i))
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(s)
                out.append(self.transform(img))
        return torch.stack(out), labels

    def decode_on(self, raws, device: torch.device) -> torch.Tensor:
        """Decode a batch of JPEGs on ``device`` in one call, then crop/resize each."""
        from torchvision.io import ImageReadMode, decode_jpeg

        try:
            images = decode_jpeg([r for _, _, r in raws], mode=ImageReadMode.RGB, device=device)
        except RuntimeError:  # find the culprit for the message
            images = [self._decode(i, r, device) for i, _, r in raws]
        out = []
        for (_, s, _), img in zip(raws, images, strict=True):
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(s)
                out.append(self.transform(img))
        return torch.stack(out)
