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
from trainer_core import checkpoint as ck
from trainer_core.config import apply_overrides, load_config, validate_config
from trainer_core.errors import CheckpointError
from trainer_core.factory import build_run
from trainer_core.metrics import accuracy, confusion_matrix, per_class_accuracy
from trainer_core.provenance import utc_timestamp


def build_parser() -> argparse.ArgumentParser:
    p = make_parser("bench.evaluate", "Evaluate a checkpoint on the test split.")
    p.add_argument("--checkpoint", required=True, help="checkpoint file (best_model.pt / last_model.pt)")
    p.add_argument("--config", help="config to use instead of the one stored in the checkpoint")
    p.add_argument("--data-dir", help="directory with the IDX files (sets data.root)")
    p.add_argument("--device", help="device override (auto, cpu, cuda, cuda:N)")
    return p


def format_report(result: dict) -> str:
    names = result["class_names"]
    width = max(len(n) for n in names)
    lines = [f"test accuracy {result['test_accuracy']:.4f}  loss {result['test_loss']:.4f}  ({result['samples']} samples)",
             "per-class accuracy:"]
    for name, acc in zip(names, result["per_class_accuracy"]):
        lines.append(f"  {name:<{width}}  {'n/a' if acc is None else f'{acc:.4f}'}")
    lines.append("confusion matrix (rows: true class, columns: predicted):")
    for row in result["confusion_matrix"]:
        lines.append("  " + " ".join(f"{v:>5d}" for v in row))
    return "\n".join(lines)


def main(args: argparse.Namespace) -> int:
    path = Path(args.checkpoint)
    state = ck.load_checkpoint_file(path)
    overrides = {}
    if args.data_dir:
        overrides["data.root"] = args.data_dir
    if args.device:
        overrides["device"] = args.device
    if args.config:
        config = load_config(args.config, overrides)
    else:
        config = validate_config(apply_overrides(state[ck.KEY_CONFIG], overrides), source=f"{path} (stored config)")
    run = build_run(config)
    try:
        run.model.load_state_dict(state[ck.KEY_MODEL])
    except RuntimeError as e:
        raise CheckpointError(f"{path}: model weights do not fit the config's model: {ck.describe_state_dict_mismatch(e)}") from None
    preds, targets, loss = run.trainer.predict(run.data.test_loader)
    cm = confusion_matrix(preds, targets, run.data.num_classes)
    result = {
        "checkpoint": str(path),
        "test_accuracy": accuracy(cm),
        "test_loss": loss,
        "samples": int(cm.sum()),
        "class_names": run.data.class_names,
        "per_class_accuracy": per_class_accuracy(cm),
        "confusion_matrix": cm.tolist(),
        "checkpoint_epoch": int(state[ck.KEY_EPOCH]),
        "checkpoint_global_step": int(state[ck.KEY_GLOBAL_STEP]),
        "precision": config.precision,
        "data": run.data.meta,
        "evaluated": utc_timestamp(),
    }
    out = path.parent / "eval.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(format_report(result))
    print(f"wrote {out}")
    return 0


def cli(argv: Sequence[str] | None = None) -> int:
    return run_cli(main, build_parser(), argv)


if __name__ == "__main__":
    sys.exit(cli())
