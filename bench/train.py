"""``python -m bench.train --config FILE``: train, evaluate every epoch, checkpoint, report.

Run dir layout (``--out``, default ``runs/<name>-<UTC time>``)::

    config.yaml                 resolved config (after --set / flags); config.resume-N.yaml if a resume changed it
    checkpoints/best_model.pt   best validation loss
    checkpoints/last_model.pt   latest position (resume point; records why training ended)
    metrics.json                final figures (an extended run keeps earlier ones as metrics.step<N>.json)
    learning_curves.png         train/val loss and val accuracy per epoch
    log.jsonl                   JSON-lines log (same scalars as TensorBoard), appended across resumes
    tensorboard/                TensorBoard events

Resuming (``--resume auto``) a run that is complete (all epochs done, max_steps reached, or early
stopped) prints one line saying so and changes nothing; see trainer_core/run_dir.py for what each
start, resume and extension keeps.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench._cli import make_parser, run_cli
from bench.plots import plot_learning_curves
from bench.profiling import ProfilerHook, maybe_profile
from trainer_core import checkpoint as ck
from trainer_core.config import RunConfig, load_config
from trainer_core.factory import Run, build_run
from trainer_core.hooks import EpochPrinter
from trainer_core.provenance import environment_info, utc_timestamp
from trainer_core.run_dir import CURVES_NAME, METRICS_NAME, RunDir
from trainer_core.run_logger import RunLogger
from trainer_core.trainer import FitResult, Trainer


def build_parser() -> argparse.ArgumentParser:
    p = make_parser("bench.train", "Train a model from a YAML config.")
    p.add_argument("--config", required=True, help="YAML config file")
    p.add_argument("--seed", type=int, help="override seed")
    p.add_argument("--device", help="override device (auto, cpu, cuda, cuda:N)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set optim.lr=3e-4 (repeatable; beats the YAML)")
    p.add_argument("--out", help="run directory (default runs/<name>-<time>)")
    p.add_argument("--resume", metavar="auto|PATH",
                   help="resume from PATH, or with 'auto' from <out>/checkpoints/last_model.pt if it exists; "
                        "a complete run is reported and left as it is")
    p.add_argument("--continue-early-stopped", action="store_true",
                   help="with --resume: let a run that early stopping ended train on (its patience starts afresh)")
    p.add_argument("--profile", action="store_true",
                   help="trace steps 2-4 with torch.profiler into profiles/<run-dir-name>/train/ (see README: Open the traces)")
    p.add_argument("--stop-after-steps", type=int, metavar="N",
                   help="stop after N optimizer steps in this process, saving last_model.pt (a planned pre-emption)")
    return p


def resolve_config(args: argparse.Namespace) -> RunConfig:
    overrides = list(args.overrides)
    # Dedicated flags are shorthands for --set and share its precedence (written last, so they win).
    if args.seed is not None:
        overrides.append(f"seed={args.seed}")
    if args.device is not None:
        overrides.append(f"device={args.device}")
    return load_config(args.config, overrides)


def resolve_run_dir(args: argparse.Namespace, config: RunConfig) -> Path:
    if args.out:
        return Path(args.out)
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    return Path("runs") / f"{config.name}-{stamp}"


def final_metrics(history: list[dict[str, Any]], trainer_counters: dict[str, float], test: dict[str, float],
                  best_epoch: int | None, wall_s: float) -> dict[str, Any]:
    last = history[-1] if history else {}
    best_acc = max((h["val_accuracy"] for h in history if isinstance(h.get("val_accuracy"), float) and not math.isnan(h["val_accuracy"])), default=None)
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
    return f"To train on, raise train.epochs (e.g. --set train.epochs={2 * trainer.epoch}): it continues from the last checkpoint"


def finish(run: Run, run_dir: RunDir, result: FitResult, wall0: float, logger: RunLogger) -> dict[str, Any]:
    """Test evaluation, metrics.json and the learning curves of a run that ended (earlier ones kept aside)."""
    trainer = run.trainer
    test = trainer.evaluate(run.data.test_loader)
    metrics = final_metrics(result.history, trainer.counters, test, trainer.best_epoch, time.perf_counter() - wall0)
    metrics.update(early_stopped=result.early_stopped, end_reason=trainer.end_reason, global_step=trainer.global_step,
                   precision=trainer.policy.metadata(), data=run.data.meta, finished=utc_timestamp())
    run_dir.archive_finals()
    (run_dir.root / METRICS_NAME).write_text(json.dumps(metrics, indent=2, default=str) + "\n")
    plot_learning_curves(result.history, run_dir.root / CURVES_NAME, title=trainer.config.name)
    logger.event("end", **{k: v for k, v in metrics.items() if isinstance(v, (int, float, str)) or v is None})
    return metrics


def main(args: argparse.Namespace) -> int:
    wall0 = time.perf_counter()
    config = resolve_config(args)
    run_dir = RunDir(resolve_run_dir(args, config), config.checkpoint.dir)
    resume_from = run_dir.resume_point(args.resume)
    # Build everything (device, data, model, precision) and read the checkpoint before writing anything,
    # so a failed start, or a run that is already complete, leaves the run dir untouched.
    run = build_run(config, checkpoint_dir=run_dir.checkpoints)
    trainer = run.trainer
    done = None
    if resume_from is not None:
        trainer.load_checkpoint(resume_from)
        if args.continue_early_stopped:
            trainer.reopen()
        done = trainer.completion()
        if done and (run_dir.root / METRICS_NAME).exists():
            print(f"run {run_dir.root} is complete ({done}); nothing was changed. {how_to_extend(trainer)}.")
            return 0

    run_dir.root.mkdir(parents=True, exist_ok=True)
    run_dir.write_config(config.to_dict())
    logger = RunLogger(run_dir.root, config.logging)
    trainer.logger = logger
    logger.event("start", resumed_from=str(resume_from) if resume_from else None, step=trainer.global_step,
                 epoch=trainer.epoch, precision=trainer.policy.metadata(), data=run.data.meta, env=environment_info())
    for note in trainer.policy.notes + ([run.data.meta["pin_memory_note"]] if "pin_memory_note" in run.data.meta else []):
        print(f"note: {note}", file=sys.stderr)
    if resume_from is not None:
        print(f"resumed from {resume_from} at epoch {trainer.epoch + 1}, step {trainer.global_step}"
              + (f" ({done}: writing its final outputs)" if done else ""))
    trainer.hooks.append(EpochPrinter())
    hook = ProfilerHook()
    if args.profile:
        trainer.hooks.append(hook)
    trace_dir = Path("profiles") / run_dir.root.name / "train"
    try:
        if done:  # complete, but killed before its final outputs were written: write them, train nothing
            result = FitResult(trainer.history, False, trainer.end_reason == ck.END_EARLY_STOPPED, trainer.global_step, trainer.end_reason)
        else:
            # wait=1: the first step (allocations, lazy init) is not what a user wants to look at.
            with maybe_profile(args.profile, trace_dir, run.device, wait=1, warmup=1, active=3, hook=hook):
                result = trainer.fit(run.data.train_loader, run.data.val_loader, stop_after_steps=args.stop_after_steps)
        if args.profile:
            print(f"trace: {trace_dir} (python -m bench.trace {trace_dir})")
        if result.interrupted:
            print(f"stopped after step {trainer.global_step} (epoch {trainer.epoch + 1}, batch {trainer.batch_in_epoch}); "
                  f"resume with --resume auto --out {run_dir.root}")
            print(f"run dir: {run_dir.root}")
            return 0
        metrics = finish(run, run_dir, result, wall0, logger)
    finally:
        logger.close()
    print(f"test_accuracy {metrics['test_accuracy']:.4f}  training_time {metrics['training_time_seconds']:.1f}s  "
          f"samples/s {metrics['samples_per_second'] or 0:.0f}" + ("  (early stopped)" if result.early_stopped else ""))
    print(f"run dir: {run_dir.root}")
    return 0


def cli(argv: Sequence[str] | None = None) -> int:
    return run_cli(main, build_parser(), argv)


if __name__ == "__main__":
    sys.exit(cli())
