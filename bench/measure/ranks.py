"""A data-parallel cell: the cell process starts ``train.world_size`` ranks through torch's elastic
launcher (as torchrun would); each rank sets up, measures and guards the cell exactly as a one-process
cell does (:func:`bench.measure.cell.measure_cell`, its Trainer wrapped in DistributedDataParallel or sharded
by FSDP2, its measurement decisions agreed between ranks) with the thread budget shared out; then the
ranks' records are merged into one: global throughput, each rank's median step and the straggler spread,
time in collectives, the largest peak memory, and a guard passes only where it passed on every rank.
"""

from __future__ import annotations

import os
import time
from typing import Any

import numpy as np

from bench.cells.contract import FAILED, OK, CellRecord, CellSpec, GuardResult, guards_ok
from bench.measure.cell import measure_cell
from bench.stats import summarize
from trainer_core import distributed
from trainer_core.config import RunConfig
from trainer_core.loading import validate_config
from trainer_core.precision import resolve_device


def is_multi_rank(config: RunConfig) -> bool:
    return config.train.strategy != "single" and config.train.world_size * config.train.nnodes > 1


def run_ranks(spec: CellSpec) -> CellRecord:
    """Launch the ranks, gather their records, merge them."""
    t0 = time.perf_counter()
    config = validate_config(spec.config, source=f"cell {spec.cell_id}")
    try:
        results = distributed.launch(config, rank_entry, spec.model_dump_json())
    except distributed.RanksFailed as e:
        last = f": {e.last_lines[-1]}" if e.last_lines else ""
        return CellRecord.not_measured(FAILED, f"{e.describe()}{last}; its log is above", spec.cell_id, spec.axes)
    records = [CellRecord.model_validate(results[r]) for r in sorted(results)]
    merged = merge(records)
    merged.cell_seconds = time.perf_counter() - t0
    return merged


def rank_entry(spec_json: str) -> dict[str, Any]:
    """One rank (run by the launcher in its own process): join the group, measure the cell, leave."""

    spec = CellSpec.model_validate_json(spec_json)
    config = validate_config(spec.config, source=f"cell {spec.cell_id}")
    distributed.init(config, resolve_device(config.device))
    try:
        info = distributed.current()
        local = int(os.environ.get("LOCAL_WORLD_SIZE", info.world_size))
        trace = f"{spec.trace_dir}/rank{info.rank}" if spec.trace_dir else None
        rank_spec = spec.model_copy(update={"threads": max(1, spec.threads // local), "trace_dir": trace})
        return measure_cell(rank_spec).model_dump(mode="json")
    finally:
        distributed.destroy()


def merge(records: list[CellRecord]) -> CellRecord:
    """Rank 0's record with the job-wide figures: the ranks step together, so a step of the job takes as
    long as its slowest rank (step by step), and it consumes every rank's batch."""
    base, world = records[0], len(records)
    failed = next((r for r in records if r.status != OK), None)
    if failed is not None:
        return failed
    n = min(len(r.step_s) for r in records)
    step_s = np.max([r.step_s[:n] for r in records], axis=0).tolist()
    st = summarize(step_s)
    items = world * (base.items_per_step or float(base.batch_size or 0))
    medians = [r.step_ms_median or 0.0 for r in records]
    stats = {
        "step_ms_median": st["median"] * 1e3,
        "step_ms_p10": st["p10"] * 1e3,
        "step_ms_p90": st["p90"] * 1e3,
        "step_ms_iqr": st["iqr"] * 1e3,
        "samples_per_s": world * (base.batch_size or 0) / st["median"],
        "items_per_step": items,
        "throughput": items / st["median"],
    }
    update: dict[str, Any] = {
        **stats,
        "samples_per_s_repeats": [world * x for x in base.samples_per_s_repeats],  # the ranks step together
        "step_s": step_s,
        "world_size": world,
        "threads_per_rank": base.threads,
        "rank_step_ms_median": medians,
        "straggler_pct": 100.0 * (max(medians) - min(medians)) / min(medians) if min(medians) > 0 else None,
        "peak_mem_mb": max((r.peak_mem_mb or 0.0) for r in records) or None,
        "guards": merge_guards(records),
    }
    if base.comm_ms_per_step is not None and stats.get("step_ms_median"):
        update["comm_pct"] = 100.0 * base.comm_ms_per_step / stats["step_ms_median"]
    if base.mfu_pct is not None and base.step_ms_median and stats.get("step_ms_median"):
        # one rank's analytic FLOPs per step over the job's step, against one rank's share of the machine
        update["mfu_pct"] = base.mfu_pct * base.step_ms_median / stats["step_ms_median"]
    merged = base.model_copy(update=update)
    merged.guards_ok = guards_ok(merged.guards)
    return merged


def merge_guards(records: list[CellRecord]) -> dict[str, GuardResult]:
    """Per guard, the first rank's verdict that is not a pass, else rank 0's (named by rank when it differs)."""
    out: dict[str, GuardResult] = {}
    for name, result in records[0].guards.items():
        worst = next((r.guards[name] for r in records if name in r.guards and r.guards[name].status != "pass"), None)
        out[name] = result if worst is None else worst
    return out
