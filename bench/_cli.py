"""Shared CLI plumbing: one-line errors with exit code 2, tracebacks only with --debug."""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Sequence

from trainer_core.errors import TrainbenchError

EXIT_FAILED = 1  # the command ran but its result is a failure (no cell measured, a regression)
EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, the shell's convention
EXIT_TERMINATED = 143  # 128 + SIGTERM


class Terminated(KeyboardInterrupt):
    """Raised in the main thread on SIGTERM (a CI timeout, ``kill``), so it unwinds like Ctrl-C:
    ``subprocess.run`` kills the running cell process on the way out instead of leaving it orphaned,
    and ``finally`` blocks run. Records already appended to cells.jsonl stay as they are."""


def _raise_terminated(signum: int, frame: object) -> None:
    raise Terminated()


@contextlib.contextmanager
def sigterm_unwinds() -> Iterator[None]:
    """While inside, SIGTERM raises :class:`Terminated` (main thread only: signal handlers live there)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse's own errors already exit 2; keep them one line
        print(f"{self.prog}: error: {message} (see --help)", file=sys.stderr)
        raise SystemExit(EXIT_BAD_INPUT)


def make_parser(prog: str, description: str) -> argparse.ArgumentParser:
    p = _Parser(prog=prog, description=description)
    p.add_argument("--debug", action="store_true", help="show full tracebacks")
    return p


def positive_float(text: str) -> float:
    """argparse type: a number above 0 (argparse turns the ValueError into a one-line exit 2)."""
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text}: must be above 0")
    return value


def non_negative_float(text: str) -> float:
    """argparse type: a number of at least 0 (argparse turns the ValueError into a one-line exit 2)."""
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"{text}: must be at least 0")
    return value


def positive_int(text: str) -> int:
    """argparse type: an integer of at least 1 (argparse turns the ValueError into a one-line exit 2)."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text}: must be at least 1")
    return value


def add_threads(parser: argparse.ArgumentParser) -> None:
    """``--threads N``: torch intra-op threads in every reading of a paired run (bench.ab, bench.history bisect)."""
    parser.add_argument(
        "--threads", type=positive_int, help="torch intra-op threads in every reading (default: torch's default)"
    )


def add_paired_options(parser: argparse.ArgumentParser) -> None:
    """``--renew-every ROUNDS``, ``--interleave readings|steps`` and ``--turn-ms MS``: how a paired run of two
    cells reads them (bench.ab, bench.history bisect; :mod:`bench.ab.setup` has the defaults)."""
    from bench.ab.subjects import READINGS, STEPS, TURN_MS
    from bench.launch.forked import SERVER_ROUNDS

    parser.add_argument(
        "--renew-every",
        type=positive_int,
        metavar="ROUNDS",
        help=f"renew the forked readings' servers every ROUNDS rounds (default {SERVER_ROUNDS})",
    )
    parser.add_argument(
        "--interleave",
        choices=[READINGS, STEPS],
        help="a round runs both sides' cells at once with their timed steps in turns, so both see the "
        "machine's speed of the same moment (steps: the default for CPU training cells of one process without "
        "loader workers, two revisions or two configs), or reads A's cell then B's (readings)",
    )
    parser.add_argument(
        "--turn-ms",
        type=non_negative_float,
        metavar="MS",
        help="with steps in turns: each side keeps the baton this long (and two steps at least), the first "
        f"step of its turn untimed, as it pays for the other side's use of the caches (default {TURN_MS:g}; "
        "0: turns of one step, all timed)",
    )


def add_executor(parser: argparse.ArgumentParser, default: str | None = "local", help_suffix: str = "") -> None:
    """``--executor NAME`` and ``--executor-opt KEY=VALUE`` (repeatable): how cells start, one spelling for
    every command that launches them (checked by :func:`bench.launch.executors.checked_options`)."""
    from bench.launch.executors import EXECUTOR_HELP

    parser.add_argument("--executor", default=default, help=EXECUTOR_HELP + help_suffix)
    parser.add_argument(
        "--executor-opt",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="executor setting (repeatable), e.g. --executor-opt partition=gpu --executor-opt gpus_per_node=1",
    )


def add_overrides(parser: argparse.ArgumentParser, what: str) -> None:
    """``--set KEY=VALUE`` (repeatable, read as YAML, beats the YAML file): the one spelling every command uses."""
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help=what)


def run_cli(
    main: Callable[[argparse.Namespace], int], parser: argparse.ArgumentParser, argv: Sequence[str] | None
) -> int:
    """Parse, run ``main``, and turn :class:`TrainbenchError` into one stderr line and exit code 2."""
    # Off a terminal Python buffers stdout in blocks: a CI log, `| tee` or `nohup` would see a long
    # command's lines only when it ends. Every line goes out as it is printed instead.
    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(line_buffering=True)
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help (0) or a usage error (2, one line): returned like every other outcome
        return int(e.code or 0)
    try:
        with sigterm_unwinds():
            return main(args)
    except TrainbenchError as e:
        if args.debug:
            raise
        print(f"{parser.prog}: error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except Terminated:
        print(f"{parser.prog}: terminated (SIGTERM)", file=sys.stderr)
        return EXIT_TERMINATED
    except KeyboardInterrupt:
        print(f"{parser.prog}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
