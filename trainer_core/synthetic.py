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
    n: int, noise: float = 0.8, seed: int = 0, num_classes: int = 10
) -> tuple[np.ndarray, np.ndarray]:
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
