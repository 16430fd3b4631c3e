"""``python -m bench.guard_audit``: false-alarm rate and catch rate of the guards, measured here.

Runs every guard on every shipped run config and every model x precision of the shipped matrices
(each must pass: a failure is a false alarm) and on each planted fault of :mod:`bench.planted` (its
own guard must fail: a pass is a miss), over ``--seeds`` seeds. Exit code 1 on any false alarm or miss.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from bench._cli import EXIT_FAILED, make_parser, run_cli
from bench.guard_cases import audit, planted_cases, shipped_cases


def build_parser() -> argparse.ArgumentParser:
    p = make_parser(
        "bench.guard_audit", "Measure the guards' false-alarm rate (shipped configs) and catch rate (planted faults)."
    )
    p.add_argument("--configs", default="configs", help="folder of configs and matrices to check (default configs/)")
    p.add_argument(
        "--seeds", type=int, default=3, help="seeds per case: the config's own and the next ones (default 3)"
    )
    p.add_argument("--data-root", help="IDX folder for configs whose data is not found where they look")
    p.add_argument("--json", metavar="FILE", help="also write every verdict to FILE")
    return p


def main(args: argparse.Namespace) -> int:
    groups = {"healthy": shipped_cases(Path(args.configs)), "planted": planted_cases()}
    rows, counts = audit(groups, args.seeds, args.data_root, say=lambda line: print(line, flush=True))
    (ok, n), (caught, m) = counts["healthy"], counts["planted"]
    print(
        f"false alarms: {n - ok} of {n} healthy runs ({100 * (n - ok) / max(n, 1):.1f}%); "
        f"caught: {caught} of {m} planted faults ({100 * caught / max(m, 1):.1f}%)"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")
    return 0 if ok == n and caught == m else EXIT_FAILED


def cli(argv: Sequence[str] | None = None) -> int:
    return run_cli(main, build_parser(), argv)


if __name__ == "__main__":
    sys.exit(cli())
