"""Image folders decoded and augmented per sample, the way training scripts feed ImageNet-style data.

Layout: ``root/<class>/*.jpg`` (split into train/validation by ``data.val_fraction``), or
``root/train/<class>/*`` and ``root/val/<class>/*``. Two pipelines (``data.pipeline``):

- ``classic``: PIL decode -> RandomResizedCrop -> RandomHorizontalFlip -> ToTensor -> Normalize
  (torchvision.transforms), float tensors from the loader;
- ``v2``: ``torchvision.io.decode_image`` (libjpeg-turbo's ``decode_jpeg`` for JPEGs) -> transforms.v2
  RandomResizedCrop / RandomHorizontalFlip on uint8 tensors; batches stay uint8 (4x fewer bytes through
  worker pipes and host-to-device copies) and are normalised per batch on the device.

Evaluation resizes and centre-crops. The augmentation of each sample is seeded by (seed, epoch, sample
index), not by whichever worker happens to load it, so a run is deterministic and resumes exactly
with any ``num_workers``: the sampler tags each index with its epoch (:class:`EpochTaggedSampler`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from trainer_core.config import DataConfig
from trainer_core.data import DataBundle, NormalizeBatch, ResumableSampler, _split, make_loader
from trainer_core.errors import ConfigError, DataError

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
EXTENSIONS = (".jpg", ".jpeg", ".png")


class EpochTaggedSampler(ResumableSampler):
    """A :class:`ResumableSampler` that yields ``epoch * n + index``: the dataset seeds each sample's
    augmentation from it (in whatever worker loads it)."""

    def __iter__(self) -> Iterator[int]:
        offset = self.epoch * self.n
        return (offset + i for i in super().__iter__())


class ImageFiles(Dataset):
    """(path, label) pairs decoded and transformed per item; items may be epoch-tagged indices."""

    def __init__(
        self, samples: list[tuple[str, int]], transform: Callable[[str], torch.Tensor], seed: int, augment: bool
    ) -> None:
        self.samples, self.transform, self.seed, self.augment = samples, transform, seed, augment

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, tagged: int) -> tuple[torch.Tensor, int]:
        epoch, i = divmod(tagged, len(self.samples))
        path, label = self.samples[i]
        if not self.augment:
            return self.transform(path), label
        with torch.random.fork_rng(devices=[]):  # the sample's own RNG, whichever worker loads it
            torch.manual_seed((self.seed * 1_000_003 + epoch) * 10_000_019 + i)
            return self.transform(path), label


def find_images(root: Path) -> tuple[list[tuple[str, int]], list[tuple[str, int]] | None, list[str]]:
    """(train samples, validation samples or None, class names) of an image folder."""
    if (root / "train").is_dir() and (root / "val").is_dir():
        classes = sorted(d.name for d in (root / "train").iterdir() if d.is_dir())
        return _samples(root / "train", classes), _samples(root / "val", classes), classes
    classes = sorted(d.name for d in root.iterdir() if d.is_dir()) if root.is_dir() else []
    return _samples(root, classes), None, classes


def _samples(folder: Path, classes: list[str]) -> list[tuple[str, int]]:
    return [
        (str(folder / c / f), k)
        for k, c in enumerate(classes)
        if (folder / c).is_dir()
        for f in sorted(os.listdir(folder / c))
        if f.lower().endswith(EXTENSIONS)
    ]


def check_folder(cfg: DataConfig) -> Path:
    """The folder of ``data.root`` with at least two classes of images, or a one-line :class:`DataError`."""
    if not cfg.root:
        raise DataError(f"data.root: {cfg.name} needs a folder of images (one subfolder per class)")
    root = Path(cfg.root).expanduser()
    train, _, classes = find_images(root)
    if len(classes) < 2 or not train:
        raise DataError(
            f"data.root: {root} holds no image folder (expected <class>/*.jpg or train/<class>/*.jpg, "
            f"at least two classes; found {len(classes)} class folders, {len(train)} images)"
        )
    return root


def transforms_for(pipeline: str, size: tuple[int, int], train: bool) -> Callable[[str], torch.Tensor]:
    """path -> tensor for ``pipeline`` (classic: normalised float; v2: uint8)."""
    from torchvision import transforms
    from torchvision.transforms import v2

    resize = (round(size[0] * 8 / 7), round(size[1] * 8 / 7))  # the 256-for-224 evaluation resize
    if pipeline == "classic":
        from PIL import Image

        steps = (
            [transforms.RandomResizedCrop(size), transforms.RandomHorizontalFlip()]
            if train
            else [transforms.Resize(resize), transforms.CenterCrop(size)]
        )
        chain = transforms.Compose([*steps, transforms.ToTensor(), transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)])

        def load(path: str) -> torch.Tensor:
            with Image.open(path) as im:
                return chain(im.convert("RGB"))

        return load
    from torchvision.io import ImageReadMode, decode_image, read_file

    steps = (
        [v2.RandomResizedCrop(size, antialias=True), v2.RandomHorizontalFlip()]
        if train
        else [v2.Resize(resize, antialias=True), v2.CenterCrop(size)]
    )
    chain = v2.Compose(steps)
    return lambda path: chain(decode_image(read_file(path), mode=ImageReadMode.RGB))


def image_folder_bundle(cfg: DataConfig, seed: int, device: torch.device, root: Path | None = None) -> DataBundle:
    """Train/val/test loaders over an image folder (test: the validation images)."""
    if cfg.pipeline not in ("classic", "v2"):
        raise ConfigError(f"data.pipeline={cfg.pipeline}: {cfg.name} decodes per sample; use classic or v2")
    root = root or check_folder(cfg)
    train, val, classes = find_images(root)
    if val is None:
        tr, va = _split(len(train), cfg.val_fraction, cfg.split_seed)
        train, val = [train[i] for i in tr], [train[i] for i in va]
    if cfg.limit_train_samples is not None:
        train = train[: cfg.limit_train_samples]
    c, h, w = cfg.image_shape or (3, 224, 224)
    use_pin = cfg.pin_memory and device.type != "cpu"
    common: dict[str, Any] = {"seed": seed, "batched_dataset": False, "use_pin_memory": use_pin}
    train_ds = ImageFiles(train, transforms_for(cfg.pipeline, (h, w), True), seed, augment=True)
    train_loader = make_loader(
        train_ds,
        cfg,
        batch_size=cfg.batch_size,
        train=True,
        num_workers=cfg.num_workers,
        sampler=EpochTaggedSampler(len(train), cfg.shuffle, seed),
        **common,
    )
    val_ds = ImageFiles(val, transforms_for(cfg.pipeline, (h, w), False), seed, augment=False)
    eval_loader = make_loader(
        val_ds, cfg, batch_size=cfg.eval_batch_size, train=False, num_workers=cfg.num_workers, **common
    )
    meta = {
        "source": str(root),
        "name": cfg.name,
        "pipeline": cfg.pipeline,
        "train_samples": len(train),
        "val_samples": len(val),
        "test_samples": len(val),
        "pin_memory_effective": use_pin,
    }
    transform = NormalizeBatch(IMAGENET_MEAN, IMAGENET_STD) if cfg.pipeline == "v2" else None
    return DataBundle(
        train_loader, eval_loader if val else None, eval_loader, transform, len(classes), (c, h, w), classes, meta
    )


def write_synthetic_jpegs(
    root: Path, n_train: int, n_val: int, size: tuple[int, int], num_classes: int = 10, seed: int = 0, quality: int = 90
) -> Path:
    """A folder of class-structured RGB JPEGs (``train/`` and ``val/``), written once: later calls with
    the same arguments reuse it. Written beside and renamed into place, so a killed write leaves nothing."""
    from PIL import Image

    from trainer_core.synthetic import make_synthetic_images

    folder = root / f"{num_classes}c-{n_train}-{n_val}-{size[0]}x{size[1]}-q{quality}-seed{seed}"
    if folder.is_dir():
        return folder
    tmp = root / f".{folder.name}.{os.getpid()}.tmp"
    for split, n, split_seed in (("train", n_train, seed), ("val", n_val, seed + 1)):
        for start in range(0, n, 256):
            x, y = make_synthetic_images(min(256, n - start), 0.8, split_seed * 7919 + start, num_classes, (3, *size))
            for j, (img, label) in enumerate(zip(x, y)):
                (tmp / split / f"class{label}").mkdir(parents=True, exist_ok=True)
                Image.fromarray(np.ascontiguousarray(img.transpose(1, 2, 0))).save(
                    tmp / split / f"class{label}" / f"{start + j:06d}.jpg", quality=quality
                )
    try:
        tmp.rename(folder)
    except OSError:  # another process wrote the same folder meanwhile: keep theirs
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
        if not folder.is_dir():
            raise
    return folder
