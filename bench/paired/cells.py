"""A cell's record as a reading of the paired-rounds engine: its raw step times, items per step and unit;
a failed cell, one without timings, or one that broke a guard cannot be compared, and says why. No torch."""

from __future__ import annotations

from bench.cells.contract import ERROR, FAIL, CellRecord
from bench.paired.engine import Reading


def reading(rec: CellRecord, who: str) -> Reading:
    """``who``: how the failure message names the reading (its arm, side and label)."""
    failed = None
    if rec.status != "ok" or not rec.step_s:
        failed = f"{who}: {rec.status}: {rec.reason}"
    elif rec.guards_ok is False:
        broken = ", ".join(f"{n}: {g.detail}" for n, g in rec.guards.items() if g.status in (FAIL, ERROR))
        failed = f"{who} broke a guard, so its speed means nothing: {broken}"
    return Reading(list(rec.step_s or []), float(rec.items_per_step or 1.0), rec.unit or "samples/s", failed)
