"""bench.train's work apart from parsing: one run in this process (build, resume, train, finish), the
ranks of a data-parallel run started as torchrun would, how a run ends (test evaluation, metrics.json,
learning curves, the earlier finish kept aside) and what to tell a user whose run is already complete."""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.measure.profiling import ProfilerHook, maybe_profile
from trainer_core import checkpoint as ck
from trainer_core import distributed
from trainer_core.config import RunConfig
from trainer_core.errors import ConfigError
from trainer_core.factory import Run, build_run
from trainer_core.hooks import EpochPrinter
from trainer_core.precision import resolve_device
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
        "items_per_second": trainer_counters.get("items_seen", 0) / train_s if train_s > 0 else None,
        "skipped_steps": int(trainer_counters["skipped_steps"]),
        # the workload's other metrics (a language model's perplexity)
        **{f"test_{k}": v for k, v in test.items() if k not in ("loss", "accuracy", "samples")},
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
    metrics["throughput_unit"] = f"{trainer.workload.unit}/s"
    metrics.update(
        early_stopped=result.early_stopped,
        end_reason=trainer.end_reason,
        global_step=trainer.global_step,
        precision=trainer.policy.metadata(),
        optim=run.config.scaled_optim().to_dict(),
        data=run.data.meta,
        finished=utc_timestamp(),
    )
    run_dir.archive_finals()
    (run_dir.root / METRICS_NAME).write_text(json.dumps(metrics, indent=2, default=str) + "\n")
    from bench.report.plots import plot_learning_curves  # here: matplotlib costs every rank's start half a second

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
        optim=run.config.scaled_optim().to_dict(),
        data=run.data.meta,
        env=environment_info(),
    )
    if run.config.optim.lr_scaling != "none":
        print(f"note: optim.lr_scaling {run.config.scaled_optim().how}", file=sys.stderr)
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


def final_line(metrics: dict[str, Any]) -> str:
    """bench.train's last figures: test accuracy (and perplexity for a language model), time, throughput."""
    extra = f"  test_perplexity {metrics['test_perplexity']:.3f}" if "test_perplexity" in metrics else ""
    unit = metrics.get("throughput_unit", "samples/s")
    rate = metrics.get("items_per_second") if unit != "samples/s" else metrics.get("samples_per_second")
    return (
        f"test_accuracy {metrics['test_accuracy']:.4f}{extra}  test_loss {metrics['test_loss']:.4f}  "
        f"training_time {metrics['training_time_seconds']:.1f}s  {unit} {rate or 0:.0f}"
    )


@dataclass(frozen=True)
class TrainRequest:
    """What bench.train was asked to do, besides the config."""

    run_dir: Path
    resume: str | None = None  # 'auto' or a checkpoint path
    continue_early_stopped: bool = False
    profile: bool = False
    stop_after_steps: int | None = None


def launch_ranks(config: RunConfig, argv: Sequence[str]) -> int:
    """Start ``train.world_size`` ranks of ``python -m bench.train ARGV`` through the elastic launcher,
    as torchrun would: the exit code of the first rank that failed, else 0."""
    reason = distributed.fsdp_skip_reason(
        config.train.strategy, resolve_device(config.device), config.model.memory_format
    )
    if reason:
        raise ConfigError(f"train.strategy: {reason}")
    try:
        distributed.launch(config, sys.executable, "-m", "bench.train", *argv)
    except distributed.RanksFailed as e:
        tail = "".join(f"\n  {line}" for line in e.last_lines)
        print(f"bench.train: rank {e.rank} of {config.train.world_size} failed first ({e.how})"
              + (f"; its last lines on stderr:{tail}" if tail else ""), file=sys.stderr)  # fmt: skip
        return e.exitcode if e.exitcode > 0 else 128 - e.exitcode
    return 0


def train(config: RunConfig, request: TrainRequest) -> int:
    """bench.train's run in this process (one rank of several, or the only one): build, resume, train,
    finish; rank 0 alone prints and writes."""
    wall0 = time.perf_counter()
    main_rank = distributed.current().is_main
    run_dir = RunDir(request.run_dir, config.checkpoint.dir)
    resume_from = run_dir.resume_point(request.resume)
    # Build everything (device, data, model, precision) and read the checkpoint before writing anything,
    # so a failed start, or a run that is already complete, leaves the run dir untouched.
    run = build_run(config, checkpoint_dir=run_dir.checkpoints)
    trainer = run.trainer
    done = None
    if resume_from is not None:
        trainer.load_checkpoint(resume_from)
        if request.continue_early_stopped:
            trainer.reopen()
        done = trainer.completion()
        if done and (run_dir.root / METRICS_NAME).exists():
            if main_rank:
                print(f"run {run_dir.root} is complete ({done}); nothing was changed. {how_to_extend(trainer)}.")
            return 0
    if not main_rank:  # the other ranks train in step with rank 0 and write nothing
        result = trainer.fit(run.data.train_loader, run.data.val_loader, stop_after_steps=request.stop_after_steps)
        if not result.interrupted and distributed.is_sharded(trainer.model):
            trainer.evaluate(run.data.test_loader)  # FSDP: rank 0's test evaluation gathers every rank's shards
        return 0
    return train_and_report(run, run_dir, request, resume_from, done, wall0)


def train_and_report(
    run: Run, run_dir: RunDir, request: TrainRequest, resume_from: Path | None, done: str | None, wall0: float
) -> int:
    """Rank 0's (or the only process's) part: the run's outputs around the training."""
    trainer = run.trainer
    logger = start_run(run, run_dir, resume_from, done)
    trainer.hooks.append(EpochPrinter())
    hook = ProfilerHook()
    if request.profile:
        trainer.hooks.append(hook)
    trace_dir = Path("profiles") / run_dir.root.name / "train"
    try:
        if done:  # complete, but killed before its final outputs were written: write them, train nothing
            result = FitResult(
                trainer.history,
                False,
                trainer.end_reason == ck.END_EARLY_STOPPED,
                trainer.global_step,
                trainer.end_reason,
            )
        else:
            # wait=1: the first step (allocations, lazy init) is not what a user wants to look at.
            with maybe_profile(request.profile, trace_dir, run.device, wait=1, warmup=1, active=3, hook=hook):
                result = trainer.fit(
                    run.data.train_loader, run.data.val_loader, stop_after_steps=request.stop_after_steps
                )
        if request.profile:
            print(f"trace: {trace_dir} (python -m bench.trace {trace_dir})")
        if result.interrupted:
            print(
                f"stopped after step {trainer.global_step} "
                f"(epoch {trainer.epoch + 1}, batch {trainer.batch_in_epoch}); "
                f"resume with --resume auto --out {run_dir.root}"
            )
            print(f"run dir: {run_dir.root}")
            return 0
        metrics = finish(run, run_dir, result, wall0, logger)
    finally:
        logger.close()
    print(final_line(metrics) + ("  (early stopped)" if result.early_stopped else ""))
    print(f"run dir: {run_dir.root}")
    return 0
