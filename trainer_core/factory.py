"""Build a ready-to-train run from a config: runtime settings, device, data, model, Trainer."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader

from trainer_core import distributed
from trainer_core.config import DataConfig, RunConfig
from trainer_core.data import DataBundle, find_resumable_sampler
from trainer_core.datasets import build_data, dataset_info, preflight_data
from trainer_core.errors import ConfigError, DataError
from trainer_core.host_memory import apply_malloc_policy
from trainer_core.models import build_model, check_kwargs, resolve_factory
from trainer_core.precision import resolve_device
from trainer_core.reproducibility import configure_determinism, seed_everything
from trainer_core.run_logger import RunLogger
from trainer_core.trainer import StepHook, Trainer
from trainer_core.workloads import build_workload


@dataclass
class Run:
    config: RunConfig
    device: torch.device
    data: DataBundle
    model: nn.Module
    trainer: Trainer


def apply_runtime_settings(config: RunConfig) -> None:
    """Threads, malloc policy and determinism switches; process-wide, so set once before building
    anything (the malloc policy before the first large allocation, and before loader workers fork)."""
    if config.train.threads is not None:
        torch.set_num_threads(config.train.threads)
    try:
        apply_malloc_policy(config.train.malloc)
    except RuntimeError as e:
        raise ConfigError(str(e)) from None
    configure_determinism(config.train.deterministic)


def data_config(config: RunConfig) -> DataConfig:
    """The data section as the dataset is built from it: token windows take the model's block size
    (``model.kwargs.block_size``) unless ``data.block_size`` sets one."""
    block = config.model.kwargs.get("block_size")
    if config.data.block_size is None and isinstance(block, int):
        return config.data.model_copy(update={"block_size": block})
    return config.data


def preflight(config: RunConfig) -> None:
    """Resolve what a run of ``config`` will load, cheaply (no data read, no model built, no step):
    the model factory (an import path is imported) and its arguments, the workload and loss, the
    dataset's files. Raises the one-line error the run itself would raise, naming the key; what only
    running can find (a model that fails in forward, memory) is left to the run."""
    check_kwargs(resolve_factory(config.model.name), config.model.kwargs)
    build_workload(config.workload, dataset_info(config.data.name).kind, config.model.loss)
    preflight_data(config.data)


def shard_train_loader(loader: DataLoader, rank: distributed.DistInfo, batch_size: int) -> None:
    """Give this rank its slice of every global batch (see :class:`trainer_core.data.ResumableSampler`)."""
    sampler = find_resumable_sampler(loader)
    if sampler is None:
        raise DataError("data: a data-parallel run needs the resumable sampler to shard the training data")
    sampler.shard(rank.rank, rank.world_size, batch_size)


def build_run(
    config: RunConfig,
    *,
    checkpoint_dir: str | Path | None = None,
    logger: RunLogger | None = None,
    hooks: Iterable[StepHook] = (),
) -> Run:
    """Everything that can fail on bad input fails here, before any output is written."""
    apply_runtime_settings(config)
    device = resolve_device(config.device)
    rank = distributed.current()
    if rank.distributed and device.type == "cuda":
        device = torch.device("cuda", rank.local_rank)
    data = build_data(data_config(config), config.seed, device)
    if rank.distributed and config.train.strategy != "single":
        shard_train_loader(data.train_loader, rank, config.data.batch_size)
    workload = build_workload(config.workload, dataset_info(config.data.name).kind, config.model.loss)
    # Seed right before the model is built so its initial weights depend on the seed alone.
    seed_everything(config.seed)
    model = build_model(config.model, data.facts())
    trainer = Trainer(
        config,
        model,
        device,
        input_transform=data.input_transform,
        steps_per_epoch=len(data.train_loader),
        logger=logger,
        hooks=hooks,
        checkpoint_dir=checkpoint_dir,
        workload=workload,
    )
    return Run(config, device, data, model, trainer)
