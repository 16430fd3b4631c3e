"""Data parallelism on ``torch.distributed``: who this process is (the environment torchrun and the
elastic launcher set), the process group (gloo on CPU, NCCL on CUDA, with a timeout so no rank waits
forever), launching ``world_size`` ranks of a function the way ``torchrun`` does
(``torch.distributed.launcher.api.elastic_launch``), wrapping the model (DistributedDataParallel, or
FSDP2's ``fully_shard`` with whole-tensor state dicts for checkpoints), and the few collectives the
Trainer needs.

``data.batch_size`` is per rank: a step of N ranks consumes N * batch_size samples (the global batch).
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import tempfile
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, NoReturn

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


def _fully_shard() -> Callable[..., Any] | None:
    """FSDP2's ``fully_shard`` (public from torch 2.6, under ``_composable`` before), or None."""
    try:
        from torch.distributed.fsdp import fully_shard
    except ImportError:
        try:
            from torch.distributed._composable.fsdp import fully_shard
        except ImportError:
            return None
    return fully_shard


def fsdp_skip_reason(strategy: str, device: torch.device, memory_format: str = "contiguous") -> str | None:
    """Why FSDP cannot run here (None when it can): FSDP2 shards over gloo on CPU and NCCL on CUDA."""
    if strategy != "fsdp":
        return None
    if _fully_shard() is None:
        return f"fsdp needs FSDP2 (torch.distributed.fsdp.fully_shard), which torch {torch.__version__} lacks"
    if memory_format == "channels_last":
        return "fsdp shards contiguous parameters only; model.memory_format=channels_last makes conv weights NHWC"
    return None


def shard_units(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The modules FSDP2 shards (and all-gathers) one at a time, as torchtitan shards transformer blocks:
    each block of a ``ModuleList``/``Sequential`` (a child that holds layers of its own, such as a GPT
    block or a ResNet basic block). The root takes the rest (embeddings, heads, plain layers). A block
    that shares a parameter with a module outside it (tied weights) stays with the root."""
    outside_counts: dict[int, int] = {}
    for _, p in model.named_parameters(remove_duplicate=False):
        outside_counts[id(p)] = outside_counts.get(id(p), 0) + 1
    units = []
    for container in model.modules():
        if not isinstance(container, (torch.nn.ModuleList, torch.nn.Sequential)):
            continue
        for block in container.children():
            params = list(block.named_parameters(remove_duplicate=False))
            if not params or not any(True for _ in block.children()):
                continue
            inside: dict[int, int] = {}
            for _, p in params:
                inside[id(p)] = inside.get(id(p), 0) + 1
            if all(outside_counts[k] == n for k, n in inside.items()):
                units.append(block)
    return units


def wrap_data_parallel(model: torch.nn.Module, strategy: str, device: torch.device) -> torch.nn.Module:
    """The module the training step calls: DistributedDataParallel over the process group, or for fsdp
    the model itself, sharded in place by FSDP2 (its parameters become DTensors, one shard per rank;
    each unit's full weights are all-gathered for its forward and backward, gradients reduce-scattered)."""
    from torch.nn.parallel import DistributedDataParallel

    if strategy == "fsdp":
        reason = fsdp_skip_reason(strategy, device)
        if reason:
            raise ConfigError(f"train.strategy: {reason}")
        from torch.distributed.device_mesh import init_device_mesh

        fully_shard = _fully_shard()
        assert fully_shard is not None  # fsdp_skip_reason said so
        # The mesh on the cell's device: FSDP's default is the machine's accelerator, even for a CPU run.
        mesh = init_device_mesh(device.type, (dist.get_world_size(),))
        for unit in reversed(shard_units(model)):  # inner blocks before the blocks that hold them
            fully_shard(unit, mesh=mesh)
        return fully_shard(model, mesh=mesh)
    ids = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids)


def is_sharded(model: torch.nn.Module) -> bool:
    """True for a model FSDP2 sharded (its parameters are DTensors)."""
    return any(hasattr(p, "full_tensor") for p in model.parameters())


def full_tensor(t: torch.Tensor) -> torch.Tensor:
    """A DTensor gathered into one plain tensor (a collective); a plain tensor as it is."""
    return t.full_tensor() if hasattr(t, "full_tensor") else t


def full_model_state(model: torch.nn.Module, *, rank0_only: bool = False) -> dict[str, Any]:
    """The model's state_dict with whole tensors, keys as the unwrapped model has them. For a sharded
    model a collective (every rank calls it): every rank gets the gathered weights, or with ``rank0_only``
    only rank 0 does, on the host (what a checkpoint needs: the other ranks' dicts are empty)."""
    if not is_sharded(model):
        return model.state_dict()
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=rank0_only))


def full_optimizer_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """The optimizer's state_dict; for a sharded model gathered on rank 0 (a collective, keyed by parameter
    name, as torch.distributed.checkpoint writes it)."""
    if not is_sharded(model):
        return optimizer.state_dict()
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    return get_optimizer_state_dict(model, optimizer, options=options)


def buffers_per_rank(model: torch.nn.Module) -> list[dict[str, torch.Tensor]] | None:
    """Every rank's module buffers (on the host, in rank order) for a sharded model, else None. FSDP leaves
    buffers such as batch-norm running statistics unsynchronised, so each rank's differ and an exact resume
    needs them all. A collective."""
    if not is_sharded(model):
        return None
    return all_gather_object({name: b.detach().cpu() for name, b in model.named_buffers()})


def load_buffers(model: torch.nn.Module, buffers: dict[str, torch.Tensor]) -> None:
    """Copy saved buffers (one rank's, from :func:`buffers_per_rank`) into the model's own."""
    own = dict(model.named_buffers())
    with torch.no_grad():
        for name, value in buffers.items():
            own[name].copy_(value)


def sharded_grad_scaler(device: torch.device) -> torch.amp.GradScaler:
    """fp16's loss scaler for a sharded model: each rank sees only its shard of the gradients, so
    whether any of them overflowed must be agreed across ranks (or one rank skips a step the others take)."""
    from torch.distributed.fsdp.sharded_grad_scaler import ShardedGradScaler

    return ShardedGradScaler(device.type)


def load_full_model_state(model: torch.nn.Module, state: dict[str, Any]) -> None:
    """Load a whole-tensor state_dict (from :func:`full_model_state` or a one-process run); a sharded
    model keeps its own rank's shard of each tensor."""
    if not is_sharded(model):
        model.load_state_dict(state)
        return
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

    set_model_state_dict(model, state, options=StateDictOptions(full_state_dict=True))


def load_full_optimizer_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> None:
    """Load what :func:`full_optimizer_state` saved."""
    if not is_sharded(model):
        optimizer.load_state_dict(state)
        return
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    set_optimizer_state_dict(model, optimizer, state, options=StateDictOptions(full_state_dict=True))


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


def exit_rank(code: int) -> NoReturn:
    """End a rank whose work is done (outputs written and flushed, process group destroyed) at once,
    without the interpreter's shutdown: there a C++ destructor of torch.distributed's sometimes met a
    thread it could not join and aborted the rank (``terminate called without an active exception``,
    SIGABRT) after a run that had succeeded (docs/measurements.md, Stress)."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


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


class RanksFailed(RuntimeError):
    """A rank of a :func:`launch` failed: which one failed first, how, and its last lines on stderr."""

    def __init__(self, rank: int, exitcode: int, last_lines: list[str]) -> None:
        self.rank, self.exitcode, self.last_lines = rank, exitcode, last_lines
        super().__init__(self.describe())

    @property
    def how(self) -> str:
        """'exit code 1', or for a signal its name: 'SIGABRT (exit code -6)'."""
        if self.exitcode < 0:
            try:
                return f"{signal.Signals(-self.exitcode).name} (exit code {self.exitcode})"
            except ValueError:
                pass
        return f"exit code {self.exitcode}"

    def describe(self) -> str:
        return f"rank {self.rank} failed first ({self.how})"


def launch(config: RunConfig, entrypoint: Callable[..., Any] | str, *args: Any) -> dict[int, Any]:
    """Run ``entrypoint(*args)`` (a function, or a program with its arguments, as torchrun runs
    ``python -m ...``) in ``train.world_size`` processes per node through the elastic launcher (a c10d
    rendezvous, no restarts): {rank: return value}. A rank's failure stops the others and raises
    :class:`RanksFailed` naming the rank that failed first, its exit code or signal and its last lines
    on stderr (each rank's stderr is teed to a log file for that, and still reaches this stderr)."""
    from torch.distributed.elastic.multiprocessing import DefaultLogsSpecs, Std
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    t = config.train
    endpoint = t.rdzv_endpoint or f"127.0.0.1:{free_port()}"
    with tempfile.TemporaryDirectory(prefix="trainbench-ranks-") as logs:
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
            logs_specs=DefaultLogsSpecs(log_dir=logs, tee=Std.ERR),
        )
        try:
            return elastic_launch(launch_config, entrypoint)(*args)
        except ChildFailedError as e:
            rank, exitcode, local_rank = first_failure(e)
            raise RanksFailed(rank, exitcode, last_stderr_lines(Path(logs), local_rank)) from e


def first_failure(error: BaseException) -> tuple[int, int, int]:
    """(rank, exit code, local rank) of the rank that failed first, from the launcher's ChildFailedError:
    the earliest failure; at the same second, one that was not ended by the SIGTERM the launcher sends the
    survivors once a rank has failed; then the lowest rank."""
    failures = getattr(error, "failures", {}) or {}
    if not failures:
        return -1, 1, -1
    rank = min(failures, key=lambda r: (failures[r].timestamp, failures[r].exitcode == -signal.SIGTERM, r))
    f = failures[rank]
    return rank, int(f.exitcode or 1), int(getattr(f, "local_rank", rank))


def last_stderr_lines(logs: Path, local_rank: int, n: int = 8) -> list[str]:
    """The last ``n`` non-empty lines a local rank wrote to stderr (the launcher's teed log of it)."""
    found = sorted(logs.glob(f"*/attempt_*/{local_rank}/stderr.log"))
    if not found:
        return []
    lines = [line.rstrip() for line in found[-1].read_text(errors="replace").splitlines() if line.strip()]
    return lines[-n:]


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
