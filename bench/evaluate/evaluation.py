"""Evaluate a checkpoint on the test split: accuracy, per-class accuracy, confusion matrix
(``python -m bench.evaluate`` is the CLI). The checkpoint carries its own config."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from trainer_core import checkpoint as ck
from trainer_core.config import apply_overrides
from trainer_core.errors import CheckpointError
from trainer_core.factory import build_run
from trainer_core.loading import load_config, validate_config
from trainer_core.metrics import accuracy, confusion_matrix, per_class_accuracy
from trainer_core.provenance import utc_timestamp


def evaluate_checkpoint(
    path: Path, config_path: str | None = None, data_dir: str | None = None, device: str | None = None
) -> dict[str, Any]:
    """Load the checkpoint (and its config, unless ``config_path`` replaces it), evaluate the test split."""
    state = ck.load_checkpoint_file(path)
    overrides = {k: v for k, v in (("data.root", data_dir), ("device", device)) if v}
    if config_path:
        config = load_config(config_path, overrides)
    else:
        config = validate_config(apply_overrides(state[ck.KEY_CONFIG], overrides), source=f"{path} (stored config)")
    run = build_run(config)
    try:
        run.model.load_state_dict(state[ck.KEY_MODEL])
    except RuntimeError as e:
        raise CheckpointError(
            f"{path}: model weights do not fit the config's model: {ck.describe_state_dict_mismatch(e)}"
        ) from None
    common = {
        "checkpoint": str(path),
        "checkpoint_epoch": int(state[ck.KEY_EPOCH]),
        "checkpoint_global_step": int(state[ck.KEY_GLOBAL_STEP]),
        "precision": config.precision,
        "workload": run.trainer.workload.name,
        "data": run.data.meta,
        "evaluated": utc_timestamp(),
    }
    if run.trainer.workload.unit != "samples":  # a language model: loss, perplexity, next-token accuracy
        metrics = run.trainer.evaluate(run.data.test_loader)
        return {
            **{f"test_{k}": v for k, v in metrics.items() if k != "samples"},
            "samples": metrics["samples"],
            **common,
        }
    preds, targets, loss = run.trainer.predict(run.data.test_loader)
    cm = confusion_matrix(preds, targets, run.data.num_classes)
    return {
        "test_accuracy": accuracy(cm),
        "test_loss": loss,
        "samples": int(cm.sum()),
        "class_names": run.data.class_names,
        "per_class_accuracy": per_class_accuracy(cm),
        "confusion_matrix": cm.tolist(),
        **common,
    }


def format_report(result: dict) -> str:
    if "confusion_matrix" not in result:
        return (
            f"test loss {result['test_loss']:.4f}  perplexity {result['test_perplexity']:.3f}  next-token accuracy "
            f"{result['test_accuracy']:.4f}  ({result['samples']} windows)"
        )
    names = result["class_names"]
    width = max(len(n) for n in names)
    lines = [
        f"test accuracy {result['test_accuracy']:.4f}  loss {result['test_loss']:.4f}  ({result['samples']} samples)",
        "per-class accuracy:",
    ]
    for name, acc in zip(names, result["per_class_accuracy"]):
        lines.append(f"  {name:<{width}}  {'n/a' if acc is None else f'{acc:.4f}'}")
    lines.append("confusion matrix (rows: true class, columns: predicted):")
    for row in result["confusion_matrix"]:
        lines.append("  " + " ".join(f"{v:>5d}" for v in row))
    return "\n".join(lines)
