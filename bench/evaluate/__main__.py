"""``python -m bench.evaluate --checkpoint FILE``: test accuracy, per-class accuracy, confusion matrix.

The checkpoint carries its own config, so nothing else is needed; ``--config`` replaces it and
``--data-dir`` points at the IDX files. Writes ``eval.json`` beside the checkpoint.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from bench._cli import make_parser, run_cli
from bench.evaluate.evaluation import evaluate_checkpoint, format_report


def build_parser() -> argparse.ArgumentParser:
    p = make_parser("bench.evaluate", "Evaluate a checkpoint on the test split.")
    p.add_argument("--checkpoint", required=True, help="checkpoint file (best_model.pt / last_model.pt)")
    p.add_argument("--config", help="config to use instead of the one stored in the checkpoint")
    p.add_argument("--data-dir", help="directory with the IDX files (sets data.root)")
    p.add_argument("--device", help="device override (auto, cpu, cuda, cuda:N)")
    return p


def main(args: argparse.Namespace) -> int:
    path = Path(args.checkpoint)
    result = evaluate_checkpoint(path, args.config, args.data_dir, args.device)
    out = path.parent / "eval.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(format_report(result))
    print(f"wrote {out}")
    return 0


def cli(argv: Sequence[str] | None = None) -> int:
    return run_cli(main, build_parser(), argv)


if __name__ == "__main__":
    sys.exit(cli())
