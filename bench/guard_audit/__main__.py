"""``python -m bench.guard_audit``: false-alarm rate and catch rate of the guards, measured here.

Runs every guard on every shipped run config and every model x precision (and data-parallel setting) of
the shipped matrices, plus a healthy two-rank model under DDP, FSDP and bf16 (each must pass: a failure
is a false alarm), and on each planted fault of :mod:`bench.guards.planted` (its own guard must fail: a pass is
a miss), over ``--seeds`` seeds. An audit that measured nothing cannot vouch for anything: exit 1 on a
false alarm, a miss, a case it could not run or a guard none of whose planted faults it measured (unless
``--allow-missing`` names them), and exit 2 on bad input.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from bench._cli import EXIT_FAILED, make_parser, run_cli
from bench.guards.cases import audit, audit_cases
from bench.report.tables import guard_audit_table


def build_parser() -> argparse.ArgumentParser:
    p = make_parser(
        "bench.guard_audit", "Measure the guards' false-alarm rate (shipped configs) and catch rate (planted faults)."
    )
    p.add_argument("--configs", default="configs", help="folder of configs and matrices to check (default configs/)")
    p.add_argument(
        "--seeds", type=int, default=3, help="seeds per case: the config's own and the next ones (default 3)"
    )
    p.add_argument("--data-root", help="IDX folder for configs whose data is not found where they look")
    p.add_argument("--only", action="append", default=[], metavar="TEXT",
                   help="run only the cases whose label contains TEXT (repeatable)")  # fmt: skip
    p.add_argument("--allow-missing", action="append", default=[], metavar="GUARD|TEXT",
                   help="a guard whose planted faults may go unmeasured ('healthy': no healthy case), or text "
                        "of a case label that may not run (its data absent); repeatable")  # fmt: skip
    p.add_argument("--json", metavar="FILE", help="also write every verdict to FILE")
    return p


def main(args: argparse.Namespace) -> int:
    cases = audit_cases(Path(args.configs), args.seeds, args.only)
    result = audit(cases, args.seeds, args.data_root, say=lambda line: print(line, flush=True))
    print(guard_audit_table(result.caught, result.alarms))
    healthy = [r for r in result.rows if r["group"] == "healthy"]
    planted = [r for r in result.rows if r["group"] == "planted"]
    alarms, caught = sum(not r["good"] for r in healthy), sum(r["good"] for r in planted)
    print(
        f"false alarms: {alarms} of {len(healthy)} healthy runs ({100 * alarms / max(len(healthy), 1):.1f}%); "
        f"caught: {caught} of {len(planted)} planted faults ({100 * caught / max(len(planted), 1):.1f}%)"
    )
    missing = result.gaps(args.allow_missing)
    for line in missing:
        print(f"NOT MEASURED: {line}")
    if args.json:
        Path(args.json).write_text(json.dumps(result.rows, indent=2) + "\n")
    return 0 if alarms == 0 and caught == len(planted) and not missing else EXIT_FAILED


def cli(argv: Sequence[str] | None = None) -> int:
    return run_cli(main, build_parser(), argv)


if __name__ == "__main__":
    sys.exit(cli())
