"""``python -m bench.ab --a CONFIG|REV --b CONFIG|REV``: is B faster, slower, or no different from A?

Both are re-measured **interleaved** (rounds A B, B A, ...; every reading a fresh process) until the
paired interval decides at ``--min-effect`` or ``--budget-s`` ends (:mod:`bench.paired.engine`). A side is a
config file (a training config, or a matrix with ``--cell key=value`` picking one cell), a git
revision (run in a temporary worktree, reading ``--config``), or ``worktree`` (this checkout as it is).
``--pytest ARGS`` compares pytest-benchmark tests at two revisions instead. Writes
results/ab-<time>/ (ab.md, ab.json, cells.jsonl, env.json) and records it in the history.
Exit 1 on a significant slowdown beyond ``--fail-threshold``, or when a reading fails or breaks a guard.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from bench._cli import EXIT_FAILED, add_executor, add_overrides, add_paired_options, add_threads, make_parser, run_cli
from bench.ab.report import verdict_line
from bench.ab.setup import WORKTREE, AbWhat, measure_ab
from bench.ab.subjects import FORKED, FRESH
from bench.history.db import record_in_history
from bench.launch.executors import checked_options
from bench.launch.revisions import REPO_ROOT
from bench.paired.engine import RoundsPlan


def build_parser() -> argparse.ArgumentParser:
    p = make_parser("bench.ab", "Interleaved A/B re-measurement of two configurations or two git revisions.")
    p.add_argument("--a", required=True, help=f"baseline: a config file, a git revision, or '{WORKTREE}'")
    p.add_argument("--b", required=True, help=f"candidate: a config file, a git revision, or '{WORKTREE}'")
    p.add_argument("--config", help="the config a revision side runs (default: the other side's file)")
    p.add_argument(
        "--cell",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="pick one cell of a matrix file (repeatable), e.g. --cell precision=bf16",
    )
    add_overrides(p, "override both sides' config")
    for side in ("a", "b"):
        p.add_argument(
            f"--set-{side}",
            action="append",
            default=[],
            metavar="KEY=VALUE",
            help=f"override {side.upper()}'s config only (after --set), e.g. to A/B one change without a second file",
        )
    p.add_argument(
        "--pytest",
        metavar="ARGS",
        help="compare pytest-benchmark tests instead, e.g. \"tests/benchmarks -k 'train_step and SimpleMLP'\"",
    )
    p.add_argument("--group", help="with --pytest: only this benchmark group")
    p.add_argument("--budget-s", type=float, default=300.0, help="time budget of the whole run (default 300 s)")
    p.add_argument("--min-rounds", type=int, default=3, help="rounds before the verdict may stop the run (default 3)")
    p.add_argument("--max-rounds", type=int, default=40, help="rounds at most (default 40)")
    p.add_argument(
        "--min-effect",
        type=float,
        default=3.0,
        metavar="PCT",
        help="smallest change, %%, worth a verdict: rounds go on until the interval is within half of it, and "
        "faster/slower needs an interval that excludes no change and reaches it (default 3)",
    )
    p.add_argument("--fail-threshold", type=float, metavar="PCT", help="exit 1 if B is significantly slower by > PCT%%")
    p.add_argument("--order", choices=["abba", "random"], default="abba", help="order within rounds (default abba)")
    p.add_argument("--seed", type=int, default=0, help="seed of --order random")
    p.add_argument("--reading-s", type=float, default=2.0, help="timed seconds per cell reading (default 2)")
    p.add_argument(
        "--readings",
        choices=[FORKED, FRESH],
        default=FORKED,
        help="how a cell reading starts: forked from a server that imported torch once (default), or a new "
        "interpreter (what bench.run does; seconds slower per reading)",
    )
    add_paired_options(p)
    add_executor(p, default=None, help_suffix=" (default: what --readings says)")
    add_threads(p)
    p.add_argument("--repo", default=str(REPO_ROOT), help="git repository revisions are taken from (default: this one)")
    p.add_argument("--out", default="results", help="parent of the run directory (default results/)")
    p.add_argument("--history", help="results history database to record the run in (default <out>/history.sqlite)")
    return p


def main(args: argparse.Namespace) -> int:
    import torch

    sets = {"A": args.overrides + args.set_a, "B": args.overrides + args.set_b}
    threads = args.threads or torch.get_num_threads()
    options = checked_options(args.executor, args.executor_opt)
    what = AbWhat(
        args.config,
        args.cell,
        sets,
        args.pytest,
        args.group,
        Path(args.repo),
        threads,
        args.reading_s,
        args.readings,
        args.executor,
        options,
        args.renew_every,
        args.interleave,
        args.turn_ms,
    )
    plan = RoundsPlan(args.budget_s, args.min_rounds, args.max_rounds, args.min_effect, args.order, args.seed)
    history = Path(args.history or Path(args.out) / "history.sqlite")
    done = measure_ab(args.a, args.b, what, plan, Path(args.out))
    if done.report is None:
        print(f"bench.ab: {done.error}", file=sys.stderr)
        if (done.run_dir / "cells.jsonl").exists():  # the readings taken stay on record, failed one included
            print(f"history: {record_in_history(history, done.run_dir, 'ab')}")
        print(f"results: {done.run_dir}")
        return EXIT_FAILED
    run = done.report.run
    for key, v in done.report.results.items():
        print(verdict_line(key, v, plan.min_effect_pct, run.seconds / run.rounds if run.rounds else None))
    for note in done.report.notes:
        print(f"note: {note}")
    failed = done.report.failures(args.fail_threshold)
    for f in failed:
        print(f"FAIL: {f}")
    print(f"report: {done.html}")
    print(f"history: {record_in_history(history, done.run_dir, 'ab')}\nresults: {done.run_dir}")
    return EXIT_FAILED if failed else 0


def cli(argv: Sequence[str] | None = None) -> int:
    return run_cli(main, build_parser(), argv)


if __name__ == "__main__":
    sys.exit(cli())
