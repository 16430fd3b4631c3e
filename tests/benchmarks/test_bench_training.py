"""pytest-benchmark suite: training step, input pipeline slice, checkpoint I/O.

A plain ``pytest`` runs each benchmark once (smoke). Real use (see README):
``pytest tests/benchmarks --benchmark-autosave``, later
``pytest tests/benchmarks --benchmark-compare --benchmark-compare-fail=median:10%``.
Setup happens outside the timed callable; on accelerators the callable synchronises the device so
the timing covers the work, not just its launch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from trainer_core import checkpoint as ck
from trainer_core.factory import build_run
from trainer_core.loading import load_config

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
MODELS = {
    "SimpleMLP": (
        {"name": "SimpleMLP", "kwargs": {"input_dim": 784, "hidden_dims": [256, 128], "output_dim": 10}},
        128,
    ),
    "SimpleCNN": ({"name": "SimpleCNN", "kwargs": {}}, 64),
}
# Rounds when timing for real; fp16 on CPUs without native support is ~10x slower, so fewer rounds.
ROUNDS = {"fp32": 20, "bf16": 20, "fp16": 5}


def _sync() -> None:
    if DEVICE == "cuda":
        torch.cuda.synchronize()


def _extra(benchmark: Any, **info: Any) -> None:
    benchmark.extra_info.update(device=DEVICE, torch=str(torch.__version__), threads=torch.get_num_threads(), **info)


def _run(model: str = "SimpleCNN", precision: str = "fp32", **data: Any):
    spec, batch = MODELS[model]
    overrides = {
        "device": DEVICE,
        "precision": precision,
        "model.name": spec["name"],
        "model.kwargs": spec["kwargs"],
        "data.name": "synthetic_images",
        "data.n_samples": 2048,
        "data.batch_size": batch,
        "logging.progress_bar": "off",
        "logging.track_grad_norm": False,
    }
    overrides.update({f"data.{k}": v for k, v in data.items()})
    return build_run(load_config(None, overrides))


@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
@pytest.mark.parametrize("model", list(MODELS))
def test_train_step(benchmark: Any, model: str, precision: str) -> None:
    run = _run(model, precision)
    x, y = next(iter(run.data.train_loader))
    trainer = run.trainer
    benchmark.group = f"train_step {model}"
    _extra(benchmark, model=model, precision=precision, batch_size=int(y.shape[0]))

    def step() -> None:
        trainer.train_step(x, y)  # forward + backward + optimizer, the Trainer's own step
        _sync()

    benchmark.pedantic(step, rounds=ROUNDS[precision], warmup_rounds=2, iterations=1)
    trainer.flush()
    assert all(torch.isfinite(torch.tensor(trainer.loss_history)))


@pytest.mark.parametrize("num_workers", [0, 2])
@pytest.mark.parametrize("pipeline", ["classic", "tensor"])
def test_loader_epoch_slice(benchmark: Any, pipeline: str, num_workers: int) -> None:
    """20 batches from a fresh iterator (worker start-up included, as at every epoch start)."""
    loader = _run("SimpleCNN", pipeline=pipeline, num_workers=num_workers).data.train_loader
    benchmark.group = "loader epoch slice (20 batches of 64)"
    _extra(benchmark, pipeline=pipeline, num_workers=num_workers, batch_size=64, batches=20)

    def slice_of_epoch() -> int:
        it = iter(loader)
        return sum(int(next(it)[1].shape[0]) for _ in range(20))

    assert benchmark.pedantic(slice_of_epoch, rounds=5, warmup_rounds=1, iterations=1) == 20 * 64


@pytest.mark.parametrize("op", ["save", "load"])
def test_checkpoint_io(benchmark: Any, op: str, tmp_path: Path) -> None:
    trainer = _run("SimpleCNN").trainer
    path = tmp_path / ck.LAST_NAME
    trainer.save_checkpoint(path)
    benchmark.group = "checkpoint SimpleCNN"
    _extra(benchmark, op=op, size_mb=round(path.stat().st_size / 2**20, 2))
    if op == "save":
        benchmark.pedantic(trainer.save_checkpoint, args=(path,), rounds=10, warmup_rounds=1, iterations=1)
    else:
        benchmark.pedantic(
            lambda: trainer.load_state_dict(ck.load_checkpoint_file(path)), rounds=10, warmup_rounds=1, iterations=1
        )
    assert ck.load_checkpoint_file(path)[ck.KEY_GLOBAL_STEP] == 0
