"""One small interface for local paths and s3:// URIs.

Writes are atomic: a local file is written beside its target and renamed
into place; an S3 object becomes visible only when its single PUT (or
multipart upload) completes, and its size is checked afterwards. So a
reader, or a resumed job, never sees half a checkpoint.

S3 uses boto3 with the endpoint from AWS_ENDPOINT_URL (or
MLFLOW_S3_ENDPOINT_URL) and the standard credential chain.
"""

from __future__ import annotations

import glob
import io
import os
import tempfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path


class StorageError(RuntimeError):
    """A storage operation failed; the message names the object and the cause."""

    def __init__(self, uri: str, why: str):
        super().__init__(f"{uri}: {why}")
        self.why = why


def is_s3(uri: str) -> bool:
    return str(uri).startswith("s3://")


def split_s3(uri: str) -> tuple[str, str]:
    rest = uri[len("s3://"):]
    bucket, _, key = rest.partition("/")
    if not bucket:
        raise StorageError(repr(uri), "names no bucket: use s3://BUCKET/KEY")
    return bucket, key


def join(base: str, *parts: str) -> str:
    if is_s3(base):
        return "/".join([base.rstrip("/"), *(p.strip("/") for p in parts)])
    return str(Path(base, *parts))


@lru_cache(maxsize=4)
def _client(endpoint: str | None, key_id: str | None, pid: int):
    import boto3
    from botocore.config import Config

    # a new session reads the credential chain now, not what the default one cached
    return boto3.session.Session().client(
        "s3", endpoint_url=endpoint or None,
        config=Config(retries={"max_attempts": 5, "mode": "adaptive"}, connect_timeout=5,
                      read_timeout=60, max_pool_connections=64))


def s3_client():
    # keyed by the access key too: credentials changed in this process take effect; and
    # by the process: a forked data-loader worker must not share its parent's connections
    return _client(os.environ.get("AWS_ENDPOINT_URL") or os.environ.get("MLFLOW_S3_ENDPOINT_URL"),
                   os.environ.get("AWS_ACCESS_KEY_ID"), os.getpid())


def _explain(uri: str, err: Exception) -> StorageError:
    from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError

    if isinstance(err, NoCredentialsError):
        why = ("no S3 credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
               "(or a profile / instance role)")
    elif isinstance(err, EndpointConnectionError):
        why = (f"S3 endpoint {s3_client().meta.endpoint_url} unreachable; check "
               "AWS_ENDPOINT_URL")
    elif isinstance(err, ClientError):
        code = err.response.get("Error", {}).get("Code", "")
        why = {
            "NoSuchBucket": "the bucket does not exist; create it first",
            "NoSuchKey": "no such object",
            "404": "no such object",
            "AccessDenied": "access denied: the credentials may not use this bucket/key",
            "403": "access denied: the credentials may not use this bucket/key",
            "InvalidAccessKeyId": "the access key is not known to this S3 endpoint",
            "SignatureDoesNotMatch": "the secret key is wrong for this access key",
        }.get(code, f"{code}: {err}")
    else:
        why = f"{type(err).__name__}: {err}"
    return StorageError(uri, why)


def _s3_call(uri: str, fn, *args, **kwargs):
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        return fn(*args, **kwargs)
    except (BotoCoreError, ClientError) as err:
        raise _explain(uri, err) from err


# ---- bytes ---------------------------------------------------------------
def read_bytes(uri: str) -> bytes:
    if is_s3(uri):
        bucket, key = split_s3(uri)
        obj = _s3_call(uri, s3_client().get_object, Bucket=bucket, Key=key)
        return obj["Body"].read()
    try:
        return Path(uri).read_bytes()
    except FileNotFoundError:
        raise StorageError(uri, "no such file") from None
    except IsADirectoryError:
        raise StorageError(uri, "is a folder, not a file") from None
    except OSError as err:
        raise StorageError(uri, f"cannot read ({err.strerror or err})") from None


def _temp_prefix(path: Path) -> str:
    return f".{path.name}.{os.getpid()}."


def remove_stale_temps(path: Path, min_age_s: float = 60.0) -> list[Path]:
    """Delete what killed writers of ``path`` left behind: temporary files whose
    writing process is gone (and that are older than ``min_age_s``, so a writer
    in another container that reuses a pid is left alone)."""
    removed = []
    for tmp in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        if _stale(tmp, min_age_s):
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed


def _stale(tmp: Path, min_age_s: float = 60.0) -> bool:
    """Is ``tmp`` (``.<name>.<pid>.<random>.tmp``; the random part has no dots)
    left by a writer that is gone, and older than ``min_age_s``?"""
    import time

    parts = tmp.name[:-len(".tmp")].rsplit(".", 2)
    pid = parts[1] if len(parts) == 3 else ""
    try:
        return time.time() - tmp.stat().st_mtime > min_age_s and not _alive(int(pid))
    except (ValueError, OSError):
        return False


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def write_bytes(uri: str, data: bytes) -> None:
    """Atomically create or replace ``uri`` with ``data``."""
    if is_s3(uri):
        _put_s3(uri, io.BytesIO(data), len(data))
        return
    _write_local(Path(uri), data, tidy=True)


def _write_local(path: Path, data: bytes, tidy: bool) -> None:
    """Write beside ``path`` and rename into place; ``tidy``: first remove the
    temporaries killed writers of ``path`` left (a directory listing, which a
    bulk copy does once for its whole folder instead: ``_prune``)."""
    uri = str(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if tidy:
            remove_stale_temps(path)
        fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(path), suffix=".tmp", dir=path.parent)
    except (FileExistsError, NotADirectoryError):
        raise StorageError(uri, "cannot write here (a part of the path is a file, not a "
                                "folder)") from None
    except OSError as err:
        raise StorageError(uri, f"cannot write here ({err.strerror or err})") from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _put_s3(uri: str, fileobj, size: int) -> None:
    from boto3.s3.transfer import TransferConfig

    bucket, key = split_s3(uri)
    client = s3_client()
    cfg = TransferConfig(multipart_threshold=64 * 2**20, multipart_chunksize=64 * 2**20)
    _s3_call(uri, client.upload_fileobj, fileobj, bucket, key, Config=cfg)
    head = _s3_call(uri, client.head_object, Bucket=bucket, Key=key)
    if head["ContentLength"] != size:
        raise StorageError(uri, f"uploaded {size} bytes but the server holds "
                                f"{head['ContentLength']}")


# ---- files ---------------------------------------------------------------
def upload_file(local: str | Path, uri: str) -> None:
    """Copy a local file to ``uri`` (atomically)."""
    local = Path(local)
    if is_s3(uri):
        with local.open("rb") as f:
            _put_s3(uri, f, local.stat().st_size)
    else:
        write_bytes(uri, local.read_bytes())


def download_file(uri: str, local: str | Path) -> Path:
    """Copy ``uri`` to a local file (atomically) and return its path."""
    local = Path(local)
    if is_s3(uri):
        bucket, key = split_s3(uri)
        local.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(local)
        fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(local), suffix=".tmp", dir=local.parent)
        os.close(fd)
        try:
            _s3_call(uri, s3_client().download_file, bucket, key, tmp)
            os.replace(tmp, local)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    else:
        write_bytes(str(local), read_bytes(uri))
    return local


def exists(uri: str) -> bool:
    if is_s3(uri):
        from botocore.exceptions import BotoCoreError, ClientError

        bucket, key = split_s3(uri)
        try:
            s3_client().head_object(Bucket=bucket, Key=key)
            return True
        except ClientError as err:
            if err.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise _explain(uri, err) from err
        except BotoCoreError as err:
            raise _explain(uri, err) from err
    return Path(uri).exists()


def check_writable(uri: str) -> None:
    """Fail now, before the work, if ``uri`` cannot be written later: a probe
    is written beside it and deleted (a local folder is created if missing)."""
    if not is_s3(uri) and Path(uri).is_dir():
        raise StorageError(uri, "is a folder; name a file to write")
    probe = join(str(Path(uri).parent) if not is_s3(uri) else uri.rsplit("/", 1)[0],
                 f".write-probe-{os.getpid()}")
    try:
        write_bytes(probe, b"")
        delete(probe)
    except StorageError as err:
        raise StorageError(uri, err.why) from None


@dataclass(frozen=True)
class Entry:
    """One object or file under a prefix: ``key`` relative to the prefix; ``version``
    changes when its content does (the S3 ETag, or a local file's mtime)."""

    uri: str
    key: str
    size: int
    version: str


def list_objects(uri: str) -> list[Entry]:
    """Every object/file under ``uri`` (recursively), sorted by key."""
    if is_s3(uri):
        bucket, key = split_s3(uri)
        prefix = key.rstrip("/") + "/" if key else ""
        pages = s3_client().get_paginator("list_objects_v2").paginate(Bucket=bucket,
                                                                       Prefix=prefix)
        return sorted((Entry(f"s3://{bucket}/{o['Key']}", o["Key"][len(prefix):], o["Size"],
                             o.get("ETag", "").strip('"'))
                       for page in _s3_call(uri, list, pages) for o in page.get("Contents", [])),
                      key=lambda e: e.key)
    root = Path(uri)
    if not root.is_dir():
        return []
    found = []
    for p in root.rglob("*"):
        if p.is_file() and not p.name.endswith(".tmp"):
            stat = p.stat()
            found.append(Entry(str(p), p.relative_to(root).as_posix(), stat.st_size,
                               str(stat.st_mtime_ns)))
    return sorted(found, key=lambda e: e.key)


def list_prefix(uri: str) -> list[str]:
    """Every object/file under ``uri`` (recursively), as full URIs, sorted."""
    return sorted(e.uri for e in list_objects(uri))


def delete(uri: str) -> None:
    if is_s3(uri):
        bucket, key = split_s3(uri)
        _s3_call(uri, s3_client().delete_object, Bucket=bucket, Key=key)
    else:
        Path(uri).unlink(missing_ok=True)


def sync_to_local(uri: str, cache_dir: str | Path, threads: int = 32) -> Path:
    """A local folder holding ``uri``'s files: the folder itself if local,
    else a mirror under ``cache_dir``, fetched ``threads`` objects at a time
    (files already there with the same size are not fetched again; files and
    folders no longer in the bucket are removed, so the copy never holds more)."""
    if not is_s3(uri):
        return Path(uri)
    from concurrent.futures import ThreadPoolExecutor

    from tqdm import tqdm

    bucket, key = split_s3(uri)
    dest = Path(cache_dir, bucket, key)
    objects = list_objects(uri)
    if not objects:
        raise StorageError(uri, "no objects under this prefix")
    local = {o.uri: (dest / o.key, o.size) for o in objects}
    _prune(dest, {path for path, _ in local.values()})
    missing = [(uri, path) for uri, (path, size) in local.items() if not _same_size(path, size)]
    with ThreadPoolExecutor(threads) as pool, tqdm(
            total=len(missing), desc=f"fetch {uri}", unit="file", dynamic_ncols=True,
            disable=len(missing) < 100) as bar:
        for _ in pool.map(lambda pair: _write_local(pair[1], read_bytes(pair[0]), tidy=False),
                          missing):
            bar.update(1)
    return dest


def _prune(dest: Path, keep: set[Path]) -> None:
    """Remove the files and folders ``dest`` holds beyond ``keep`` and its folders.
    A temporary file is left to its writer (another process may be syncing the
    same cache: two training processes of one pod do) unless that writer is gone."""
    if not dest.is_dir():
        return
    folders = {parent for path in keep for parent in path.parents}
    for path in sorted(dest.rglob("*"), key=lambda p: len(p.parts), reverse=True):
        if path.is_file() and path not in keep and (
                not path.name.endswith(".tmp") or _stale(path)):
            path.unlink(missing_ok=True)
        elif path.is_dir() and path not in folders and not any(path.iterdir()):
            path.rmdir()


def _same_size(path: Path, size: int) -> bool:
    return path.exists() and path.stat().st_size == size
