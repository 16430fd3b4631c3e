"""Shared fixtures. Tests run on CPU; CUDA-only tests carry the ``gpu`` marker and skip with a reason.

A test whose prerequisite is missing (Chromium, git, Debian's Fashion-MNIST) skips with the reason on a
developer's machine; in CI (``CI=true``, as ``.ci/run`` runs) that skip is a failure naming what is
missing, since a skipped test is not a passed one. Only the ``gpu`` tests may skip in CI.
"""

from __future__ import annotations

import gzip
import os
import struct
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]

# One intra-op thread in the tests and the processes they start (OMP_NUM_THREADS is inherited): the tests
# check behaviour, not speed, and on a machine whose cores other jobs keep busy (a CI runner) every
# parallel region of a small model waits for both threads to be scheduled, several times slower than one
# thread (docs/measurements.md). The thread lever and the cells' recorded threads are tested explicitly.
os.environ["OMP_NUM_THREADS"] = "1"
torch.set_num_threads(1)


def own_pytest_env(**extra: str) -> dict[str, str]:
    """The environment of a pytest session a test starts, plus ``extra``: its own session, not part of the
    pytest-xdist worker the test runs in."""
    from bench.launch.pytest_bench import own_session_env

    return own_session_env(os.environ) | extra


def _is_matrix(path: Path) -> bool:
    import yaml

    doc = yaml.safe_load(path.read_text()) or {}
    return isinstance(doc, dict) and "axes" in doc


ALL_CONFIGS = sorted((REPO / "configs").glob("*.yaml"))
MATRIX_CONFIGS = [p for p in ALL_CONFIGS if _is_matrix(p)]
RUN_CONFIGS = [p for p in ALL_CONFIGS if not _is_matrix(p)]
sys.path.insert(0, str(Path(__file__).resolve().parent))  # for tests/user_models.py


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device; this machine has none")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


IN_CI = os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    outcome = yield
    report = outcome.get_result()
    if IN_CI and report.skipped and "gpu" not in item.keywords and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"skipped in CI (CI=true), where only the gpu tests may skip: {reason}"


def tiny_overrides(**extra: Any) -> dict[str, Any]:
    """A fast SimpleMLP-on-blobs config, no logging side effects."""
    base = {
        "device": "cpu",
        "model.name": "SimpleMLP",
        "model.kwargs": {"input_dim": 2, "hidden_dims": [16], "output_dim": 2, "dropout": 0.1},
        "data.name": "synthetic_blobs",
        "data.n_samples": 256,
        "data.n_test_samples": 64,
        "data.batch_size": 32,
        "data.val_fraction": 0.25,
        "optim.lr": 0.01,
        "train.epochs": 2,
        "logging.tensorboard": False,
        "logging.jsonl": False,
        "logging.progress_bar": "off",
    }
    base.update(extra)
    return base


@pytest.fixture
def repo_clone(tmp_path: Path) -> Path:
    """A throwaway clone of this repository: worktrees and commits go to it, not to the checkout under test."""
    import subprocess

    from bench.launch.revisions import resolve

    if resolve(REPO, "HEAD") is None:
        pytest.skip("this checkout is not a git repository (or git is missing)")
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "--quiet", "--local", str(REPO), str(clone)], check=True)
    return clone


@pytest.fixture
def tiny_config():
    from trainer_core.loading import load_config

    def make(**extra: Any):
        return load_config(None, tiny_overrides(**extra))

    return make


def write_idx(path: Path, arr: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    payload = header + arr.astype(np.uint8).tobytes()
    if path.suffix == ".gz":
        with gzip.open(path, "wb") as f:
            f.write(payload)
    else:
        path.write_bytes(payload)


def make_fake_mnist(folder: Path, n_train: int = 120, n_test: int = 40, gz: bool = True) -> None:
    """Small MNIST-format IDX files (synthetic images) in ``folder``."""
    from trainer_core.synthetic import make_synthetic_images

    folder.mkdir(parents=True, exist_ok=True)
    suffix = ".gz" if gz else ""
    for split, n in (("train", n_train), ("t10k", n_test)):
        x, y = make_synthetic_images(n, seed=1 if split == "train" else 2)
        write_idx(folder / f"{split}-images-idx3-ubyte{suffix}", x)
        write_idx(folder / f"{split}-labels-idx1-ubyte{suffix}", y)


# ------------------------------------------------------------------------------ pytest-benchmark
# Options that mean "I want real timings". Without any of them, a plain `pytest` runs every benchmark
# once as a smoke test (pytest-benchmark's own --benchmark-disable behaviour), so the suite stays fast.
_REAL_BENCHMARK_OPTIONS = (
    "benchmark_enable",
    "benchmark_only",
    "benchmark_autosave",
    "benchmark_save",
    "benchmark_compare",
    "benchmark_json",
    "benchmark_histogram",
)


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    if not hasattr(config.option, "benchmark_disable"):
        return  # pytest-benchmark not installed
    if not any(config.getoption(name, default=None) for name in _REAL_BENCHMARK_OPTIONS):
        config.option.benchmark_disable = True


def pytest_benchmark_update_machine_info(config: pytest.Config, machine_info: dict) -> None:
    """Record what makes training timings comparable (pytest-benchmark warns when these differ)."""
    from trainer_core.precision import cpu_flags

    machine_info["torch"] = str(torch.__version__)
    machine_info["torch_threads"] = torch.get_num_threads()
    machine_info["cuda"] = torch.version.cuda
    machine_info["gpu"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    machine_info["cpu_bf16"] = bool({"avx512_bf16", "amx_bf16"} & cpu_flags())
    machine_info["cpu_fp16"] = bool({"avx512_fp16", "amx_fp16"} & cpu_flags())
