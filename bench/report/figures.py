"""Plotly figures of the HTML reports (records or history series in, ``plotly.graph_objects`` out).
Each function returns None when the run has nothing for it to show. No torch import."""

from __future__ import annotations

from typing import Any

import plotly.graph_objects as go

from bench.cells.contract import OK, CellRecord
from bench.report.tables import lines_by_other_axes
from bench.stats import step_change
from trainer_core.phases import PHASES

LAYOUT = {"margin": {"l": 60, "r": 20, "t": 30, "b": 120}, "template": "plotly_white"}


def throughput_vs_batch(records: list[CellRecord]) -> go.Figure | None:
    """A line per combination of the other varying axes (precision among them); error bars: each cell's
    throughput at its p90 and its p10 step."""
    ok = [r for r in records if r.status == OK and r.rate and "data.batch_size" in r.axes and r.time_to_target is None]
    if not ok:
        return None
    fig = go.Figure(layout={**LAYOUT, "xaxis": {"type": "log", "title": "batch size"}, "yaxis": {"title": ok[0].unit}})
    for name, rs in sorted(lines_by_other_axes(ok, ("data.batch_size",)).items()):
        rs.sort(key=lambda r: r.axes["data.batch_size"])
        bands = [r.rate_band or (r.rate, r.rate) for r in rs]  # throughput at the p90 and the p10 step
        error = {"type": "data", "symmetric": False, "array": [hi - r.rate for r, (_, hi) in zip(rs, bands)],
                 "arrayminus": [r.rate - lo for r, (lo, _) in zip(rs, bands)]}  # fmt: skip
        fig.add_scatter(x=[r.axes["data.batch_size"] for r in rs], y=[r.rate for r in rs], name=name,
                        mode="lines+markers", text=[r.cell_id for r in rs], error_y=error)  # fmt: skip
    return fig


def memory_vs_batch(records: list[CellRecord]) -> go.Figure | None:
    """What each configuration added to memory against its batch size (a line per combination of the other
    axes), with the split's activations beside it: the part that grows with the batch."""
    ok = [r for r in records if r.status == OK and r.mem_added_mb is not None and "data.batch_size" in r.axes]
    if not ok:
        return None
    fig = go.Figure(layout={**LAYOUT, "xaxis": {"type": "log", "title": "batch size"}, "yaxis": {"title": "MiB"}})
    for name, rs in sorted(lines_by_other_axes(ok, ("data.batch_size",)).items()):
        rs.sort(key=lambda r: r.axes["data.batch_size"])
        x = [r.axes["data.batch_size"] for r in rs]
        fig.add_scatter(x=x, y=[r.mem_added_mb for r in rs], name=f"{name} added", mode="lines+markers",
                        text=[r.cell_id for r in rs])  # fmt: skip
        acts = [(r.mem_split_mb or {}).get("activations") for r in rs]
        if any(a is not None for a in acts):
            fig.add_scatter(x=x, y=acts, name=f"{name} activations", mode="lines+markers", line={"dash": "dot"})
    return fig


def data_wait(records: list[CellRecord]) -> go.Figure | None:
    ok = [r for r in records if r.status == OK and r.data_wait_pct is not None]
    if not ok:
        return None
    fig = go.Figure(layout={**LAYOUT, "yaxis": {"title": "data-wait share of the step, %"}})
    fig.add_bar(x=[r.cell_id for r in ok], y=[r.data_wait_pct for r in ok], name="data wait")
    return fig


def phase_breakdown(records: list[CellRecord]) -> tuple[go.Figure, str] | None:
    """Stacked shares of the step per phase: from each cell's trace where profiled, else from the
    step timer's phases over the timed steps. Returns the figure and where its figures come from."""
    traced = [r for r in records if r.status == OK and r.prof_phase_pct]
    timed = [r for r in records if r.status == OK and r.phase_s]
    rows, source = (traced, "torch.profiler trace") if traced else (timed, "step timer")
    if not rows:
        return None
    fig = go.Figure(layout={**LAYOUT, "barmode": "stack", "yaxis": {"title": "share of step time, %"}})
    for p in (*PHASES, "other"):
        if traced:
            vals = [r.prof_phase_pct.get(p) or 0.0 for r in rows]
        else:
            vals = [100.0 * r.phase_s.get(f"{p}_s", 0.0) / max(sum(r.step_s), 1e-12) for r in rows]
        if any(vals):
            fig.add_bar(x=[r.cell_id for r in rows], y=vals, name=p)
    return fig, source


def scaling(records: list[CellRecord]) -> go.Figure | None:
    """Throughput against ranks, a line per combination of the other axes (only with multi-rank cells)."""
    ok = [r for r in records if r.status == OK and r.rate]
    if not any(r.world_size > 1 for r in ok):
        return None
    fig = go.Figure(layout={**LAYOUT, "xaxis": {"title": "ranks", "dtick": 1}, "yaxis": {"title": ok[0].unit}})
    for name, rs in sorted(lines_by_other_axes(ok, ("train.world_size", "train.strategy")).items()):
        rs.sort(key=lambda r: r.world_size)
        fig.add_scatter(x=[r.world_size for r in rs], y=[r.rate for r in rs], name=name, mode="lines+markers")
    return fig


def trend(points: list[dict[str, Any]], window: int, min_effect_pct: float) -> tuple[go.Figure, list[int]]:
    """A cell's throughput over its recorded runs, with each reading the step-change rule flags
    (against the readings before it) marked; returns the figure and the flagged indices."""
    ys = [p["throughput"] for p in points]
    flagged = []
    for i in range(len(ys)):
        v = step_change(ys[: i + 1], window, min_effect_pct)
        if v is not None and (v["regression"] or v["improvement"]):
            flagged.append(i)
    labels = [f"{p['run_id']}<br>{(p['git_commit'] or '?')[:10]}" for p in points]
    fig = go.Figure(layout={**LAYOUT, "height": 320, "yaxis": {"title": points[0]["unit"]}})
    fig.add_scatter(x=[p["recorded_at"] for p in points], y=ys, mode="lines+markers", name="reading", text=labels)
    if flagged:
        fig.add_scatter(x=[points[i]["recorded_at"] for i in flagged], y=[ys[i] for i in flagged], mode="markers",
                        name="change point", marker={"size": 14, "symbol": "x", "color": "red"})  # fmt: skip
    return fig, flagged
