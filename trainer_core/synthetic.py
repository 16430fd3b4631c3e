"""Synthetic data with learnable structure (no download): two Gaussian blobs, MNIST-shaped images."""

from __future__ import annotations

import numpy as np


def make_blobs(n: int, n_features: int = 2, noise: float = 0.8, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two Gaussian blobs (the seeds' ``make_synth``), class 1 shifted by +2.5 in every dimension."""
    rng = np.random.default_rng(seed)
    x0 = rng.normal(0.0, noise, size=(n // 2, n_features))
    x1 = rng.normal(0.0, noise, size=(n - n // 2, n_features)) + 2.5
    x = np.vstack([x0, x1]).astype(np.float32)
    y = np.array([0] * (n // 2) + [1] * (n - n // 2), dtype=np.int64)
    idx = rng.permutation(n)
    return x[idx], y[idx]


def make_synthetic_images(
    n: int, noise: float = 0.8, seed: int = 0, num_classes: int = 10, shape: tuple[int, int, int] = (1, 28, 28)
) -> tuple[np.ndarray, np.ndarray]:
    """uint8 images with learnable class structure: [N, H, W] for one channel, [N, C, H, W] for more.

    Each class has a fixed smooth prototype (a random 7x7 grid per channel, scaled up in blocks; the same
    for every split: generated from a fixed seed); a sample is its prototype, randomly shifted by up to
    2 pixels (more in large images), plus Gaussian noise scaled by ``noise``. Generated in chunks, so large
    images do not need a float copy of the whole set.
    """
    c, h, w = shape
    proto_rng = np.random.default_rng(12345)
    coarse = proto_rng.random((num_classes, c, 7, 7))
    k = -(-max(h, w) // 7)
    protos = np.kron(coarse, np.ones((k, k)))[..., :h, :w]  # 7x7 blocks scaled up: smooth, distinct per class
    rng = np.random.default_rng(seed)
    y = rng.integers(0, num_classes, size=n).astype(np.int64)
    reach = max(2, max(h, w) // 14)
    shifts = rng.integers(-reach, reach + 1, size=(n, 2))
    out = np.empty((n, c, h, w), dtype=np.uint8)
    for i in range(0, n, 256):
        block = np.stack(
            [np.roll(protos[label], tuple(s), axis=(1, 2)) for label, s in zip(y[i : i + 256], shifts[i : i + 256])]
        )
        block = block + rng.normal(0.0, noise * 0.35, size=block.shape)
        out[i : i + 256] = (np.clip(block, 0.0, 1.0) * 255).round().astype(np.uint8)
    return (out[:, 0] if c == 1 else out), y
