"""Image folders prepared once into shards that every step streams.

Preparation reads the source once (a folder or an s3:// prefix of
``train/<class>/*.jpg`` and ``val/<class>/*.jpg``, or PNG, WebP, BMP, GIF,
TIFF: any format Pillow decodes), checks that every image decodes, stores
JPEGs byte for byte and re-encodes the others as JPEG (quality 95, no chroma
subsampling), optionally shrinks them, and writes the splits as WebDataset
tar shards (``<key>.jpg`` + ``<key>.cls`` per image, written with the
webdataset library, so any WebDataset reader can consume them) plus an
index: each image's shard,
byte offset, size, label and name, and each shard's sha256. The index is
written last, so its presence means the shards are complete; the KFP Dataset
artifact points at it. CIFAR-10 is prepared the same way, its images as PNG
(lossless), and read back whole into memory by each step.

The shards live under a content fingerprint (the source's listing: every
key, size and ETag, plus the settings that shape the shards), so preparing
the same source with the same settings again finds the index and reuses it.

A step reads an image by (shard, offset) from a local copy of its shard.
Training takes each epoch's shards in a seeded order, every rank its own
share of them, and shuffles samples within windows of ``data.shuffle_shards``
shards: whole shards are fetched ahead of use in threads and removed after
their last batch, so the local cache holds about two windows, and the order
is a pure function of (seed, epoch), as exact resume needs.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import tarfile
import tempfile
import threading
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np
import torch

from . import layout, storage
from .config import DataConfig
from .data import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    DataError,
    Splits,
    jpeg_problem,
    read_cifar10,
    seed_for,
    tensor_splits,
)

log = logging.getLogger(__name__)

FORMAT = 2  # 2: image formats other than JPEG are accepted (re-encoded)
INDEX = "index.npz"
SPLITS = ("train", "val", "test")
DATASETS = ("imagefolder", "cifar10")  # the datasets prepared into shards
# JPEGs are stored as they are; other formats Pillow decodes are re-encoded as JPEG
# (quality 95, no chroma subsampling), so every image folder shard holds JPEGs only
# and one reader (and the batched GPU decoder) reads them all
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")
JPEG_QUALITY = 95
# the data settings that change what the shards hold (input_size, workers and the
# like only change how they are read)
SHAPING = ("dataset", "val_fraction", "seed", "bad_images", "shard_mb", "shard_image_size")


# ---- reading -----------------------------------------------------------------------
@dataclass
class ShardSet:
    """One split: every image's shard, offset and size, its label and its name
    (``class/file``). Shard files are read from ``root`` if local, else from copies
    fetched into ``cache``."""

    root: str
    shards: list[dict]  # name, bytes, sha256, per shard of the whole prepared set
    shard: np.ndarray  # int32 (N,)
    offset: np.ndarray  # int64 (N,)
    size: np.ndarray  # int32 (N,)
    labels: torch.Tensor  # int64 (N,)
    names_blob: bytes  # the names joined by newlines
    cache: str = ""
    _name_starts: np.ndarray | None = field(default=None, repr=False)
    _members: dict[int, np.ndarray] | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.labels)

    def name(self, i: int) -> str:
        if self._name_starts is None:
            ends = np.flatnonzero(np.frombuffer(self.names_blob, np.uint8) == ord("\n"))
            self._name_starts = np.concatenate([[0], ends + 1])
        start = int(self._name_starts[i])
        end = self.names_blob.find(b"\n", start)
        return self.names_blob[start:end if end >= 0 else None].decode()

    def read(self, i: int) -> torch.Tensor:
        """Image ``i``'s encoded bytes (fetching its shard if it is not here yet)."""
        with self.local(int(self.shard[i])).open("rb") as f:
            f.seek(int(self.offset[i]))
            data = f.read(int(self.size[i]))
        return torch.frombuffer(bytearray(data), dtype=torch.uint8)

    def local(self, s: int) -> Path:
        """A local path of shard ``s``: the file itself, or a checked copy in the cache."""
        info = self.shards[s]
        if not storage.is_s3(self.root):
            return Path(self.root, info["name"])
        path = Path(self.cache, info["name"])
        if not path.exists():
            storage.download_file(storage.join(self.root, info["name"]), path)
            if _sha256(path) != info["sha256"]:
                path.unlink(missing_ok=True)
                raise DataError(f"{storage.join(self.root, info['name'])}: its checksum differs "
                                "from the index; the shards were changed after preparation: "
                                "delete them and prepare the data again")
        return path

    def evict(self, s: int) -> None:
        if storage.is_s3(self.root):
            Path(self.cache, self.shards[s]["name"]).unlink(missing_ok=True)

    def members(self) -> dict[int, np.ndarray]:
        """The images of each shard this split uses, in index order."""
        if self._members is None:
            order = np.argsort(self.shard, kind="stable")
            bounds = np.flatnonzero(np.diff(self.shard[order])) + 1
            self._members = {int(self.shard[g[0]]): g for g in np.split(order, bounds) if len(g)}
        return self._members

    def per_rank(self, world: int) -> int:
        """Images every rank gets in any epoch: the sum of the fewest shards a rank can
        draw, so every rank runs the same number of steps whatever the draw."""
        sizes = sorted(len(m) for m in self.members().values())
        each = len(sizes) // world
        if each == 0:
            raise DataError(f"{len(sizes)} shard(s) for {world} processes: every process reads "
                            "its own shards; prepare smaller shards (lower data.shard_mb)")
        return int(sum(sizes[:each]))

    def train_order(self, seed: int, epoch: int, rank: int, world: int, window: int,
                    count: int) -> torch.Tensor:
        """This rank's images for ``epoch``: its share of the shards in a seeded order,
        shuffled within windows of ``window`` shards, cut to ``count``."""
        members = self.members()
        shards = sorted(members)
        gen = np.random.default_rng(seed_for(seed, epoch))
        mine = [shards[j] for j in gen.permutation(len(shards))[rank::world]]
        parts = []
        for w in range(0, len(mine), window):
            idx = np.concatenate([members[s] for s in mine[w:w + window]])
            parts.append(idx[gen.permutation(len(idx))])
        return torch.from_numpy(np.concatenate(parts)[:count].astype(np.int64))


class ShardFeed:
    """Fetches the shards a pass over ``batches`` (lists of image indices) reads, up
    to ``ahead`` shards before their first use, in threads; ``done(b)`` after batch
    ``b`` is used removes the shards no later batch reads, if ``evict``. Local shards
    need neither."""

    def __init__(self, data: ShardSet, batches: list[list[int]], ahead: int, evict: bool,
                 threads: int = 8):
        self.data, self.evict, self.ahead = data, evict, ahead
        self.first: list[int] = []  # shards in order of first use
        self.last: dict[int, int] = {}  # shard -> the last batch that reads it
        self.opened_by: list[int] = []  # batch b -> how many shards batches <= b open
        for b, batch in enumerate(batches):
            for s in dict.fromkeys(int(data.shard[i]) for i in batch):
                if s not in self.last:
                    self.first.append(s)
                self.last[s] = b
            self.opened_by.append(len(self.first))
        self.used, self.batch = 0, -1
        self._cv = threading.Condition()
        self._stop = False
        self._pool = None
        if storage.is_s3(data.root):
            self._pool = ThreadPoolExecutor(threads)
            threading.Thread(target=self._fetch_ahead, daemon=True).start()

    def _fetch_ahead(self) -> None:
        for k, s in enumerate(self.first):
            with self._cv:
                self._cv.wait_for(lambda k=k: self._stop or k < self.used + self.ahead)
                if self._stop:
                    return
            self._pool.submit(self._fetch, s)

    def _fetch(self, s: int) -> None:
        try:
            if not self._stop:
                self.data.local(s)
        except Exception:  # noqa: BLE001 - the reader fetches it again and says why
            return
        if self.evict and self.last[s] <= self.batch:  # its batches were read without it
            self.data.evict(s)

    def done(self, b: int, batch: Iterable[int]) -> None:
        with self._cv:
            self.used, self.batch = self.opened_by[b], b
            self._cv.notify_all()
        if self.evict:
            for s in {int(self.data.shard[i]) for i in batch}:
                if self.last[s] == b:
                    self.data.evict(s)

    def close(self) -> None:
        with self._cv:
            self._stop = True
            self._cv.notify_all()
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


# ---- where, and whether already prepared --------------------------------------------
def default_root(cfg: DataConfig, checkpoint_root: str = "") -> str:
    """``data.shard_root``, or beside the run's S3 checkpoints, or a local folder."""
    if cfg.shard_root:
        return cfg.shard_root
    if storage.is_s3(checkpoint_root):
        return storage.join(checkpoint_root, layout.SHARDS)
    return str(Path(cfg.cache_dir or tempfile.gettempdir(), "scarletnas-shards"))


def fingerprint(listing: list[storage.Entry], folders: list[str], cfg: DataConfig) -> str:
    """Of what a preparation would read (every file's key, size and version, and the
    class folders) and the settings that shape the shards."""
    h = hashlib.sha256(json.dumps({"format": FORMAT, "folders": folders,
                                   **{k: getattr(cfg, k) for k in SHAPING}},
                                  sort_keys=True).encode())
    for e in listing:
        h.update(f"{e.key}\0{e.size}\0{e.version}\n".encode())
    return h.hexdigest()[:20]


def read_index(uri: str) -> tuple[dict, dict[str, np.ndarray]]:
    """The index's description and arrays, with a clear error for anything else."""
    try:
        raw = storage.read_bytes(uri)
    except storage.StorageError as err:
        raise DataError(f"cannot read the shard index: {err}; run prepare_data again (with "
                        "KFP's cache off for it, if a cached result points here)") from None
    try:
        with np.load(io.BytesIO(raw), allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        meta = json.loads(arrays.pop("meta").tobytes())
    except (ValueError, KeyError, OSError, json.JSONDecodeError) as err:
        raise DataError(f"{uri} is not a shard index ({err}); rerun prepare_data") from None
    if meta.get("format") != FORMAT:
        raise DataError(f"{uri} is a shard index of format {meta.get('format')}, not "
                        f"{FORMAT}: rerun prepare_data with this version of scarlet-nas")
    return meta, arrays


def open_index(uri: str, cfg: DataConfig) -> Splits:
    """The splits an index describes, read from its shards."""
    meta, arrays = read_index(uri)
    root = uri.rsplit("/", 1)[0] if storage.is_s3(uri) else str(Path(uri).parent)
    cache = str(Path(cfg.cache_dir or tempfile.gettempdir(), "scarletnas-shard-cache",
                     meta["fingerprint"]))
    parts = {p: ShardSet(root, meta["shards"], arrays[f"{p}_shard"], arrays[f"{p}_offset"],
                         arrays[f"{p}_size"], torch.from_numpy(arrays[f"{p}_label"]),
                         arrays[f"{p}_names"].tobytes(), cache) for p in SPLITS}
    if meta["kind"] == "pixels":  # small enough to hold: decoded once, kept in memory
        return tensor_splits("cifar10", {p: _decoded(part) for p, part in parts.items()}, cfg,
                             len(meta["classes"]))
    return Splits(parts["train"], parts["val"], parts["test"], len(meta["classes"]),
                  cfg.size, IMAGENET_MEAN, IMAGENET_STD, cfg.flips, "imagefolder")


def _decoded(part: ShardSet) -> tuple[np.ndarray, np.ndarray]:
    """Every image of a PNG split, decoded: uint8 (N, C, H, W), and the labels."""
    from torchvision.io import decode_png

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(part.local, sorted(part.members())))
    images = [decode_png(part.read(i)) for i in range(len(part))]
    return torch.stack(images).numpy(), part.labels.numpy()


# ---- preparation ---------------------------------------------------------------------
@dataclass
class Plan:
    """What goes in which split, before any image is read."""

    classes: list[str]
    splits: dict[str, tuple[list[storage.Entry], list[int]]]
    ignored: list[str]  # files that are not images
    empty_classes: list[str]  # class folders without images (left out under skip)


def source_folders(source: str) -> list[str]:
    """The ``split/class`` folders of a local source, empty ones too (S3 has only keys)."""
    if storage.is_s3(source):
        return []
    return sorted(d.relative_to(source).as_posix() for d in Path(source).glob("*/*")
                  if d.is_dir())


def class_folders(listing: list[storage.Entry], folders: Iterable[str] = ()
                  ) -> tuple[dict[str, dict[str, list[storage.Entry]]], list[str]]:
    """The images of each ``train/<class>`` and ``val/<class>`` folder of a listing
    (``folders``: those a local source has, even empty), and the other files' keys."""
    found: dict[str, dict[str, list[storage.Entry]]] = {"train": {}, "val": {}}
    for folder in folders:
        part, cls = folder.split("/")
        if part in found and not cls.startswith("."):
            found[part].setdefault(cls, [])
    ignored = []
    for e in listing:
        parts = PurePosixPath(e.key).parts
        hidden = any(part.startswith(".") for part in parts)
        if len(parts) == 3 and parts[0] in found and not parts[1].startswith("."):
            folder = found[parts[0]].setdefault(parts[1], [])  # a marker alone makes a folder
            if not hidden and PurePosixPath(parts[2]).suffix.lower() in IMAGE_SUFFIXES:
                folder.append(e)
                continue
        if not hidden:
            ignored.append(e.key)
    return found, ignored


def plan(listing: list[storage.Entry], cfg: DataConfig, where: str,
         folders: Iterable[str] = ()) -> Plan:
    """Classes and splits from the source's listing: train/<class>/ folders give the
    classes; the validation split is carved from train, seeded; val/ is the test split.
    ``folders``: ``split/class`` folders a local source has, even empty ones."""
    found, ignored = class_folders(listing, folders)
    if not found["train"]:
        raise DataError(f"{where}/train: no class folders inside; an image folder dataset has "
                        "train/<class>/*.jpg and val/<class>/*.jpg")
    if not found["val"]:
        raise DataError(f"{where}/val: missing; an image folder dataset has train/<class>/*.jpg "
                        "and val/<class>/*.jpg")
    empty = sorted(f"{part}/{c}" for part in found for c, files in found[part].items()
                   if not files)
    if empty and cfg.bad_images == "fail":
        raise DataError(f"{where}: class folder(s) {empty[:10]} hold no images (.jpg, .png, "
                        "...): add images or remove the folder(s), or set "
                        "data.bad_images=skip to leave them out")
    classes = sorted(c for c, files in found["train"].items() if files)
    if len(classes) < 2:  # said of the folder, before a space of one class is refused
        raise DataError(f"{where}/train has images in {len(classes)} class folder"
                        f"{' (' + classes[0] + ')' if classes else ''}: an image folder needs "
                        "at least 2 classes, one folder of images each (train/<class>/...)")
    unknown = sorted(c for c, files in found["val"].items() if files and c not in classes)
    if unknown:
        raise DataError(f"{where}/val: class folders {unknown} have no training images")
    if ignored:
        log.warning("%s: %d file(s) that are not images are left out: %s%s", where,
                    len(ignored), ", ".join(ignored[:5]), " ..." if len(ignored) > 5 else "")
    label = {c: i for i, c in enumerate(classes)}
    train = [(e, label[c]) for c in classes for e in found["train"][c]]
    test = [(e, label[c]) for c in classes for e in found["val"].get(c, [])]
    order = np.random.default_rng(cfg.seed).permutation(len(train))
    n_val = max(1, int(round(cfg.val_fraction * len(train))))
    pick = lambda idx: ([train[i][0] for i in idx], [train[i][1] for i in idx])  # noqa: E731
    splits = {"train": pick(np.sort(order[n_val:])), "val": pick(np.sort(order[:n_val])),
              "test": ([e for e, _ in test], [y for _, y in test])}
    return Plan(classes, splits, ignored, empty)


def _jpeg_problem(data: bytes) -> str | None:
    """Why ``data`` does not decode as a JPEG, or None."""
    from torchvision.io import ImageReadMode, decode_jpeg

    try:
        decode_jpeg(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=ImageReadMode.RGB)
    except RuntimeError as err:
        return jpeg_problem(err)[:80]
    return None


def _to_8_bits(pixels: np.ndarray) -> np.ndarray:
    """16-bit, 32-bit or float grey levels scaled to 0..255 (Pillow's own conversion
    clips them, turning a 16-bit scan white)."""
    floats = np.issubdtype(pixels.dtype, np.floating)
    pixels = pixels.astype(np.float64)
    if floats and pixels.max(initial=0) <= 1.0:
        pixels = pixels * 255.0
    elif pixels.max(initial=0) > 255:
        pixels = pixels / 257.0  # 16-bit range onto 8 bits
    return np.clip(np.rint(pixels), 0, 255).astype(np.uint8)


def as_jpeg(data: bytes) -> tuple[bytes, str | None]:
    """A JPEG as it is, or another image Pillow decodes re-encoded as a JPEG (alpha
    over white, the first frame of an animation); and why it does not decode, or None."""
    if data[:2] == b"\xff\xd8":  # a JPEG: decoded as every step will decode it
        return data, _jpeg_problem(data)
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            if img.mode in ("RGBA", "LA", "PA") or "transparency" in img.info:
                rgba = img.convert("RGBA")
                rgb = Image.new("RGB", img.size, (255, 255, 255))
                rgb.paste(rgba, mask=rgba.getchannel("A"))
            elif img.mode.startswith("I") or img.mode == "F":
                rgb = Image.fromarray(_to_8_bits(np.asarray(img))).convert("RGB")
            else:
                rgb = img.convert("RGB")
            out = io.BytesIO()
            rgb.save(out, "JPEG", quality=JPEG_QUALITY, subsampling=0)
    except UnidentifiedImageError:
        return data, "not an image Pillow can read"
    except Exception as err:  # noqa: BLE001 - Pillow raises many kinds; each is the answer
        return data, (str(err).split("\n")[0] or type(err).__name__)[:80]
    return out.getvalue(), None


def _shrink(data: bytes, side: int) -> bytes:
    """The JPEG with its shorter side cut to ``side`` (quality 90), or as it was."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as img:
        w, h = img.size
        if min(w, h) <= side:
            return data
        scale = side / min(w, h)
        size = (max(side, round(w * scale)), max(side, round(h * scale)))
        img.draft("RGB", size)  # decode at a reduced scale where the JPEG allows
        out = io.BytesIO()
        img.convert("RGB").resize(size, Image.BICUBIC, reducing_gap=3.0).save(
            out, "JPEG", quality=90)
    return out.getvalue()


def _members(path: Path, ext: str) -> dict[str, tuple[int, int]]:
    """key -> (offset, size) of every ``.ext`` member of a tar shard."""
    with tarfile.open(path) as tar:
        return {m.name[:-len(ext) - 1]: (m.offset_data, m.size) for m in tar.getmembers()
                if m.name.endswith(f".{ext}")}


class _Writer:
    """Writes one split's images into shards and uploads each shard once closed."""

    def __init__(self, split: str, local: Path, root: str, max_bytes: float, first: int,
                 ext: str):
        """``first``: the number of this split's first shard among all the splits';
        ``ext``: the images' format (``jpg``, ``png``)."""
        import webdataset as wds

        self.root, self.first, self.ext = root, first, ext
        self.shards: list[dict] = []
        self.placed: dict[str, tuple[int, int, int]] = {}  # key -> shard, offset, size
        self.writer = wds.ShardWriter(str(local / f"{split}-%05d.tar"), maxsize=max_bytes,
                                      maxcount=10**9, post=self._finished, verbose=0, mtime=0)

    def write(self, key: str, data: bytes, label: int) -> None:
        self.writer.write({"__key__": key, self.ext: data, "cls": label})

    def _finished(self, fname: str) -> None:
        path = Path(fname)
        s = self.first + len(self.shards)
        for key, (offset, size) in _members(path, self.ext).items():
            self.placed[key] = (s, offset, size)
        self.shards.append({"name": path.name, "bytes": path.stat().st_size,
                            "sha256": _sha256(path)})
        storage.upload_file(path, storage.join(self.root, path.name))
        path.unlink()

    def close(self) -> list[dict]:
        self.writer.close()
        return self.shards

    def index(self, split: str, keys: list[int], labels, names: list[str]) -> dict:
        """The index arrays of a split's images ``keys`` (in the split's order)."""
        place = np.array([self.placed[f"{k:08d}"] for k in keys], np.int64).reshape(-1, 3)
        return {f"{split}_shard": place[:, 0].astype(np.int32), f"{split}_offset": place[:, 1],
                f"{split}_size": place[:, 2].astype(np.int32),
                f"{split}_label": np.asarray(labels, np.int64),
                f"{split}_names": np.frombuffer("\n".join(names).encode(), np.uint8)}


def _read_source(e: storage.Entry, side: int) -> tuple[bytes, str | None]:
    data, problem = as_jpeg(storage.read_bytes(e.uri))
    if problem is None and side:
        data = _shrink(data, side)
    return data, problem


def _in_chunks(items: list, n: int) -> Iterator[list]:
    for i in range(0, len(items), n):
        yield items[i:i + n]


def _write_splits(samples: dict[str, Iterable[tuple[int, bytes, int, str]]], ext: str,
                  cfg: DataConfig, root: str) -> tuple[list[dict], dict]:
    """Write each split's samples (key, encoded image, label, name) into shards under
    ``root``; the shards and the index arrays, each split's images in key order."""
    arrays, shards = {}, []
    with tempfile.TemporaryDirectory(prefix="scarletnas-shards-") as tmp:
        for split, items in samples.items():
            writer = _Writer(split, Path(tmp), root, cfg.shard_mb * 2**20, len(shards), ext)
            written = []
            for key, data, label, name in items:
                writer.write(f"{key:08d}", data, label)
                written.append((key, label, name))
            shards += writer.close()
            written.sort()
            arrays.update(writer.index(split, [w[0] for w in written], [w[1] for w in written],
                                       [w[2] for w in written]))
    return shards, arrays


def write_shards(p: Plan, cfg: DataConfig, root: str, threads: int = 16) -> tuple[dict, dict]:
    """Read every planned image once and write the splits' shards to ``root``."""
    from tqdm import tqdm

    bad = []
    total = sum(len(files) for files, _ in p.splits.values())

    def read(split: str, files: list[storage.Entry], labels: list[int]):
        # training shards hold a seeded mix of classes, so a window of a few shards
        # is a fair sample; the evaluation splits keep their order
        order = (np.random.default_rng(seed_for(cfg.seed, 7)).permutation(len(files))
                 if split == "train" else np.arange(len(files)))
        for chunk in _in_chunks(order.tolist(), threads * 16):
            got = pool.map(_read_source, [files[i] for i in chunk],
                           [cfg.shard_image_size] * len(chunk))
            for i, (data, problem) in zip(chunk, got, strict=True):
                bar.update(1)
                if problem:
                    bad.append({"image": files[i].key, "why": problem})
                else:
                    yield i, data, labels[i], files[i].key.split("/", 1)[1]

    with ThreadPoolExecutor(threads) as pool, tqdm(
            total=total, desc="prepare shards", unit="img", dynamic_ncols=True,
            disable=total < 1000) as bar:
        shards, arrays = _write_splits({split: read(split, files, labels) for split, (
            files, labels) in p.splits.items()}, "jpg", cfg, root)
    return {"shards": shards, "skipped_images": sorted(bad, key=lambda b: b["image"])}, arrays


def write_pixel_shards(parts: dict, cfg: DataConfig, root: str) -> tuple[dict, dict]:
    """Write in-memory uint8 splits (CIFAR-10) as PNG shards to ``root``: lossless, so
    a step reads back exactly the pixels prepared."""
    from torchvision.io import encode_png

    def encoded(split: str, images: np.ndarray, labels: np.ndarray):
        for i, img in enumerate(images):
            png = encode_png(torch.from_numpy(np.ascontiguousarray(img)), compression_level=1)
            yield i, png.numpy().tobytes(), int(labels[i]), f"{split}/{i:06d}"

    shards, arrays = _write_splits({split: encoded(split, *part) for split, part in
                                    parts.items()}, "png", cfg, root)
    return {"shards": shards, "skipped_images": []}, arrays


def prepare(cfg: DataConfig, root: str) -> tuple[str, dict]:
    """The index URI of ``cfg.source`` prepared into shards under ``root`` (reusing
    shards prepared earlier from the same listing and settings) and its description."""
    listing = storage.list_objects(cfg.source)
    folders = source_folders(cfg.source)
    fp = fingerprint(listing, folders, cfg)
    where = storage.join(root, fp)
    index = storage.join(where, INDEX)
    if storage.exists(index):
        meta, _ = read_index(index)
        log.info("reusing the shards prepared from %s at %s", cfg.source, where)
        return index, {**meta, "reused": True}
    if cfg.dataset == "cifar10":
        described, arrays = write_pixel_shards(read_cifar10(cfg), cfg, where)
        described.update(kind="pixels", classes=[str(c) for c in range(10)], ignored_files=[],
                         empty_classes=[])
    else:
        described, arrays = _prepare_jpegs(cfg, listing, folders, where)
    meta = {"format": FORMAT, "fingerprint": fp, "source": cfg.source,
            "settings": {k: getattr(cfg, k) for k in SHAPING}, **described,
            "images": {s: len(arrays[f"{s}_label"]) for s in SPLITS}}
    buf = io.BytesIO()
    np.savez_compressed(buf, meta=np.frombuffer(json.dumps(meta).encode(), np.uint8), **arrays)
    storage.write_bytes(index, buf.getvalue())  # last: its presence means complete
    log.info("prepared %s into %d shards at %s", cfg.source, len(meta["shards"]), where)
    return index, {**meta, "reused": False}


def _prepare_jpegs(cfg: DataConfig, listing: list[storage.Entry], folders: list[str],
                   where: str) -> tuple[dict, dict]:
    """An image folder's shards and index arrays, every image decoded once on the way."""
    if not listing:
        raise DataError(f"{cfg.source}: no such folder, or nothing in it; an image folder "
                        "dataset has train/<class>/*.jpg and val/<class>/*.jpg")
    p = plan(listing, cfg, cfg.source.rstrip("/"), folders)
    described, arrays = write_shards(p, cfg, where)
    bad = described["skipped_images"]
    total = sum(len(files) for files, _ in p.splits.values())
    named = "; ".join(f"{b['image']} ({b['why']})" for b in bad[:5]) + (
        " ..." if len(bad) > 5 else "")
    if bad and cfg.bad_images == "fail":
        for s in described["shards"]:
            storage.delete(storage.join(where, s["name"]))
        raise DataError(f"{len(bad)} of {total} images in {cfg.source} cannot be decoded: "
                        f"{named}; "
                        "replace or remove them, or set data.bad_images=skip to leave them out")
    if bad:
        log.warning("%d of %d images do not decode and are left out (data.bad_images=skip): "
                    "%s", len(bad), total, named)
    if p.empty_classes:
        log.warning("class folder(s) without images are left out (data.bad_images=skip): %s",
                    p.empty_classes[:10])
    return {**described, "kind": "jpeg", "classes": p.classes, "ignored_files": p.ignored,
            "empty_classes": p.empty_classes}, arrays
