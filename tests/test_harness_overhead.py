"""bench.overhead's arithmetic on fixed readings, computed by hand: per-round ratios, the paired ratio (the
engine's: with three rounds, none trimmed, their geometric mean), the rotating order of the sides, and the
printed line."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from bench.cells.contract import MeasureConfig
from bench.overhead import harness as harness_overhead
from bench.paired.engine import Reading


def test_ratios_and_order_from_fixed_readings(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    bare = iter([100.0, 200.0, 80.0])  # samples/s of the bare loop, round by round (no round 3x another: no stall)
    runner = iter([90.0, 220.0, 64.0])  # and of the runner: ratios 0.9, 1.1, 0.8
    order: list[str] = []

    def steady(rate: float) -> Reading:  # five steps of 32 samples at ``rate`` samples/s
        return Reading([32.0 / rate] * 5, 32.0, "samples/s")

    def fake_sides(*args: object, **kwargs: object) -> tuple:
        return (
            lambda: order.append("bare") or steady(next(bare)),
            lambda: order.append("runner") or steady(next(runner)),
        )

    monkeypatch.setattr(harness_overhead, "sides", fake_sides)
    (row,) = harness_overhead.compare("cnn", ["fp32"], [32], 3, MeasureConfig(), 2, Path("unused"))
    assert order == ["runner", "bare", "bare", "runner", "runner", "bare"]  # alternating, round by round
    assert row["round_ratios"] == pytest.approx([0.9, 1.1, 0.8])
    assert row["ratio"] == pytest.approx(math.exp((math.log(0.9) + math.log(1.1) + math.log(0.8)) / 3))
    assert row["ratio_median"] == pytest.approx(0.9)  # the figure bench.overhead gave before: their median
    assert row["ci_low"] <= row["ratio"] <= row["ci_high"] and row["verdict"] == "no change"
    assert row["bare"] == pytest.approx(100.0) and row["runner"] == pytest.approx(90.0) and row["unit"] == "samples/s"
    rounds = [ln for ln in capsys.readouterr().out.splitlines() if " round " in ln]
    assert rounds[1] == "cnn fp32 bs32 round 2/3: bare 200, runner 220 samples/s (1.100)"
    line = harness_overhead.row_line(row)
    assert line.startswith(f"cnn fp32 bs32: bare 100 samples/s, runner 90 samples/s, runner/bare {row['ratio']:.3f} ")
    assert line.endswith("no change; 3 paired rounds, range 0.800-1.100)")
