"""Shared CLI plumbing: one-line errors with exit code 2, tracebacks only with --debug."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from trainer_core.errors import TrainbenchError

EXIT_BAD_INPUT = 2


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse's own errors already exit 2; keep them one line
        self.print_usage(sys.stderr)
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        raise SystemExit(EXIT_BAD_INPUT)


def make_parser(prog: str, description: str) -> argparse.ArgumentParser:
    p = _Parser(prog=prog, description=description)
    p.add_argument("--debug", action="store_true", help="show full tracebacks")
    return p


def run_cli(main: Callable[[argparse.Namespace], int], parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> int:
    """Parse, run ``main``, and turn :class:`TrainbenchError` into one stderr line and exit code 2."""
    args = parser.parse_args(argv)
    try:
        return main(args)
    except TrainbenchError as e:
        if args.debug:
            raise
        print(f"{parser.prog}: error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print(f"{parser.prog}: interrupted", file=sys.stderr)
        return 130
