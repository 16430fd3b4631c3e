"""bench.overhead's arithmetic on fixed readings, computed by hand: per-round ratios, their median, the
alternating order of the sides, and the printed line."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import harness_overhead
from bench.contract import MeasureConfig


def test_ratios_medians_and_order_from_fixed_readings(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    bare = iter([100.0, 200.0, 50.0])  # samples/s of the bare loop, round by round
    runner = iter([90.0, 220.0, 40.0])  # and of the runner: ratios 0.9, 1.1, 0.8
    order: list[str] = []

    def fake_sides(*args: object, **kwargs: object) -> tuple:
        return (lambda: order.append("bare") or next(bare), lambda: order.append("runner") or next(runner))

    monkeypatch.setattr(harness_overhead, "sides", fake_sides)
    (row,) = harness_overhead.compare("cnn", ["fp32"], [32], 3, MeasureConfig(), 2, Path("unused"))
    assert order == ["bare", "runner", "runner", "bare", "bare", "runner"]  # alternating, round by round
    assert row["round_ratios"] == pytest.approx([0.9, 1.1, 0.8])
    assert row["ratio"] == pytest.approx(0.9)  # the median of 0.8, 0.9, 1.1
    assert row["bare"] == 100.0 and row["runner"] == 90.0 and row["unit"] == "samples/s"
    rounds = [ln for ln in capsys.readouterr().out.splitlines() if " round " in ln]
    assert rounds[1] == "cnn fp32 bs32 round 2/3: bare 200, runner 220 samples/s (1.100)"
    assert harness_overhead.row_line(row) == (
        "cnn fp32 bs32: bare 100 samples/s, runner 90 samples/s, runner/bare 0.900 (median of 3 rounds; "
        "range 0.800-1.100)"
    )
