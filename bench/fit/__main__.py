"""``python -m bench.fit --config FILE [--max-memory-mb N]``: the largest batch size that trains under a memory
cap, with the headroom left. Each probe trains for real (a few steps, the loader workers at their prefetch, an
evaluation) in its own process under an enforced limit, so running out of memory kills the probe, never the
search; the chosen batch is then confirmed by a full epoch under the same cap (a batch that fits a few steps but
not an epoch is not chosen). Writes fit.json, fit.md and cells.jsonl to results/fit-<name>-<time>/.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from bench._cli import add_executor, make_parser, positive_float, positive_int, run_cli
from bench.cells.store import read_records
from bench.fit.fitting import Prober, default_cap_mb, fit_batch, fit_report, write_fit
from bench.launch.executors import build_executor, checked_options
from bench.matrix import resolve_device_name
from trainer_core.config import parse_override
from trainer_core.loading import load_config


def build_parser() -> argparse.ArgumentParser:
    p = make_parser("bench.fit", "Find the largest batch size that trains under a memory cap.")
    p.add_argument("--config", required=True, help="training config (YAML)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="override")
    p.add_argument(
        "--max-memory-mb", type=positive_float, help="the cap (default: half this machine's memory, or the GPU's)"
    )
    p.add_argument("--max-batch", type=positive_int, default=4096, help="largest batch size tried")
    p.add_argument("--steps", type=positive_int, default=3, help="training steps per short probe")
    p.add_argument("--threads", type=positive_int, default=None, help="torch threads per probe (default: all)")
    p.add_argument("--out", default="results", help="parent of the run directory")
    add_executor(p)
    return p


def main(args: argparse.Namespace) -> int:
    options = checked_options(args.executor, args.executor_opt)
    config = load_config(args.config, dict(parse_override(o) for o in args.overrides))
    cap = args.max_memory_mb or default_cap_mb(resolve_device_name(config.device))
    run_dir = Path(args.out) / f"fit-{config.name}-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}"
    run_dir.mkdir(parents=True, exist_ok=False)
    executor = build_executor(args.executor, options, run_dir)
    prober = Prober(config, cap, run_dir, executor, args.threads or os.cpu_count() or 1, args.steps)
    print(f"{run_dir}: largest batch of {args.config} under {cap:,.0f} MiB", flush=True)
    try:
        result = fit_batch(prober, config.data.batch_size, args.max_batch)
    finally:
        executor.close()
    print(write_fit(run_dir, fit_report(args.config, cap, result, read_records(run_dir / "cells.jsonl"))))
    return 0 if result.chosen is not None else 1


def cli(argv: Sequence[str] | None = None) -> int:
    return run_cli(main, build_parser(), argv)


if __name__ == "__main__":
    sys.exit(cli())
