"""PNG plots (matplotlib, headless Agg backend)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

from bench.cells.contract import OK, CellRecord
from bench.report.tables import lines_by_other_axes
from trainer_core.phases import PHASES

matplotlib.use("Agg")  # no display on CI machines
import matplotlib.pyplot as plt  # noqa: E402


def _save(fig: plt.Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_learning_curves(history: list[dict[str, Any]], path: str | Path, title: str = "") -> Path:
    """Train/val loss (left) and validation accuracy (right) per epoch."""
    epochs = [h["epoch"] for h in history]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    ax_loss.plot(epochs, [h["train_loss"] for h in history], marker="o", label="train loss")
    ax_loss.plot(epochs, [h["val_loss"] for h in history], marker="o", label="val loss")
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("cross-entropy")
    ax_loss.legend()
    ax_loss.grid(alpha=0.3)
    ax_acc.plot(epochs, [h["val_accuracy"] for h in history], marker="o", color="tab:green")
    ax_acc.set_xlabel("epoch")
    ax_acc.set_ylabel("validation accuracy")
    ax_acc.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def plot_throughput(records: list[CellRecord], path: str | Path) -> Path | None:
    """Throughput (the workload's unit) against batch size: one line per combination of the other axes."""
    ok = [r for r in records if r.status == OK and "data.batch_size" in r.axes and r.time_to_target is None]
    if not ok:
        return None
    fig, ax = plt.subplots(figsize=(9, 5))
    for label, rs in sorted(lines_by_other_axes(ok, ("data.batch_size",)).items()):
        rs = sorted(rs, key=lambda r: r.axes["data.batch_size"])
        bands = [r.rate_band or (r.rate, r.rate) for r in rs]  # throughput at the p90 and the p10 step
        yerr = [[r.rate - lo for r, (lo, _) in zip(rs, bands)], [hi - r.rate for r, (_, hi) in zip(rs, bands)]]
        ax.errorbar([r.axes["data.batch_size"] for r in rs], [r.rate for r in rs], yerr=yerr, marker="o",
                    capsize=3, label=label)  # fmt: skip
    ax.set_xscale("log", base=2)
    ax.set_xlabel("batch size")
    ax.set_ylabel(f"{ok[0].unit} (median step; bars: p10-p90 step)")
    ax.set_title("Throughput vs batch size")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return _save(fig, path)


def plot_data_wait(records: list[CellRecord], path: str | Path) -> Path | None:
    """Data-wait share of the step per cell, grouped by num_workers."""
    ok = [r for r in records if r.status == OK and r.data_wait_pct is not None]
    if not ok:
        return None
    ok.sort(key=lambda r: (r.axes.get("data.num_workers", 0), r.cell_id))
    fig, ax = plt.subplots(figsize=(max(6, 0.5 * len(ok)), 4.5))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    workers = sorted({r.axes.get("data.num_workers", 0) for r in ok})
    for i, r in enumerate(ok):
        w = r.axes.get("data.num_workers", 0)
        ax.bar(
            i,
            r.data_wait_pct,
            color=colours[workers.index(w) % len(colours)],
            label=f"num_workers={w}" if w not in [x.axes.get("data.num_workers", 0) for x in ok[:i]] else None,
        )
    ax.set_xticks(range(len(ok)), [r.cell_id for r in ok], rotation=60, ha="right", fontsize=7)
    ax.set_ylabel("data-wait share of step (%)")
    ax.set_title("Time blocked waiting for the next batch")
    ax.legend()
    return _save(fig, path)


def plot_phase_breakdown(records: list[CellRecord], path: str | Path) -> Path | None:
    """Stacked bars per profiled cell: share of the step in each phase, from its trace."""
    rows = [r for r in records if r.status == OK and r.prof_phase_pct]
    if not rows:
        return None
    fig, ax = plt.subplots(figsize=(max(6, 0.55 * len(rows)), 4.5))
    bottom = [0.0] * len(rows)
    for p in (*PHASES, "other"):
        vals = [r.prof_phase_pct.get(p) or 0.0 for r in rows]
        ax.bar(range(len(rows)), vals, bottom=bottom, label=p)
        bottom = [b + v for b, v in zip(bottom, vals)]
    ax.set_xticks(range(len(rows)), [r.cell_id for r in rows], rotation=60, ha="right", fontsize=7)
    ax.set_ylabel("share of step time (%)")
    ax.set_title("Where the step time goes (torch.profiler, per cell)")
    ax.legend(fontsize=7, loc="upper right")
    return _save(fig, path)


def plot_target_curves(records: list[CellRecord], path: str | Path) -> Path | None:
    """Time to target: each cell's runs as the target metric against the clock (one colour per cell, one
    line per seed), with the target as a horizontal line."""
    cells = [r for r in records if r.status == OK and r.time_to_target is not None]
    if not cells:
        return None
    fig, ax = plt.subplots(figsize=(9, 5))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, r in enumerate(cells):
        assert r.time_to_target is not None
        for k, run in enumerate(r.time_to_target.runs):
            xs, ys = [e["seconds"] for e in run.evals], [e["value"] for e in run.evals]
            colour = colours[i % len(colours)]
            ax.plot(xs, ys, marker=".", color=colour, alpha=0.7, label=r.cell_id if k == 0 else None)
    target = cells[0].time_to_target.target if cells[0].time_to_target else None
    if target is not None:
        ax.axhline(target.value, color="black", linestyle="--", linewidth=1, label=target.describe())
        ax.set_ylabel(target.metric)
    ax.set_xlabel("seconds on the clock (evaluations included, setup excluded)")
    ax.set_title("Time to target: every run of every cell")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return _save(fig, path)
