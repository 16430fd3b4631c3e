"""An inference cell (``measure.mode: inference``): the model built from the cell's config, run by its
``infer.runtime`` (eager, torch.compile, or exported with :mod:`bench.export` and loaded back) on a batch of
the data's own test inputs; export or compile time apart; calls timed after a warm-up, each synchronised, in
repeats of a fixed count (at least ``min_steps`` calls and ``min_time_s`` seconds); parity against fp64 is the
cell's guard (a runtime whose outputs drift is shown, never recommended)."""

from __future__ import annotations

import math
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from bench.cells.contract import OK, CellRecord, CellSpec, GuardResult, MeasureConfig
from bench.cells.inference import EXPORTED_RUNTIMES, PARITY_GUARD, InferenceResult, Parity
from bench.export.exporting import test_inputs
from bench.export.formats import FORMATS
from bench.export.parity import check_parity
from bench.measure.memory import device_peak
from bench.stats import percentile
from trainer_core.config import RunConfig, apply_overrides
from trainer_core.factory import Run, build_run
from trainer_core.loading import validate_config
from trainer_core.precision import PrecisionPolicy
from trainer_core.provenance import machine_identity

Call = Callable[[torch.Tensor], torch.Tensor]


def cell_config(spec: CellSpec) -> RunConfig:
    """The cell's config as an inference cell builds it: its threads, no compile of the training step, no files."""
    over = {"train.threads": spec.threads, "train.compile": "off", "logging.tensorboard": False,
            "logging.jsonl": False, "logging.progress_bar": "off"}  # fmt: skip
    return validate_config(apply_overrides(spec.config, over), source=f"cell {spec.cell_id}")


def batch_of(run: Run, batch: int) -> torch.Tensor:
    """``batch`` test inputs as the model takes them (repeated when the test split is smaller)."""
    x = test_inputs(run, batch)
    if len(x) < batch:
        x = x.repeat(math.ceil(batch / len(x)), *([1] * (x.dim() - 1)))[:batch]
    if run.trainer.channels_last and x.dim() == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    return x


def items_per_sample(run: Run) -> float:
    """What throughput counts per input (1 sample, or its tokens for a language model), from a real batch."""
    _, y = next(iter(run.data.test_loader))
    return run.trainer.workload.items(y) / y.shape[0]


def eager_call(model: nn.Module, policy: PrecisionPolicy) -> Call:
    own = policy.cast_model(model)

    def call(x: torch.Tensor) -> torch.Tensor:
        with policy.autocast():
            return own(policy.cast_input(x))

    return call


def runtime_call(
    runtime: str, model: nn.Module, x: torch.Tensor, policy: PrecisionPolicy, folder: Path
) -> tuple[Call, float | None]:
    """(what runs one batch, seconds spent exporting or compiling it). Exported runtimes run the fp32 export
    at the cell's batch (the matrix skips them for other precisions)."""
    if runtime == "eager":
        return eager_call(model, policy), None
    if runtime == "compile":
        call = eager_call(torch.compile(model), policy)
        t0 = time.perf_counter()
        with torch.no_grad():
            call(x)  # compiles
        return call, time.perf_counter() - t0
    fmt = FORMATS[EXPORTED_RUNTIMES[runtime]]
    path = folder / f"model{fmt.suffix}"
    t0 = time.perf_counter()
    fmt.export(model, x, path, dynamic_batch=False)
    seconds = time.perf_counter() - t0
    return fmt.load(path, x.device), seconds


def timed_calls(call: Call, x: torch.Tensor, m: MeasureConfig, device: torch.device) -> tuple[list[float], int]:
    """Latency of each timed call, s, and calls per repeat: warm-up first, every call synchronised."""
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    warm: list[float] = []
    with torch.no_grad():
        while len(warm) < m.warmup_steps or (sum(warm) < m.min_time_s / 4 and sum(warm) < m.max_warmup_s):
            t0 = time.perf_counter()
            call(x)
            sync()
            warm.append(time.perf_counter() - t0)
        typical = sorted(warm[-m.warmup_steps :])[len(warm[-m.warmup_steps :]) // 2]
        n = max(m.min_steps, math.ceil(m.min_time_s / typical)) if typical > 0 else m.min_steps
        n = max(3, min(n, m.max_steps_per_repeat, int(m.max_time_s / typical) if typical > 0 else n))
        out: list[float] = []
        for _ in range(m.repeats * n):
            t0 = time.perf_counter()
            call(x)
            sync()
            out.append(time.perf_counter() - t0)
    return out, n


def parity_guard(parity: Parity) -> GuardResult:
    if parity.passed:
        detail = (
            f"error vs fp64 {parity.exported_error:.3g} (eager's {parity.eager_error:.3g}), "
            f"top-1 agreement {parity.top1_agreement:.4f}"
        )
        return GuardResult(name=PARITY_GUARD, status="pass", detail=detail)
    return GuardResult(name=PARITY_GUARD, status="fail", detail=parity.reason or "outputs drift")


def inference_cell(spec: CellSpec) -> CellRecord:
    """Build, export or compile, check parity, time the calls: the cell's record."""
    t_start = time.perf_counter()
    config = cell_config(spec)
    run = build_run(config)
    model, device, policy = run.model.eval(), run.trainer.device, run.trainer.policy
    batch = config.data.batch_size
    x = batch_of(run, batch)
    with tempfile.TemporaryDirectory() as folder:
        call, export_s = runtime_call(config.infer.runtime, model, x, policy, Path(folder))
        parity = check_parity(model, call, x, policy)
        latencies, per_repeat = timed_calls(call, x, spec.measure, device)
    items = batch * items_per_sample(run)
    s = sorted(latencies)
    p50, p10, p90, p99 = (percentile(s, q) for q in (50, 10, 90, 99))
    result = InferenceResult(runtime=config.infer.runtime, batch=batch, items_per_call=items,
                             latency_ms_p50=p50 * 1e3, latency_ms_p90=p90 * 1e3, latency_ms_p99=p99 * 1e3,
                             items_per_s=items / p50, calls_timed=len(latencies), seconds_timed=sum(latencies),
                             export_s=export_s, parity=parity)  # fmt: skip
    guard = parity_guard(parity)
    compile_s = export_s if config.infer.runtime == "compile" else None
    return CellRecord(
        cell_id=spec.cell_id, axes=spec.axes, role=spec.role, status=OK, precision=config.precision,
        device=str(device), batch_size=batch, emulated=policy.emulated, threads=torch.get_num_threads(),
        reason="; ".join(policy.notes) or None, notes=list(policy.notes),
        steps_timed=len(latencies), steps_per_repeat=per_repeat, step_s=latencies, step_ms_median=p50 * 1e3,
        step_ms_p10=p10 * 1e3, step_ms_p90=p90 * 1e3, step_ms_iqr=(percentile(s, 75) - percentile(s, 25)) * 1e3,
        samples_per_s=batch / p50, items_per_step=items, throughput=items / p50,
        throughput_unit=f"{run.trainer.workload.unit}/s", compile_s=compile_s,
        guards={PARITY_GUARD: guard}, guards_ok=guard.status == "pass", cell_seconds=time.perf_counter() - t_start,
        machine=machine_identity(), inference=result, **device_peak(device),
    )  # fmt: skip
