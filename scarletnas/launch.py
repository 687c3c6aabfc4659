"""One training process per device of this pod, started by torch's elastic
launcher (``torch.distributed.run``'s engine) from inside the step.

``run(fn, args, n)`` calls ``fn(*args)`` in ``n`` processes that form one
process group (NCCL on GPUs, gloo on CPU) and returns rank 0's result. Every
rank takes the same path per step and averages gradients (``train.py``);
rank 0 alone logs, tracks and writes. A worker that dies fails the call with
that worker's error, and the others are stopped: no hang.
"""

from __future__ import annotations

import logging
import os
import tempfile
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from .config import ConfigError, PipelineConfig

if TYPE_CHECKING:
    import torch


def resolve_device(name: str = "auto") -> torch.device:
    """The torch device ``name`` means here (auto: CUDA when a GPU is visible); in a
    process group, this rank's own GPU."""
    import torch
    import torch.distributed as dist

    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("device=cuda was asked for but no CUDA GPU is visible; "
                               "use device=cpu or auto")
        if device.index is None and dist.is_initialized():
            device = torch.device("cuda", torch.cuda.current_device())
    return device


def world() -> tuple[int, int]:
    """(rank, world size) of the current process group, (0, 1) without one."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class WorkerError(RuntimeError):
    """A training process failed; ``kind`` is its exception's class name."""

    def __init__(self, rank: int, kind: str, message: str):
        super().__init__(f"training process {rank} failed: {message}")
        self.rank, self.kind = rank, kind


def processes(cfg: PipelineConfig, device: str = "auto") -> int:
    """How many training processes this pod runs: ``resources.processes``, or
    with 0 one per visible GPU (one without a GPU, or on a CPU ``device``)."""
    import torch

    if cfg.resources.processes:
        return cfg.resources.processes
    if device == "cpu" or not torch.cuda.is_available():
        return 1
    return torch.cuda.device_count()


def run(fn: Callable, args: tuple, n: int, cuda: bool = False):
    """``fn(*args)`` on ``n`` ranks (in this process when ``n`` is 1), one GPU each
    with ``cuda``; rank 0's result."""
    if n <= 1:
        return fn(*args)
    import torch
    from torch.distributed.elastic.multiprocessing import DefaultLogsSpecs
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    if cuda and n > torch.cuda.device_count():
        raise ConfigError(f"resources.processes={n} but this pod sees "
                          f"{torch.cuda.device_count()} GPU(s): request as many GPUs "
                          "(resources.gpus) or set resources.processes=0")
    with tempfile.TemporaryDirectory(prefix="scarletnas-ranks-") as logs:  # their error files
        config = LaunchConfig(
            min_nodes=1, max_nodes=1, nproc_per_node=n,
            run_id=f"scarlet-nas-{uuid.uuid4().hex[:8]}", rdzv_backend="c10d",
            rdzv_endpoint="127.0.0.1:0", max_restarts=0, monitor_interval=0.5,
            start_method="spawn", logs_specs=DefaultLogsSpecs(log_dir=logs))
        try:
            results = elastic_launch(config, entrypoint=_rank_main)(fn, args, cuda)
        except ChildFailedError as err:
            rank, failure = err.get_first_failure()
            raise _worker_error(rank, failure.message) from None
    return results[0]


def _worker_error(rank: int, message) -> WorkerError:
    """The failed rank's error in one line, with its exception's class name."""
    text = message.get("message", str(message)) if isinstance(message, dict) else str(message)
    first = text.strip().splitlines()[0] if text.strip() else "exited without an error message"
    kind, sep, _ = first.partition(": ")
    return WorkerError(rank, kind.rsplit(".", 1)[-1] if sep and " " not in kind else "", first)


def _rank_main(fn: Callable, args: tuple, cuda: bool):
    """One rank started by ``run``: join the group, run, leave."""
    from torch.distributed.elastic.multiprocessing.errors import record

    @record  # the error and its traceback reach the launcher, which names it
    def main():
        with process_group(cuda):
            return fn(*args)

    return main()


@contextmanager
def process_group(cuda: bool) -> Iterator[None]:
    """This process as one rank of the group its launcher (``run`` here, torchrun
    on a TrainJob's nodes) described in the environment: quiet unless rank 0,
    its own GPU, or its share of the cores."""
    import torch
    import torch.distributed as dist

    local_rank, local_world = int(os.environ["LOCAL_RANK"]), int(os.environ["LOCAL_WORLD_SIZE"])
    if int(os.environ.get("RANK", local_rank)):  # rank 0 speaks for all
        logging.getLogger("scarletnas").setLevel(logging.ERROR)
    if cuda:
        torch.cuda.set_device(local_rank)
    else:  # share the cores instead of each process claiming them all
        torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS") or 0)
                              or max(1, (os.cpu_count() or 1) // local_world))
    dist.init_process_group("nccl" if cuda else "gloo")
    try:
        yield
    finally:
        dist.destroy_process_group()
