"""Datasets, input pipelines and DataLoader factory.

Two pipelines for image data:
- ``classic``: one sample at a time, uint8 array -> PIL image -> ToTensor -> Normalize, default collate
  (what torchvision's MNIST dataset and the seeds do; slow on CPU because of per-sample Python work);
- ``tensor``: the split is held as one uint8 tensor, whole batches are gathered by index, and
  normalisation happens once per batch after the host-to-device copy (4x fewer bytes to copy).

Shuffling is done by :class:`ResumableSampler`, seeded by (seed, epoch) and able to start mid-epoch,
so a resumed run sees exactly the batches the uninterrupted run would have seen.
"""

from __future__ import annotations

import gzip
import os
import random
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, Sampler, TensorDataset

from trainer_core.config import DataConfig
from trainer_core.errors import DataError

IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
# Per-dataset normalisation constants (mean, std of pixel/255 over the training split).
NORMALISATION = {"mnist": (0.1307, 0.3081), "fashion_mnist": (0.2860, 0.3530)}
SYSTEM_DIRS = {"mnist": "/usr/share/datasets/mnist", "fashion_mnist": "/usr/share/datasets/fashion-mnist"}
_TORCHVISION_DIRS = {"mnist": "MNIST", "fashion_mnist": "FashionMNIST"}
_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


# --------------------------------------------------------------------------------------------- IDX
# Decoded IDX arrays by (path, mtime, size). Every build_run reads the dataset again: a matrix cell's
# guards build up to six runs, and gunzipping Fashion-MNIST costs ~0.3 s each time (measured here,
# ~2 s of a ~13 s tune cell). A file changed on disk has a new key.
_IDX_CACHE: dict[tuple[str, int, int], np.ndarray] = {}


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (raw or .gz) into a numpy array; a malformed file raises :class:`DataError`.

    Decoded files are kept for the life of the process; each call returns its own writable copy.
    """
    p = Path(path)
    try:
        st = p.stat()
    except OSError as e:
        raise DataError(f"{p}: cannot read IDX file ({e})") from None
    key = (str(p.resolve()), st.st_mtime_ns, st.st_size)
    if key not in _IDX_CACHE:
        _IDX_CACHE[key] = _decode_idx(p)
    return _IDX_CACHE[key].copy()


def _decode_idx(p: Path) -> np.ndarray:
    try:
        opener = gzip.open if p.suffix == ".gz" else open
        with opener(p, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as e:
        raise DataError(f"{p}: cannot read IDX file ({e})") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise DataError(f"{p}: not an IDX file (bad magic number)")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{p}: truncated IDX header")
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(raw) - header != expected:
        raise DataError(f"{p}: IDX payload is {len(raw) - header} bytes, header says {expected} (truncated or corrupt)")
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)


def _find_file(folder: Path, stem: str) -> Path | None:
    for name in (stem, stem + ".gz"):
        if (folder / name).is_file():
            return folder / name
    return None


def candidate_dirs(name: str, root: str | None) -> list[Path]:
    """Where IDX files for ``name`` are looked for, in order: config root, $TRAINBENCH_DATA, system dir."""
    bases: list[Path] = []
    if root:
        bases.append(Path(root).expanduser())
    env = os.environ.get("TRAINBENCH_DATA")
    if env:
        bases.append(Path(env).expanduser())
    bases.append(Path(SYSTEM_DIRS[name]))
    sub = name.replace("_", "-")
    out: list[Path] = []
    for b in bases:
        for d in (b, b / sub, b / name, b / _TORCHVISION_DIRS[name] / "raw"):
            if d not in out:
                out.append(d)
    return out


def locate_idx_dir(name: str, root: str | None, download: bool) -> Path:
    """Find a folder holding all four IDX files for ``name``, downloading via torchvision if allowed."""
    dirs = candidate_dirs(name, root)
    for d in dirs:
        if all(_find_file(d, stem) for pair in IDX_FILES.values() for stem in pair):
            return d
    if download:
        target = Path(root or os.environ.get("TRAINBENCH_DATA") or Path.home() / ".cache" / "trainbench").expanduser()
        try:
            import torchvision.datasets as tvd

            cls = tvd.FashionMNIST if name == "fashion_mnist" else tvd.MNIST
            for train in (True, False):
                cls(str(target), train=train, download=True)
        except Exception as e:  # network errors come in many types; the message is what matters
            raise DataError(f"data.download: torchvision could not download {name} into {target} ({type(e).__name__}: {e})") from None
        d = target / _TORCHVISION_DIRS[name] / "raw"
        if all(_find_file(d, stem) for pair in IDX_FILES.values() for stem in pair):
            return d
    looked = ", ".join(str(d) for d in dirs)
    hint = "apt-get install dataset-fashion-mnist" if name == "fashion_mnist" else "set data.root or TRAINBENCH_DATA"
    raise DataError(
        f"data.name={name}: IDX files not found (looked in: {looked}); {hint}, or set data.download=true where online"
    )


def preflight_data(cfg: DataConfig) -> None:
    """What a run of ``cfg`` would fail on when loading its data, found without loading it: IDX files
    that are not on disk (and may not be downloaded). Raises :class:`DataError`."""
    if cfg.name in SYSTEM_DIRS and not cfg.download:
        locate_idx_dir(cfg.name, cfg.root, download=False)


def load_idx_split(folder: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    img_stem, lbl_stem = IDX_FILES[split]
    images = read_idx(_find_file(folder, img_stem))  # type: ignore[arg-type]
    labels = read_idx(_find_file(folder, lbl_stem))  # type: ignore[arg-type]
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise DataError(f"{folder}: {split} images {images.shape} and labels {labels.shape} do not match")
    return images, labels.astype(np.int64)


# --------------------------------------------------------------------------------------- synthetic
def make_blobs(n: int, n_features: int = 2, noise: float = 0.8, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two Gaussian blobs (the seeds' ``make_synth``), class 1 shifted by +2.5 in every dimension."""
    rng = np.random.default_rng(seed)
    x0 = rng.normal(0.0, noise, size=(n // 2, n_features))
    x1 = rng.normal(0.0, noise, size=(n - n // 2, n_features)) + 2.5
    x = np.vstack([x0, x1]).astype(np.float32)
    y = np.array([0] * (n // 2) + [1] * (n - n // 2), dtype=np.int64)
    idx = rng.permutation(n)
    return x[idx], y[idx]


def make_synthetic_images(n: int, noise: float = 0.8, seed: int = 0, num_classes: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """MNIST-shaped uint8 images with learnable class structure.

    Each class has a fixed smooth 28x28 prototype (same for every split: generated from a fixed seed);
    a sample is its prototype, randomly shifted by up to 2 pixels, plus Gaussian noise scaled by ``noise``.
    """
    proto_rng = np.random.default_rng(12345)
    coarse = proto_rng.random((num_classes, 7, 7))
    protos = np.kron(coarse, np.ones((4, 4)))  # 7x7 -> 28x28 blocks: smooth, distinct per class
    rng = np.random.default_rng(seed)
    y = rng.integers(0, num_classes, size=n).astype(np.int64)
    shifts = rng.integers(-2, 3, size=(n, 2))
    x = protos[y]
    x = np.stack([np.roll(img, tuple(s), axis=(0, 1)) for img, s in zip(x, shifts)]) if n else x
    x = x + rng.normal(0.0, noise * 0.35, size=x.shape)
    return (np.clip(x, 0.0, 1.0) * 255).round().astype(np.uint8), y


# -------------------------------------------------------------------------------------- datasets
class ClassicImageDataset(Dataset):
    """Per-sample pipeline, as torchvision's MNIST: uint8 -> PIL -> ToTensor -> Normalize."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, mean: float, std: float) -> None:
        from torchvision import transforms

        self.images = images
        self.labels = labels
        self.transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize((mean,), (std,))])

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        from PIL import Image

        return self.transform(Image.fromarray(self.images[i], mode="L")), int(self.labels[i])


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
    """uint8 images -> float32 normalised, applied per batch on the target device."""

    def __init__(self, mean: float, std: float) -> None:
        self.mean = mean
        self.std = std

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        # One multiply-add instead of /255, -mean, /std: fewer passes over memory.
        return x.to(torch.float32).mul_(1.0 / (255.0 * self.std)).sub_(self.mean / self.std)

    def __repr__(self) -> str:
        return f"NormalizeBatch(mean={self.mean}, std={self.std})"


# ---------------------------------------------------------------------------------------- sampler
class ResumableSampler(Sampler[int]):
    """Epoch-seeded permutation that can start at any position inside the epoch.

    The permutation of epoch ``e`` depends only on (seed, e), never on global RNG state, so a run
    resumed at (epoch, position) continues with exactly the indices the uninterrupted run used.
    It also reseeds the DataLoader's generator per epoch (worker base seeds come from it).
    """

    def __init__(self, n: int, shuffle: bool, seed: int, loader_generator: torch.Generator | None = None) -> None:
        self.n = n
        self.shuffle = shuffle
        self.seed = seed
        self.loader_generator = loader_generator
        self.epoch = 0
        self.start = 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Select the epoch's permutation and skip its first ``start`` indices."""
        self.epoch = epoch
        self.start = start
        if self.loader_generator is not None:
            self.loader_generator.manual_seed(self._epoch_seed() + 1)

    def _epoch_seed(self) -> int:
        return (self.seed * 1_000_003 + self.epoch) % (2**63 - 1)

    def __iter__(self) -> Iterator[int]:
        if self.shuffle:
            g = torch.Generator().manual_seed(self._epoch_seed())
            order = torch.randperm(self.n, generator=g)
        else:
            order = torch.arange(self.n)
        return iter(order[self.start :].tolist())

    def __len__(self) -> int:
        return self.n - self.start


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


FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]


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
) -> DataLoader:
    """The one DataLoader factory. ``batched_dataset``: the dataset takes a list of indices per item."""
    generator = torch.Generator()
    sampler = ResumableSampler(len(dataset), shuffle=train and cfg.shuffle, seed=seed, loader_generator=generator)  # type: ignore[arg-type]
    worker_kw: dict[str, Any] = {}
    if num_workers > 0:
        worker_kw = {"worker_init_fn": seed_worker, "persistent_workers": train and cfg.persistent_workers}
        if cfg.prefetch_factor is not None:
            worker_kw["prefetch_factor"] = cfg.prefetch_factor
    drop_last = cfg.drop_last and train
    if batched_dataset:
        # batch_size=None turns off auto-collation: each "sample" is already a whole batch.
        return DataLoader(
            dataset, batch_size=None, sampler=BatchSampler(sampler, batch_size, drop_last),
            num_workers=num_workers, pin_memory=use_pin_memory, generator=generator, **worker_kw,
        )
    return DataLoader(
        dataset, batch_size=batch_size, sampler=sampler, drop_last=drop_last,
        num_workers=num_workers, pin_memory=use_pin_memory, generator=generator, **worker_kw,
    )


def _split(n: int, val_fraction: float, split_seed: int) -> tuple[np.ndarray, np.ndarray]:
    perm = np.random.default_rng(split_seed).permutation(n)
    n_val = int(round(n * val_fraction))
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


def _load_arrays(cfg: DataConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
    if cfg.name == "synthetic_blobs":
        xtr, ytr = make_blobs(cfg.n_samples, cfg.n_features, cfg.noise, seed=cfg.split_seed)
        xte, yte = make_blobs(cfg.n_test_samples, cfg.n_features, cfg.noise, seed=cfg.split_seed + 1)
        return xtr, ytr, xte, yte, {"source": "generated"}
    if cfg.name == "synthetic_images":
        xtr, ytr = make_synthetic_images(cfg.n_samples, cfg.noise, seed=cfg.split_seed)
        xte, yte = make_synthetic_images(cfg.n_test_samples, cfg.noise, seed=cfg.split_seed + 1)
        return xtr, ytr, xte, yte, {"source": "generated"}
    folder = locate_idx_dir(cfg.name, cfg.root, cfg.download)
    xtr, ytr = load_idx_split(folder, "train")
    xte, yte = load_idx_split(folder, "test")
    return xtr, ytr, xte, yte, {"source": str(folder)}


def build_data(cfg: DataConfig, seed: int, device: torch.device) -> DataBundle:
    """Load/generate the dataset, split it, and build train/val/test loaders for ``cfg.pipeline``."""
    xtr, ytr, xte, yte, meta = _load_arrays(cfg)
    tr_idx, va_idx = _split(len(ytr), cfg.val_fraction, cfg.split_seed)
    if cfg.limit_train_samples is not None:
        tr_idx = tr_idx[: cfg.limit_train_samples]
    images = xtr.ndim == 3
    num_classes = int(max(ytr.max(), yte.max())) + 1
    # pin_memory only helps (and only works) with an accelerator to copy to.
    use_pin = cfg.pin_memory and device.type != "cpu"
    meta.update(
        name=cfg.name, pipeline=cfg.pipeline, train_samples=len(tr_idx), val_samples=len(va_idx),
        test_samples=len(yte), pin_memory_effective=use_pin,
    )
    if cfg.pin_memory and not use_pin:
        meta["pin_memory_note"] = "pin_memory has no effect without an accelerator"

    transform: Callable[[torch.Tensor], torch.Tensor] | None = None
    if images:
        if cfg.name in NORMALISATION:
            mean, std = NORMALISATION[cfg.name]
        else:
            sample = xtr[tr_idx].astype(np.float32) / 255.0
            mean, std = float(sample.mean()), float(sample.std())
        meta.update(mean=mean, std=std)

        def make(xs: np.ndarray, ys: np.ndarray) -> Dataset:
            if cfg.pipeline == "classic":
                return ClassicImageDataset(np.ascontiguousarray(xs), ys, mean, std)
            return TensorBatchDataset(torch.from_numpy(np.ascontiguousarray(xs)).unsqueeze(1), torch.from_numpy(ys))

        if cfg.pipeline == "tensor":
            transform = NormalizeBatch(mean, std)
        input_shape: tuple[int, ...] = (1, *xtr.shape[1:])
    else:

        def make(xs: np.ndarray, ys: np.ndarray) -> Dataset:
            tx, ty = torch.from_numpy(np.ascontiguousarray(xs)), torch.from_numpy(ys)
            return TensorDataset(tx, ty) if cfg.pipeline == "classic" else TensorBatchDataset(tx, ty)

        input_shape = tuple(xtr.shape[1:])

    batched = cfg.pipeline == "tensor"
    # Eval loaders: workers only help the per-sample pipeline; the tensor pipeline gathers in one op.
    eval_workers = cfg.num_workers if cfg.pipeline == "classic" else 0
    common = dict(seed=seed, batched_dataset=batched, use_pin_memory=use_pin)
    train_loader = make_loader(make(xtr[tr_idx], ytr[tr_idx]), cfg, batch_size=cfg.batch_size, train=True,
                               num_workers=cfg.num_workers, **common)  # type: ignore[arg-type]
    val_loader = None
    if len(va_idx):
        val_loader = make_loader(make(xtr[va_idx], ytr[va_idx]), cfg, batch_size=cfg.eval_batch_size, train=False,
                                 num_workers=eval_workers, **common)  # type: ignore[arg-type]
    test_loader = make_loader(make(xte, yte), cfg, batch_size=cfg.eval_batch_size, train=False,
                              num_workers=eval_workers, **common)  # type: ignore[arg-type]
    names = FASHION_CLASSES if cfg.name == "fashion_mnist" else [str(i) for i in range(num_classes)]
    return DataBundle(train_loader, val_loader, test_loader, transform, num_classes, input_shape, names, meta)
