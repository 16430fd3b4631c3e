"""The matrix runner's work (``python -m bench.run`` is its CLI): open or resume a run folder, measure
the matmul peaks, run each cell in its own process, append each record as it finishes, and write the
tables and plots from the records.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from bench.cells.contract import FAILED, OK, SKIPPED, CellRecord, CellSpec
from bench.cells.store import append_record, read_records
from bench.launch.executor import Executor
from bench.launch.local import LocalExecutor
from bench.matrix import Cell, MatrixSpec
from bench.report.inference import inference_answer, inference_table
from bench.report.tables import (
    fastest_section,
    markdown_table,
    skipped_line,
    summary_head,
    summary_markdown,
    write_csv,
)
from bench.report.target import target_answer, target_table
from trainer_core.errors import ConfigError
from trainer_core.precision import COMPUTE_DTYPES
from trainer_core.provenance import environment_info, utc_timestamp


@dataclass
class MatrixRun:
    """A run folder ``results/<run-id>`` and what it knows: the environment, the cells already recorded."""

    run_dir: Path
    env: dict[str, Any]
    threads: int

    @property
    def cells_path(self) -> Path:
        return self.run_dir / "cells.jsonl"

    def records(self) -> list[CellRecord]:
        return read_records(self.cells_path)


def open_run(
    out: Path, spec: MatrixSpec, cells: list[Cell], resume: str | None, threads: int | None, provenance: dict[str, Any]
) -> MatrixRun:
    """A new run folder (env.json with provenance and the matmul peaks), or the one ``resume`` names."""
    if resume:
        run_dir = out / resume
        if not (run_dir / "env.json").exists():
            raise ConfigError(f"--resume {resume}: no run at {run_dir} (no env.json)")
        env = json.loads((run_dir / "env.json").read_text())
        env.setdefault("resumed", []).append({"time": utc_timestamp(), "command": sys.argv})
    else:
        run_dir = out / f"{spec.name}-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}"
        run_dir.mkdir(parents=True, exist_ok=False)
        env = {
            **environment_info(),
            "matrix_name": spec.name,
            "matrix": spec.model_dump(mode="json"),
            "command": sys.argv,
            "cells": [c.cell_id for c in cells],
            **provenance,
        }
    env["threads"] = threads or int(env.get("threads") or torch.get_num_threads())
    env.setdefault("peaks", measure_peaks(cells))
    (run_dir / "env.json").write_text(json.dumps(env, indent=2, default=str) + "\n")
    return MatrixRun(run_dir, env, env["threads"])


def measure_peaks(cells: list[Cell]) -> dict[str, dict[str, Any]]:
    """Matmul FLOP/s per (device, precision) among the cells that will run: the '% of peak' reference."""
    from bench.measure.timing import matmul_peak_flops

    wanted = sorted({(c.device, c.config.precision) for c in cells if c.skip_reason is None})
    peaks: dict[str, dict[str, Any]] = {}
    for dev, precision in wanted:
        peaks.setdefault(dev, {})[precision] = matmul_peak_flops(torch.device(dev), COMPUTE_DTYPES[precision])
    return peaks


def cell_spec(cell: Cell, spec: MatrixSpec, run: MatrixRun, trace_dir: Path, role: str | None = None) -> CellSpec:
    """What the cell process gets: its config, the matrix's measurement, guard and profile settings."""
    peaks = {p: v["flops_per_s"] for p, v in run.env.get("peaks", {}).get(cell.device, {}).items()}
    return CellSpec(
        cell_id=cell.cell_id,
        axes=cell.axes,
        config=cell.config.to_dict(),
        device=cell.device,
        threads=run.threads,
        measure=spec.measure,
        guards=spec.guards,
        profile=spec.profile,
        trace_dir=str(trace_dir),
        peaks=peaks,
        role=role,
    )


def skipped_record(cell: Cell, role: str | None = None) -> CellRecord:
    return CellRecord.not_measured(
        SKIPPED,
        cell.skip_reason or "",
        cell.cell_id,
        cell.axes,
        precision=cell.config.precision,
        device=cell.device,
        role=role,
    )


def submit_cell(
    cell: Cell,
    spec: MatrixSpec,
    run: MatrixRun,
    profiles: Path,
    role: str | None = None,
    executor: Executor | None = None,
) -> Callable[[], CellRecord]:
    """A handle to the cell's record: measured in its own process (by ``executor``: this machine by
    default), or skipped with its reason."""
    if cell.skip_reason:
        return lambda: skipped_record(cell, role)
    cell_dir = run.run_dir / "cells"
    cspec = cell_spec(cell, spec, run, profiles / run.run_dir.name / cell.cell_id, role)
    if spec.measure.mode == "time_to_target":  # each seed's finished run and checkpoint: --resume continues
        cspec.state_dir = str(cell_dir / f"{cell.cell_id}.target")
    return (executor or LocalExecutor()).submit(cspec, cell_dir)


def write_cell_scalars(root: Path, record: CellRecord) -> None:
    """A measured cell's samples/s (per repeat), step time (per timed step) and data-wait share as
    TensorBoard scalars in ``<profiles>/<run-id>/scalars/<cell-id>``, beside the traces, so one
    ``tensorboard --logdir profiles/<run-id>`` shows both."""
    if record.status != OK or record.time_to_target is not None:  # a run to a target has no timed steps
        return
    from torch.utils.tensorboard import SummaryWriter

    with SummaryWriter(log_dir=str(root / str(record.cell_id))) as w:
        for i, v in enumerate(record.samples_per_s_repeats):
            w.add_scalar("cell/samples_per_s", v, i)
        for i, v in enumerate(record.step_s):
            w.add_scalar("cell/step_ms", 1e3 * v, i)
        if record.data_wait_pct is not None:  # an inference cell waits on no loader
            w.add_scalar("cell/data_wait_pct", record.data_wait_pct, 0)


class Progress:
    """A bar on a TTY; elsewhere one flushed line per cell with an ETA from the measured cells only
    (skipped cells take no time and would make it far too optimistic)."""

    def __init__(self, todo: list[Cell]) -> None:
        self.total, self.to_measure = len(todo), sum(1 for c in todo if not c.skip_reason)
        self.measured, self.measuring_s = 0, 0.0
        self.bar = None
        if sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=self.total, unit="cell", dynamic_ncols=True)

    @contextmanager
    def cell(self, i: int, cell: Cell) -> Iterator[list[CellRecord]]:
        if self.bar is not None:
            self.bar.set_description(cell.cell_id)
        t0, out = time.perf_counter(), []
        yield out
        if not cell.skip_reason:
            self.measured += 1
            self.measuring_s += time.perf_counter() - t0
        self.report(i, out[0])

    def report(self, i: int, record: CellRecord) -> None:
        if self.bar is not None:
            self.bar.update(1)
            return
        eta = self.measuring_s / self.measured * (self.to_measure - self.measured) if self.measured else float("nan")
        what = f"{record.rate:,.0f} {record.unit}" if record.rate else (record.reason or "")
        t = record.time_to_target
        if t is not None:
            what = f"{t.score_s:.3g} s to target" if t.score_s is not None else f"target not reached ({t.note})"
        print(f"[{i}/{self.total}] {record.cell_id}: {record.status} {what} (ETA {eta:.0f} s)", flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def run_cells(
    todo: list[Cell], spec: MatrixSpec, run: MatrixRun, profiles: Path, executor: Executor | None = None
) -> None:
    """Every cell handed to the executor (which may start them at once, on a cluster), then each record
    in matrix order, appended to cells.jsonl as soon as it exists."""
    progress = Progress(todo)
    handles = [submit_cell(cell, spec, run, profiles, executor=executor) for cell in todo]
    try:
        for i, (cell, handle) in enumerate(zip(todo, handles), start=1):
            with progress.cell(i, cell) as out:
                record = handle()
                append_record(run.cells_path, record)
                write_cell_scalars(profiles / run.run_dir.name / "scalars", record)
                out.append(record)
    finally:
        progress.close()


def write_outputs(run_dir: Path, records: list[CellRecord], env: dict[str, Any]) -> list[Path]:
    from bench.report.html import run_report
    from bench.report.plots import plot_data_wait, plot_phase_breakdown, plot_target_curves, plot_throughput

    write_csv(records, run_dir / "results.csv")
    (run_dir / "results.md").write_text(markdown_table(records) + "\n")
    (run_dir / "summary.md").write_text(summary_markdown(records, env))
    paths = [run_dir / "results.csv", run_dir / "results.md", run_dir / "summary.md", run_dir / "env.json"]
    for plot in (
        plot_throughput(records, run_dir / "throughput_vs_batch.png"),
        plot_data_wait(records, run_dir / "data_wait.png"),
        plot_phase_breakdown(records, run_dir / "phase_breakdown.png"),
        plot_target_curves(records, run_dir / "time_to_target.png"),
    ):
        if plot is not None:
            paths.append(plot)
    paths.append(run_report(run_dir, records, env))
    return paths


def closing_lines(records: list[CellRecord], env: dict[str, Any], paths: list[Path]) -> list[str]:
    """What the terminal shows at the end: the compact table, the fastest configuration, the files,
    and how many cells failed (a run in which none succeeded is a failure: see :func:`succeeded`)."""
    if any(r.inference is not None for r in records):
        table, answer = inference_table(records), inference_answer(records) + skipped_line(records)
    elif any(r.time_to_target is not None for r in records):
        table, answer = target_table(records, env), target_answer(records, env)
    else:
        table, answer = [markdown_table(records, compact=True)], fastest_section(records)
    lines = ["", *table, "", "\n".join(summary_head(records, env) + answer), ""]
    lines += [f"  {p}" for p in paths]
    ok = sum(1 for r in records if r.status == OK)
    failed = sum(1 for r in records if r.status == FAILED)
    if failed:
        lines.append(f"{failed} of {ok + failed} measured cells failed (reasons in summary.md)")
    if not ok:
        lines.append("no cell was measured successfully: exit code 1")
    return lines


def succeeded(records: list[CellRecord]) -> bool:
    return any(r.status == OK for r in records)


def dry_run_listing(cells: list[Cell]) -> str:
    width = max(len(c.cell_id) for c in cells)
    lines = [f"{c.cell_id:<{width}}  {'skip: ' + c.skip_reason if c.skip_reason else 'run'}" for c in cells]
    n_run = sum(1 for c in cells if not c.skip_reason)
    return "\n".join(lines + [f"{len(cells)} cells: {n_run} to run, {len(cells) - n_run} skipped"])
