"""``python -m bench.overhead``: the matrix runner's samples/s against a bare hand-written PyTorch loop.

Same model (SimpleCNN), same batch size, precision and threads, data held in memory on both sides.
The runner side is exactly what ``bench.run`` measures for a cell (``bench.cell.run_cell``, guards
off); the bare side is the shortest honest loop: index a pre-normalised float tensor, autocast
forward+loss, zero_grad, backward, step. Each configuration is measured in alternating rounds
(bare, runner, bare, runner, ...) so that drift of a shared machine hits both sides alike.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from bench._cli import make_parser, run_cli
from bench.cell import run_cell
from bench.matrix import MeasureConfig
from bench.stats import settled
from trainer_core.data import NormalizeBatch, make_synthetic_images
from trainer_core.models import SimpleCNN
from trainer_core.provenance import environment_info

N_SAMPLES = 8192
_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def bare_loop_samples_per_s(precision: str, batch_size: int, measure: MeasureConfig, seed: int = 0) -> dict[str, Any]:
    """Median-step samples/s of a minimal training loop, warmed up and timed like a cell."""
    images, labels = make_synthetic_images(N_SAMPLES, seed=0)
    x_all = NormalizeBatch(0.5, 0.25)(torch.from_numpy(images).unsqueeze(1))  # normalised once, up front
    y_all = torch.from_numpy(labels)
    torch.manual_seed(seed)
    model = SimpleCNN()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = nn.CrossEntropyLoss()
    dtype = _DTYPES[precision]
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
    n = measure.steps_per_repeat(statistics.median(warm[-measure.settle_window:]))
    times = [step() for _ in range(n * measure.repeats)]
    return {"samples_per_s": batch_size / statistics.median(times), "steps": len(times)}


def runner_samples_per_s(precision: str, batch_size: int, measure: MeasureConfig, threads: int) -> dict[str, Any]:
    spec = {
        "cell_id": f"overhead-{precision}-bs{batch_size}", "axes": {}, "threads": threads, "peaks": {},
        "config": {"device": "cpu", "precision": precision, "seed": 0, "model": {"name": "SimpleCNN"},
                   "data": {"name": "synthetic_images", "n_samples": N_SAMPLES, "val_fraction": 0.0,
                            "pipeline": "tensor", "batch_size": batch_size, "num_workers": 0}},
        "measure": measure.model_dump(), "guards": {"enabled": []},
    }
    result = run_cell(spec)
    return {"samples_per_s": result["samples_per_s"], "steps": result["steps_timed"]}


def compare(precisions: list[str], batch_sizes: list[int], rounds: int, measure: MeasureConfig, threads: int) -> list[dict[str, Any]]:
    rows = []
    for precision in precisions:
        for bs in batch_sizes:
            bare, runner = [], []
            for i in range(rounds):
                # Both sides back to back in every round, in alternating order, and the ratio taken per
                # round: a shared machine drifts by more than the overhead being measured.
                sides = [("bare", lambda: bare_loop_samples_per_s(precision, bs, measure)),
                         ("runner", lambda: runner_samples_per_s(precision, bs, measure, threads))]
                for name, fn in (sides if i % 2 == 0 else sides[::-1]):
                    (bare if name == "bare" else runner).append(fn()["samples_per_s"])
                print(f"{precision} bs{bs} round {i + 1}/{rounds}: bare {bare[-1]:,.0f}, runner {runner[-1]:,.0f} samples/s "
                      f"({runner[-1] / bare[-1]:.3f})", flush=True)
            ratios = [r / b for b, r in zip(bare, runner)]
            ratio = statistics.median(ratios)
            rows.append({"precision": precision, "batch_size": bs, "bare_samples_per_s": statistics.median(bare),
                         "runner_samples_per_s": statistics.median(runner), "ratio": ratio, "round_ratios": ratios,
                         "bare_rounds": bare, "runner_rounds": runner})
            print(f"{precision} bs{bs}: bare {statistics.median(bare):,.0f} samples/s, runner {statistics.median(runner):,.0f} "
                  f"samples/s, runner/bare {ratio:.3f} (median of {rounds} rounds; range {min(ratios):.3f}-{max(ratios):.3f})", flush=True)
    return rows


def build_parser() -> argparse.ArgumentParser:
    p = make_parser("bench.overhead", "Harness overhead: runner samples/s vs a bare PyTorch loop.")
    p.add_argument("--precision", action="append", choices=sorted(_DTYPES), help="default: fp32 and bf16")
    p.add_argument("--batch-size", action="append", type=int, help="default: 64 and 256")
    p.add_argument("--rounds", type=int, default=5, help="rounds per configuration (median of per-round ratios)")
    p.add_argument("--min-time-s", type=float, default=1.5, help="timed seconds per repeat on each side")
    p.add_argument("--out", default="results", help="folder for overhead-<time>.json")
    return p


def main(args: argparse.Namespace) -> int:
    threads = torch.get_num_threads()
    measure = MeasureConfig(min_time_s=args.min_time_s, max_time_s=max(10.0, args.min_time_s), repeats=3)
    rows = compare(args.precision or ["fp32", "bf16"], args.batch_size or [64, 256], args.rounds, measure, threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"overhead-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}.json"
    path.write_text(json.dumps({"rows": rows, "threads": threads, "env": environment_info()}, indent=2) + "\n")
    worst = min(r["ratio"] for r in rows)
    print(f"lowest runner/bare ratio: {worst:.3f}")
    print(f"wrote {path}")
    return 0


def cli(argv: Sequence[str] | None = None) -> int:
    return run_cli(main, build_parser(), argv)


if __name__ == "__main__":
    sys.exit(cli())
