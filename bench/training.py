"""bench.train's work apart from parsing: how a run ends (test evaluation, metrics.json, learning
curves, the earlier finish kept aside) and what to tell a user whose run is already complete."""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path
from typing import Any

from bench.plots import plot_learning_curves
from trainer_core import checkpoint as ck
from trainer_core.factory import Run
from trainer_core.provenance import environment_info, utc_timestamp
from trainer_core.run_dir import CURVES_NAME, METRICS_NAME, RunDir
from trainer_core.run_logger import RunLogger
from trainer_core.trainer import FitResult, Trainer


def final_metrics(
    history: list[dict[str, Any]],
    trainer_counters: dict[str, float],
    test: dict[str, float],
    best_epoch: int | None,
    wall_s: float,
) -> dict[str, Any]:
    last = history[-1] if history else {}
    best_acc = max(
        (
            h["val_accuracy"]
            for h in history
            if isinstance(h.get("val_accuracy"), float) and not math.isnan(h["val_accuracy"])
        ),
        default=None,
    )
    train_s = trainer_counters["train_seconds"]
    return {
        "final_train_loss": last.get("train_loss"),
        "final_val_loss": last.get("val_loss"),
        "best_val_accuracy": best_acc,
        "best_epoch": best_epoch,
        "total_epochs": len(history),
        "training_time_seconds": train_s,
        "wall_time_seconds": wall_s,
        "test_accuracy": test["accuracy"],
        "test_loss": test["loss"],
        "samples_per_second": trainer_counters["samples_seen"] / train_s if train_s > 0 else None,
        "skipped_steps": int(trainer_counters["skipped_steps"]),
    }


def how_to_extend(trainer: Trainer) -> str:
    """How to train a complete run on, on purpose (one clause)."""
    if trainer.end_reason in (ck.END_EARLY_STOPPED, ck.END_STOPPED):
        return f"To train on anyway, add --continue-early-stopped (with train.epochs above {trainer.epoch})"
    if trainer.config.train.max_steps is not None and trainer.global_step >= trainer.config.train.max_steps:
        return "To train on, raise train.max_steps (e.g. --set train.max_steps=...)"
    return (
        f"To train on, raise train.epochs (e.g. --set train.epochs={2 * trainer.epoch}): "
        "it continues from the last checkpoint"
    )


def finish(run: Run, run_dir: RunDir, result: FitResult, wall0: float, logger: RunLogger) -> dict[str, Any]:
    """Test evaluation, metrics.json and the learning curves of a run that ended (earlier ones kept aside)."""
    trainer = run.trainer
    test = trainer.evaluate(run.data.test_loader)
    metrics = final_metrics(result.history, trainer.counters, test, trainer.best_epoch, time.perf_counter() - wall0)
    metrics.update(
        early_stopped=result.early_stopped,
        end_reason=trainer.end_reason,
        global_step=trainer.global_step,
        precision=trainer.policy.metadata(),
        data=run.data.meta,
        finished=utc_timestamp(),
    )
    run_dir.archive_finals()
    (run_dir.root / METRICS_NAME).write_text(json.dumps(metrics, indent=2, default=str) + "\n")
    plot_learning_curves(result.history, run_dir.root / CURVES_NAME, title=trainer.config.name)
    logger.event("end", **{k: v for k, v in metrics.items() if isinstance(v, (int, float, str)) or v is None})
    return metrics


def start_run(run: Run, run_dir: RunDir, resume_from: Path | None, done: str | None) -> RunLogger:
    """What a run writes before its first step: the config (kept across resumes), the log's start event
    (precision policy, data, environment), the policy's notes on stderr, and where a resume starts."""
    trainer = run.trainer
    run_dir.root.mkdir(parents=True, exist_ok=True)
    run_dir.write_config(run.config.to_dict())
    logger = RunLogger(run_dir.root, run.config.logging)
    trainer.logger = logger
    logger.event(
        "start",
        resumed_from=str(resume_from) if resume_from else None,
        step=trainer.global_step,
        epoch=trainer.epoch,
        precision=trainer.policy.metadata(),
        data=run.data.meta,
        env=environment_info(),
    )
    for note in trainer.policy.notes + (
        [run.data.meta["pin_memory_note"]] if "pin_memory_note" in run.data.meta else []
    ):
        print(f"note: {note}", file=sys.stderr)
    if resume_from is not None:
        print(
            f"resumed from {resume_from} at epoch {trainer.epoch + 1}, step {trainer.global_step}"
            + (f" ({done}: writing its final outputs)" if done else "")
        )
    return logger
