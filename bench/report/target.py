"""Time-to-target results as summary.md and the terminal show them: the answer first (the fastest
guard-passing cell to the target, its speedup over the reference cell with an interval, why each other
cell lost), then the table of every cell's score. No torch."""

from __future__ import annotations

from typing import Any

from bench.cells.contract import OK, CellRecord
from bench.target.scoring import speedup_interval, too_fast


def target_records(records: list[CellRecord]) -> list[CellRecord]:
    return [r for r in records if r.status == OK and r.time_to_target is not None]


def reference_of(records: list[CellRecord], env: dict[str, Any]) -> CellRecord | None:
    """The matrix's ``measure.reference`` cell, else the first measured one."""
    cells = target_records(records)
    wanted = ((env.get("matrix") or {}).get("measure") or {}).get("reference")
    by_id = {r.cell_id: r for r in cells}
    if wanted is not None:
        return by_id.get(wanted)
    return cells[0] if cells else None


def secs(x: float | None) -> str:
    """Seconds to three significant figures (a tiny test model reaches its target in milliseconds)."""
    return "" if x is None else f"{x:.3g}"


def _score(r: CellRecord) -> float:
    t = r.time_to_target
    return t.score_s if t is not None and t.score_s is not None else float("inf")


def why_lost(r: CellRecord, winner: CellRecord) -> str:
    t = r.time_to_target
    assert t is not None
    if not r.guards_ok:
        return f"a guard failed ({', '.join(r.failed_guards())})"
    if not t.reached:
        return f"target not reached: {t.note}"
    return f"slower: {secs(t.score_s)} s, {_score(r) / _score(winner):.2f}x the winner's time"


def target_answer(records: list[CellRecord], env: dict[str, Any]) -> list[str]:
    """summary.md's first section in time_to_target mode (also the terminal's closing lines)."""
    cells = target_records(records)
    ok = sorted((r for r in cells if r.guards_ok and r.time_to_target and r.time_to_target.reached), key=_score)
    target = cells[0].time_to_target.target.describe() if cells and cells[0].time_to_target else "the target"
    lines = [f"## Fastest to {target} (all guards passed; MLPerf scoring)", ""]
    if not ok:
        return [*lines, "No cell reached the target with every guard passing.", ""]
    win, ref = ok[0], reference_of(records, env)
    t = win.time_to_target
    assert t is not None
    lines.append(
        f"**`{win.cell_id}`**: {secs(t.score_s)} s to target ({secs(t.score_with_setup_s)} s with setup and compile), "
        f"{t.epochs_to_target:.2f} epochs, {t.converged} of {len(t.runs)} runs reached it."
    )
    if ref is not None and ref.cell_id != win.cell_id and ref.time_to_target and ref.time_to_target.reached:
        low, high = speedup_interval(ref.time_to_target, t)
        lines.append(
            f"{_score(ref) / _score(win):.2f}x faster to the target than the reference `{ref.cell_id}` "
            f"(95% interval {low:.2f}-{high:.2f}, runs resampled)."
        )
    others = [r for r in cells if r.cell_id != win.cell_id]
    if others:
        lines += ["", "Why the others lost:"] + [f"- `{r.cell_id}`: {why_lost(r, win)}" for r in others]
    return [*lines, ""]


def target_table(records: list[CellRecord], env: dict[str, Any]) -> list[str]:
    """Every measured cell's score, spread, epochs and samples to target, and its checks."""
    cells, ref = target_records(records), reference_of(records, env)
    lines = [
        "## Time to target, every cell",
        "",
        "Score: mean time to target of the runs without the fastest and the slowest (one run that did not "
        "converge counts as the slowest); evaluations included, setup and compile charged only in the second "
        "figure. p: one-sided t-test that the runs' final metric is beyond the target (each run stops at the "
        "first evaluation that meets it, so p is small only when the runs overshoot it consistently).",
        "",
        "| cell | score s | with setup s | min-max s | CV % | epochs | samples | reached | p | samples/s | guards |",
        "|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    flags = []
    for r in cells:
        t = r.time_to_target
        assert t is not None
        if t.reached:
            figures = (f"{secs(t.score_s)} | {secs(t.score_with_setup_s)} | {secs(t.min_s)}-{secs(t.max_s)} | "
                       f"{t.cv_pct or 0:.0f} | {t.epochs_to_target:.2f} | {t.samples_to_target:,.0f}")  # fmt: skip
        else:
            figures = "not reached | | | | |"
        p = f"{t.p_beyond_target:.3f}" if t.p_beyond_target is not None else ""
        rate = f"{r.samples_per_s:,.0f}" if r.samples_per_s else ""
        guards = "ok" if r.guards_ok else "FAILED"
        lines.append(f"| {r.cell_id} | {figures} | {t.converged}/{len(t.runs)} | {p} | {rate} | {guards} |")
        fast = too_fast(t, ref.time_to_target) if ref and ref is not r and ref.time_to_target else None
        flags += [f"`{r.cell_id}`: {w}" for w in (fast, t.note if t.reached else None) if w]
    if flags:
        lines += ["", "To check:", ""] + [f"- {f}" for f in flags]
    return [*lines, ""]
