"""Reuse by content: what an earlier run made from the same inputs is used again.

A scheduled run on unchanged data would otherwise train the same supernet,
search it and retrain the same archs again. Each of those steps stores its
result under ``<checkpoint_root>/reuse/<kind>/<key>/``: its files in a folder
of their own, then ``record.json`` naming that folder (its presence means the
result is complete; two runs storing one key at once each write their own
files, and the record names one whole set). The key is a digest of the
inputs that decide the result, its *parts*: the prepared data's digest, the
space's fingerprint, the step's settings (not those that only say how it runs,
``HOW``), the processes it runs on and the code's version. A changed part gives
another key, so reuse turns itself off; the step then names the parts that
differ from the last stored result of its kind. ``reuse: false`` forces a
fresh run.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from . import layout, storage
from .config import PipelineConfig, RunConfig, to_dict

log = logging.getLogger(__name__)

RECORD = "record.json"
# settings that change how a step runs (and what it logs), not what it makes
HOW = ("device", "log_every", "checkpoint_every", "warm_up_ops")


@functools.cache
def code_version() -> str:
    """A digest of the package's source: a change in how results are made (or
    anything else in the code) stops reuse of what the old code made."""
    h = hashlib.sha256()
    for path in sorted(Path(__file__).parent.glob("*.py")):
        h.update(path.name.encode() + b"\0" + path.read_bytes())
    return h.hexdigest()[:16]


def _settings(run: RunConfig) -> dict:
    return {k: v for k, v in to_dict(run).items() if k not in HOW}


def supernet_parts(cfg: PipelineConfig, manifest: Mapping) -> dict:
    """What decides the trained supernet (and the path check stored with it)."""
    res = cfg.resources
    return {"data": manifest["digest"], "flip": manifest.get("flip"),
            "space": manifest["space_fingerprint"], "supernet": _settings(cfg.supernet),
            "eval": to_dict(cfg.eval),
            "check_seed": cfg.search.seed,
            "processes": {"gpus": res.gpus, "processes": res.processes, "nodes": res.nodes},
            "code": code_version()}


def search_parts(cfg: PipelineConfig, supernet_file: str) -> dict:
    """What decides the search: the supernet's content and the search settings."""
    h = hashlib.sha256()
    try:
        with open(supernet_file, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    except IsADirectoryError:
        raise storage.StorageError(supernet_file, "is a folder, not a file") from None
    except FileNotFoundError:
        raise storage.StorageError(supernet_file, "no such file") from None
    return {"supernet": h.hexdigest()[:16], "search": to_dict(cfg.search),
            "eval": to_dict(cfg.eval), "nodes": cfg.resources.nodes, "code": code_version()}


def retrain_parts(cfg: PipelineConfig, manifest: Mapping, arch: str) -> dict:
    res = cfg.resources
    return {"data": manifest["digest"], "flip": manifest.get("flip"),
            "space": manifest["space_fingerprint"], "arch": arch,
            "retrain": _settings(cfg.retrain),
            "processes": {"gpus": res.gpus, "processes": res.processes,
                          "nodes": res.retrain_nodes},
            "code": code_version()}


def key_of(parts: Mapping) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:20]


@dataclass
class Found:
    """A stored result: its folder and record (``out``: the step's own output)."""

    folder: str
    record: dict

    def file(self, name: str) -> str:
        return storage.join(self.folder, self.record["files_in"], name)

    @property
    def source(self) -> str:
        """The run that made it, as its MLflow parent run and time."""
        run = self.record.get("made_by", {}).get("mlflow_run_id")
        created = self.record.get("created", "?")
        return f"run {run} ({created})" if run else f"the run of {created}"


class Store:
    """The reuse folder under a run's checkpoint_root."""

    def __init__(self, checkpoint_root: str):
        self.root = storage.join(checkpoint_root, layout.REUSE)

    @classmethod
    def for_run(cls, cfg: PipelineConfig) -> Store | None:
        """The run's store; None when reuse is off or there is no checkpoint_root."""
        return cls(cfg.checkpoint_root) if cfg.reuse and cfg.checkpoint_root else None

    def find(self, kind: str, parts: Mapping) -> tuple[Found | None, str]:
        """The stored result for ``parts``, or None and why there is none."""
        folder = storage.join(self.root, kind, key_of(parts))
        if not storage.exists(storage.join(folder, RECORD)):
            return None, self._why_not(kind, parts)
        try:
            record = json.loads(storage.read_bytes(storage.join(folder, RECORD)))
            found = Found(folder, record)
            missing = [n for n in record["files"] if not storage.exists(found.file(n))]
        except (OSError, RuntimeError, ValueError, KeyError, TypeError) as err:  # broken entry
            return None, f"the stored {kind} cannot be read ({err})"
        if missing:
            return None, f"the stored {kind} lacks {', '.join(missing)}"
        return found, ""

    def put(self, kind: str, parts: Mapping, files: Mapping[str, str], out: Mapping,
            made_by: Mapping[str, str], about: Mapping | None = None) -> None:
        """Store a result: its files first, then the record that marks it complete
        (``about``: what later runs select it by, beyond its key). A failure to
        store is a warning: the run has its result either way."""
        folder = storage.join(self.root, kind, key_of(parts))
        files_in = uuid.uuid4().hex[:12]
        try:
            for name, path in files.items():
                storage.upload_file(path, storage.join(folder, files_in, name))
            record = {"kind": kind, "key": key_of(parts), "parts": dict(parts),
                      "files": sorted(files), "files_in": files_in, "out": dict(out),
                      "made_by": dict(made_by), "about": dict(about or {}),
                      "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                      "created_ns": time.time_ns()}
            storage.write_bytes(storage.join(folder, RECORD),
                                json.dumps(record, indent=1, default=str).encode())
        except (OSError, RuntimeError) as err:  # StorageError is a RuntimeError
            log.warning("could not store the %s for reuse under %s: %s", kind, folder, err)

    def records(self, kind: str) -> list[Found]:
        """Every readable stored result of ``kind``, newest first."""
        found = []
        for uri in storage.list_prefix(storage.join(self.root, kind)):
            if uri.endswith("/" + RECORD):
                try:
                    found.append(Found(uri[:-len(RECORD) - 1],
                                       json.loads(storage.read_bytes(uri))))
                except (OSError, RuntimeError, ValueError):
                    continue
        return sorted(found, key=lambda f: (f.record.get("created", ""),
                                            f.record.get("created_ns", 0)), reverse=True)

    def _why_not(self, kind: str, parts: Mapping) -> str:
        """Which parts differ from the last stored result of ``kind`` (of the same
        arch, for retrains)."""
        records = [f.record for f in self.records(kind)]
        if "arch" in parts:
            records = [r for r in records if r.get("parts", {}).get("arch") == parts["arch"]]
        if not records:
            return f"no {kind} stored yet" + (" for this arch" if "arch" in parts else "")
        last = max(records, key=lambda r: r.get("created", ""))
        changed = differences(last.get("parts", {}), parts)
        return f"{', '.join(changed)} changed since the last stored {kind}" if changed else \
            f"no {kind} stored for these inputs"


def differences(old: Mapping, new: Mapping, prefix: str = "") -> list[str]:
    """The dotted names of the leaves that differ, with both values (short ones)."""
    out = []
    for k in sorted(set(old) | set(new)):
        a, b = old.get(k), new.get(k)
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            out += differences(a, b, f"{prefix}{k}.")
        elif a != b:
            name = {"data": "the data", "space": "the search space", "code": "the code",
                    "flip": "data.flip"}.get(
                k, prefix + k) if not prefix else prefix + k
            shown = f" ({a} -> {b})" if len(f"{a}{b}") <= 40 else ""
            out.append(name + shown)
    return out


def announce(tracker, kind: str, found: Found | None, why: str, label: str = "") -> None:
    """Say on the step's run, the parent run and the log what was reused, or why not."""
    name = f"reused.{kind}" + (f".{label}" if label else "")
    text = f"from {found.source}" if found else f"no: {why}"
    log.info("%s%s: %s", kind, f" {label}" if label else "", "reused " + text if found else
             f"not reused: {why}")
    tracker.tags({"reused": text})
    tracker.parent.tags({name: text})
