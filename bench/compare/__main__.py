"""``python -m bench.compare RESULTS_A RESULTS_B``: did B get slower than A?

Cells are matched by their axis values; each pair gets the throughput ratio B/A with a 95% bootstrap
interval and a verdict (:mod:`bench.compare.comparison`). ``--fail-threshold PCT`` exits 1 on a significant
slowdown of more than PCT%; a guard that passed in A and fails in B always exits 1.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from bench._cli import EXIT_FAILED, make_parser, run_cli
from bench.compare.comparison import compare, failures
from bench.report.tables import comparison_table


def build_parser() -> argparse.ArgumentParser:
    p = make_parser("bench.compare", "Compare two bench.run results directories.")
    p.add_argument("a", help="baseline results directory (results/<run-id>)")
    p.add_argument("b", help="new results directory")
    p.add_argument("--fail-threshold", type=float, metavar="PCT", help="exit 1 if a significant slowdown exceeds PCT%%")
    p.add_argument(
        "--min-threshold",
        type=float,
        default=2.0,
        metavar="PCT",
        help="smallest change ever called significant (default 2%%; the measured noise can raise it)",
    )
    p.add_argument("--markdown", action="store_true", help="Markdown table (for CI comments)")
    p.add_argument("--json", action="store_true", help="JSON output")
    return p


def main(args: argparse.Namespace) -> int:
    result = compare(args.a, args.b, args.min_threshold)
    failed = failures(result, args.fail_threshold)
    result["failures"] = failed
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(comparison_table(result, markdown=args.markdown))
        for f in failed:
            print(f"FAIL: {f}")
    return EXIT_FAILED if failed else 0


def cli(argv: Sequence[str] | None = None) -> int:
    return run_cli(main, build_parser(), argv)


if __name__ == "__main__":
    sys.exit(cli())
