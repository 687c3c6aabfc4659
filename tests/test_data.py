import dataclasses
import pickle

import numpy as np
import pytest
import torch
from torchvision.io import encode_jpeg

from scarletnas.config import ConfigError, DataConfig, load_pipeline_config
from scarletnas.data import Batches, DataError, _JpegDataset, augment_batch, load_splits


def test_digits_splits(digits):
    assert digits.num_classes == 10 and digits.input_size == 16
    assert len(digits.train) + len(digits.val) + len(digits.test) == 1797
    assert digits.train.images.shape[1:] == (3, 16, 16)
    assert digits.train.images.dtype == torch.uint8
    for split in (digits.train, digits.val, digits.test):  # stratified: every class present
        assert set(split.labels.tolist()) == set(range(10))
    again = load_splits(DataConfig(input_size=16))
    assert torch.equal(again.val.images, digits.val.images)
    other = load_splits(DataConfig(input_size=16, seed=1))
    assert not torch.equal(other.val.images, digits.val.images)
    same = load_splits(DataConfig(input_size=16, seed=1))
    assert torch.equal(other.test.images, same.test.images)


def _flat(split):
    return {bytes(img.numpy().tobytes()) for img in split.images}


def test_digits_splits_are_disjoint(digits):
    train, val, test = _flat(digits.train), _flat(digits.val), _flat(digits.test)
    # digits has a few exact duplicate images; almost all must be unique to one split
    assert len(train & val) + len(train & test) + len(val & test) < 10


def test_batches_replay_from_any_batch(digits):
    b = Batches(digits, "train", 32, train=True, augment="basic", seed=3)
    full = list(b.epoch(2))
    assert len(full) == len(b) == len(digits.train) // 32
    tail = list(b.epoch(2, start=5))
    assert len(tail) == len(full) - 5
    for (x1, y1), (x2, y2) in zip(full[5:], tail, strict=True):
        assert torch.equal(x1, x2) and torch.equal(y1, y2)
    other = next(iter(b.epoch(3)))
    assert not torch.equal(other[1], full[0][1])


def test_train_batches_are_normalised_and_sharded(digits):
    b = Batches(digits, "train", 64, train=True, augment="none", seed=0)
    x = torch.cat([x for x, _ in b.epoch(0)])
    assert abs(x.mean().item()) < 0.05 and abs(x.std().item() - 1) < 0.05
    r0 = Batches(digits, "train", 32, train=True, seed=0, rank=0, world=2).order(0)
    r1 = Batches(digits, "train", 32, train=True, seed=0, rank=1, world=2).order(0)
    assert len(r0) == len(r1) and not set(r0.tolist()) & set(r1.tolist())


def test_eval_batches_cover_every_image_once(digits):
    b = Batches(digits, "val", 100, train=False)
    ys = torch.cat([y for _, y in b])
    assert torch.equal(ys, digits.val.labels)
    limited = Batches(digits, "val", 100, train=False, limit=150)
    assert sum(y.numel() for _, y in limited) == 150


def test_batch_larger_than_split_is_rejected(digits):
    with pytest.raises(DataError, match="fewer than one batch of 4096"):
        Batches(digits, "train", 4096, train=True)


@pytest.mark.parametrize("augment", ["basic", "randaugment", "autoaugment"])
def test_augmentation_is_seeded(digits, augment):
    x = digits.train.images[:8]
    a = augment_batch(x, augment, 5, flip=True)
    assert a.dtype == torch.uint8 and a.shape == x.shape
    assert torch.equal(a, augment_batch(x, augment, 5, flip=True))
    assert not torch.equal(a, augment_batch(x, augment, 6, flip=True))


def test_data_flip_overrules_the_datas_own_rule(digits, tmp_path):
    """Digits are never flipped unless asked; data.flip=off stops the flips a folder
    gets (a stripe at 30 degrees, mirrored, is one at 150: another class). Runs
    record the flips they used."""
    assert not digits.flip and load_splits(DataConfig(input_size=16, flip="on")).flip
    folder = write_imagefolder(tmp_path / "imgs")
    on = load_splits(folder_cfg(folder, tmp_path))
    off = load_splits(folder_cfg(folder, tmp_path, flip="off"))
    assert on.flip and not off.flip

    def flips(splits, augment="basic"):
        steps = _JpegDataset(splits.train, 24, True, augment, splits.flip, raw=False).transform
        return [type(t).__name__ for t in steps.transforms].count("RandomHorizontalFlip")

    assert (flips(on), flips(off), flips(on, "none")) == (1, 0, 0)
    assert DataConfig().as_used()["flip"] == "off"
    assert DataConfig(dataset="imagefolder", source="d").as_used()["flip"] == "on"
    x = torch.arange(16 * 3 * 8 * 8, dtype=torch.uint8).reshape(16, 3, 8, 8)
    on, off = augment_batch(x, "basic", 3, flip=True), augment_batch(x, "basic", 3, flip=False)
    mirrored = [torch.equal(a, b.flip(-1)) and not torch.equal(a, b)
                for a, b in zip(on, off, strict=True)]
    assert all(m or torch.equal(a, b) for m, a, b in zip(mirrored, on, off, strict=True))
    assert 2 <= sum(mirrored) <= 14  # about half of them, the rest left as they were


def test_data_flip_reads_on_and_off_from_the_command_line():
    for raw, want in (("off", "off"), ("false", "off"), ("on", "on"), ("true", "on"),
                      ("auto", "auto")):
        assert load_pipeline_config(None, [f"data.flip={raw}"]).data.flip == want
    with pytest.raises(ConfigError, match=r"data.flip='mirror' is not supported; choose one "
                       r"of \['auto', 'on', 'off'\]"):
        load_pipeline_config(None, ["data.flip=mirror"])


# ---- CIFAR-10 python format ------------------------------------------------------------
def write_cifar(root, n_train=50, n_test=20, seed=0):
    """A CIFAR-10 folder in the real on-disk format (pickled dicts, bytes keys)."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for name in names:
        n = n_test if name == "test_batch" else n_train
        labels = [int(v) for v in np.arange(n) % 10]
        data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
        with open(root / name, "wb") as f:
            pickle.dump({b"batch_label": name.encode(), b"labels": labels, b"data": data,
                         b"filenames": [f"{i}.png".encode() for i in range(n)]}, f, protocol=2)
    return root


def test_cifar10_from_a_folder(tmp_path):
    root = write_cifar(tmp_path / "cifar")
    splits = load_splits(DataConfig(dataset="cifar10", source=str(root), input_size=32))
    assert len(splits.train) + len(splits.val) == 250 and len(splits.test) == 20
    assert splits.flip and splits.train.images.shape[1:] == (3, 32, 32)
    raw = pickle.load(open(root / "test_batch", "rb"), encoding="bytes")
    assert torch.equal(splits.test.images[0], torch.from_numpy(raw[b"data"][0].reshape(3, 32, 32)))


def test_cifar10_missing_and_corrupt_files(tmp_path):
    root = write_cifar(tmp_path / "cifar")
    (root / "data_batch_3").unlink()
    with pytest.raises(DataError, match="data_batch_3: missing; a CIFAR-10 folder holds"):
        load_splits(DataConfig(dataset="cifar10", source=str(root)))
    (root / "data_batch_3").write_bytes(b"not a pickle")
    with pytest.raises(DataError, match="data_batch_3: not a CIFAR-10 python batch"):
        load_splits(DataConfig(dataset="cifar10", source=str(root)))
    with pytest.raises(DataError, match="no such folder"):
        load_splits(DataConfig(dataset="cifar10", source=str(tmp_path / "nope")))


class _Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_cifar10_refuses_code_in_pickles(tmp_path, capsys):
    root = write_cifar(tmp_path / "cifar")
    with open(root / "data_batch_1", "wb") as f:
        pickle.dump({b"data": _Evil(), b"labels": [0]}, f)
    with pytest.raises(DataError, match="refusing to load builtins.print"):
        load_splits(DataConfig(dataset="cifar10", source=str(root)))
    assert "pwned" not in capsys.readouterr().out


# ---- image folders --------------------------------------------------------------------
def write_imagefolder(root, per_class=6, classes=("cat", "dog", "emu")):
    gen = torch.Generator().manual_seed(0)
    for split, n in (("train", per_class), ("val", 2)):
        for c in classes:
            (root / split / c).mkdir(parents=True)
            for i in range(n):
                img = torch.randint(0, 256, (3, 40, 50), dtype=torch.uint8, generator=gen)
                (root / split / c / f"{i}.jpg").write_bytes(encode_jpeg(img).numpy().tobytes())
    return root


def folder_cfg(root, tmp_path, **kw) -> DataConfig:
    """An image folder read through shards prepared under ``tmp_path``."""
    return DataConfig(dataset="imagefolder", source=str(root), input_size=24,
                      cache_dir=str(tmp_path / "cache"), **kw)


@pytest.mark.parametrize("gpu_decode", [False, True])
def test_imagefolder_batches(tmp_path, gpu_decode):
    root = write_imagefolder(tmp_path / "imgs")
    splits = load_splits(folder_cfg(root, tmp_path, val_fraction=0.25, gpu_decode=gpu_decode))
    assert splits.num_classes == 3 and len(splits.train) + len(splits.val) == 18
    assert len(splits.test) == 6
    b = Batches(splits, "train", 4, train=True, augment="basic", seed=1)
    assert b.gpu_decode == gpu_decode
    first = list(b.epoch(0))
    assert len(first) == len(splits.train) // 4
    assert first[0][0].shape == (4, 3, 24, 24) and first[0][0].dtype == torch.float32
    again = list(b.epoch(0, start=1))
    assert all(torch.equal(a[0], c[0]) for a, c in zip(first[1:], again, strict=True))
    test = list(Batches(splits, "test", 4, train=False))
    assert sum(len(y) for _, y in test) == 6
    # augment=none: the images as evaluated, neither cropped nor flipped
    plain = [x for x, _ in Batches(splits, "train", 4, train=True, augment="none", seed=1)]
    whole = [x for x, _ in Batches(splits, "train", 4, train=False)]
    assert {bytes(i.numpy().tobytes()) for x in plain for i in x} <= \
        {bytes(i.numpy().tobytes()) for x in whole for i in x}


def test_imagefolder_with_workers_matches_in_process(tmp_path):
    root = write_imagefolder(tmp_path / "imgs")
    cfg = folder_cfg(root, tmp_path, shard_mb=0.01)  # several shards per split
    one = list(Batches(load_splits(cfg), "train", 4, train=True, seed=1).epoch(1))
    two = Batches(load_splits(dataclasses.replace(cfg, workers=2)), "train", 4, train=True, seed=1)
    assert two.workers == 2
    two = list(two.epoch(1))
    assert all(torch.equal(a[0], b[0]) for a, b in zip(one, two, strict=True))


def test_imagefolder_errors(tmp_path):
    root = write_imagefolder(tmp_path / "imgs")
    (root / "val" / "zebra").mkdir()
    (root / "val" / "zebra" / "0.jpg").write_bytes((root / "val" / "cat" / "0.jpg").read_bytes())
    with pytest.raises(DataError, match=r"val: class folders \['zebra'\] have no training"):
        load_splits(folder_cfg(root, tmp_path))
    with pytest.raises(DataError, match="train: no class folders inside; an image folder"):
        load_splits(folder_cfg(tmp_path, tmp_path))  # one level too high
    with pytest.raises(DataError, match="nope: no such folder, or nothing in it"):
        load_splits(folder_cfg(tmp_path / "nope", tmp_path))
    one = write_imagefolder(tmp_path / "one", classes=("cat",))  # said of the folder
    with pytest.raises(DataError, match=r"one/train has images in 1 class folder \(cat\): an "
                                        "image folder needs at least 2 classes"):
        load_splits(folder_cfg(one, tmp_path))


def test_imagefolder_empty_classes_and_other_files(tmp_path, caplog):
    """Files that are not JPEGs are named and left out; an empty class folder stops
    preparation unless data.bad_images=skip, which leaves it out and reports it."""
    root = write_imagefolder(tmp_path / "imgs")
    (root / "train" / "dog" / "notes.txt").write_text("not an image")
    (root / "train" / "dog" / ".DS_Store").write_bytes(b"\0")
    with caplog.at_level("WARNING"):
        splits = load_splits(folder_cfg(root, tmp_path))
    assert "1 file(s) that are not images are left out: train/dog/notes.txt" in caplog.text
    assert ".DS_Store" not in caplog.text
    assert splits.num_classes == 3
    (root / "train" / "fox").mkdir()
    (root / "val" / "fox").mkdir()
    with pytest.raises(DataError, match=r"class folder\(s\) \['train/fox', 'val/fox'\] hold "
                                        "no images.*data.bad_images=skip"):
        load_splits(folder_cfg(root, tmp_path))
    from scarletnas import shards

    cfg = folder_cfg(root, tmp_path, bad_images="skip")
    index, meta = shards.prepare(cfg, shards.default_root(cfg))
    assert meta["empty_classes"] == ["train/fox", "val/fox"] and meta["classes"] == [
        "cat", "dog", "emu"]


def test_bad_images_fail_preparation_or_are_skipped_and_reported(tmp_path, caplog):
    """data.bad_images: fail names every bad file and leaves no shards; skip leaves
    them out, lists them in the manifest, and every later step opens the same splits
    without them."""
    from scarletnas import manifest
    from scarletnas.config import PipelineConfig, SpaceConfig

    root = write_imagefolder(tmp_path / "imgs")
    whole = (root / "train" / "cat" / "0.jpg").read_bytes()
    (root / "train" / "cat" / "0.jpg").write_bytes(whole[: len(whole) // 2])
    (root / "val" / "dog" / "1.jpg").write_bytes(b"\x89PNG\r\n\x1a\n not a jpeg")

    def cfg(policy):
        return PipelineConfig(data=folder_cfg(root, tmp_path, bad_images=policy),
                              space=SpaceConfig(width_mult=0.25))

    with pytest.raises(DataError, match="2 of 24 images in .* cannot be decoded: .*0.jpg "
                                        "\\(Image is incomplete or truncated\\).*set "
                                        "data.bad_images=skip"):
        manifest.prepare(cfg("fail"))
    assert not list((tmp_path / "cache").rglob("*.tar")) and not list(
        (tmp_path / "cache").rglob("index.npz"))  # nothing half-prepared is left
    with caplog.at_level("WARNING"):
        splits, _, described = manifest.prepare(cfg("skip"))
    assert described["skipped_images"] == [
        {"image": "train/cat/0.jpg", "why": "Image is incomplete or truncated"},
        {"image": "val/dog/1.jpg", "why": "not an image Pillow can read"}]
    assert "2 of 24 images do not decode and are left out" in caplog.text
    names = lambda part: {part.name(i) for i in range(len(part))}  # noqa: E731
    assert len(splits.train) + len(splits.val) == 17 and len(splits.test) == 5
    assert "cat/0.jpg" not in names(splits.train) | names(splits.val)
    assert "dog/1.jpg" not in names(splits.test)
    again, _ = manifest.open_prepared(cfg("skip"), described)  # a later step: same splits
    assert again.digest() == splits.digest() == described["digest"]


def test_distorted_digits_are_deterministic_and_harder():
    """Four seeded distortions of every digits image, split before distorting."""
    from scarletnas.data import DISTORTED_COPIES

    cfg = DataConfig(dataset="distorted-digits", input_size=16)
    plain, hard = load_splits(DataConfig(dataset="digits", input_size=16)), load_splits(cfg)
    again = load_splits(cfg)
    assert hard.name == "distorted-digits" and hard.num_classes == 10
    for part in ("train", "val", "test"):
        ours, base = getattr(hard, part), getattr(plain, part)
        assert len(ours) == DISTORTED_COPIES * len(base)
        assert torch.equal(ours.labels, base.labels.repeat(DISTORTED_COPIES))
        assert torch.equal(ours.images, getattr(again, part).images)
        assert ours.images.dtype == torch.uint8 and ours.images.shape[1:] == (3, 16, 16)
    copies = hard.train.images.view(DISTORTED_COPIES, -1, 3, 16, 16).float()
    assert (copies[0] - copies[1]).abs().mean() > 20  # each copy distorted differently
    other = load_splits(DataConfig(dataset="distorted-digits", input_size=16, seed=1))
    assert not torch.equal(other.train.images[:50], hard.train.images[:50])


def test_png_and_other_image_formats_are_stored_as_jpeg_in_the_shards(tmp_path):
    """An image folder of PNGs (RGB, with alpha, palette), WebP, BMP, GIF, TIFF and a
    PNG named .jpg is prepared like one of JPEGs: each image is re-encoded once as a
    JPEG (the one format every step and the GPU decoder read), JPEGs are kept byte
    for byte, and the pixels a step reads are those of the source."""
    from PIL import Image
    from torchvision.io import decode_jpeg

    from scarletnas import shards

    y, x = np.mgrid[0:32, 0:40]
    smooth = np.stack([x * 6, y * 7, (x + y) * 3], -1).astype(np.uint8)
    saves = {"0.png": lambda p: Image.fromarray(smooth).save(p),
             "1.jpg": lambda p: Image.fromarray(smooth).save(p, quality=90),
             "2.webp": lambda p: Image.fromarray(smooth).save(p, lossless=True),
             "3.bmp": lambda p: Image.fromarray(smooth).save(p),
             "4.png": lambda p: Image.fromarray(smooth).convert("RGBA").save(p),
             "5.gif": lambda p: Image.fromarray(smooth).quantize(256).save(p),
             "6.tiff": lambda p: Image.fromarray(smooth).save(p),
             "7.jpg": lambda p: Image.fromarray(smooth).save(p, "PNG"),  # misnamed
             # 16-bit grey: scaled to 8 bits, not clipped to white
             "8.png": lambda p: Image.fromarray(smooth[..., 0].astype(np.uint16) * 257).save(p)}
    root = tmp_path / "imgs"
    for split in ("train", "val"):
        for c in ("cat", "dog"):
            (root / split / c).mkdir(parents=True)
            for name, save in saves.items():
                save(root / split / c / name)
    cfg = folder_cfg(root, tmp_path)
    index, meta = shards.prepare(cfg, shards.default_root(cfg))
    assert meta["ignored_files"] == [] and meta["skipped_images"] == []
    splits = shards.open_index(index, cfg)
    assert len(splits.train) + len(splits.val) == 18 and len(splits.test) == 18
    for part, split in ((splits.train, "train"), (splits.val, "train"), (splits.test, "val")):
        for i in range(len(part)):
            stored = part.read(i)
            source = root / split / part.name(i)
            assert bytes(stored[:2].tolist()) == b"\xff\xd8", source  # a JPEG
            if source.read_bytes()[:2] == b"\xff\xd8":
                assert stored.numpy().tobytes() == source.read_bytes()
            with Image.open(source) as img:
                want = (np.repeat(np.asarray(img, np.float32)[..., None] / 257, 3, -1)
                        if img.mode.startswith("I") else np.asarray(img.convert("RGB"), np.float32))
            got = decode_jpeg(stored).permute(1, 2, 0).numpy().astype(np.float32)
            assert np.abs(got - want).mean() < 3, source  # JPEG at quality 95
    x, labels = next(iter(Batches(splits, "train", 4, train=True, seed=0)))
    assert x.shape == (4, 3, 24, 24) and labels.shape == (4,)
