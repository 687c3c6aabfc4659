"""One small interface for local paths and s3:// URIs.

Writes are atomic: a local file is written beside its target and renamed
into place; an S3 object becomes visible only when its single PUT (or
multipart upload) completes, and its size is checked afterwards. So a
reader, or a resumed job, never sees half a checkpoint.

S3 uses boto3 with the endpoint from AWS_ENDPOINT_URL (or
MLFLOW_S3_ENDPOINT_URL) and the standard credential chain.
"""

from __future__ import annotations

import io
import os
import tempfile
from functools import lru_cache
from pathlib import Path


class StorageError(RuntimeError):
    """A storage operation failed; the message names the object and the cause."""


def is_s3(uri: str) -> bool:
    return str(uri).startswith("s3://")


def split_s3(uri: str) -> tuple[str, str]:
    rest = uri[len("s3://"):]
    bucket, _, key = rest.partition("/")
    if not bucket:
        raise StorageError(f"{uri!r} names no bucket: use s3://BUCKET/KEY")
    return bucket, key


def join(base: str, *parts: str) -> str:
    if is_s3(base):
        return "/".join([base.rstrip("/"), *(p.strip("/") for p in parts)])
    return str(Path(base, *parts))


@lru_cache(maxsize=4)
def _client(endpoint: str | None):
    import boto3
    from botocore.config import Config

    # a new session reads the credential chain now, not what the default one cached
    return boto3.session.Session().client(
        "s3", endpoint_url=endpoint or None,
        config=Config(retries={"max_attempts": 5, "mode": "adaptive"}, connect_timeout=5,
                      read_timeout=60))


def s3_client():
    return _client(os.environ.get("AWS_ENDPOINT_URL") or os.environ.get("MLFLOW_S3_ENDPOINT_URL"))


def _explain(uri: str, err: Exception) -> StorageError:
    from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError

    if isinstance(err, NoCredentialsError):
        why = ("no S3 credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
               "(or a profile / instance role)")
    elif isinstance(err, EndpointConnectionError):
        why = f"S3 endpoint unreachable ({err}); check AWS_ENDPOINT_URL"
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
    return StorageError(f"{uri}: {why}")


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
        raise StorageError(f"{uri}: no such file") from None


def write_bytes(uri: str, data: bytes) -> None:
    """Atomically create or replace ``uri`` with ``data``."""
    if is_s3(uri):
        _put_s3(uri, io.BytesIO(data), len(data))
        return
    path = Path(uri)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
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
        raise StorageError(f"{uri}: uploaded {size} bytes but the server holds "
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
        fd, tmp = tempfile.mkstemp(prefix=f".{local.name}.", dir=local.parent)
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
        from botocore.exceptions import ClientError

        bucket, key = split_s3(uri)
        try:
            s3_client().head_object(Bucket=bucket, Key=key)
            return True
        except ClientError as err:
            if err.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise _explain(uri, err) from err
    return Path(uri).exists()


def list_prefix(uri: str) -> list[str]:
    """Every object/file under ``uri`` (recursively), as full URIs, sorted."""
    if is_s3(uri):
        bucket, key = split_s3(uri)
        prefix = key.rstrip("/") + "/" if key else ""
        out = []
        pages = s3_client().get_paginator("list_objects_v2").paginate(Bucket=bucket,
                                                                       Prefix=prefix)
        for page in _s3_call(uri, list, pages):
            out += [f"s3://{bucket}/{o['Key']}" for o in page.get("Contents", [])]
        return sorted(out)
    root = Path(uri)
    if not root.is_dir():
        return []
    return sorted(str(p) for p in root.rglob("*") if p.is_file() and not p.name.endswith(".tmp"))


def delete(uri: str) -> None:
    if is_s3(uri):
        bucket, key = split_s3(uri)
        _s3_call(uri, s3_client().delete_object, Bucket=bucket, Key=key)
    else:
        Path(uri).unlink(missing_ok=True)


def sync_to_local(uri: str, cache_dir: str | Path) -> Path:
    """A local folder holding ``uri``'s files: the folder itself if local,
    else a copy under ``cache_dir`` (files already there with the same size
    are not fetched again)."""
    if not is_s3(uri):
        return Path(uri)
    bucket, key = split_s3(uri)
    dest = Path(cache_dir, bucket, key)
    prefix = key.rstrip("/") + "/" if key else ""
    client = s3_client()
    count = 0
    for page in _s3_call(uri, list, client.get_paginator("list_objects_v2").paginate(
            Bucket=bucket, Prefix=prefix)):
        for obj in page.get("Contents", []):
            target = dest / obj["Key"][len(prefix):]
            if not (target.exists() and target.stat().st_size == obj["Size"]):
                download_file(f"s3://{bucket}/{obj['Key']}", target)
            count += 1
    if count == 0:
        raise StorageError(f"{uri}: no objects under this prefix")
    return dest
