"""Page faults per training step under each host-memory policy (``train.malloc``): the benchmark behind
trainer_core/host_memory.py (docs/measurements.md has the figures). Each policy in its own process:
mallopt is process-wide and cannot be undone, and page faults are counted per process.

    python scripts/malloc_faults.py            # prints: policy, median minor faults per step

A step of SimpleMLP (hidden 2048) at batch 8192 allocates 64 MB activation buffers: above the 32 MB cap
of glibc's dynamic mmap threshold, so the default policy mmaps them and faults them in afresh every step.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
STEP = r"""
import resource, statistics, sys
from trainer_core.loading import load_config
from trainer_core.factory import build_run
run = build_run(load_config(None, {
    "device": "cpu", "train.malloc": sys.argv[1], "model.name": "SimpleMLP",
    "model.kwargs": {"input_dim": 2, "hidden_dims": [2048], "output_dim": 2, "dropout": 0.1},
    "data.name": "synthetic_blobs", "data.n_samples": 8192, "data.batch_size": 8192, "data.val_fraction": 0.0,
    "logging.tensorboard": False, "logging.jsonl": False, "logging.progress_bar": "off"}))
x, y = next(iter(run.data.train_loader))
faults = []
for _ in range(14):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    run.trainer.train_step(x, y)
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(statistics.median(faults[4:]))
"""


def main() -> int:
    for policy in ("default", "retain"):
        out = subprocess.run([sys.executable, "-c", STEP, policy], capture_output=True, text=True, check=True,
                             cwd=REPO)  # fmt: skip
        print(f"{policy}: {float(out.stdout.split()[-1]):,.0f} minor page faults per step (median of 10)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
