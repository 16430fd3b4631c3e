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
from bench.matrix import GuardsConfig, MeasureConfig
from bench.measure import StepTimer, current_rss_bytes, flops_per_step, measure, peak_rss_bytes
from bench.stats import cell_statistics
from trainer_core.config import apply_overrides, validate_config
from trainer_core.factory import build_run
from trainer_core.precision import resolve_device

# A cell measures steps, not epochs of training: no early stopping, no validation-driven stop,
# no logging files; the grad norm is tracked for the finite guard.
_CELL_OVERRIDES = {
    "train.epochs": 1_000_000,
    "train.max_steps": None,
    "train.early_stopping.patience": None,
    "logging.tensorboard": False,
    "logging.jsonl": False,
    "logging.progress_bar": "off",
    "logging.track_grad_norm": True,
}


def run_cell(spec: dict[str, Any]) -> dict[str, Any]:
    """Measure then guard one cell. ``spec``: cell_id, axes, config, measure, guards, threads, peaks."""
    t_start = time.perf_counter()
    torch.set_num_threads(int(spec["threads"]))
    rss_start = current_rss_bytes()
    config = validate_config(apply_overrides(spec["config"], {**_CELL_OVERRIDES, "train.threads": int(spec["threads"])}),
                             source=f"cell {spec['cell_id']}")
    mcfg = MeasureConfig.model_validate(spec["measure"])
    gcfg = GuardsConfig.model_validate(spec["guards"])
    device = resolve_device(config.device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    timer, watch = StepTimer(device), FiniteWatch()
    run = build_run(config, hooks=[timer, watch])
    trainer = run.trainer
    x, y = next(iter(run.data.train_loader))
    flops = flops_per_step(trainer, x, y)
    raw = measure(trainer, run.data.train_loader, timer, mcfg)
    stats = cell_statistics(raw["steps"], raw["repeat_of_step"], config.data.batch_size)
    if device.type == "cuda":
        peak_mem = torch.cuda.max_memory_allocated(device)
        mem = {"peak_mem_mb": peak_mem / 2**20, "mem_kind": "cuda_max_allocated"}
    else:
        peak = peak_rss_bytes()
        mem = {"peak_mem_mb": peak / 2**20, "rss_growth_mb": (peak - rss_start) / 2**20, "mem_kind": "rss_high_water"}
    median_s = stats["step_ms_median"] / 1e3
    achieved = flops / median_s if median_s > 0 else math.nan
    peak_flops = spec.get("peaks", {}).get(config.precision)
    guard_results = run_guards(config, gcfg, device, trainer, watch)
    return {
        "cell_id": spec["cell_id"],
        "axes": spec["axes"],
        "status": "ok",
        "reason": "; ".join(trainer.policy.notes) or None,
        "precision": config.precision,
        "device": str(device),
        "batch_size": config.data.batch_size,
        "emulated": trainer.policy.emulated,
        "threads": torch.get_num_threads(),
        **stats,
        **mem,
        "flops_per_step": flops,
        "tflops": achieved / 1e12,
        "pct_of_peak": 100.0 * achieved / peak_flops if peak_flops else None,
        "warmup_steps": raw["warmup_steps"],
        "warmup_settled": raw["warmup_settled"],
        "steps_per_repeat": raw["steps_per_repeat"],
        "step_s": [r["step_s"] for r in raw["steps"]],
        "phase_s": {k: sum(r.get(k, 0.0) for r in raw["steps"]) for k in ("data_s", "h2d_s", "forward_s", "backward_s", "optimizer_s")},
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
