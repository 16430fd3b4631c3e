"""``python -m bench.run --matrix configs/amp_matrix.yaml``: the matrix runner.

Expands the matrix, validates every cell and resolves what the cells will load before any starts,
runs each runnable cell in its own process, appends each result to ``results/<run-id>/cells.jsonl``
as it finishes, and writes results.csv, results.md, summary.md, env.json and plots
(:mod:`bench.run.runner`). ``--resume RUN_ID`` runs only the cells that a killed run did not finish.
Exit code 1 when no measured cell succeeded.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from bench._cli import EXIT_FAILED, add_executor, make_parser, run_cli
from bench.history.db import record_in_history
from bench.launch.executors import build_executor, checked_options
from bench.matrix import expand, load_matrix, parse_filter, preflight_cells, select
from bench.run.runner import closing_lines, dry_run_listing, open_run, run_cells, succeeded, write_outputs
from trainer_core.errors import ConfigError


def build_parser() -> argparse.ArgumentParser:
    p = make_parser("bench.run", "Run a benchmark matrix: throughput and correctness per configuration.")
    p.add_argument("--matrix", default="configs/amp_matrix.yaml", help="matrix YAML (default configs/amp_matrix.yaml)")
    p.add_argument("--out", default="results", help="parent folder of the run directory (default results/)")
    p.add_argument("--dry-run", action="store_true", help="print the cells and exit")
    p.add_argument(
        "--filter", action="append", default=[], metavar="KEY=VALUE", help="run only matching cells (repeatable)"
    )
    p.add_argument(
        "--resume", metavar="RUN_ID", help="continue results/<RUN_ID>, running only cells it has no result for"
    )
    p.add_argument("--device", help="run every cell on this device (replaces the device axis)")
    p.add_argument("--threads", type=int, help="torch intra-op threads in every cell (default: torch's default here)")
    p.add_argument("--history", help="results history database to record the run in (default <out>/history.sqlite)")
    p.add_argument(
        "--memory-snapshot",
        action="store_true",
        help="CUDA cells: profile them and write the allocator's history over the profiled steps as "
        "memory_snapshot.pickle beside the trace (pytorch.org/memory_viz); CPU cells say they skipped it",
    )
    add_executor(p)
    p.add_argument(
        "--profiles", default="profiles", help="parent folder of trace folders <run-id>/<cell-id>/ (default profiles/)"
    )
    return p


def main(args: argparse.Namespace) -> int:
    spec = load_matrix(args.matrix, args.device)
    if args.memory_snapshot:
        spec.profile = spec.profile.model_copy(update={"enabled": True, "memory_snapshot": True})
    cells = expand(spec, source=args.matrix)
    if args.filter:
        cells = select(cells, parse_filter(args.filter))
        if not cells:
            raise ConfigError(f"--filter {' '.join(args.filter)}: matches no cell of {args.matrix}")
    preflight_cells(cells, args.matrix)
    options = checked_options(args.executor, args.executor_opt)
    if args.dry_run:
        print(dry_run_listing(cells))
        return 0
    run = open_run(
        Path(args.out),
        spec,
        cells,
        args.resume,
        args.threads,
        {"matrix_file": str(args.matrix), "filters": args.filter, "device_override": args.device},
    )
    done = {r.cell_id for r in run.records()}
    todo = [c for c in cells if c.cell_id not in done]
    n_skip = sum(1 for c in todo if c.skip_reason)
    print(
        f"{run.run_dir}: {len(todo) - n_skip} cells to measure, {n_skip} skipped"
        + (f", {len(done)} done before" if done else ""),
        flush=True,
    )
    executor = build_executor(args.executor, options, run.run_dir)
    try:
        run_cells(todo, spec, run, Path(args.profiles), executor)
    except KeyboardInterrupt:
        print(
            f"interrupted; finished cells are kept. Continue with: python -m bench.run --matrix {args.matrix} "
            f"--resume {run.run_dir.name}",
            file=sys.stderr,
        )
        raise
    finally:
        executor.close()
    by_id = {r.cell_id: r for r in run.records()}
    records = [by_id[c.cell_id] for c in cells if c.cell_id in by_id]
    paths = write_outputs(run.run_dir, records, run.env)
    print("\n".join(closing_lines(records, run.env, paths)))
    print(f"history: {record_in_history(Path(args.history or Path(args.out) / 'history.sqlite'), run.run_dir)}")
    print(f"results: {run.run_dir}")
    return 0 if succeeded(records) else EXIT_FAILED


def cli(argv: Sequence[str] | None = None) -> int:
    return run_cli(main, build_parser(), argv)


if __name__ == "__main__":
    sys.exit(cli())
