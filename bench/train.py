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
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from bench._cli import add_overrides, make_parser, run_cli
from bench.profiling import ProfilerHook, maybe_profile
from bench.training import finish, how_to_extend, start_run
from trainer_core import checkpoint as ck
from trainer_core.config import RunConfig, load_config
from trainer_core.factory import build_run
from trainer_core.hooks import EpochPrinter
from trainer_core.run_dir import METRICS_NAME, RunDir
from trainer_core.trainer import FitResult


def build_parser() -> argparse.ArgumentParser:
    p = make_parser("bench.train", "Train a model from a YAML config.")
    p.add_argument("--config", required=True, help="YAML config file")
    p.add_argument("--seed", type=int, help="override seed")
    p.add_argument("--device", help="override device (auto, cpu, cuda, cuda:N)")
    add_overrides(p, "override a config key, e.g. --set optim.lr=3e-4 (repeatable; beats the YAML)")
    p.add_argument("--out", help="run directory (default runs/<name>-<time>)")
    p.add_argument(
        "--resume",
        metavar="auto|PATH",
        help="resume from PATH, or with 'auto' from <out>/checkpoints/last_model.pt if it exists; "
        "a complete run is reported and left as it is",
    )
    p.add_argument(
        "--continue-early-stopped",
        action="store_true",
        help="with --resume: let a run that early stopping ended train on (its patience starts afresh)",
    )
    p.add_argument(
        "--profile",
        action="store_true",
        help="trace steps 2-4 with torch.profiler into profiles/<run-dir-name>/train/ (see README: Open the traces)",
    )
    p.add_argument(
        "--stop-after-steps",
        type=int,
        metavar="N",
        help="stop after N optimizer steps in this process, saving last_model.pt (a planned pre-emption)",
    )
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

    logger = start_run(run, run_dir, resume_from, done)
    trainer.hooks.append(EpochPrinter())
    hook = ProfilerHook()
    if args.profile:
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
            with maybe_profile(args.profile, trace_dir, run.device, wait=1, warmup=1, active=3, hook=hook):
                result = trainer.fit(run.data.train_loader, run.data.val_loader, stop_after_steps=args.stop_after_steps)
        if args.profile:
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
    print(
        f"test_accuracy {metrics['test_accuracy']:.4f}  training_time {metrics['training_time_seconds']:.1f}s  "
        f"samples/s {metrics['samples_per_second'] or 0:.0f}" + ("  (early stopped)" if result.early_stopped else "")
    )
    print(f"run dir: {run_dir.root}")
    return 0


def cli(argv: Sequence[str] | None = None) -> int:
    return run_cli(main, build_parser(), argv)


if __name__ == "__main__":
    sys.exit(cli())
