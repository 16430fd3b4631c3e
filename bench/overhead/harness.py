"""The harness's overhead, measured: the matrix runner's throughput against a bare hand-written PyTorch
loop (``python -m bench.overhead`` is the CLI), for SimpleCNN (samples/s) or the baby GPT (tokens/s,
against a nanoGPT-style loop).

Same model, same batch size, precision and threads, data held in memory on both sides.
The runner side is a cell exactly as ``bench.run`` measures it (its own process through the
launcher, guards off); the bare side is the shortest honest loop: index a pre-normalised float
tensor, autocast forward+loss, zero_grad, backward, step. Each configuration is measured in alternating
rounds by the paired-rounds engine (:mod:`bench.paired.engine`: runner, bare, then bare, runner, ...; a
stalled round taken again) so that drift of a shared machine hits both sides alike; the figure is the
engine's paired ratio runner/bare with its 95% interval.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from bench.cells.contract import CellSpec, GuardsConfig, MeasureConfig
from bench.launch.executor import Executor
from bench.launch.local import LocalExecutor
from bench.paired.cells import reading
from bench.paired.engine import Reading, Rounds, RoundsPlan, run_rounds
from bench.stats import settled
from trainer_core.data import NormalizeBatch
from trainer_core.gpt import GPT
from trainer_core.models import SimpleCNN
from trainer_core.synthetic import make_synthetic_images
from trainer_core.text import read_text, tokenize

N_SAMPLES = 8192
PRECISION_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
# The language model on both sides: configs/gpt_char.yaml's baby GPT and its optimizer.
LM_KWARGS = {"n_layer": 4, "n_head": 4, "n_embd": 128, "dropout": 0.0, "bias": False}
LM_OPTIM = {"name": "adamw", "lr": 0.002, "betas": [0.9, 0.99], "weight_decay": 0.1}


def timed_steps(step: Callable[[], float], measure: MeasureConfig) -> list[float]:
    """Step times of ``step`` (which returns its own duration), warmed up and repeated like a cell."""
    warm: list[float] = []
    while len(warm) < measure.max_warmup_steps:
        warm += [step() for _ in range(measure.settle_window)]
        if len(warm) >= measure.warmup_steps and settled(warm, measure.settle_window, measure.settle_tolerance):
            break
    n = measure.steps_per_repeat(statistics.median(warm[-measure.settle_window :]))
    return [step() for _ in range(n * measure.repeats)]


def bare_cnn(precision: str, batch_size: int, measure: MeasureConfig, seed: int = 0) -> Reading:
    """A minimal SimpleCNN loop on normalised images held in memory (samples/s)."""
    images, labels = make_synthetic_images(N_SAMPLES, seed=0)
    x_all = NormalizeBatch(0.5, 0.25)(torch.from_numpy(images).unsqueeze(1))  # normalised once, up front
    y_all = torch.from_numpy(labels)
    torch.manual_seed(seed)
    model = SimpleCNN()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(seed)

    def batch() -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.randint(0, N_SAMPLES, (batch_size,), generator=g)
        return x_all[idx], y_all[idx]

    step = _bare_step(model, opt, batch, precision, clip=None)
    return Reading(timed_steps(step, measure), float(batch_size), "samples/s")


def bare_lm(precision: str, batch_size: int, block: int, measure: MeasureConfig, text: Path, seed: int = 0) -> Reading:
    """A nanoGPT-style loop (tokens/s): random windows gathered from the token tensor, the same GPT."""
    ids, vocab, _ = tokenize(read_text(str(text)), "char")
    data = torch.from_numpy(ids).long()
    torch.manual_seed(seed)
    model = GPT(vocab, block, **LM_KWARGS)
    decay = [q for q in model.parameters() if q.dim() >= 2]
    rest = [q for q in model.parameters() if q.dim() < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.1}, {"params": rest, "weight_decay": 0.0}],
        lr=LM_OPTIM["lr"],
        betas=(0.9, 0.99),
    )
    offsets = torch.arange(block + 1)
    g = torch.Generator().manual_seed(seed)

    def batch() -> tuple[torch.Tensor, torch.Tensor]:
        windows = data[torch.randint(len(data) - block - 1, (batch_size,), generator=g)[:, None] + offsets]
        return windows[:, :-1], windows[:, 1:]

    step = _bare_step(model, opt, batch, precision, clip=1.0)
    return Reading(timed_steps(step, measure), float(batch_size * block), "tokens/s")


def _bare_step(
    model: nn.Module,
    opt: torch.optim.Optimizer,
    batch: Callable[[], tuple[torch.Tensor, torch.Tensor]],
    precision: str,
    clip: float | None,
) -> Callable[[], float]:
    """The shortest honest training step: a batch, autocast forward + loss, zero_grad, backward, (clip,) step."""
    dtype = PRECISION_DTYPES[precision]
    scaler = torch.amp.GradScaler("cpu") if precision == "fp16" else None
    model.train()

    def step() -> float:
        t0 = time.perf_counter()
        x, y = batch()
        with torch.autocast("cpu", dtype=dtype, enabled=dtype is not None):
            out = model(x)
            loss = nn.functional.cross_entropy(out.reshape(-1, out.shape[-1]).float(), y.reshape(-1))
        opt.zero_grad(set_to_none=True)
        (scaler.scale(loss) if scaler else loss).backward()
        if scaler:
            scaler.unscale_(opt)
        if clip is not None:
            nn.utils.clip_grad_norm_(model.parameters(), clip)
        if scaler:
            scaler.step(opt)
            scaler.update()
        else:
            opt.step()
        return time.perf_counter() - t0

    return step


def cnn_config(precision: str, batch_size: int) -> dict[str, Any]:
    return {
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


def lm_config(precision: str, batch_size: int, block: int, text: Path) -> dict[str, Any]:
    return {
        "device": "cpu",
        "precision": precision,
        "seed": 0,
        "workload": "causal_lm",
        "model": {"name": "GPT", "kwargs": {**LM_KWARGS, "block_size": block}},
        "data": {
            "name": "text",
            "path": str(text),
            "batch_size": batch_size,
            "n_samples": 100_000,
            "n_test_samples": 16,
            "eval_batch_size": 16,
        },
        "optim": LM_OPTIM,
        "train": {"grad_clip_norm": 1.0},
    }


def runner(
    config: dict[str, Any], cell_id: str, measure: MeasureConfig, threads: int, cell_dir: Path, executor: Executor
) -> Reading:
    """The same training as a bench.run cell, launched as one by ``executor`` (guards off)."""
    spec = CellSpec(cell_id=cell_id, config=config, threads=threads, measure=measure, guards=GuardsConfig(enabled=[]))
    return reading(executor.submit(spec, cell_dir)(), f"runner cell {cell_id}")


class OverheadSubject:
    """The two arms the engine reads: ``bare`` (a loop in this process) and ``runner`` (a cell)."""

    def __init__(self, bare: Callable[[], Reading], runner: Callable[[], Reading]) -> None:
        self.arms = {"bare": bare, "runner": runner}

    def read(self, arm: str, label: str, first: bool) -> dict[str, Reading]:
        return {"cell": self.arms[arm]()}

    def start_round(self, r: int) -> None:
        pass

    def close(self) -> None:
        pass


def sides(
    workload: str,
    precision: str,
    batch_size: int,
    measure: MeasureConfig,
    threads: int,
    cell_dir: Path,
    executor: Executor,
    text: Path | None = None,
    block: int = 64,
) -> tuple[Callable[[], Reading], Callable[[], Reading]]:
    """(bare loop, runner cell) readings of one configuration of ``workload`` (cnn or lm)."""
    cell_id = f"overhead-{workload}-{precision}-bs{batch_size}"
    if workload == "lm":
        assert text is not None
        config = lm_config(precision, batch_size, block, text)
        return (
            lambda: bare_lm(precision, batch_size, block, measure, text),
            lambda: runner(config, cell_id, measure, threads, cell_dir, executor),
        )
    return (
        lambda: bare_cnn(precision, batch_size, measure),
        lambda: runner(cnn_config(precision, batch_size), cell_id, measure, threads, cell_dir, executor),
    )


# The smallest runner/bare change the verdict calls a difference (the harness aims to cost nothing).
MIN_EFFECT_PCT = 3.0


def compare_one(subject: OverheadSubject, what: str, unit: str, rounds: int) -> dict[str, Any]:
    """One configuration's rounds and its row: each side's median throughput, the paired ratio runner/bare
    and its interval, the verdict, and (as bench.overhead reported before the engine) the median of the
    per-round ratios."""

    def report(r: int, done: Rounds) -> None:
        b, x = done.taken[-1]["bare"]["cell"].rate, done.taken[-1]["runner"]["cell"].rate
        print(f"{what} round {r}/{rounds}: bare {b:,.0f}, runner {x:,.0f} {unit} ({x / b:.3f})", flush=True)

    done = run_rounds(subject, ("bare", "runner"), RoundsPlan.fixed(rounds, MIN_EFFECT_PCT), on_round=report)
    paired = done.compare("bare", "runner", MIN_EFFECT_PCT)["cell"]
    return {
        "unit": unit,
        "bare": statistics.median(paired.a_rate),
        "runner": statistics.median(paired.b_rate),
        "ratio": paired.ratio,
        "ci_low": paired.ci_low,
        "ci_high": paired.ci_high,
        "verdict": paired.verdict.value,
        "ratio_median": statistics.median(paired.per_round),
        "round_ratios": paired.per_round,
        "bare_rounds": paired.a_rate,
        "runner_rounds": paired.b_rate,
        "retaken": [{"round": x.round, "why": x.why} for x in done.retaken],
    }


def compare(
    workload: str,
    precisions: list[str],
    batch_sizes: list[int],
    rounds: int,
    measure: MeasureConfig,
    threads: int,
    cell_dir: Path,
    text: Path | None = None,
    executor: Executor | None = None,
) -> list[dict[str, Any]]:
    rows = []
    unit = "tokens/s" if workload == "lm" else "samples/s"
    executor = executor or LocalExecutor()
    for precision in precisions:
        for bs in batch_sizes:
            arms = sides(workload, precision, bs, measure, threads, cell_dir, executor, text)
            row = compare_one(OverheadSubject(*arms), f"{workload} {precision} bs{bs}", unit, rounds)
            rows.append({"workload": workload, "precision": precision, "batch_size": bs, **row})
    return rows


def row_line(row: dict[str, Any]) -> str:
    r, unit = row["round_ratios"], row["unit"]
    return (
        f"{row['workload']} {row['precision']} bs{row['batch_size']}: bare {row['bare']:,.0f} {unit}, runner "
        f"{row['runner']:,.0f} {unit}, runner/bare {row['ratio']:.3f} (95% CI {row['ci_low']:.3f}-"
        f"{row['ci_high']:.3f}, {row['verdict']}; {len(r)} paired rounds, range {min(r):.3f}-{max(r):.3f})"
    )
