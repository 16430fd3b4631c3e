"""Time to accuracy of two training configs, measured side by side (``python -m bench.recipe_race`` is the CLI).

Each config trains in this process, one after the other, with the same threads. After every epoch
the test split is evaluated *outside* the timed region (the Trainer's ``train_seconds`` covers the
batch loop only: data wait, h2d, forward, backward, optimizer). The figure of merit is the training
time until test accuracy first reaches the target.
"""

from __future__ import annotations

import time
from typing import Any

from trainer_core.factory import build_run
from trainer_core.loading import load_config
from trainer_core.trainer import BaseHook, Trainer


class TestEvalHook(BaseHook):
    """After each epoch's validation, evaluate the test split (untimed) and record the clock."""

    def __init__(self, test_loader: Any, stop_at: float | None, name: str = "") -> None:
        self.test_loader = test_loader
        self.stop_at = stop_at
        self.name = name
        self.points: list[dict[str, float]] = []

    def on_epoch_end(self, trainer: Trainer, record: dict[str, Any]) -> None:
        test = trainer.evaluate(self.test_loader)
        self.points.append(
            {
                "epoch": record["epoch"],
                "train_seconds": trainer.counters["train_seconds"],
                "test_accuracy": test["accuracy"],
                "val_accuracy": record["val_accuracy"],
            }
        )
        print(
            f"{self.name}: epoch {record['epoch']}  train {trainer.counters['train_seconds']:.1f} s  "
            f"test acc {test['accuracy']:.4f}",
            flush=True,
        )
        if self.stop_at is not None and test["accuracy"] >= self.stop_at:
            trainer.should_stop = True


def time_to_target(points: list[dict[str, float]], target: float) -> tuple[float | None, int | None]:
    for p in points:
        if p["test_accuracy"] >= target:
            return p["train_seconds"], int(p["epoch"])
    return None, None


def race_one(config_path: str, overrides: list[str], target: float, stop_at_target: bool) -> dict[str, Any]:
    config = load_config(
        config_path, overrides + ["logging.tensorboard=false", "logging.jsonl=false", "logging.progress_bar=off"]
    )
    run = build_run(config)
    hook = TestEvalHook(run.data.test_loader, target if stop_at_target else None, name=config.name)
    run.trainer.hooks.append(hook)
    wall0 = time.perf_counter()
    run.trainer.fit(run.data.train_loader, run.data.val_loader)
    seconds, epoch = time_to_target(hook.points, target)
    return {
        "config": config_path,
        "overrides": overrides,
        "name": config.name,
        "epochs_allowed": config.train.epochs,
        "precision": config.precision,
        "pipeline": config.data.pipeline,
        "batch_size": config.data.batch_size,
        "points": hook.points,
        "time_to_target_s": seconds,
        "epoch_reached": epoch,
        "samples_per_second": run.trainer.counters["samples_seen"] / run.trainer.counters["train_seconds"],
        "wall_seconds": time.perf_counter() - wall0,
    }


def format_race(result: dict[str, Any]) -> str:
    target = result["target"]
    lines = [
        f"target test accuracy {target:.3f}",
        "",
        "| config | epoch | train s (cum.) | test acc |",
        "|---|---:|---:|---:|",
    ]
    for side in ("baseline", "candidate"):
        r = result[side]
        for p in r["points"]:
            lines.append(f"| {r['name']} | {p['epoch']} | {p['train_seconds']:.1f} | {p['test_accuracy']:.4f} |")
    lines.append("")
    for side in ("baseline", "candidate"):
        r = result[side]
        reached = (
            f"{r['time_to_target_s']:.1f} s (epoch {r['epoch_reached']})"
            if r["time_to_target_s"] is not None
            else "not reached"
        )
        lines.append(f"{side}: {r['name']}: {r['samples_per_second']:.0f} samples/s, time to target {reached}")
    ratio = result["time_ratio"]
    lines.append(
        f"candidate/baseline time to target: {ratio:.3f}"
        if ratio is not None
        else "ratio: n/a (target not reached by both)"
    )
    return "\n".join(lines)
