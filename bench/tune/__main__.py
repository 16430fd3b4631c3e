"""``python -m bench.tune --config FILE``: search for the fastest correct configuration on this machine.

Every tried configuration is an ordinary cell (own process, same measurement and guards, appended to
``results/<run-id>/cells.jsonl``), so a tune run can be compared with ``bench.compare`` and continued
with ``--resume``. After the coordinate search the start and the finalists are re-measured side by
side in rotating rounds, and the winner's speedup gets a bootstrap 95% interval (:mod:`bench.tune.tuning`).
Outputs: ``winner.yaml`` (a config ``bench.train`` runs as is), ``tune.md``, ``tune.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from bench._cli import add_executor, add_overrides, make_parser, run_cli
from bench.history.db import record_in_history
from bench.launch.executors import build_executor, checked_options
from bench.report.html import folder_report
from bench.tune.report import format_report
from bench.tune.to_target import OBJECTIVE_OPTIONS, Objective, parse_target
from bench.tune.tuning import (
    MIN_ROUNDS,
    TUNE_MEASURE,
    TuneCells,
    TunePlan,
    conclude,
    default_mem_cap_mb,
    open_tune_dir,
    prepare,
    search,
    train_for_seconds,
)


def build_parser() -> argparse.ArgumentParser:
    p = make_parser("bench.tune", "Search for the fastest guard-passing configuration.")
    p.add_argument("--config", required=True, help="starting training config (YAML)")
    p.add_argument(
        "--budget-s",
        type=float,
        default=540.0,
        help="time budget of the whole run: the search stops early enough to leave time for the "
        "side-by-side rounds and the per-lever table (default 540 s; --check-accuracy comes on top)",
    )
    p.add_argument(
        "--axes",
        action="append",
        default=[],
        metavar="KEY=V1,V2",
        help="search only these axes and values (repeatable), e.g. --axes precision=fp32,bf16",
    )
    add_overrides(p, "override the start config")
    p.add_argument("--max-batch", type=int, default=512, help="largest batch size tried (powers of two)")
    p.add_argument("--mem-cap-mb", type=float, help="do not try larger batches once peak memory exceeds this")
    p.add_argument(
        "--finalists", type=int, default=2, help="fastest search results re-measured side by side with the start"
    )
    p.add_argument(
        "--rounds",
        type=int,
        default=4,
        help=f"side-by-side rounds for the final comparison (fewer, down to {MIN_ROUNDS}, when the budget is short)",
    )
    p.add_argument(
        "--check-accuracy",
        action="store_true",
        help="train start and winner for the same wall time, report val accuracy",
    )
    p.add_argument(
        "--accuracy-seconds", type=float, default=60.0, help="training seconds per side for --check-accuracy"
    )
    for flag, options in OBJECTIVE_OPTIONS.items():
        p.add_argument(flag, **options)
    p.add_argument("--out", default="results", help="parent of the run directory (default results/)")
    p.add_argument("--history", help="results history database to record the run in (default <out>/history.sqlite)")
    p.add_argument("--resume", metavar="RUN_ID", help="continue a tune run: configurations already measured are reused")
    add_executor(p)
    return p


def resolve_objective(args: argparse.Namespace) -> Objective:
    if args.objective == "samples_per_s":
        return Objective()
    return Objective("time_to_target", parse_target(args.target), args.runs, args.search_runs, args.max_epochs)


def main(args: argparse.Namespace) -> int:
    options = checked_options(args.executor, args.executor_opt)
    setup = prepare(
        args.config, args.overrides, args.axes, args.max_batch, resolve_objective(args), args.allow_model_change
    )
    rounds = setup.objective.runs if setup.objective.to_target else args.rounds
    plan = TunePlan(args.budget_s, setup.start, setup.space, args.finalists, rounds, setup.objective.to_target)
    run_dir, threads, peaks = open_tune_dir(Path(args.out), setup, args.resume)
    print(f"{run_dir}: searching {', '.join(setup.space)} from {args.config} within {args.budget_s:.0f} s", flush=True)
    executor = build_executor(args.executor, options, run_dir)
    measure = TuneCells(setup, run_dir, threads, setup.objective.measure(TUNE_MEASURE), peaks, executor)
    try:
        searcher, result = search(setup, measure, plan, args.mem_cap_mb or default_mem_cap_mb())
        out = conclude(setup, measure, searcher, result, plan)
    finally:
        executor.close()
    if args.check_accuracy:
        out["accuracy"] = {
            "seconds": args.accuracy_seconds,
            "start": train_for_seconds(setup.config, args.accuracy_seconds),
            "winner": train_for_seconds(measure.config(out["winner"]), args.accuracy_seconds),
        }
    out["total_seconds"] = plan.elapsed()
    (run_dir / "tune.json").write_text(json.dumps(out, indent=2, default=str) + "\n")
    text = format_report(out)
    (run_dir / "tune.md").write_text(text)
    print(f"\n{text}\ntotal {out['total_seconds']:.0f} s")
    print(f"report: {folder_report(run_dir)}")
    print(f"history: {record_in_history(Path(args.history or Path(args.out) / 'history.sqlite'), run_dir, 'tune')}")
    print(f"results: {run_dir}")
    return 0


def cli(argv: Sequence[str] | None = None) -> int:
    return run_cli(main, build_parser(), argv)


if __name__ == "__main__":
    sys.exit(cli())
