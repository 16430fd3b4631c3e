"""``python -m bench.history [--history PATH] COMMAND``: the results history (:mod:`bench.history.db`).

- ``ingest RESULTS_DIR|BENCHMARK.json ...``: record finished runs (a results folder with cells.jsonl and
  env.json, or a pytest-benchmark JSON file); a run already recorded is left as it is.
- ``list``: the recorded runs, and the verdicts of ``bench.ab`` runs.
- ``show CELL_ID``: a cell's throughput across runs and commits, per machine.
- ``check``: is the latest reading of each cell a regression against the runs before it (same
  machine)? Exit 1 when one is.
- ``bisect GOOD BAD --config FILE [--cell key=value ...]``: the first commit after GOOD, up to BAD, at
  which the cell got slower (binary search, each probe an interleaved ``bench.ab`` against GOOD).
- ``report [--out FILE]``: one self-contained HTML page of the history (runs, every cell's latest
  check, a trend chart per cell with its change points marked).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from functools import partial
from pathlib import Path

from bench._cli import EXIT_FAILED, add_overrides, add_paired_options, add_threads, make_parser, run_cli
from bench.history.bisect import run_bisect
from bench.history.db import check_ingestible, check_latest, connect, ingest_dir, runs, series, verdicts
from bench.launch.revisions import REPO_ROOT
from bench.paired.engine import RoundsPlan
from bench.report.html import history_report
from trainer_core.errors import ConfigError

DEFAULT_HISTORY = "results/history.sqlite"


def build_parser() -> argparse.ArgumentParser:
    p = make_parser("bench.history", "The results history: record runs, list them, follow a cell, find regressions.")
    p.add_argument("--history", default=DEFAULT_HISTORY, help=f"the SQLite database (default {DEFAULT_HISTORY})")
    sub = p.add_subparsers(dest="command", required=True)
    ingest = sub.add_parser("ingest", help="record finished runs (results folders, pytest-benchmark JSON files)")
    ingest.add_argument("dirs", nargs="+", help="results/<run-id> folders or pytest-benchmark .json files")
    sub.add_parser("list", help="the recorded runs")
    show = sub.add_parser("show", help="one cell's throughput across runs, per machine")
    show.add_argument("cell_id")
    check = sub.add_parser("check", help="flag cells whose latest reading regressed (exit 1)")
    check.add_argument("--window", type=int, default=5, help="earlier readings the baseline is the median of")
    check.add_argument("--min-effect", type=float, default=5.0, help="smallest drop, %%, that counts")
    b = sub.add_parser("bisect", help="find the commit that made a cell slower (bench.ab at each step)")
    b.add_argument("good", help="a revision where the cell was fast")
    b.add_argument("bad", help="a later revision where it is slow")
    b.add_argument("--config", required=True, help="training config or matrix file (read from this checkout)")
    b.add_argument("--cell", action="append", default=[], metavar="KEY=VALUE", help="pick one matrix cell")
    add_overrides(b, "override the config at every step")
    b.add_argument("--budget-s", type=float, default=120.0, help="time budget of each step's A/B (default 120 s)")
    b.add_argument("--min-effect", type=float, default=3.0, metavar="PCT", help="as for bench.ab (default 3)")
    b.add_argument("--min-rounds", type=int, default=3, help="as for bench.ab (default 3)")
    b.add_argument("--reading-s", type=float, default=2.0, help="timed seconds per reading (default 2)")
    add_threads(b)
    add_paired_options(b)
    b.add_argument("--repo", default=str(REPO_ROOT), help="git repository (default: this one)")
    b.add_argument("--out", default="results", help="parent of each step's ab-<time>/ folder (default results/)")

    report = sub.add_parser("report", help="write the history as one self-contained HTML page")
    report.add_argument("--out", help="the page (default: history.html beside the database)")
    report.add_argument("--window", type=int, default=5, help="as for check")
    report.add_argument("--min-effect", type=float, default=5.0, help="as for check")
    return p


def main(args: argparse.Namespace) -> int:
    if args.command == "bisect":
        import torch

        from bench.ab.setup import AbWhat

        what = AbWhat(args.config, args.cell, {"A": args.overrides, "B": args.overrides}, repo=Path(args.repo),
                      threads=args.threads or torch.get_num_threads(), reading_s=args.reading_s,
                      renew_every=args.renew_every, interleave=args.interleave,
                      turn_ms=args.turn_ms)  # fmt: skip
        plan = partial(RoundsPlan, budget_s=args.budget_s, min_rounds=args.min_rounds, min_effect_pct=args.min_effect)
        first = run_bisect(args.good, args.bad, what, plan, Path(args.out), Path(args.history))
        print(f"first slower commit: {first}" if first else f"{args.bad} is not slower than {args.good}")
        return 0
    for d in args.dirs if args.command == "ingest" else []:
        check_ingestible(Path(d))  # every source checked before the database is opened (or created)
    db = connect(args.history, create=args.command == "ingest")  # the read-only commands never create one
    try:
        if args.command == "ingest":
            for d in args.dirs:
                print(f"{Path(d).name}: {ingest_dir(db, Path(d))}")
        elif args.command == "list":
            for r in runs(db):
                commit = (r["git_commit"] or "?")[:10] + ("-dirty" if r["git_dirty"] else "")
                print(f"{r['run_id']}  {r['kind']}  {r['recorded_at']}  {commit}  {r['cpu']}  "
                      f"{r['measured']}/{r['cells']} measured")  # fmt: skip
            for v in verdicts(db):
                print(f"{v['run_id']}  {v['name']}: {v['verdict']} (B/A {v['ratio']:.3f}, 95% CI {v['ci_low']:.3f}-"
                      f"{v['ci_high']:.3f}, {v['rounds']} rounds)")  # fmt: skip
        elif args.command == "show":
            found = series(db, args.cell_id)
            if not found:
                raise ConfigError(f"show {args.cell_id}: no measured, guard-passing reading of that cell")
            for (_, machine), points in found.items():
                print(f"{args.cell_id} on {machine}:")
                for p in points:
                    print(f"  {p['recorded_at']}  {(p['git_commit'] or '?')[:10]}  {p['throughput']:,.1f} {p['unit']}")
        elif args.command == "report":
            out = Path(args.out) if args.out else Path(args.history).with_name("history.html")
            print(f"report: {history_report(db, out, args.window, args.min_effect)}")
        else:
            found = check_latest(db, args.window, args.min_effect)
            for v in found:
                what = "REGRESSION" if v["regression"] else ("improvement" if v["improvement"] else "ok")
                print(f"{what}: {v['cell_id']} ({v['machine']}): {v['latest']:,.1f} vs {v['baseline']:,.1f} "
                      f"{v['unit']} ({v['change_pct']:+.1f}%, threshold {v['threshold_pct']:.1f}%)")  # fmt: skip
            if not found:  # a gate that compared nothing fails: it cannot say "no regression"
                print(
                    f"{args.history}: no cell has 4 or more readings on one machine yet: nothing was judged, "
                    "so no regression can be ruled out"
                )
                return EXIT_FAILED
            return EXIT_FAILED if any(v["regression"] for v in found) else 0
    finally:
        db.close()
    return 0


def cli(argv: Sequence[str] | None = None) -> int:
    return run_cli(main, build_parser(), argv)


if __name__ == "__main__":
    sys.exit(cli())
