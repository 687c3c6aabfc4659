"""Image folders prepared once into shards and streamed to every step, on a real
S3 server (SeaweedFS) where it matters: preparation with bad files, reuse, the
bounded cache, and a supernet that trains from the shards and resumes exactly."""

import io
import tarfile
from pathlib import Path

import pytest
import torch
from torchvision.io import encode_jpeg

from scarletnas import shards, storage
from scarletnas.config import DataConfig, EvalConfig
from scarletnas.data import Batches, DataError, load_splits
from scarletnas.devstack import BUCKET

COLOURS = torch.tensor([[200, 30, 30], [30, 200, 30], [30, 30, 200], [200, 200, 30],
                        [30, 200, 200]], dtype=torch.float32)


def write_colour_folder(root: Path, per_class=24, classes=5, val=6, side=32) -> Path:
    """Classes told apart by colour under noise: something a small net learns fast."""
    gen = torch.Generator().manual_seed(0)
    for split, n in (("train", per_class), ("val", val)):
        for c in range(classes):
            folder = root / split / f"c{c}"
            folder.mkdir(parents=True)
            for i in range(n):
                img = COLOURS[c].view(3, 1, 1) + 50 * torch.randn(3, side, side, generator=gen)
                data = encode_jpeg(img.clamp(0, 255).to(torch.uint8), quality=90)
                (folder / f"{i:03d}.jpg").write_bytes(data.numpy().tobytes())
    return root


def upload(root: Path, prefix: str) -> None:
    for f in sorted(root.rglob("*")):
        if f.is_file():
            storage.upload_file(f, f"{prefix}/{f.relative_to(root).as_posix()}")


# ---- the format and the order (local shards) -------------------------------------------
def test_shards_are_webdataset_tars_holding_every_image_once(tmp_path):
    import webdataset as wds

    root = write_colour_folder(tmp_path / "imgs", per_class=8, val=2)
    cfg = DataConfig(dataset="imagefolder", source=str(root), input_size=16, shard_mb=0.01,
                     cache_dir=str(tmp_path / "cache"))
    splits = load_splits(cfg)
    names = [(p, part.name(i)) for p, part in (("train", splits.train), ("val", splits.val))
             for i in range(len(part))]
    assert sorted(n for _, n in names) == sorted(
        f"c{c}/{i:03d}.jpg" for c in range(5) for i in range(8))
    assert len(splits.test) == 10 and len(splits.train.shards) > 3
    by_key = {}
    tars = sorted(Path(splits.train.root).glob("*.tar"))
    for sample in wds.WebDataset([str(t) for t in tars], shardshuffle=False, empty_check=False):
        by_key[(sample["__url__"], sample["__key__"])] = sample
    assert len(by_key) == 50  # what any WebDataset reader sees: every image, with its class
    for part in (splits.train, splits.val, splits.test):
        for i in range(len(part)):
            tar = part.local(int(part.shard[i]))
            with tarfile.open(tar) as t:
                key = next(m.name[:-4] for m in t.getmembers()
                           if m.name.endswith(".jpg") and m.offset_data == part.offset[i])
            sample = by_key[(str(tar), key)]
            assert part.read(i).numpy().tobytes() == sample["jpg"]
            assert int(sample["cls"]) == int(part.labels[i])
            assert (root / ("val" if part is splits.test else "train") / part.name(i)
                    ).read_bytes() == sample["jpg"]


def test_training_order_is_seeded_per_epoch_and_ranks_read_their_own_shards(tmp_path):
    root = write_colour_folder(tmp_path / "imgs", per_class=16, val=1)
    cfg = DataConfig(dataset="imagefolder", source=str(root), input_size=16, shard_mb=0.012,
                     cache_dir=str(tmp_path / "cache"), shuffle_shards=2)
    train = load_splits(cfg).train
    sizes = sorted(len(m) for m in train.members().values())
    assert len(sizes) >= 6
    count = train.per_rank(2)
    assert count == sum(sizes[:len(sizes) // 2])
    orders = {(e, r): train.train_order(0, e, r, 2, 2, count) for e in (0, 1) for r in (0, 1)}
    assert torch.equal(orders[0, 0], train.train_order(0, 0, 0, 2, 2, count))  # pure
    assert not torch.equal(orders[0, 0], orders[1, 0])  # a new order each epoch
    for e in (0, 1):
        a, b = ({int(train.shard[i]) for i in orders[e, r]} for r in (0, 1))
        assert not a & b  # each rank reads only its own shards
        assert len(orders[e, 0]) == len(orders[e, 1]) == count
    for order in orders.values():  # shuffled within windows of two shards at a time
        shard_of = train.shard[order.numpy()].tolist()
        first = {s: shard_of.index(s) for s in set(shard_of)}
        last = {s: len(shard_of) - 1 - shard_of[::-1].index(s) for s in set(shard_of)}
        open_at = [sum(first[s] <= k <= last[s] for s in first) for k in range(len(shard_of))]
        assert max(open_at) == 2  # never more than a window's shards in use at once
    with pytest.raises(DataError, match="shard\\(s\\) for 99 processes: .*data.shard_mb"):
        train.per_rank(99)


def test_shrinking_at_preparation_keeps_the_aspect_and_the_fingerprint_changes(tmp_path):
    root = tmp_path / "imgs"
    for split in ("train", "val"):
        for c in ("a", "b"):  # an image folder needs two classes
            (root / split / c).mkdir(parents=True)
            img = torch.randint(0, 255, (3, 120, 200), dtype=torch.uint8)
            for i in range(3):
                (root / split / c / f"{i}.jpg").write_bytes(encode_jpeg(img).numpy().tobytes())
    cfg = DataConfig(dataset="imagefolder", source=str(root), input_size=16, val_fraction=0.34,
                     cache_dir=str(tmp_path / "cache"))
    small = DataConfig(**{**cfg.__dict__, "shard_image_size": 48})
    full, half = (shards.prepare(c, shards.default_root(c))[0] for c in (cfg, small))
    assert full != half  # a setting that shapes the shards is part of the fingerprint
    from PIL import Image

    opened = shards.open_index(half, small)
    with Image.open(io.BytesIO(opened.test.read(0).numpy().tobytes())) as img:
        assert img.size == (80, 48)


# ---- on a real S3 server --------------------------------------------------------------
def test_image_folder_on_s3_with_bad_files_is_prepared_into_shards_once(s3_env, tmp_path,
                                                                        caplog):
    """A corrupt JPEG, an empty class folder and a file that is no image: fail stops
    naming them; skip prepares the rest into shards and reports what it left out; the
    same source prepared again reuses the shards; a changed source is prepared again."""
    from scarletnas import manifest
    from scarletnas.config import PipelineConfig, SpaceConfig

    root = write_colour_folder(tmp_path / "imgs", per_class=6, classes=3, val=2)
    whole = (root / "train" / "c2" / "002.jpg").read_bytes()
    (root / "train" / "c2" / "002.jpg").write_bytes(whole[: len(whole) // 3])
    (root / "train" / "c1" / "LICENSE.txt").write_text("CC-BY\n")
    prefix = f"s3://{BUCKET}/datasets/bad-images"
    upload(root, prefix)
    storage.write_bytes(f"{prefix}/train/zebra/.keep", b"")  # an empty class folder
    shard_root = f"s3://{BUCKET}/shards"

    def cfg(policy):
        return PipelineConfig(data=DataConfig(dataset="imagefolder", source=prefix,
                                              input_size=16, bad_images=policy, shard_mb=0.005,
                                              shard_root=shard_root,
                                              cache_dir=str(tmp_path / "cache")),
                              space=SpaceConfig(width_mult=0.25))

    with pytest.raises(DataError, match=r"class folder\(s\) \['train/zebra'\] hold no images"):
        manifest.prepare(cfg("fail"))
    storage.delete(f"{prefix}/train/zebra/.keep")
    with pytest.raises(DataError, match=r"1 of 24 images in s3://.* cannot be decoded: "
                                        r"train/c2/002.jpg \(.*\); replace or remove"):
        manifest.prepare(cfg("fail"))
    assert storage.list_prefix(shard_root) == []  # a failed preparation leaves nothing
    storage.write_bytes(f"{prefix}/train/zebra/.keep", b"")
    with caplog.at_level("WARNING"):
        splits, _, described = manifest.prepare(cfg("skip"))
    assert [s["image"] for s in described["skipped_images"]] == ["train/c2/002.jpg"]
    assert described["empty_classes"] == ["train/zebra"]
    assert described["ignored_files"] == ["train/c1/LICENSE.txt"]
    assert "train/c1/LICENSE.txt" in caplog.text and "train/c2/002.jpg" in caplog.text
    assert splits.num_classes == 3 and len(splits.train) + len(splits.val) == 17
    assert not described["shards_reused"] and described["shard_count"] > 3
    index = described["shards"]
    assert index.startswith(f"{shard_root}/") and index.endswith("/index.npz")
    written = {o["Key"]: o["LastModified"] for o in s3_env.s3().list_objects_v2(
        Bucket=BUCKET, Prefix="shards/")["Contents"]}
    assert len(written) == described["shard_count"] + 1

    _, _, again = manifest.prepare(cfg("skip"))  # the weekly run: nothing rewritten
    assert again["shards_reused"] and again["shards"] == index
    assert again["digest"] == described["digest"]
    assert {o["Key"]: o["LastModified"] for o in s3_env.s3().list_objects_v2(
        Bucket=BUCKET, Prefix="shards/")["Contents"]} == written
    opened, _ = manifest.open_prepared(cfg("skip"), again)  # a later step, from the shards
    assert opened.digest() == described["digest"]
    x, y = next(iter(Batches(opened, "test", 4, train=False)))
    assert x.shape == (4, 3, 16, 16) and y.tolist() == [0, 0, 1, 1]

    storage.write_bytes(f"{prefix}/train/c2/002.jpg", whole)  # the source is fixed
    _, _, fixed = manifest.prepare(cfg("skip"))
    assert not fixed["shards_reused"] and fixed["shards"] != index
    assert fixed["skipped_images"] == [] and fixed["train"] + fixed["val"] == 18


def test_cifar10_on_s3_is_prepared_once_into_png_shards_of_the_same_pixels(s3_env, tmp_path):
    from scarletnas.data import read_cifar10, tensor_splits

    from .test_data import write_cifar

    root = write_cifar(tmp_path / "cifar")
    prefix = f"s3://{BUCKET}/datasets/cifar-shards"
    upload(root, prefix)
    cfg = DataConfig(dataset="cifar10", source=prefix, input_size=32, shard_mb=0.1,
                     shard_root=f"s3://{BUCKET}/shards-cifar", cache_dir=str(tmp_path / "cache"))
    index, meta = shards.prepare(cfg, cfg.shard_root)
    assert meta["kind"] == "pixels" and not meta["reused"] and len(meta["shards"]) >= 3
    assert meta["images"] == {"train": 200, "val": 50, "test": 20}
    from_shards = shards.open_index(index, cfg)
    direct = tensor_splits("cifar10", read_cifar10(cfg), cfg, 10)
    for part in ("train", "val", "test"):  # lossless: exactly the pixels and labels prepared
        a, b = getattr(from_shards, part), getattr(direct, part)
        assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    assert from_shards.digest() == direct.digest() and from_shards.mean == direct.mean
    assert shards.prepare(cfg, cfg.shard_root) == (index, {**meta, "reused": True})


def test_a_training_pass_keeps_a_bounded_cache_and_evaluation_splits_stay(s3_env, tmp_path,
                                                                          monkeypatch):
    root = write_colour_folder(tmp_path / "imgs", per_class=24)
    prefix = f"s3://{BUCKET}/datasets/colours"
    upload(root, prefix)
    cfg = DataConfig(dataset="imagefolder", source=prefix, input_size=16, shard_mb=0.01,
                     shard_root=f"s3://{BUCKET}/shards-cache", cache_dir=str(tmp_path / "cache"),
                     shuffle_shards=2, workers=2)
    splits = load_splits(cfg)
    cache = Path(splits.train.cache)
    n_shards = len(splits.train.members())
    assert n_shards >= 12
    held = []
    fetch = shards.ShardSet.local

    def watched(self, s):
        held.append(len(list(cache.glob("train-*.tar"))))
        return fetch(self, s)

    monkeypatch.setattr(shards.ShardSet, "local", watched)
    b = Batches(splits, "train", 8, train=True, seed=3)
    seen = [y for _, y in b.epoch(0)]
    assert sum(len(y) for y in seen) == len(b) * 8
    assert max(held) <= 2 * 2 + 2  # two windows of two shards (+ the ones in flight)
    assert not list(cache.glob("train-*.tar"))  # each removed after its last batch
    test = sum(len(y) for _, y in Batches(splits, "test", 16, train=False))
    assert test == len(splits.test) and list(cache.glob("test-*.tar"))  # kept for reuse
    # a shard changed after preparation is refused, not read
    name = splits.test.shards[int(splits.test.shard[0])]["name"]
    storage.write_bytes(storage.join(splits.test.root, name), b"not the prepared shard")
    (cache / name).unlink()
    with pytest.raises(DataError, match=f"{name}: its checksum differs from the index"):
        list(Batches(splits, "test", 16, train=False))


def test_supernet_trains_from_s3_shards_and_resumes_exactly_after_sigkill(s3_env, tmp_path):
    """``scarlet-nas train-supernet`` on an image folder in S3, read through shards by two
    loader processes: a run SIGKILLed after a checkpoint resumes, reusing the shards,
    and ends bit-identical to a run never interrupted; its sampled paths learned."""
    import json
    import os
    import signal
    import subprocess
    import sys
    import time

    from scarletnas.checkpoint import load_supernet
    from scarletnas.evaluate import sampled_path_check

    root = write_colour_folder(tmp_path / "imgs", per_class=64, val=8)
    prefix = f"s3://{BUCKET}/datasets/colours-train"
    upload(root, prefix)
    settings = {"data.input_size": 8, "data.shard_mb": 0.03, "data.workers": 2,
                "data.shard_root": f"s3://{BUCKET}/shards-train",
                "data.cache_dir": str(tmp_path / "cache"), "supernet.checkpoint_every": 5,
                "supernet.check_paths": 8, "supernet.log_every": 5, "eval.calib_batch_size": 32}
    cmd = [sys.executable, "-m", "scarletnas.cli", "train-supernet", "--data", "imagefolder",
           "--source", prefix, "--space", "compact", "--epochs", "8", "--batch-size", "32",
           "--set", "supernet.optim.min_steps=0",
           "--lr", "0.1", "--device", "cpu", "--seed", "0",
           *[a for k, v in settings.items() for a in ("--set", f"{k}={v}")]]
    env = {**os.environ, "MLFLOW_TRACKING_URI": ""}

    def run(out: str, *extra: str) -> subprocess.Popen:
        return subprocess.Popen([*cmd, "--out", out, *extra], env=env, text=True, cwd=tmp_path,
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                start_new_session=True)

    reference = run(str(tmp_path / "ref" / "supernet.pt"))
    assert reference.wait(timeout=600) == 0
    uri = f"s3://{BUCKET}/runs/shards/supernet/checkpoint.pt"
    killed = run(str(tmp_path / "run" / "supernet.pt"), "--checkpoint", uri)
    deadline = time.time() + 600
    while not storage.exists(uri):  # the first checkpoint (step 5) is in S3
        assert killed.poll() is None and time.time() < deadline
        time.sleep(0.2)
    time.sleep(2)  # on into the next steps, loader processes busy
    os.killpg(killed.pid, signal.SIGKILL)
    assert killed.wait(timeout=60) == -signal.SIGKILL  # killed mid-run, not finished
    resumed = run(str(tmp_path / "run" / "supernet.pt"), "--checkpoint", uri)
    out, _ = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, out
    result = json.loads(out[out.index("{"):])
    assert 5 <= result["resumed_from_step"] < result["steps"] == 64, result
    a = load_supernet(str(tmp_path / "ref" / "supernet.pt")).state_dict()
    b = load_supernet(str(tmp_path / "run" / "supernet.pt"))
    assert a.keys() == b.state_dict().keys()
    assert all(torch.equal(a[k], v) for k, v in b.state_dict().items())
    splits = load_splits(DataConfig(dataset="imagefolder", source=prefix, **{
        k.split(".")[1]: v for k, v in settings.items() if k.startswith("data.")}))
    check = sampled_path_check(b, splits, EvalConfig(calib_batches=4, calib_batch_size=32), 8)
    assert check["learned"] and check["top1_mean"] >= 0.7, check  # chance: 20%
