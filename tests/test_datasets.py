"""The dataset registry: built-ins, validation against it, pre-flight, and adding a dataset as one function."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from trainer_core.config import DataConfig
from trainer_core.data import ArraySplits, DataBundle, bundle_from_arrays
from trainer_core.datasets import DATASETS, build_data, dataset_info, preflight_data, register_dataset
from trainer_core.errors import ConfigError, DataError
from trainer_core.idx import load_idx_split, locate_idx_dir
from trainer_core.loading import load_config

CPU = torch.device("cpu")


def test_built_ins_and_their_kinds() -> None:
    assert {n: DATASETS[n].kind for n in ("synthetic_blobs", "synthetic_images", "mnist", "fashion_mnist")} == {
        "synthetic_blobs": "tabular",
        "synthetic_images": "image",
        "mnist": "image",
        "fashion_mnist": "image",
    }
    with pytest.raises(ConfigError, match="data.name: unknown dataset 'cifar'; expected one of synthetic_blobs"):
        dataset_info("cifar")


def test_preflight_finds_missing_files_without_loading(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="IDX files not found"):
        preflight_data(DataConfig(name="mnist", root=str(tmp_path / "none")))
    preflight_data(
        DataConfig(name="mnist", root=str(tmp_path / "none"), download=True)
    )  # may download: left to the run
    preflight_data(DataConfig(name="synthetic_images"))  # generated: nothing to find
    (tmp_path / "t.txt").write_text("some text\n")
    with pytest.raises(ConfigError, match="data.pipeline=classic: text serves tensor"):  # said before a run starts
        preflight_data(DataConfig(name="text", path=str(tmp_path / "t.txt"), pipeline="classic"))


def test_a_new_dataset_is_one_registered_function(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("trainer_core.datasets.DATASETS", dict(DATASETS))  # registered for this test only

    @register_dataset("xor", kind="tabular")
    def xor(cfg: DataConfig, seed: int, device: torch.device) -> DataBundle:
        rng = np.random.default_rng(cfg.split_seed)
        x = rng.integers(0, 2, size=(cfg.n_samples, 2)).astype(np.float32)
        y = (x[:, 0] != x[:, 1]).astype(np.int64)
        return bundle_from_arrays(cfg, seed, device, ArraySplits(x, y, x[:64], y[:64], {"source": "generated"}))

    config = load_config(None, {"data.name": "xor", "data.n_samples": 256, "model.kwargs": {"input_dim": 2}})
    bundle = build_data(config.data, config.seed, CPU)
    assert bundle.num_classes == 2 and bundle.input_shape == (2,) and len(bundle.test_loader.dataset) == 64
    with pytest.raises(ValueError, match="registered twice"):
        register_dataset("xor", kind="tabular")(xor)


DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


def _fashion_mnist_on_disk() -> Path | None:
    """Where the files are, found without the code under test: $TRAINBENCH_DATA's folder for them, or
    Debian's. (Whether locate_idx_dir finds them too is what the test checks.)"""
    env = os.environ.get("TRAINBENCH_DATA")
    under_env = [Path(env) / sub for sub in ("", "fashion-mnist", "fashion_mnist", "FashionMNIST/raw")] if env else []
    for d in [*under_env, DEBIAN_FASHION_MNIST]:
        if (d / "train-images-idx3-ubyte.gz").is_file() or (d / "train-images-idx3-ubyte").is_file():
            return d
    return None


@pytest.mark.skipif(
    _fashion_mnist_on_disk() is None,
    reason="Fashion-MNIST is not in $TRAINBENCH_DATA nor in Debian's "
    "/usr/share/datasets/fashion-mnist: apt-get install dataset-fashion-mnist (.ci/run does, as root)",
)
def test_real_fashion_mnist_loads() -> None:
    found = locate_idx_dir("fashion_mnist", None, download=False)  # $TRAINBENCH_DATA, then Debian's folder
    assert found == _fashion_mnist_on_disk()
    bundle = build_data(DataConfig(name="fashion_mnist", batch_size=32), seed=0, device=CPU)
    assert bundle.meta["train_samples"] == 54000 and bundle.meta["test_samples"] == 10000
    x, y = next(iter(bundle.train_loader))
    assert x.dtype == torch.uint8 and set(y.tolist()) <= set(range(10))
    assert bundle.class_names[9] == "Ankle boot"
    assert bundle.meta["source"] == str(found)
    # The first training image of Fashion-MNIST is an ankle boot (label 9) in every copy of the data set.
    images, labels = load_idx_split(found, "train")
    assert images.shape == (60000, 28, 28) and labels[0] == 9 and images.dtype == np.uint8
