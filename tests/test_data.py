from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from conftest import make_fake_mnist
from hypothesis import given, settings
from hypothesis import strategies as st

from trainer_core.config import DataConfig
from trainer_core.data import ResumableSampler
from trainer_core.datasets import build_data
from trainer_core.synthetic import make_blobs, make_synthetic_images

CPU = torch.device("cpu")


def test_synthetic_data_is_deterministic_and_learnable() -> None:
    x1, y1 = make_blobs(100, 3, seed=5)
    x2, y2 = make_blobs(100, 3, seed=5)
    assert np.array_equal(x1, x2) and np.array_equal(y1, y2)
    assert abs(x1[y1 == 1].mean() - x1[y1 == 0].mean() - 2.5) < 0.5
    imgs, labels = make_synthetic_images(500, seed=3)
    assert imgs.shape == (500, 28, 28) and imgs.dtype == np.uint8
    # Nearest class mean classifies well above chance: there is structure to learn.
    flat = imgs.reshape(500, -1).astype(np.float32)
    means = np.stack([flat[labels == c].mean(0) for c in range(10)])
    pred = ((flat[:, None, :] - means[None]) ** 2).sum(-1).argmin(1)
    assert (pred == labels).mean() > 0.5


def test_classic_and_tensor_pipelines_give_the_same_batches(tmp_path: Path) -> None:
    make_fake_mnist(tmp_path)
    batches = {}
    for pipeline in ("classic", "tensor"):
        cfg = DataConfig(name="mnist", root=str(tmp_path), pipeline=pipeline, batch_size=16)
        bundle = build_data(cfg, seed=7, device=CPU)
        x, y = next(iter(bundle.train_loader))
        if bundle.input_transform is not None:
            x = bundle.input_transform(x)
        batches[pipeline] = (x, y)
    assert batches["classic"][0].shape == batches["tensor"][0].shape == (16, 1, 28, 28)
    assert torch.equal(batches["classic"][1], batches["tensor"][1])
    assert torch.allclose(batches["classic"][0], batches["tensor"][0], atol=1e-5)


def test_split_is_deterministic_and_disjoint() -> None:
    cfg = DataConfig(
        name="synthetic_blobs", n_samples=200, val_fraction=0.2, split_seed=3, shuffle=False, batch_size=500
    )
    a = build_data(cfg, seed=0, device=CPU)
    b = build_data(cfg, seed=99, device=CPU)
    xa, _ = next(iter(a.train_loader))
    xb, _ = next(iter(b.train_loader))
    xv, _ = next(iter(a.val_loader))
    assert torch.equal(xa, xb)
    assert len(xa) == 160 and len(xv) == 40
    rows = {tuple(r.tolist()) for r in xa}
    assert not any(tuple(r.tolist()) in rows for r in xv)


def test_resumable_sampler_continues_mid_epoch() -> None:
    s = ResumableSampler(50, shuffle=True, seed=3)
    s.set_epoch(2)
    full = list(s)
    s.set_epoch(2, start=17)
    assert list(s) == full[17:] and len(s) == 33
    s.set_epoch(3)
    assert list(s) != full and sorted(s) == list(range(50))


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 300), seed=st.integers(0, 2**31), epoch=st.integers(0, 50), data=st.data())
def test_resumable_sampler_any_restart_point_continues_the_same_permutation(
    n: int, seed: int, epoch: int, data: st.DataObject
) -> None:
    start = data.draw(st.integers(0, n))
    s = ResumableSampler(n, shuffle=True, seed=seed)
    s.set_epoch(epoch)
    full = list(s)
    assert sorted(full) == list(range(n))
    s.set_epoch(epoch, start)
    assert list(s) == full[start:]


def test_pin_memory_without_accelerator_is_noted() -> None:
    bundle = build_data(DataConfig(name="synthetic_blobs", pin_memory=True), seed=0, device=CPU)
    assert bundle.meta["pin_memory_effective"] is False
    assert "no effect without an accelerator" in bundle.meta["pin_memory_note"]


def test_workers_and_loader_options(tmp_path: Path) -> None:
    cfg = DataConfig(
        name="synthetic_blobs", n_samples=64, batch_size=8, num_workers=2, persistent_workers=True, prefetch_factor=3
    )
    loader = build_data(cfg, seed=0, device=CPU).train_loader
    assert loader.num_workers == 2 and loader.persistent_workers and loader.prefetch_factor == 3
    assert sum(len(y) for _, y in loader) == 58  # 64 minus round(0.1 * 64) validation samples
