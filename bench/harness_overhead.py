"""The harness's overhead, measured: the matrix runner's samples/s against a bare hand-written PyTorch
loop (``python -m bench.overhead`` is the CLI).

Same model (SimpleCNN), same batch size, precision and threads, data held in memory on both sides.
The runner side is a cell exactly as ``bench.run`` measures it (its own process through the
launcher, guards off); the bare side is the shortest honest loop: index a pre-normalised float
tensor, autocast forward+loss, zero_grad, backward, step. Each configuration is measured in alternating
rounds (bare, runner, runner, bare, ...) so that drift of a shared machine hits both sides alike, and
the figure is the median of the per-round ratios.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from bench.contract import CellSpec, GuardsConfig, MeasureConfig
from bench.launcher import launch_cell
from bench.stats import settled
from trainer_core.data import NormalizeBatch
from trainer_core.models import SimpleCNN
from trainer_core.synthetic import make_synthetic_images

N_SAMPLES = 8192
PRECISION_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def bare_loop_samples_per_s(precision: str, batch_size: int, measure: MeasureConfig, seed: int = 0) -> dict[str, Any]:
    """Median-step samples/s of a minimal training loop, warmed up and timed like a cell."""
    images, labels = make_synthetic_images(N_SAMPLES, seed=0)
    x_all = NormalizeBatch(0.5, 0.25)(torch.from_numpy(images).unsqueeze(1))  # normalised once, up front
    y_all = torch.from_numpy(labels)
    torch.manual_seed(seed)
    model = SimpleCNN()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = nn.CrossEntropyLoss()
    dtype = PRECISION_DTYPES[precision]
    scaler = torch.amp.GradScaler("cpu") if precision == "fp16" else None
    g = torch.Generator().manual_seed(seed)
    model.train()

    def step() -> float:
        t0 = time.perf_counter()
        idx = torch.randint(0, N_SAMPLES, (batch_size,), generator=g)
        x, y = x_all[idx], y_all[idx]
        with torch.autocast("cpu", dtype=dtype, enabled=dtype is not None):
            loss = loss_fn(model(x), y)
        opt.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
        else:
            loss.backward()
            opt.step()
        return time.perf_counter() - t0

    warm: list[float] = []
    while len(warm) < measure.max_warmup_steps:
        warm += [step() for _ in range(measure.settle_window)]
        if len(warm) >= measure.warmup_steps and settled(warm, measure.settle_window, measure.settle_tolerance):
            break
    n = measure.steps_per_repeat(statistics.median(warm[-measure.settle_window :]))
    times = [step() for _ in range(n * measure.repeats)]
    return {"samples_per_s": batch_size / statistics.median(times), "steps": len(times)}


def runner_samples_per_s(
    precision: str, batch_size: int, measure: MeasureConfig, threads: int, cell_dir: Path
) -> dict[str, Any]:
    """samples/s of the same training as a bench.run cell, launched as one (guards off)."""
    config = {
        "device": "cpu",
        "precision": precision,
        "seed": 0,
        "model": {"name": "SimpleCNN"},
        "data": {
            "name": "synthetic_images",
            "n_samples": N_SAMPLES,
            "val_fraction": 0.0,
            "pipeline": "tensor",
            "batch_size": batch_size,
            "num_workers": 0,
        },
    }
    spec = CellSpec(
        cell_id=f"overhead-{precision}-bs{batch_size}",
        config=config,
        threads=threads,
        measure=measure,
        guards=GuardsConfig(enabled=[]),
    )
    record = launch_cell(spec, cell_dir)
    if record.samples_per_s is None:
        raise RuntimeError(f"runner cell {spec.cell_id} {record.status}: {record.reason}")
    return {"samples_per_s": record.samples_per_s, "steps": record.steps_timed}


def paired_rounds(
    bare: Callable[[], float], runner: Callable[[], float], rounds: int, report: Callable[[int, float, float], None]
) -> tuple[list[float], list[float]]:
    """Both sides back to back in every round, in alternating order (a shared machine drifts by more
    than the overhead being measured, so the ratio is taken per round)."""
    b_out, r_out = [], []
    for i in range(rounds):
        order = ((b_out, bare), (r_out, runner)) if i % 2 == 0 else ((r_out, runner), (b_out, bare))
        for out, side in order:
            out.append(side())
        report(i, b_out[-1], r_out[-1])
    return b_out, r_out


def compare(
    precisions: list[str], batch_sizes: list[int], rounds: int, measure: MeasureConfig, threads: int, cell_dir: Path
) -> list[dict[str, Any]]:
    rows = []
    for precision in precisions:
        for bs in batch_sizes:

            def report(i: int, b: float, r: float, precision: str = precision, bs: int = bs) -> None:
                print(
                    f"{precision} bs{bs} round {i + 1}/{rounds}: bare {b:,.0f}, runner {r:,.0f} samples/s "
                    f"({r / b:.3f})",
                    flush=True,
                )

            bare, runner = paired_rounds(
                lambda p=precision, b=bs: bare_loop_samples_per_s(p, b, measure)["samples_per_s"],
                lambda p=precision, b=bs: runner_samples_per_s(p, b, measure, threads, cell_dir)["samples_per_s"],
                rounds,
                report,
            )
            ratios = [r / b for b, r in zip(bare, runner)]
            rows.append(
                {
                    "precision": precision,
                    "batch_size": bs,
                    "bare_samples_per_s": statistics.median(bare),
                    "runner_samples_per_s": statistics.median(runner),
                    "ratio": statistics.median(ratios),
                    "round_ratios": ratios,
                    "bare_rounds": bare,
                    "runner_rounds": runner,
                }
            )
    return rows


def row_line(row: dict[str, Any]) -> str:
    r = row["round_ratios"]
    return (
        f"{row['precision']} bs{row['batch_size']}: bare {row['bare_samples_per_s']:,.0f} samples/s, runner "
        f"{row['runner_samples_per_s']:,.0f} samples/s, runner/bare {row['ratio']:.3f} (median of {len(r)} rounds; "
        f"range {min(r):.3f}-{max(r):.3f})"
    )
