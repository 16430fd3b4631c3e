"""Input pipelines and the DataLoader factory, shared by every dataset of the registry (trainer_core/datasets.py).

Two pipelines for array data:
- ``classic``: one sample at a time, uint8 array -> PIL image -> ToTensor -> Normalize, default collate
  (what torchvision's MNIST dataset and the seeds do; slow on CPU because of per-sample Python work);
- ``tensor``: the split is held as one uint8 tensor, whole batches are gathered by index, and
  normalisation happens once per batch after the host-to-device copy (4x fewer bytes to copy).

Shuffling is done by :class:`ResumableSampler`, seeded by (seed, epoch) and able to start mid-epoch,
so a resumed run sees exactly the batches the uninterrupted run would have seen.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, Sampler, TensorDataset

from trainer_core.config import DataConfig
from trainer_core.models import DataFacts


# -------------------------------------------------------------------------------------- datasets
class ClassicImageDataset(Dataset):
    """Per-sample pipeline, as torchvision's MNIST: uint8 -> PIL -> ToTensor -> Normalize. Images are
    [N, H, W] (grayscale) or [N, C, H, W] (C = 3: RGB)."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, mean: float, std: float) -> None:
        from torchvision import transforms

        self.images = (
            images if images.ndim == 3 else np.ascontiguousarray(images.transpose(0, 2, 3, 1))
        )  # PIL wants HWC
        self.labels = labels
        channels = 1 if images.ndim == 3 else images.shape[1]
        self.transform = transforms.Compose(
            [transforms.ToTensor(), transforms.Normalize((mean,) * channels, (std,) * channels)]
        )

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        from PIL import Image

        img = self.images[i]
        return self.transform(Image.fromarray(img, mode="L" if img.ndim == 2 else "RGB")), int(self.labels[i])


class TensorBatchDataset(Dataset):
    """Whole split in memory; indexed by a *list* of indices, it returns a whole batch at once."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.x = x
        self.y = y

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, idx: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        index = torch.as_tensor(idx, dtype=torch.long)
        return self.x.index_select(0, index), self.y.index_select(0, index)


class NormalizeBatch:
    """uint8 images -> float32 normalised, applied per batch on the target device. ``mean``/``std``: one
    value for every channel, or one per channel of [N, C, H, W] batches."""

    def __init__(self, mean: float | tuple[float, ...], std: float | tuple[float, ...]) -> None:
        self.mean = mean
        self.std = std

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        # One multiply-add instead of /255, -mean, /std: fewer passes over memory.
        if isinstance(self.mean, tuple):
            shape = (1, len(self.mean), 1, 1)
            std = torch.tensor(self.std, device=x.device).view(shape)
            mean = torch.tensor(self.mean, device=x.device).view(shape)
            return x.to(torch.float32).mul_(1.0 / (255.0 * std)).sub_(mean / std)
        return x.to(torch.float32).mul_(1.0 / (255.0 * self.std)).sub_(self.mean / self.std)

    def __repr__(self) -> str:
        return f"NormalizeBatch(mean={self.mean}, std={self.std})"


# ---------------------------------------------------------------------------------------- sampler
class ResumableSampler(Sampler[int]):
    """Epoch-seeded permutation that can start at any position inside the epoch, sharded across ranks.

    The permutation of epoch ``e`` depends only on (seed, e), never on global RNG state, so a run
    resumed at (epoch, position) continues with exactly the indices the uninterrupted run used.
    It also reseeds the DataLoader's generator per epoch (worker base seeds come from it).

    With ``shard(rank, world_size, batch_size)`` the epoch's order is cut into global batches of
    ``world_size * batch_size`` and rank r takes the r-th ``batch_size`` slice of each, so the ranks'
    k-th batches together are exactly the k-th batch a single process would take with the global
    batch size. A last, short global batch is split evenly (every rank gets at least one sample, else
    it is dropped: at most world_size - 1 samples an epoch), so every rank takes the same number of steps.
    ``start`` counts this rank's own indices.
    """

    def __init__(self, n: int, shuffle: bool, seed: int, loader_generator: torch.Generator | None = None) -> None:
        self.n = n
        self.shuffle = shuffle
        self.seed = seed
        self.loader_generator = loader_generator
        self.epoch = 0
        self.start = 0
        self.rank, self.world_size, self.batch_size = 0, 1, 1

    def shard(self, rank: int, world_size: int, batch_size: int) -> None:
        self.rank, self.world_size, self.batch_size = rank, world_size, batch_size

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Select the epoch's permutation and skip its first ``start`` indices."""
        self.epoch = epoch
        self.start = start
        if self.loader_generator is not None:
            self.loader_generator.manual_seed(self._epoch_seed() + 1)

    def _epoch_seed(self) -> int:
        return (self.seed * 1_000_003 + self.epoch) % (2**63 - 1)

    def epoch_order(self) -> torch.Tensor:
        """Every index of the epoch, in order, before sharding."""
        if self.shuffle:
            return torch.randperm(self.n, generator=torch.Generator().manual_seed(self._epoch_seed()))
        return torch.arange(self.n)

    def _mine(self) -> torch.Tensor:
        key = (self.epoch, self.rank, self.world_size, self.batch_size)
        if getattr(self, "_cached", (None,))[0] != key:  # len() and iter() of one epoch share the order
            self._cached = (key, self._shard_of(self.epoch_order()))
        return self._cached[1]

    def _shard_of(self, order: torch.Tensor) -> torch.Tensor:
        if self.world_size == 1:
            return order
        g, b, r = self.world_size * self.batch_size, self.batch_size, self.rank
        full = len(order) // g * g
        mine = order[:full].view(-1, g)[:, r * b : (r + 1) * b].reshape(-1)
        tail = order[full:]
        if len(tail) >= self.world_size:
            mine = torch.cat([mine, tail.tensor_split(self.world_size)[r]])
        return mine

    def __iter__(self) -> Iterator[int]:
        return iter(self._mine()[self.start :].tolist())

    def __len__(self) -> int:
        return len(self._mine()) - self.start


def find_resumable_sampler(loader: DataLoader) -> ResumableSampler | None:
    """The loader's :class:`ResumableSampler`, whether used directly or inside a BatchSampler."""
    for s in (loader.sampler, getattr(loader, "batch_sampler", None)):
        if isinstance(s, ResumableSampler):
            return s
        inner = getattr(s, "sampler", None)
        if isinstance(inner, ResumableSampler):
            return inner
    return None


def seed_worker(worker_id: int) -> None:
    """Per-worker seeding: torch seeds each worker with base_seed + worker_id; numpy/random follow it."""
    s = torch.initial_seed() % 2**32
    np.random.seed(s)
    random.seed(s)


# ----------------------------------------------------------------------------------------- bundle
@dataclass
class DataBundle:
    train_loader: DataLoader
    val_loader: DataLoader | None
    test_loader: DataLoader
    input_transform: Callable[[torch.Tensor], torch.Tensor] | None
    num_classes: int
    input_shape: tuple[int, ...]
    class_names: list[str]
    meta: dict[str, Any] = field(default_factory=dict)
    vocab_size: int | None = None  # token data: the vocabulary (the model's input and output size)
    block_size: int | None = None  # token data: tokens per window

    def facts(self) -> DataFacts:
        """What a model built for this data must take (filled into its arguments the config leaves out)."""
        return DataFacts(self.input_shape, self.num_classes, self.vocab_size, self.block_size)


def make_loader(
    dataset: Dataset,
    cfg: DataConfig,
    *,
    batch_size: int,
    train: bool,
    seed: int,
    batched_dataset: bool,
    use_pin_memory: bool,
    num_workers: int,
    sampler: ResumableSampler | None = None,
) -> DataLoader:
    """The one DataLoader factory. ``batched_dataset``: the dataset takes a list of indices per item.
    ``sampler``: a :class:`ResumableSampler` of the dataset's own (default: a permutation of its indices)."""
    generator = torch.Generator()
    if sampler is None:
        sampler = ResumableSampler(len(dataset), shuffle=train and cfg.shuffle, seed=seed)  # type: ignore[arg-type]
    sampler.loader_generator = generator
    worker_kw: dict[str, Any] = {}
    if num_workers > 0:
        worker_kw = {"worker_init_fn": seed_worker, "persistent_workers": train and cfg.persistent_workers}
        if cfg.prefetch_factor is not None:
            worker_kw["prefetch_factor"] = cfg.prefetch_factor
    drop_last = cfg.drop_last and train
    if batched_dataset:
        # batch_size=None turns off auto-collation: each "sample" is already a whole batch.
        return DataLoader(
            dataset,
            batch_size=None,
            sampler=BatchSampler(sampler, batch_size, drop_last),
            num_workers=num_workers,
            pin_memory=use_pin_memory,
            generator=generator,
            **worker_kw,
        )
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        drop_last=drop_last,
        num_workers=num_workers,
        pin_memory=use_pin_memory,
        generator=generator,
        **worker_kw,
    )


def _split(n: int, val_fraction: float, split_seed: int) -> tuple[np.ndarray, np.ndarray]:
    perm = np.random.default_rng(split_seed).permutation(n)
    n_val = int(round(n * val_fraction))
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


@dataclass
class ArraySplits:
    """An array dataset as its loader hands it over: train and test arrays, and what is known about them."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)
    normalisation: tuple[float, float] | None = None  # (mean, std) of pixel/255; None: measured on the training split
    class_names: list[str] | None = None


def _pipeline(
    cfg: DataConfig, splits: ArraySplits, tr_idx: np.ndarray
) -> tuple[Callable[[np.ndarray, np.ndarray], Dataset], Any, tuple[int, ...]]:
    """(dataset maker, per-batch transform, input shape) for images ([N, H, W] grayscale or [N, C, H, W])
    or flat features ([N, F])."""
    xtr = splits.x_train
    if xtr.ndim not in (3, 4):

        def make_flat(xs: np.ndarray, ys: np.ndarray) -> Dataset:
            tx, ty = torch.from_numpy(np.ascontiguousarray(xs)), torch.from_numpy(ys)
            return TensorDataset(tx, ty) if cfg.pipeline == "classic" else TensorBatchDataset(tx, ty)

        return make_flat, None, tuple(xtr.shape[1:])
    if splits.normalisation is not None:
        mean, std = splits.normalisation
    else:  # grayscale: over the whole split; colour (large images): over its first 256
        sample = (xtr[tr_idx] if xtr.ndim == 3 else xtr[tr_idx[:256]]).astype(np.float32) / 255.0
        mean, std = float(sample.mean()), float(sample.std())
    splits.meta.update(mean=mean, std=std)

    def make_images(xs: np.ndarray, ys: np.ndarray) -> Dataset:
        if cfg.pipeline == "classic":
            return ClassicImageDataset(np.ascontiguousarray(xs), ys, mean, std)
        tx = torch.from_numpy(np.ascontiguousarray(xs))
        return TensorBatchDataset(tx.unsqueeze(1) if tx.dim() == 3 else tx, torch.from_numpy(ys))

    shape = (1, *xtr.shape[1:]) if xtr.ndim == 3 else tuple(xtr.shape[1:])
    return make_images, (NormalizeBatch(mean, std) if cfg.pipeline == "tensor" else None), shape


def bundle_from_arrays(cfg: DataConfig, seed: int, device: torch.device, splits: ArraySplits) -> DataBundle:
    """Split train/validation, and build the three loaders for ``cfg.pipeline``."""
    xtr, ytr, xte, yte, meta = splits.x_train, splits.y_train, splits.x_test, splits.y_test, splits.meta
    tr_idx, va_idx = _split(len(ytr), cfg.val_fraction, cfg.split_seed)
    if cfg.limit_train_samples is not None:
        tr_idx = tr_idx[: cfg.limit_train_samples]
    num_classes = int(max(ytr.max(), yte.max())) + 1
    use_pin = cfg.pin_memory and device.type != "cpu"  # pin_memory only helps (and works) with an accelerator
    meta.update(
        name=cfg.name,
        pipeline=cfg.pipeline,
        train_samples=len(tr_idx),
        val_samples=len(va_idx),
        test_samples=len(yte),
        pin_memory_effective=use_pin,
    )
    if cfg.pin_memory and not use_pin:
        meta["pin_memory_note"] = "pin_memory has no effect without an accelerator"
    make, transform, input_shape = _pipeline(cfg, splits, tr_idx)
    # Eval loaders: workers only help the per-sample pipeline; the tensor pipeline gathers in one op.
    eval_workers = cfg.num_workers if cfg.pipeline == "classic" else 0
    common = {"seed": seed, "batched_dataset": cfg.pipeline == "tensor", "use_pin_memory": use_pin}
    train_loader = make_loader(
        make(xtr[tr_idx], ytr[tr_idx]),
        cfg,
        batch_size=cfg.batch_size,
        train=True,
        num_workers=cfg.num_workers,
        **common,
    )  # type: ignore[arg-type]
    val_loader = None
    if len(va_idx):
        val_loader = make_loader(
            make(xtr[va_idx], ytr[va_idx]),
            cfg,
            batch_size=cfg.eval_batch_size,
            train=False,
            num_workers=eval_workers,
            **common,
        )  # type: ignore[arg-type]
    test_loader = make_loader(
        make(xte, yte), cfg, batch_size=cfg.eval_batch_size, train=False, num_workers=eval_workers, **common
    )  # type: ignore[arg-type]
    names = splits.class_names or [str(i) for i in range(num_classes)]
    return DataBundle(train_loader, val_loader, test_loader, transform, num_classes, input_shape, names, meta)


# What a dataset is to the registry (trainer_core.datasets) and to a user's factory (trainer_core.user_data).
Builder = Callable[[DataConfig, int, torch.device], DataBundle]


Kind = Literal["image", "tabular", "text"]
ARRAY_PIPELINES = ("classic", "tensor")


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    kind: Kind
    build: Builder
    preflight: Callable[[DataConfig], None] | None = None
    pipelines: tuple[str, ...] = ARRAY_PIPELINES  # the data.pipeline values it serves
