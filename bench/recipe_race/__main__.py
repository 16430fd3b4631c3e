"""``python -m bench.recipe_race``: time-to-accuracy of two training configs, measured side by side.

Each config trains in this process, one after the other, with the same threads. After every epoch
the test split is evaluated *outside* the timed region (the Trainer's ``train_seconds`` covers the
batch loop only: data wait, h2d, forward, backward, optimizer). The figure of merit is the training
time until test accuracy first reaches ``--target``.

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
from typing import Any

import torch

from bench._cli import add_overrides, make_parser, run_cli
from bench.recipe_race.race import format_race, race_one
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
    p.add_argument(
        "--run-all-epochs",
        action="store_true",
        help="train every epoch instead of stopping a side once it reaches the target",
    )
    p.add_argument("--out", default="results", help="folder for recipe_race-<time>.json/.md")
    return p


def main(args: argparse.Namespace) -> int:
    if not 0.0 < args.target <= 1.0:
        raise ConfigError(f"--target {args.target}: a test accuracy, above 0 and at most 1")
    # Validate both configs before spending minutes on the first one.
    sides = {
        "baseline": (args.baseline, args.overrides + args.baseline_set),
        "candidate": (args.candidate, args.overrides + args.candidate_set),
    }
    for path, overrides in sides.values():
        load_config(path, overrides)
    result: dict[str, Any] = {"target": args.target, "env": environment_info(), "threads": torch.get_num_threads()}
    for side, (path, overrides) in sides.items():
        result[side] = race_one(path, overrides, args.target, stop_at_target=not args.run_all_epochs)
    b, c = result["baseline"]["time_to_target_s"], result["candidate"]["time_to_target_s"]
    result["time_ratio"] = c / b if (b and c) else None
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
