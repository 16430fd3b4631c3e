"""Progress output: the epoch progress record, and every long-running CLI streaming its output to a pipe."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO

from trainer_core.progress import EpochProgress

TABULAR = str(REPO / "configs" / "tabular_mlp.yaml")
SMOKE = str(REPO / "configs" / "smoke_matrix.yaml")


class FakeClock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_off_a_tty_a_line_every_interval_with_rate_and_eta(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False)
    out, clock = io.StringIO(), FakeClock()
    bar = EpochProgress("auto", 10.0, epoch=2, epochs=5, total=100, initial=20, out=out, clock=clock)
    for step in range(21, 41):  # 20 steps of 64 samples, one per second
        clock.t += 1.0
        bar.update(step, 64)
    lines = out.getvalue().splitlines()
    assert len(lines) == 2  # at 10 s and 20 s
    assert lines[-1] == "epoch 2/5  step 40  batch 40/100 (40%)  64 samples/s  epoch ETA 60 s"
    quiet = io.StringIO()
    for mode, every in (("off", 10.0), ("auto", 0.0)):
        other = EpochProgress(mode, every, 1, 1, 10, 0, out=quiet, clock=clock)
        clock.t += 100
        other.update(1, 1)
    assert quiet.getvalue() == ""


def _stream(cmd: list[str], final: Path | str, cwd: Path) -> tuple[str, list[str]]:
    """Start a CLI with stdout to a pipe; return its first line and all its lines. The first line must
    arrive before the file the command writes last exists: block-buffered output only reaches the
    pipe at exit, after that file."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-m", *cmd], cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    try:
        first = proc.stdout.readline()
        finished_before = any(Path(cwd).glob(str(final)))
        rest = proc.stdout.read().splitlines()
        assert proc.wait(timeout=300) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert first.strip(), "no output at all"
    assert not finished_before, f"the first line only arrived after {final} was written: {first!r}"
    return first, [first.rstrip("\n"), *rest]


@pytest.mark.slow
def test_train_streams_epoch_lines_and_progress_records(tmp_path: Path) -> None:
    _, lines = _stream(
        [
            "bench.train",
            "--config",
            TABULAR,
            "--out",
            "run",
            "--set",
            "train.early_stopping.patience=null",
            "--set",
            "train.epochs=3",
            "--set",
            "logging.progress_every_s=0.000001",
        ],
        "run/metrics.json",
        tmp_path,
    )
    assert [ln.split()[1] for ln in lines if ln.startswith("epoch ") and "train_loss" in ln] == ["1", "2", "3"]
    assert any(ln.startswith("epoch 1/3  step ") and "samples/s" in ln for ln in lines)  # timed records off a TTY
    assert lines[-1] == "run dir: run"


@pytest.mark.slow
def test_run_streams_a_line_per_cell(tmp_path: Path) -> None:
    first, lines = _stream(
        [
            "bench.run",
            "--matrix",
            SMOKE,
            "--out",
            "res",
            "--profiles",
            "prof",
            "--filter",
            "device=cpu",
            "--filter",
            "data.pin_memory=false",
            "--filter",
            "data.batch_size=32",
        ],
        "res/*/results.csv",
        tmp_path,
    )
    assert "2 cells to measure" in first
    assert sum(ln.startswith("[") for ln in lines) == 2


@pytest.mark.slow
def test_overhead_streams_rounds_and_reports_a_ratio(tmp_path: Path) -> None:
    # The README's harness-overhead claim, end to end on a tiny setting: both sides measured, a ratio reported.
    _, lines = _stream(
        [
            "bench.overhead",
            "--precision",
            "fp32",
            "--batch-size",
            "32",
            "--rounds",
            "2",
            "--min-time-s",
            "0.05",
            "--out",
            ".",
        ],
        "overhead-*.json",
        tmp_path,
    )
    assert sum(" round " in ln for ln in lines) == 2
    (result,) = tmp_path.glob("overhead-*.json")
    row = json.loads(result.read_text())["rows"][0]
    assert row["bare"] > 0 and row["runner"] > 0 and len(row["round_ratios"]) == 2 and row["unit"] == "samples/s"
    assert min(row["round_ratios"]) <= row["ratio"] <= max(row["round_ratios"])  # arithmetic: test_harness_overhead
    assert any(ln.startswith("lowest runner/bare ratio: ") for ln in lines)
