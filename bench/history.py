"""``python -m bench.history [--history PATH] COMMAND``: the results history (:mod:`bench.history_db`).

- ``ingest RESULTS_DIR|BENCHMARK.json ...``: record finished runs (a results folder with cells.jsonl and
  env.json, or a pytest-benchmark JSON file); a run already recorded is left as it is.
- ``list``: the recorded runs, and the verdicts of ``bench.ab`` runs.
- ``show CELL_ID``: a cell's throughput across runs and commits, per machine.
- ``check``: is the latest reading of each cell a regression against the runs before it (same
  machine)? Exit 1 when one is.
- ``report [--out FILE]``: one self-contained HTML page of the history (runs, every cell's latest
  check, a trend chart per cell with its change points marked).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from bench._cli import EXIT_FAILED, make_parser, run_cli
from bench.history_db import check_latest, connect, ingest_dir, runs, series, verdicts
from bench.html_report import history_report
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
    report = sub.add_parser("report", help="write the history as one self-contained HTML page")
    report.add_argument("--out", help="the page (default: history.html beside the database)")
    report.add_argument("--window", type=int, default=5, help="as for check")
    report.add_argument("--min-effect", type=float, default=5.0, help="as for check")
    return p


def main(args: argparse.Namespace) -> int:
    db = connect(args.history)
    try:
        if args.command == "ingest":
            for d in args.dirs:
                added = ingest_dir(db, Path(d))
                print(f"{Path(d).name}: {'recorded' if added else 'already recorded, left as it is'}")
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
            if not found:
                print("no cell has 4 or more readings on one machine yet: nothing to judge")
            return EXIT_FAILED if any(v["regression"] for v in found) else 0
    finally:
        db.close()
    return 0


def cli(argv: Sequence[str] | None = None) -> int:
    return run_cli(main, build_parser(), argv)


if __name__ == "__main__":
    sys.exit(cli())
