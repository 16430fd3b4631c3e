"""Stress loop for the 2-rank DDP run of tests/test_distributed.py's kill test, run uninterrupted, with
CPU hogs beside it (a busy CI machine): how often does a rank die at teardown?

    python scripts/stress_ddp_teardown.py --runs 30 --hogs 2

Each run is ``python -m bench.train`` (SimpleMLP on blobs, batch 8, 3 epochs, a checkpoint every 7 steps,
2 ranks over gloo) with faulthandler on and C++ stack traces shown; a failed run's stderr is kept under
--out. docs/measurements.md has the figures.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
CONFIG = {
    "name": "stress",
    "device": "cpu",
    "model": {"name": "SimpleMLP", "kwargs": {"input_dim": 2, "hidden_dims": [16], "output_dim": 2, "dropout": 0.0}},
    "data": {"name": "synthetic_blobs", "n_samples": 4096, "n_test_samples": 64, "batch_size": 8, "val_fraction": 0.25},
    "optim": {"lr": 0.01},
    "train": {"epochs": 3, "strategy": "ddp", "world_size": 2},
    "checkpoint": {"every_n_steps": 7},
    "logging": {"tensorboard": False, "jsonl": False, "progress_bar": "off"},
}


def hog() -> None:
    while True:
        pass


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=20)
    p.add_argument("--hogs", type=int, default=2, help="busy-looping processes beside the runs")
    p.add_argument("--out", default=None, help="folder for the failed runs' stderr (default: a temp folder)")
    args = p.parse_args()
    out = Path(args.out or tempfile.mkdtemp(prefix="trainbench-stress-"))
    out.mkdir(parents=True, exist_ok=True)
    cfg = out / "stress.yaml"
    cfg.write_text(yaml.safe_dump(CONFIG))
    hogs = [multiprocessing.Process(target=hog, daemon=True) for _ in range(args.hogs)]
    for h in hogs:
        h.start()
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONFAULTHANDLER": "1", "TORCH_SHOW_CPP_STACKTRACES": "1"}
    failed = 0
    try:
        for i in range(args.runs):
            t0 = time.monotonic()
            cmd = [sys.executable, "-m", "bench.train", "--config", str(cfg), "--out", str(out / f"run{i}")]
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
            ok = proc.returncode == 0
            failed += not ok
            if not ok:
                (out / f"run{i}.stderr").write_text(proc.stderr)
            print(f"run {i + 1}: {'ok' if ok else f'FAILED (exit {proc.returncode})'} {time.monotonic() - t0:.1f} s",
                  flush=True)  # fmt: skip
    finally:
        for h in hogs:
            h.terminate()
    print(f"{failed} of {args.runs} runs failed; stderr of each under {out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
