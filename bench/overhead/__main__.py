"""``python -m bench.overhead [--workload cnn|lm]``: the matrix runner's throughput against a bare
hand-written PyTorch loop, side by side in paired rounds (:mod:`bench.overhead.harness`)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from bench._cli import add_executor, make_parser, run_cli
from bench.cells.contract import MeasureConfig
from bench.launch.executors import build_executor, checked_options
from bench.overhead.harness import PRECISION_DTYPES, compare, row_line
from trainer_core.errors import ConfigError
from trainer_core.provenance import environment_info
from trainer_core.text import write_sample_text


def build_parser() -> argparse.ArgumentParser:
    p = make_parser("bench.overhead", "Harness overhead: runner throughput vs a bare PyTorch loop.")
    p.add_argument(
        "--workload",
        choices=["cnn", "lm"],
        default="cnn",
        help="cnn: SimpleCNN on images (samples/s); lm: the baby GPT of configs/gpt_char.yaml (tokens/s)",
    )
    p.add_argument("--precision", action="append", choices=sorted(PRECISION_DTYPES), help="default: fp32 and bf16")
    p.add_argument("--batch-size", action="append", type=int, help="default: 64 and 256 (cnn), 12 (lm)")
    p.add_argument("--text", help="lm: the text file (default data/shakespeare/input.txt, else a generated sample)")
    p.add_argument("--rounds", type=int, default=5, help="paired rounds per configuration (default 5)")
    p.add_argument("--min-time-s", type=float, default=1.5, help="timed seconds per repeat on each side")
    p.add_argument("--out", default="results", help="folder for overhead-<time>.json")
    add_executor(p, help_suffix=" (how the runner's cells start)")
    return p


def main(args: argparse.Namespace) -> int:
    if args.rounds < 1 or args.min_time_s <= 0 or any(b < 1 for b in args.batch_size or []):
        bad = "--rounds" if args.rounds < 1 else "--min-time-s" if args.min_time_s <= 0 else "--batch-size"
        raise ConfigError(f"{bad}: must be positive (got rounds {args.rounds}, min-time-s {args.min_time_s}, "
                          f"batch sizes {args.batch_size or 'default'})")  # fmt: skip
    if args.text and not Path(args.text).is_file():  # a mistyped path must not silently become a generated sample
        raise ConfigError(f"--text {args.text}: no such file")
    options = checked_options(args.executor, args.executor_opt)
    threads = torch.get_num_threads()
    measure = MeasureConfig(min_time_s=args.min_time_s, max_time_s=max(10.0, args.min_time_s), repeats=3)
    stem = Path(args.out) / f"overhead-{args.workload}-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}"
    text = Path(args.text) if args.text else Path("data/shakespeare/input.txt")
    if args.workload == "lm" and not text.is_file():
        text = write_sample_text(stem.with_name(stem.name + "-sample.txt"))
    batches = args.batch_size or ([12] if args.workload == "lm" else [64, 256])
    executor = build_executor(args.executor, options, stem.parent)
    try:
        precisions = args.precision or ["fp32", "bf16"]
        cells = stem.with_name(stem.name + "-cells")
        rows = compare(args.workload, precisions, batches, args.rounds, measure, threads, cells, text, executor)
    finally:
        executor.close()
    for row in rows:
        print(row_line(row))
    path = stem.with_suffix(".json")
    path.write_text(json.dumps({"rows": rows, "threads": threads, "env": environment_info()}, indent=2) + "\n")
    print(f"lowest runner/bare ratio: {min(r['ratio'] for r in rows):.3f}")
    print(f"wrote {path}")
    return 0


def cli(argv: Sequence[str] | None = None) -> int:
    return run_cli(main, build_parser(), argv)


if __name__ == "__main__":
    sys.exit(cli())
