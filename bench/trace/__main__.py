"""``python -m bench.trace PATH [--json]``: where the time went, from torch.profiler traces.

Reads any torch.profiler trace (``.json`` / ``.json.gz``) or a folder of them and prints, per trace, the
step-time breakdown of :mod:`bench.trace.analysis`.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from bench._cli import make_parser, run_cli
from bench.trace.analysis import TraceError, breakdown, find_traces, format_breakdown, load_trace


def build_parser() -> argparse.ArgumentParser:
    p = make_parser("bench.trace", "Step-time breakdown of torch.profiler traces.")
    p.add_argument("path", help="a trace file (.json / .json.gz) or a folder of them")
    p.add_argument("--json", action="store_true", help="print JSON instead of tables")
    p.add_argument("--top", type=int, default=10, help="number of operators to list")
    return p


def main(args: argparse.Namespace) -> int:
    results = []
    for path in find_traces(args.path):
        try:
            results.append((path, breakdown(load_trace(path), top=args.top)))
        except TraceError as e:
            if Path(args.path).is_file():
                raise
            print(f"skipping {path}: {e}", file=sys.stderr)
    if not results:
        raise TraceError(f"{args.path}: no trace with profiler steps found")
    if args.json:
        print(json.dumps({str(p): b for p, b in results}, indent=2))
    else:
        print("\n\n".join(format_breakdown(p, b) for p, b in results))
    return 0


def cli(argv: Sequence[str] | None = None) -> int:
    return run_cli(main, build_parser(), argv)


if __name__ == "__main__":
    sys.exit(cli())
