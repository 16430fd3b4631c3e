"""``python -m bench.run --matrix configs/amp_matrix.yaml``: the matrix runner.

Expands the matrix, validates every cell before any starts, runs each runnable cell in its own
process (``bench.cell``), appends each result to ``results/<run-id>/cells.jsonl`` as it finishes, and
writes results.csv, results.md, summary.md, env.json and plots. ``--resume RUN_ID`` runs only the cells
that a killed run did not finish.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from bench._cli import EXIT_FAILED, make_parser, run_cli
from bench.matrix import Cell, MatrixSpec, expand, load_matrix, parse_filter, preflight_cells, select
from bench.plots import plot_data_wait, plot_phase_breakdown, plot_throughput
from bench.report import markdown_table, summary_markdown, write_csv
from trainer_core.errors import ConfigError
from trainer_core.precision import COMPUTE_DTYPES
from trainer_core.provenance import environment_info, utc_timestamp

REPO_ROOT = Path(__file__).resolve().parents[1]


def build_parser() -> argparse.ArgumentParser:
    p = make_parser("bench.run", "Run a benchmark matrix: throughput and correctness per configuration.")
    p.add_argument("--matrix", default="configs/amp_matrix.yaml", help="matrix YAML (default configs/amp_matrix.yaml)")
    p.add_argument("--out", default="results", help="parent folder of the run directory (default results/)")
    p.add_argument("--dry-run", action="store_true", help="print the cells and exit")
    p.add_argument("--filter", action="append", default=[], metavar="KEY=VALUE", help="run only matching cells (repeatable)")
    p.add_argument("--resume", metavar="RUN_ID", help="continue results/<RUN_ID>, running only cells it has no result for")
    p.add_argument("--device", help="run every cell on this device (replaces the device axis)")
    p.add_argument("--threads", type=int, help="torch intra-op threads in every cell (default: torch's default here)")
    p.add_argument("--profiles", default="profiles", help="parent folder of trace folders <run-id>/<cell-id>/ (default profiles/)")
    return p


def read_records(path: Path) -> list[dict[str, Any]]:
    """Records of cells.jsonl; a line cut short by a kill is ignored (that cell runs again)."""
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


def append_record(path: Path, record: dict[str, Any]) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(record, default=str) + "\n")
        f.flush()
        os.fsync(f.fileno())


def measure_peaks(cells: list[Cell]) -> dict[str, dict[str, Any]]:
    """Matmul FLOP/s per (device type, precision) among the cells that will run: the '% of peak' reference."""
    from bench.measure import matmul_peak_flops

    wanted = sorted({(c.config.device if c.config.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu"), c.config.precision)
                     for c in cells if c.skip_reason is None})
    peaks: dict[str, dict[str, Any]] = {}
    for dev, precision in wanted:
        peaks.setdefault(dev, {})[precision] = matmul_peak_flops(torch.device(dev), COMPUTE_DTYPES[precision])
    return peaks


def launch_cell(cell: Cell, spec: MatrixSpec, run_dir: Path, threads: int, peaks: dict[str, Any], trace_dir: Path) -> dict[str, Any]:
    """Run one cell in a fresh process; whatever happens, return a record."""
    cell_dir = run_dir / "cells"
    cell_dir.mkdir(exist_ok=True)
    spec_path = cell_dir / f"{cell.cell_id}.spec.json"
    result_path = cell_dir / f"{cell.cell_id}.result.json"
    log_path = cell_dir / f"{cell.cell_id}.log"
    result_path.unlink(missing_ok=True)
    dev = cell.config.device if cell.config.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    payload = {"cell_id": cell.cell_id, "axes": cell.axes, "config": cell.config.to_dict(), "threads": threads,
               "measure": spec.measure.model_dump(), "guards": spec.guards.model_dump(),
               "profile": spec.profile.model_dump(), "trace_dir": str(trace_dir),
               "peaks": {p: v["flops_per_s"] for p, v in peaks.get(dev, {}).items()}}
    spec_path.write_text(json.dumps(payload, indent=2, default=str))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))}
    base = {"cell_id": cell.cell_id, "axes": cell.axes, "precision": cell.config.precision, "device": dev}
    try:
        with open(log_path, "w") as log:
            proc = subprocess.run([sys.executable, "-m", "bench.cell", str(spec_path), str(result_path)],
                                  stdout=log, stderr=subprocess.STDOUT, env=env, timeout=spec.measure.cell_timeout_s)
    except subprocess.TimeoutExpired:
        return {**base, "status": "failed", "reason": f"timed out after {spec.measure.cell_timeout_s:.0f} s (log: {log_path})"}
    if result_path.exists():
        try:
            return {**base, **json.loads(result_path.read_text())}
        except json.JSONDecodeError:
            pass
    lines = [ln for ln in log_path.read_text(errors="replace").splitlines() if ln.strip()]
    if proc.returncode < 0:
        why = f"killed by signal {-proc.returncode}" + (" (out of memory?)" if proc.returncode == -9 else "")
    else:
        why = lines[-1][:300] if lines else f"exit code {proc.returncode}"
    return {**base, "status": "failed", "reason": f"{why} (log: {log_path})"}


def write_cell_scalars(root: Path, record: dict[str, Any]) -> None:
    """A measured cell's samples/s (per repeat), step time (per timed step) and data-wait share as
    TensorBoard scalars in ``<profiles>/<run-id>/scalars/<cell-id>``, beside the traces, so one
    ``tensorboard --logdir profiles/<run-id>`` shows both."""
    if record.get("status") != "ok":
        return
    from torch.utils.tensorboard import SummaryWriter

    with SummaryWriter(log_dir=str(root / record["cell_id"])) as w:
        for i, v in enumerate(record.get("samples_per_s_repeats") or []):
            w.add_scalar("cell/samples_per_s", v, i)
        for i, v in enumerate(record.get("step_s") or []):
            w.add_scalar("cell/step_ms", 1e3 * v, i)
        w.add_scalar("cell/data_wait_pct", record["data_wait_pct"], 0)


def skipped_record(cell: Cell) -> dict[str, Any]:
    return {"cell_id": cell.cell_id, "axes": cell.axes, "status": "skipped", "reason": cell.skip_reason,
            "precision": cell.config.precision, "device": cell.config.device}


def print_cells(cells: list[Cell]) -> None:
    width = max(len(c.cell_id) for c in cells)
    for c in cells:
        state = f"skip: {c.skip_reason}" if c.skip_reason else "run"
        print(f"{c.cell_id:<{width}}  {state}")
    n_run = sum(1 for c in cells if not c.skip_reason)
    print(f"{len(cells)} cells: {n_run} to run, {len(cells) - n_run} skipped")


def write_outputs(run_dir: Path, records: list[dict[str, Any]], env: dict[str, Any]) -> list[Path]:
    write_csv(records, run_dir / "results.csv")
    (run_dir / "results.md").write_text(markdown_table(records) + "\n")
    (run_dir / "summary.md").write_text(summary_markdown(records, env))
    paths = [run_dir / "results.csv", run_dir / "results.md", run_dir / "summary.md", run_dir / "env.json"]
    for plot in (plot_throughput(records, run_dir / "throughput_vs_batch.png"), plot_data_wait(records, run_dir / "data_wait.png"),
                 plot_phase_breakdown(records, run_dir / "phase_breakdown.png")):
        if plot is not None:
            paths.append(plot)
    return paths


def _progress(total: int) -> Any:
    if not sys.stderr.isatty():
        return None
    from tqdm import tqdm

    return tqdm(total=total, unit="cell", dynamic_ncols=True)


def main(args: argparse.Namespace) -> int:
    spec = load_matrix(args.matrix, args.device)
    cells = expand(spec, source=args.matrix)
    if args.filter:
        cells = select(cells, parse_filter(args.filter))
        if not cells:
            raise ConfigError(f"--filter {' '.join(args.filter)}: matches no cell of {args.matrix}")
    preflight_cells(cells, args.matrix)
    if args.dry_run:
        print_cells(cells)
        return 0

    out_root = Path(args.out)
    if args.resume:
        run_dir = out_root / args.resume
        if not (run_dir / "env.json").exists():
            raise ConfigError(f"--resume {args.resume}: no run at {run_dir} (no env.json)")
        env = json.loads((run_dir / "env.json").read_text())
        env.setdefault("resumed", []).append({"time": utc_timestamp(), "command": sys.argv})
    else:
        run_dir = out_root / f"{spec.name}-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}"
        run_dir.mkdir(parents=True, exist_ok=False)
        env = {}
    threads = args.threads or int(env.get("threads") or torch.get_num_threads())
    cells_path = run_dir / "cells.jsonl"
    done = {r["cell_id"] for r in read_records(cells_path)}
    todo = [c for c in cells if c.cell_id not in done]

    if not env:
        env = {**environment_info(), "matrix_name": spec.name, "matrix_file": str(args.matrix),
               "matrix": spec.model_dump(mode="json"), "command": sys.argv, "threads": threads,
               "cells": [c.cell_id for c in cells], "filters": args.filter, "device_override": args.device}
        env["peaks"] = measure_peaks(cells)
    (run_dir / "env.json").write_text(json.dumps(env, indent=2, default=str) + "\n")

    n_skip = sum(1 for c in todo if c.skip_reason)
    print(f"{run_dir}: {len(todo) - n_skip} cells to measure, {n_skip} skipped"
          + (f", {len(done)} done before" if done else ""), flush=True)
    scalars_root = Path(args.profiles) / run_dir.name / "scalars"
    bar = _progress(len(todo))
    # ETA from measured cells only: skipped cells take no time and would make it far too optimistic.
    to_measure = sum(1 for c in todo if not c.skip_reason)
    measured, measuring_s = 0, 0.0
    try:
        for i, cell in enumerate(todo, start=1):
            if bar is not None:
                bar.set_description(cell.cell_id)
            t0 = time.perf_counter()
            record = skipped_record(cell) if cell.skip_reason else launch_cell(
                cell, spec, run_dir, threads, env.get("peaks", {}), Path(args.profiles) / run_dir.name / cell.cell_id)
            if not cell.skip_reason:
                measured += 1
                measuring_s += time.perf_counter() - t0
            append_record(cells_path, record)
            write_cell_scalars(scalars_root, record)
            if bar is not None:
                bar.update(1)
            else:
                eta = measuring_s / measured * (to_measure - measured) if measured else float("nan")
                sps = f"{record['samples_per_s']:,.0f} samples/s" if record.get("samples_per_s") else (record.get("reason") or "")
                print(f"[{i}/{len(todo)}] {cell.cell_id}: {record['status']} {sps} (ETA {eta:.0f} s)", flush=True)
    except KeyboardInterrupt:
        print(f"interrupted; finished cells are kept. Continue with: python -m bench.run --matrix {args.matrix} --resume {run_dir.name}", file=sys.stderr)
        raise
    finally:
        if bar is not None:
            bar.close()

    by_id = {r["cell_id"]: r for r in read_records(cells_path)}
    records = [by_id[c.cell_id] for c in cells if c.cell_id in by_id]
    paths = write_outputs(run_dir, records, env)
    print()
    print(markdown_table(records, compact=True))
    print()
    print(summary_markdown(records, env).split("## Speedup")[0].strip())
    print()
    for p in paths:
        print(f"  {p}")
    ok = sum(1 for r in records if r.get("status") == "ok")
    failed = sum(1 for r in records if r.get("status") == "failed")
    if failed:
        print(f"{failed} of {ok + failed} measured cells failed (reasons in summary.md)")
    if not ok:
        print("no cell was measured successfully: exit code 1")
    print(f"results: {run_dir}")
    return 0 if ok else EXIT_FAILED


def cli(argv: Sequence[str] | None = None) -> int:
    return run_cli(main, build_parser(), argv)


if __name__ == "__main__":
    sys.exit(cli())
