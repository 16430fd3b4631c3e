"""Dataset registry: ``data.name`` picks one of these.

A dataset is one function ``(cfg: DataConfig, seed: int, device: torch.device) -> DataBundle``
registered with ``@register_dataset(name, kind=..., preflight=...)``: ``kind`` tells tools which levers
apply (``image``: input pipeline and memory format), ``preflight`` (optional) finds what the dataset
would fail on without loading it (files not on disk), so a matrix can be refused before it runs.
Adding a dataset is that one function here plus its test; config validation, pre-flight and bench.tune
read the registry.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from trainer_core.config import DataConfig
from trainer_core.data import ARRAY_PIPELINES, ArraySplits, Builder, DataBundle, DatasetInfo, Kind, bundle_from_arrays
from trainer_core.errors import ConfigError
from trainer_core.idx import load_idx_split, locate_idx_dir
from trainer_core.images import check_folder, image_folder_bundle, write_synthetic_jpegs
from trainer_core.synthetic import make_blobs, make_synthetic_images
from trainer_core.text import read_text, text_bundle
from trainer_core.user_data import user_dataset_info

DATASETS: dict[str, DatasetInfo] = {}


def register_dataset(
    name: str,
    *,
    kind: Kind,
    preflight: Callable[[DataConfig], None] | None = None,
    pipelines: tuple[str, ...] = ARRAY_PIPELINES,
) -> Callable[[Builder], Builder]:
    def add(build: Builder) -> Builder:
        if name in DATASETS:
            raise ValueError(f"dataset {name!r} is registered twice")
        DATASETS[name] = DatasetInfo(name, kind, build, preflight, pipelines)
        return build

    return add


def dataset_info(name: str) -> DatasetInfo:
    """A registered dataset, or a user factory given as ``package.module:factory``."""
    if name in DATASETS:
        return DATASETS[name]
    if ":" in name:
        return user_dataset_info(name)
    raise ConfigError(
        f"data.name: unknown dataset {name!r}; expected one of {', '.join(DATASETS)} or 'package.module:factory'"
    )


def build_data(cfg: DataConfig, seed: int, device: torch.device) -> DataBundle:
    """Load or generate the dataset, split it, and build its train/val/test loaders."""
    info = dataset_info(cfg.name)
    check_pipeline(cfg, info)
    return info.build(cfg, seed, device)


def check_pipeline(cfg: DataConfig, info: DatasetInfo) -> None:
    if cfg.pipeline not in info.pipelines:
        raise ConfigError(f"data.pipeline={cfg.pipeline}: {cfg.name} serves {' or '.join(info.pipelines)}")


def preflight_data(cfg: DataConfig) -> None:
    """What a run of ``cfg`` would fail on when loading its data, found without loading it."""
    info = dataset_info(cfg.name)
    if info.preflight is not None:
        info.preflight(cfg)
    check_pipeline(cfg, info)


# ----------------------------------------------------------------------------------------- built-ins
@register_dataset("synthetic_blobs", kind="tabular")
def synthetic_blobs(cfg: DataConfig, seed: int, device: torch.device) -> DataBundle:
    """Two Gaussian blobs (the seeds' ``make_synth``) with ``n_features`` dimensions."""
    xtr, ytr = make_blobs(cfg.n_samples, cfg.n_features, cfg.noise, seed=cfg.split_seed)
    xte, yte = make_blobs(cfg.n_test_samples, cfg.n_features, cfg.noise, seed=cfg.split_seed + 1)
    return bundle_from_arrays(cfg, seed, device, ArraySplits(xtr, ytr, xte, yte, {"source": "generated"}))


@register_dataset("synthetic_images", kind="image")
def synthetic_images(cfg: DataConfig, seed: int, device: torch.device) -> DataBundle:
    """Images with learnable class structure, of ``data.image_shape`` (default MNIST's [1, 28, 28])."""
    shape = tuple(cfg.image_shape or (1, 28, 28))
    xtr, ytr = make_synthetic_images(cfg.n_samples, cfg.noise, seed=cfg.split_seed, shape=shape)
    xte, yte = make_synthetic_images(cfg.n_test_samples, cfg.noise, seed=cfg.split_seed + 1, shape=shape)
    return bundle_from_arrays(cfg, seed, device, ArraySplits(xtr, ytr, xte, yte, {"source": "generated"}))


def _idx_preflight(cfg: DataConfig) -> None:
    if not cfg.download:
        locate_idx_dir(cfg.name, cfg.root, download=False)


def _idx_bundle(
    cfg: DataConfig, seed: int, device: torch.device, normalisation: tuple[float, float], class_names: list[str] | None
) -> DataBundle:
    folder = locate_idx_dir(cfg.name, cfg.root, cfg.download)
    xtr, ytr = load_idx_split(folder, "train")
    xte, yte = load_idx_split(folder, "test")
    return bundle_from_arrays(
        cfg, seed, device, ArraySplits(xtr, ytr, xte, yte, {"source": str(folder)}, normalisation, class_names)
    )


@register_dataset("mnist", kind="image", preflight=_idx_preflight)
def mnist(cfg: DataConfig, seed: int, device: torch.device) -> DataBundle:
    """MNIST from IDX files (mean and std of pixel/255 over its training split)."""
    return _idx_bundle(cfg, seed, device, (0.1307, 0.3081), None)


FASHION_CLASSES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]


@register_dataset("fashion_mnist", kind="image", preflight=_idx_preflight)
def fashion_mnist(cfg: DataConfig, seed: int, device: torch.device) -> DataBundle:
    """Fashion-MNIST from IDX files (Debian: ``apt-get install dataset-fashion-mnist``)."""
    return _idx_bundle(cfg, seed, device, (0.2860, 0.3530), FASHION_CLASSES)


# --------------------------------------------------------------------------------- decoded per sample
def _folder_preflight(cfg: DataConfig) -> None:
    check_folder(cfg)


@register_dataset("image_folder", kind="image", preflight=_folder_preflight, pipelines=("classic", "v2"))
def image_folder(cfg: DataConfig, seed: int, device: torch.device) -> DataBundle:
    """A folder of images, one subfolder per class (or train/ and val/ of them), decoded and augmented per sample."""
    return image_folder_bundle(cfg, seed, device)


@register_dataset("synthetic_jpegs", kind="image", pipelines=("classic", "v2"))
def synthetic_jpegs(cfg: DataConfig, seed: int, device: torch.device) -> DataBundle:
    """A generated folder of class-structured JPEGs (written once, to data.root or ~/.cache/trainbench/jpegs),
    then read exactly like image_folder: the real decode pipeline, no download."""
    _, h, w = cfg.image_shape or (3, 224, 224)
    root = Path(cfg.root).expanduser() if cfg.root else Path.home() / ".cache" / "trainbench" / "jpegs"
    folder = write_synthetic_jpegs(
        root, cfg.n_samples, cfg.n_test_samples, (round(h * 8 / 7), round(w * 8 / 7)), seed=cfg.split_seed
    )
    return image_folder_bundle(cfg, seed, device, root=folder)


def _text_preflight(cfg: DataConfig) -> None:
    if not cfg.path or not Path(cfg.path).expanduser().is_file():
        read_text(cfg.path)  # raises the one-line error


@register_dataset("text", kind="text", preflight=_text_preflight, pipelines=("tensor",))
def text(cfg: DataConfig, seed: int, device: torch.device) -> DataBundle:
    """A UTF-8 text file as token windows for a causal language model (see trainer_core/text.py)."""
    return text_bundle(cfg, seed, device)
