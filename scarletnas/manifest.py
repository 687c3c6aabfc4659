"""The prepared-data manifest: the one description of a run's data and search space.

prepare_data writes it (the KFP Dataset artifact); every later step opens the
data through ``open_prepared``, which checks that what it loads is what was
prepared and takes the search space from the manifest instead of deriving it
again. A source that changed under a run, or a step given another config, is
an error that says which, not a silently different experiment.
"""

from __future__ import annotations

import json
from pathlib import Path

from . import shards, storage
from .config import DataConfig, PipelineConfig, from_dict, to_dict
from .data import DataError, Splits, load_splits, with_loading
from .space import SearchSpace

FORMAT = 1


def build_space(cfg: PipelineConfig, splits: Splits) -> SearchSpace:
    """The configured space, sized to the data's classes and input resolution."""
    return space_for(cfg, splits.num_classes)


def space_for(cfg: PipelineConfig, num_classes: int) -> SearchSpace:
    return SearchSpace.named(cfg.space.preset, num_classes=num_classes,
                             input_size=cfg.data.size, width_mult=cfg.space.width_mult,
                             allow_skip=cfg.space.allow_skip, shortcut=cfg.space.shortcut)


def describe(cfg: PipelineConfig, splits: Splits, space: SearchSpace) -> dict:
    """The manifest of ``splits`` prepared under ``cfg`` with ``space``."""
    return {"format": FORMAT, "data": to_dict(cfg.data), **splits.describe(),
            "digest": splits.digest(), "source": data_source(cfg.data),
            "space_config": to_dict(cfg.space), "space": space.to_dict(),
            "space_fingerprint": space.fingerprint}


def adopt(cfg: PipelineConfig, manifest: dict) -> PipelineConfig:
    """``cfg`` with the data and space settings the manifest was prepared with
    (for a step run by hand on data prepared earlier)."""
    import dataclasses

    from .config import SpaceConfig

    return dataclasses.replace(cfg, data=from_dict(DataConfig, manifest["data"]),
                               space=from_dict(SpaceConfig, manifest["space_config"]))


def data_source(cfg: DataConfig) -> str:
    """Where the images come from, as a user would name it."""
    if cfg.dataset in ("digits", "distorted-digits"):
        return "sklearn.datasets.load_digits (bundled)"
    return cfg.source


def prepare(cfg: PipelineConfig) -> tuple[Splits, SearchSpace, dict]:
    """Load and split the data once (failing early on bad data) and describe it. An
    image folder or CIFAR-10 is prepared into shards (or finds those prepared from the
    same source and settings) that every later step reads instead of the source."""
    extra: dict = {"skipped_images": []}
    if cfg.data.dataset in shards.DATASETS:
        index, meta = shards.prepare(cfg.data, shards.default_root(cfg.data, cfg.checkpoint_root))
        splits = with_loading(shards.open_index(index, cfg.data), cfg.data)
        extra = {"shards": index, "shards_reused": meta["reused"],
                 "shard_count": len(meta["shards"]), "skipped_images": meta["skipped_images"],
                 "empty_classes": meta["empty_classes"],
                 "ignored_files": meta["ignored_files"][:100],  # all of them: in the index
                 "ignored_file_count": len(meta["ignored_files"])}
    else:
        splits = load_splits(cfg.data)
    space = build_space(cfg, splits)
    return splits, space, {**describe(cfg, splits, space), **extra}


def write(path: str, manifest: dict) -> None:
    storage.write_bytes(path, json.dumps(manifest, indent=1, sort_keys=True).encode())


def read(path: str) -> dict:
    """A manifest written by ``write``, with a clear error for anything else."""
    if not storage.exists(path):
        raise DataError(f"no prepared-data manifest at {path}: pass the Dataset artifact "
                        "written by prepare_data")
    try:
        manifest = json.loads(storage.read_bytes(path))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DataError(f"{path} is not a prepared-data manifest ({err}): pass the Dataset "
                        "artifact written by prepare_data") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise DataError(f"{path} is not a prepared-data manifest of format {FORMAT}: rerun "
                        "prepare_data with this version of scarlet-nas")
    return manifest


def open_prepared(cfg: PipelineConfig, manifest: dict | str) -> tuple[Splits, SearchSpace]:
    """The splits and space of a prepared run, checked against its manifest."""
    if isinstance(manifest, (str, Path)):
        manifest = read(str(manifest))
    prepared = from_dict(DataConfig, manifest["data"])
    if prepared != cfg.data:
        changed = sorted(k for k, v in to_dict(cfg.data).items() if manifest["data"].get(k) != v)
        raise DataError(f"this step's data settings differ from prepare_data's in {changed}: "
                        "every step of a run must get the same config")
    if "shards" in manifest:
        splits = with_loading(shards.open_index(manifest["shards"], cfg.data), cfg.data)
    else:
        splits = load_splits(cfg.data)
    found = {**splits.describe(), "digest": splits.digest()}
    # a manifest from before a key was described (flip) is not held to it
    expected = {k: manifest.get(k, found[k]) for k in found}
    if found != expected:
        raise DataError(f"the data changed since prepare_data described it: prepared "
                        f"{expected}, found {found}; rerun the pipeline (without cached "
                        "prepare_data) to prepare it again")
    space = SearchSpace.from_dict(manifest["space"])
    wanted = build_space(cfg, splits)
    if space.fingerprint != wanted.fingerprint:
        raise DataError(f"prepare_data published search space {space.fingerprint} but this "
                        f"step's config gives {wanted.fingerprint}: every step of a run must "
                        "get the same config")
    return splits, space
