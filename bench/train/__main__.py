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
from bench.train.training import TrainRequest, launch_ranks, train
from trainer_core import distributed
from trainer_core.config import RunConfig
from trainer_core.loading import load_config
from trainer_core.precision import resolve_device


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


def main(args: argparse.Namespace, argv: Sequence[str] = ()) -> int:
    config = distributed.adopt_launch_environment(resolve_config(args))
    request = TrainRequest(
        resolve_run_dir(args, config), args.resume, args.continue_early_stopped, args.profile, args.stop_after_steps
    )
    if config.train.strategy != "single" and distributed.env_info() is None:
        # The ranks re-run this command; all of them must agree on the run folder.
        return launch_ranks(config, [*argv, *([] if args.out else ["--out", str(request.run_dir)])])
    if distributed.env_info() is None:
        return train(config, request)
    distributed.init(config, resolve_device(config.device))
    try:
        code = train(config, request)
        distributed.barrier()  # no rank tears its process group down while another is still in a collective
    finally:
        distributed.destroy()
    return distributed.exit_rank(code)  # ends the process: see exit_rank


def cli(argv: Sequence[str] | None = None) -> int:
    given = list(sys.argv[1:] if argv is None else argv)  # the ranks of a data-parallel run get the same
    return run_cli(lambda args: main(args, given), build_parser(), argv)


if __name__ == "__main__":
    sys.exit(cli())
