"""``python -m bench.cell SPEC.json RESULT.json``: measure and guard one matrix cell in its own process.

The matrix runner starts one such process per cell, so no state (threads, allocator, RNG, compiled
kernels, leaked memory) carries over between cells, and a crash takes down only its cell. The result
is written to RESULT.json, including on failure (with the reason) whenever Python is still alive.
"""

from __future__ import annotations

import json
import math
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import torch

from bench.guards import FiniteWatch, guards_ok, run_guards
from bench.matrix import GuardsConfig, MeasureConfig, ProfileConfig
from bench.measure import CELL_OVERRIDES, StepTimer, current_rss_bytes, flops_per_step, measure, peak_rss_bytes, run_steps, synchronize
from bench.profiling import ProfilerHook, maybe_profile, schedule_steps, trace_files
from bench.stats import cell_statistics, summarize
from bench.trace import breakdown, load_trace
from trainer_core.trainer import PHASES, Trainer
from trainer_core.config import apply_overrides, validate_config
from trainer_core.factory import build_run
from trainer_core.precision import resolve_device



def profile_cell(trainer: Trainer, loader: Any, timer: StepTimer, hook: ProfilerHook, cfg: ProfileConfig,
                 trace_dir: Path, device: torch.device, precision: str, timed_median_ms: float) -> dict[str, Any]:
    """Trace a few steps *after* the timed repeats (the table is never measured under the profiler),
    time them with the same hook to report the profiler's slowdown, and break the trace down."""
    timer.start()
    with maybe_profile(True, trace_dir, device, wait=cfg.wait, warmup=cfg.warmup, active=cfg.active,
                       record_shapes=cfg.record_shapes, profile_memory=cfg.profile_memory, with_stack=cfg.with_stack,
                       with_flops=cfg.with_flops, gzip=cfg.gzip, hook=hook):
        run_steps(trainer, loader, schedule_steps(cfg.wait, cfg.warmup, cfg.active))
    active = timer.stop()[-cfg.active:]
    files = trace_files(trace_dir)
    if not files:
        return {"profile_error": f"no trace written to {trace_dir}"}
    size_mb = sum(f.stat().st_size for f in files) / 2**20
    b = breakdown(load_trace(files[-1]))
    out: dict[str, Any] = {
        "trace_dir": str(trace_dir),
        "trace_mb": size_mb,
        "profiler_slowdown": summarize([r["step_s"] for r in active])["median"] * 1e3 / timed_median_ms,
        **{f"prof_{p}_pct": b["phase_pct"][p] for p in (*PHASES, "other")},
        "top_ops": b["top_ops"],
        "reduced_precision_pct": None if b["reduced_precision_share"] is None else 100.0 * b["reduced_precision_share"],
    }
    if size_mb > cfg.max_trace_mb:
        out["trace_warning"] = f"trace is {size_mb:.0f} MB (> {cfg.max_trace_mb:.0f} MB): shorten profile.active or drop with_stack"
    share = b["reduced_precision_share"]
    if precision != "fp32" and share is not None and share < 0.05:
        out["mixed_precision_warning"] = f"{precision} cell but only {100 * share:.0f}% of matmul/conv ops ran in reduced precision"
    return out


def run_cell(spec: dict[str, Any]) -> dict[str, Any]:
    """Measure then guard one cell. ``spec``: cell_id, axes, config, measure, guards, threads, peaks."""
    t_start = time.perf_counter()
    torch.set_num_threads(int(spec["threads"]))
    rss_start = current_rss_bytes()
    config = validate_config(apply_overrides(spec["config"], {**CELL_OVERRIDES, "train.threads": int(spec["threads"])}),
                             source=f"cell {spec['cell_id']}")
    mcfg = MeasureConfig.model_validate(spec["measure"])
    gcfg = GuardsConfig.model_validate(spec["guards"])
    pcfg = ProfileConfig.model_validate(spec.get("profile") or {})
    profiling = pcfg.enabled and bool(spec.get("trace_dir"))
    device = resolve_device(config.device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    timer, watch, prof_hook = StepTimer(device), FiniteWatch(), ProfilerHook()
    run = build_run(config, hooks=[timer, watch, prof_hook] if profiling else [timer, watch])
    trainer = run.trainer
    x, y = next(iter(run.data.train_loader))
    first_step_s = None
    if config.train.compile != "off":
        # torch.compile compiles at the first call: time that step on its own, apart from throughput.
        synchronize(device)
        t0 = time.perf_counter()
        trainer.train_step(x, y)
        synchronize(device)
        first_step_s = time.perf_counter() - t0
    # FLOPs from the eager module: FlopCounterMode cannot see inside a compiled graph.
    compiled, trainer.step_model = trainer.step_model, trainer.model
    flops = flops_per_step(trainer, x, y)
    trainer.step_model = compiled
    raw = measure(trainer, run.data.train_loader, timer, mcfg)
    stats = cell_statistics(raw["steps"], raw["repeat_of_step"], config.data.batch_size)
    compile_s = None if first_step_s is None else max(0.0, first_step_s - stats["step_ms_median"] / 1e3)
    if device.type == "cuda":
        peak_mem = torch.cuda.max_memory_allocated(device)
        mem = {"peak_mem_mb": peak_mem / 2**20, "mem_kind": "cuda_max_allocated"}
    else:
        peak = peak_rss_bytes()
        mem = {"peak_mem_mb": peak / 2**20, "rss_growth_mb": (peak - rss_start) / 2**20, "mem_kind": "rss_high_water"}
    median_s = stats["step_ms_median"] / 1e3
    achieved = flops / median_s if median_s > 0 else math.nan
    peak_flops = spec.get("peaks", {}).get(config.precision)
    profile = {}
    if profiling:
        profile = profile_cell(trainer, run.data.train_loader, timer, prof_hook, pcfg, Path(spec["trace_dir"]),
                               device, config.precision, stats["step_ms_median"])
    guard_results = run_guards(config, gcfg, device, trainer, watch)
    return {
        "cell_id": spec["cell_id"],
        "axes": spec["axes"],
        "status": "ok",
        "reason": "; ".join(trainer.policy.notes) or None,  # one line for the tables
        "notes": list(trainer.policy.notes),  # each note whole, for summary.md's list
        "precision": config.precision,
        "device": str(device),
        "batch_size": config.data.batch_size,
        "emulated": trainer.policy.emulated,
        "threads": torch.get_num_threads(),
        **stats,
        **mem,
        "flops_per_step": flops,
        "compile_s": compile_s,
        "tflops": achieved / 1e12,
        "pct_of_peak": 100.0 * achieved / peak_flops if peak_flops else None,
        "warmup_steps": raw["warmup_steps"],
        "warmup_settled": raw["warmup_settled"],
        "steps_per_repeat": raw["steps_per_repeat"],
        "step_s": [r["step_s"] for r in raw["steps"]],
        "phase_s": {k: sum(r.get(k, 0.0) for r in raw["steps"]) for k in ("data_s", "h2d_s", "forward_s", "backward_s", "optimizer_s")},
        **profile,
        "guards": {g.name: g.to_dict() for g in guard_results},
        "guards_ok": guards_ok(guard_results),
        "skipped_fp16_steps": int(trainer.counters["skipped_steps"]),
        "cell_seconds": time.perf_counter() - t_start,
    }


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m bench.cell SPEC.json RESULT.json", file=sys.stderr)
        return 2
    spec_path, result_path = Path(argv[0]), Path(argv[1])
    spec = json.loads(spec_path.read_text())
    try:
        result = run_cell(spec)
        code = 0
    except Exception as e:  # the runner records this as a failed cell and carries on
        first = (str(e).strip().splitlines() or [""])[0][:400]
        result = {"cell_id": spec.get("cell_id"), "axes": spec.get("axes"), "status": "failed",
                  "reason": f"{type(e).__name__}: {first}"}
        traceback.print_exc()
        code = 1
    result_path.write_text(json.dumps(result, default=str) + "\n")
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
