"""``python -m bench.train --config FILE``: train, evaluate every epoch, checkpoint, report.

Run dir layout (``--out``, default ``runs/<name>-<UTC time>``)::

    config.yaml                 resolved config (after --set / flags)
    checkpoints/best_model.pt   best validation loss
    checkpoints/last_model.pt   latest position (resume point)
    metrics.json                final figures
    learning_curves.png         train/val loss and val accuracy per epoch
    log.jsonl                   JSON-lines log (same scalars as TensorBoard)
    tensorboard/                TensorBoard events
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

import yaml

from bench._cli import make_parser, run_cli
from bench.plots import plot_learning_curves
from bench.profiling import ProfilerHook, maybe_profile
from trainer_core import checkpoint as ck
from trainer_core.config import RunConfig, load_config
from trainer_core.errors import ConfigError
from trainer_core.factory import build_run
from trainer_core.provenance import environment_info, utc_timestamp
from trainer_core.run_logger import RunLogger


def build_parser() -> argparse.ArgumentParser:
    p = make_parser("bench.train", "Train a model from a YAML config.")
    p.add_argument("--config", required=True, help="YAML config file")
    p.add_argument("--seed", type=int, help="override seed")
    p.add_argument("--device", help="override device (auto, cpu, cuda, cuda:N)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set optim.lr=3e-4 (repeatable; beats the YAML)")
    p.add_argument("--out", help="run directory (default runs/<name>-<time>)")
    p.add_argument("--resume", metavar="auto|PATH",
                   help="resume from PATH, or with 'auto' from <out>/checkpoints/last_model.pt if it exists")
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


def resolve_resume(args: argparse.Namespace, ckpt_dir: Path) -> Path | None:
    """Which checkpoint to resume from; refuses to start fresh over an existing run's checkpoints."""
    last = ckpt_dir / ck.LAST_NAME
    if args.resume is None:
        if last.exists() or (ckpt_dir / ck.BEST_NAME).exists():
            raise ConfigError(f"--out {ckpt_dir.parent}: already holds checkpoints; pass --resume auto to continue it, or choose another --out")
        return None
    if args.resume == "auto":
        return last if last.exists() else None
    return Path(args.resume)


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


def main(args: argparse.Namespace) -> int:
    wall0 = time.perf_counter()
    config = resolve_config(args)
    run_dir = resolve_run_dir(args, config)
    ckpt_dir = run_dir / config.checkpoint.dir
    resume_from = resolve_resume(args, ckpt_dir)
    # Build everything (device, data, model, precision) and read the checkpoint before writing anything,
    # so a failed start leaves an existing run dir untouched.
    run = build_run(config, checkpoint_dir=ckpt_dir)
    trainer = run.trainer
    if resume_from is not None:
        trainer.load_checkpoint(resume_from)

    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
    logger = RunLogger(run_dir, config.logging)
    trainer.logger = logger
    logger.event("start", resumed_from=str(resume_from) if resume_from else None, step=trainer.global_step,
                 epoch=trainer.epoch, precision=trainer.policy.metadata(), data=run.data.meta, env=environment_info())
    for note in trainer.policy.notes + ([run.data.meta["pin_memory_note"]] if "pin_memory_note" in run.data.meta else []):
        print(f"note: {note}", file=sys.stderr)
    hook = ProfilerHook()
    if args.profile:
        trainer.hooks.append(hook)
    trace_dir = Path("profiles") / run_dir.name / "train"
    try:
        # wait=1: the first step (allocations, lazy init) is not what a user wants to look at.
        with maybe_profile(args.profile, trace_dir, run.device, wait=1, warmup=1, active=3, hook=hook):
            result = trainer.fit(run.data.train_loader, run.data.val_loader, stop_after_steps=args.stop_after_steps)
        if args.profile:
            print(f"trace: {trace_dir} (python -m bench.trace {trace_dir})")
        if result.interrupted:
            print(f"stopped after step {trainer.global_step} (epoch {trainer.epoch + 1}, batch {trainer.batch_in_epoch}); "
                  f"resume with --resume auto --out {run_dir}")
            print(f"run dir: {run_dir}")
            return 0
        test = trainer.evaluate(run.data.test_loader)
        metrics = final_metrics(result.history, trainer.counters, test, trainer.best_epoch, time.perf_counter() - wall0)
        metrics.update(early_stopped=result.early_stopped, global_step=trainer.global_step,
                       precision=trainer.policy.metadata(), data=run.data.meta, finished=utc_timestamp())
        (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, default=str) + "\n")
        plot_learning_curves(result.history, run_dir / "learning_curves.png", title=config.name)
        logger.event("end", **{k: v for k, v in metrics.items() if isinstance(v, (int, float, str)) or v is None})
    finally:
        logger.close()
    for h in result.history:
        print(f"epoch {h['epoch']:>3}  train_loss {h['train_loss']:.4f}  val_loss {h['val_loss']:.4f}  "
              f"val_acc {h['val_accuracy']:.4f}  lr {h['lr']:.2e}")
    print(f"test_accuracy {metrics['test_accuracy']:.4f}  training_time {metrics['training_time_seconds']:.1f}s  "
          f"samples/s {metrics['samples_per_second'] or 0:.0f}" + ("  (early stopped)" if result.early_stopped else ""))
    print(f"run dir: {run_dir}")
    return 0


def cli(argv: Sequence[str] | None = None) -> int:
    return run_cli(main, build_parser(), argv)


if __name__ == "__main__":
    sys.exit(cli())
