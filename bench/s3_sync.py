"""Fetching an image folder from S3: one object at a time vs many at once.

Prints one JSON object. A real S3-compatible server (SeaweedFS, started on
127.0.0.1) holds N JPEGs at 224 px; each run syncs the prefix into an empty
cache folder with ``storage.sync_to_local`` at a given number of threads, so
the figures are side by side in one run. (Every step of a pipeline that reads
an image folder from S3 pays this; threads=1 is what it did before.)

Loopback has no network latency, which is what a remote store adds to every
request, so each setting is also run through a local TCP relay that holds
every client-to-server packet for ``--latency-ms`` (a request waits that long
before the server sees it).

    python bench/s3_sync.py --images 600 --threads 1 8 32 --latency-ms 0 20
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np


def _jpeg(rng: np.random.Generator, size: int, grain: int = 8) -> bytes:
    """A ``size`` px JPEG of noise upscaled from ``size // grain`` px: the smaller the
    grain, the more detail and the larger the file (2: about an ImageNet photo's)."""
    from PIL import Image

    pixels = rng.integers(0, 256, (size // grain, size // grain, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).resize((size, size), Image.BICUBIC).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def put_images(keys: list[str], size: int, grain: int = 8) -> list[int]:
    """Write a seeded JPEG to each of ``keys`` (URIs); their sizes in bytes."""
    from scarletnas import storage

    rng, sizes = np.random.default_rng(0), []
    for key in keys:
        data = _jpeg(rng, size, grain)
        sizes.append(len(data))
        storage.write_bytes(key, data)
    return sizes


@contextmanager
def local_s3(tmp: str) -> Iterator:
    """A real S3 server (SeaweedFS) on 127.0.0.1 for this process, stopped after."""
    from scarletnas.devstack import Stack

    stack = Stack(str(Path(tmp, "stack")))
    Path(stack.root).mkdir()
    stack.start_s3()
    os.environ.update(stack.env())
    try:
        yield stack
    finally:
        stack.down()


class DelayRelay:
    """127.0.0.1:port -> the server, every client-to-server packet held ``delay`` s."""

    def __init__(self, target_port: int, delay: float):
        import asyncio
        import threading

        from scarletnas.devstack import free_port

        self.port, self.target, self.delay = free_port(), target_port, delay
        self.loop = asyncio.new_event_loop()
        ready = threading.Event()
        threading.Thread(target=self._serve, args=(ready,), daemon=True).start()
        ready.wait(10)

    def _serve(self, ready) -> None:
        import asyncio

        async def pipe(reader, writer, delay):
            try:
                while data := await reader.read(65536):
                    if delay:
                        await asyncio.sleep(delay)
                    writer.write(data)
                    await writer.drain()
            finally:
                writer.close()

        async def handle(client_r, client_w):
            server_r, server_w = await asyncio.open_connection("127.0.0.1", self.target)
            await asyncio.gather(pipe(client_r, server_w, self.delay),
                                 pipe(server_r, client_w, 0), return_exceptions=True)

        async def main():
            server = await asyncio.start_server(handle, "127.0.0.1", self.port)
            ready.set()
            async with server:
                await server.serve_forever()

        self.loop.run_until_complete(main())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=600)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--threads", type=int, nargs="+", default=[1, 8, 32])
    p.add_argument("--latency-ms", type=float, nargs="+", default=[0, 20])
    args = p.parse_args()

    from scarletnas import storage
    from scarletnas.devstack import BUCKET

    with tempfile.TemporaryDirectory() as tmp, local_s3(tmp) as stack:
        prefix = f"s3://{BUCKET}/bench/images/train"
        sizes = put_images([f"{prefix}/c{i % 10}/{i}.jpg" for i in range(args.images)],
                           args.size)
        runs = []
        for latency in args.latency_ms:
            if latency:
                relay = DelayRelay(stack.s3_port, latency / 1000)
                os.environ["AWS_ENDPOINT_URL"] = f"http://127.0.0.1:{relay.port}"
            for threads in args.threads:
                cache = Path(tmp, f"cache-{latency}-{threads}")
                start = time.perf_counter()
                storage.sync_to_local(prefix, cache, threads=threads)
                seconds = time.perf_counter() - start
                assert sum(1 for _ in cache.rglob("*.jpg")) == args.images
                runs.append({"latency_ms": latency, "threads": threads,
                             "seconds": round(seconds, 2),
                             "images_per_s": round(args.images / seconds, 1)})
            os.environ["AWS_ENDPOINT_URL"] = stack.s3_endpoint
    for run in runs:
        base = next(r for r in runs if r["latency_ms"] == run["latency_ms"])
        run["speedup"] = round(run["images_per_s"] / base["images_per_s"], 2)
    print(json.dumps({"bench": "s3_sync", "images": args.images, "size_px": args.size,
                      "mean_kb": round(float(np.mean(sizes)) / 1024, 1),
                      "server": "SeaweedFS on 127.0.0.1", "cpu": platform.machine(),
                      "cpu_count": os.cpu_count(), "runs": runs}))


if __name__ == "__main__":
    main()
