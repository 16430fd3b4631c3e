"""``python -m bench.recipe_race``: time to a target test accuracy of two training configs, measured side
by side (seed by seed, alternating which goes first) on MLPerf's clock and scored by MLPerf's rule: a thin
use of the time-to-target measurement (``measure.mode: time_to_target`` in a matrix does the same for any
number of cells, with guards).

    python -m bench.recipe_race --baseline configs/fashion_mnist_classic.yaml \
        --candidate configs/fashion_mnist.yaml --target 0.91
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from bench._cli import add_overrides, make_parser, run_cli
from bench.cells.target import Target
from bench.recipe_race.race import format_race, race
from trainer_core.errors import ConfigError
from trainer_core.loading import load_config
from trainer_core.provenance import environment_info


def build_parser() -> argparse.ArgumentParser:
    p = make_parser("bench.recipe_race", "Time-to-accuracy of two configs, side by side.")
    p.add_argument("--baseline", default="configs/fashion_mnist_classic.yaml")
    p.add_argument("--candidate", default="configs/fashion_mnist.yaml")
    p.add_argument("--target", type=float, default=0.91, help="test accuracy to reach")
    add_overrides(p, "override applied to both configs (e.g. data.root=...)")
    p.add_argument(
        "--baseline-set",
        action="append",
        default=["train.epochs=20"],
        metavar="KEY=VALUE",
        help="override for the baseline only (default train.epochs=20: the seeds' 5-epoch recipe "
        "does not always reach the target, so it is allowed to run on with the same settings)",
    )
    p.add_argument(
        "--candidate-set", action="append", default=[], metavar="KEY=VALUE", help="override for the candidate only"
    )
    p.add_argument("--runs", type=int, default=5, help="seeded runs a side (MLPerf scoring drops the extremes from 3)")
    p.add_argument("--out", default="results", help="folder for recipe_race-<time>.json/.md")
    return p


def main(args: argparse.Namespace) -> int:
    if not 0.0 < args.target <= 1.0:
        raise ConfigError(f"--target {args.target}: a test accuracy, above 0 and at most 1")
    if args.runs < 1:
        raise ConfigError(f"--runs {args.runs}: at least 1")
    # Validate both configs before spending minutes on the first one.
    sides = {
        "baseline": (args.baseline, args.overrides + args.baseline_set),
        "candidate": (args.candidate, args.overrides + args.candidate_set),
    }
    for path, overrides in sides.values():
        load_config(path, overrides)
    target = Target(metric="test_accuracy", value=args.target)
    result = race(sides, target, args.runs, torch.get_num_threads())
    result.update({"target": args.target, "env": environment_info(), "threads": torch.get_num_threads()})
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"recipe_race-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}"
    text = format_race(result)
    stem.with_suffix(".json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    stem.with_suffix(".md").write_text(text + "\n")
    print(text)
    print(f"wrote {stem}.json")
    return 0


def cli(argv: Sequence[str] | None = None) -> int:
    return run_cli(main, build_parser(), argv)


if __name__ == "__main__":
    sys.exit(cli())
