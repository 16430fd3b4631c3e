"""Data parallelism on ``torch.distributed``: who this process is (the environment torchrun and the
elastic launcher set), the process group (gloo on CPU, NCCL on CUDA, with a timeout so no rank waits
forever), launching ``world_size`` ranks of a function the way ``torchrun`` does
(``torch.distributed.launcher.api.elastic_launch``), and the few collectives the Trainer needs.

``data.batch_size`` is per rank: a step of N ranks consumes N * batch_size samples (the global batch).
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

from trainer_core.config import RunConfig
from trainer_core.errors import ConfigError


@dataclass(frozen=True)
class DistInfo:
    """This process's place in the job (rank 0 of 1 when not distributed)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1 or dist.is_initialized()

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def env_info() -> DistInfo | None:
    """The rank torchrun (or the elastic launcher) gave this process, or None outside such a launch."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return None
    return DistInfo(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", 0)))


def current() -> DistInfo:
    """This process's rank and world size: from the process group once it is up, else single."""
    if dist.is_available() and dist.is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))
    return DistInfo()


def backend_for(device: torch.device) -> str:
    return "nccl" if device.type == "cuda" else "gloo"


def fsdp_skip_reason(strategy: str, device: torch.device) -> str | None:
    """Why FSDP cannot run here (None when it can)."""
    if strategy != "fsdp":
        return None
    if device.type != "cuda":
        return "fsdp needs CUDA/NCCL: gloo lacks the reduce-scatter collectives FSDP shards with"
    return None


def wrap_data_parallel(model: torch.nn.Module, strategy: str, device: torch.device) -> torch.nn.Module:
    """The module the training step calls: DistributedDataParallel over the process group."""
    from torch.nn.parallel import DistributedDataParallel

    reason = fsdp_skip_reason(strategy, device)
    if reason:
        raise ConfigError(f"train.strategy: {reason}")
    if strategy == "fsdp":
        raise ConfigError("train.strategy: fsdp checkpoints (sharded state) are not supported yet; use ddp")
    ids = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids)


def init(config: RunConfig, device: torch.device) -> DistInfo:
    """Join the process group the launcher set up (RANK, WORLD_SIZE, MASTER_ADDR/PORT in the environment)."""
    info = env_info()
    if info is None:
        raise ConfigError("train.strategy: ddp/fsdp ranks are started by bench.train or torchrun, not run directly")
    if device.type == "cuda":
        torch.cuda.set_device(info.local_rank)
    if config.train.threads is None:  # the node's threads shared out: ranks must not oversubscribe its cores
        local = int(os.environ.get("LOCAL_WORLD_SIZE", info.world_size))
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // local))
    if not dist.is_initialized():
        dist.init_process_group(
            backend_for(device),
            timeout=timedelta(seconds=config.train.dist_timeout_s),
            device_id=torch.device("cuda", info.local_rank) if device.type == "cuda" else None,
        )
    return info


def destroy() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def all_gather_object(obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order (``[obj]`` when not distributed)."""
    if not (dist.is_available() and dist.is_initialized()):
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def mean_across_ranks(t: torch.Tensor) -> torch.Tensor:
    """The element-wise mean of ``t`` over the ranks (``t`` itself when not distributed)."""
    if not (dist.is_available() and dist.is_initialized()):
        return t
    t = t.clone()
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t / dist.get_world_size()


def all_true(flag: bool) -> bool:
    """True when ``flag`` is true on every rank (``flag`` when not distributed)."""
    return all(all_gather_object(bool(flag)))


def broadcast_object(obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank."""
    if not (dist.is_available() and dist.is_initialized()):
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def launch(config: RunConfig, entrypoint: Callable[..., Any] | str, *args: Any) -> dict[int, Any]:
    """Run ``entrypoint(*args)`` (a function, or a program with its arguments, as torchrun runs
    ``python -m ...``) in ``train.world_size`` processes per node through the elastic launcher (a c10d
    rendezvous, no restarts): {rank: return value}. A rank's failure stops the others and raises
    torch's ChildFailedError naming the rank and its exit code."""
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    t = config.train
    endpoint = t.rdzv_endpoint or f"127.0.0.1:{free_port()}"
    launch_config = LaunchConfig(
        min_nodes=t.nnodes,
        max_nodes=t.nnodes,
        nproc_per_node=t.world_size,
        run_id=f"trainbench-{uuid.uuid4().hex[:8]}" if t.nnodes == 1 else f"trainbench-{config.name}",
        rdzv_backend="c10d",
        rdzv_endpoint=endpoint,
        rdzv_configs={"is_host": t.nnodes == 1 or _is_this_host(endpoint)},
        max_restarts=0,
        monitor_interval=0.1,
        start_method="spawn",
        log_line_prefix_template="",
    )
    return elastic_launch(launch_config, entrypoint)(*args)


def failed_rank(error: BaseException) -> tuple[int, int]:
    """(rank, exit code) of the first rank that failed, from the launcher's ChildFailedError."""
    failures = getattr(error, "failures", {}) or {}
    if not failures:
        return -1, 1
    rank = min(failures)
    return rank, int(failures[rank].exitcode or 1)


def adopt_launch_environment(config: RunConfig) -> RunConfig:
    """Under torchrun (or the elastic launcher) the environment says how many ranks there are: a
    ``single`` config becomes ``ddp``, and ``train.world_size``/``nnodes`` follow the launch."""
    info = env_info()
    if info is None or info.world_size == 1:
        return config
    local = int(os.environ.get("LOCAL_WORLD_SIZE", info.world_size))
    train = config.train.model_copy(
        update={
            "strategy": "ddp" if config.train.strategy == "single" else config.train.strategy,
            "world_size": local,
            "nnodes": max(1, info.world_size // local),
        }
    )
    return config.model_copy(update={"train": train})


def _is_this_host(endpoint: str) -> bool:
    host = endpoint.rsplit(":", 1)[0]
    return host in {"localhost", "127.0.0.1", socket.gethostname(), socket.getfqdn()}
