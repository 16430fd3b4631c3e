"""Image folders: the generated JPEG folder, both decode pipelines with workers, per-sample seeded
augmentation (deterministic and exactly resumable with any number of workers), and folder errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from trainer_core.config import DataConfig
from trainer_core.datasets import build_data, preflight_data
from trainer_core.errors import ConfigError, DataError
from trainer_core.images import EpochTaggedSampler, write_synthetic_jpegs

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("jpegs")
    first = write_synthetic_jpegs(root, 60, 20, (40, 40), num_classes=3)
    assert write_synthetic_jpegs(root, 60, 20, (40, 40), num_classes=3) == first  # written once
    return first


def _cfg(folder: Path, **over: object) -> DataConfig:
    base = {
        "name": "image_folder",
        "root": str(folder),
        "image_shape": [3, 32, 32],
        "batch_size": 8,
        "pipeline": "v2",
        "num_workers": 2,
    }
    return DataConfig(**{**base, **over})


@pytest.mark.parametrize("pipeline", ["classic", "v2"])
def test_both_pipelines_with_workers(folder: Path, pipeline: str) -> None:
    bundle = build_data(_cfg(folder, pipeline=pipeline), seed=0, device=CPU)
    x, y = next(iter(bundle.train_loader))
    assert x.shape == (8, 3, 32, 32) and y.shape == (8,)
    assert x.dtype == (torch.uint8 if pipeline == "v2" else torch.float32)  # v2: uint8 until the device
    assert (bundle.input_transform is not None) == (pipeline == "v2")
    assert bundle.num_classes == 3 and bundle.class_names == ["class0", "class1", "class2"]
    assert bundle.meta["train_samples"] == 60 and bundle.meta["val_samples"] == 20


def test_augmentation_is_seeded_per_sample_not_per_worker(folder: Path) -> None:
    def epoch_batches(workers: int, start: int = 0, seed: int = 5) -> list[torch.Tensor]:
        loader = build_data(_cfg(folder, num_workers=workers), seed=seed, device=CPU).train_loader
        loader.sampler.set_epoch(1, start)  # the Trainer does this at every epoch start and on resume
        return [x for x, _ in loader]

    zero, two = epoch_batches(0), epoch_batches(2)
    assert all(torch.equal(a, b) for a, b in zip(zero, two))  # the same crops whichever worker loads a sample
    resumed = epoch_batches(2, start=16)  # restarted after two batches of eight
    assert all(torch.equal(a, b) for a, b in zip(zero[2:], resumed))
    assert not torch.equal(zero[0], epoch_batches(0, seed=6)[0])  # another seed, other crops


def test_epoch_tags() -> None:
    s = EpochTaggedSampler(10, shuffle=False, seed=0)
    s.set_epoch(2, start=7)
    assert list(s) == [27, 28, 29]


def test_folder_errors(tmp_path: Path, folder: Path) -> None:
    with pytest.raises(DataError, match="data.root: .* holds no image folder"):
        preflight_data(_cfg(tmp_path))
    with pytest.raises(DataError, match="data.root: image_folder needs a folder of images"):
        preflight_data(DataConfig(name="image_folder"))
    with pytest.raises(ConfigError, match="data.pipeline=tensor: image_folder serves classic or v2"):
        build_data(_cfg(folder, pipeline="tensor"), 0, CPU)


def test_synthetic_jpegs_dataset_writes_under_root(tmp_path: Path) -> None:
    cfg = DataConfig(
        name="synthetic_jpegs",
        root=str(tmp_path),
        image_shape=[3, 24, 24],
        n_samples=30,
        n_test_samples=10,
        pipeline="classic",
        batch_size=5,
    )
    bundle = build_data(cfg, 0, CPU)
    assert len(list(tmp_path.glob("*/train/class*/*.jpg"))) == 30 and bundle.input_shape == (3, 24, 24)
