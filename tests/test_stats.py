import math

import pytest

from bench.stats import cell_statistics, percentile, settled, summarize


def test_percentiles_and_summary() -> None:
    values = [float(v) for v in range(1, 11)]
    assert percentile(values, 0) == 1 and percentile(values, 100) == 10
    assert percentile(values, 50) == pytest.approx(5.5)
    s = summarize(values)
    assert s["median"] == 5.5 and s["p10"] == pytest.approx(1.9) and s["p90"] == pytest.approx(9.1)
    assert s["iqr"] == pytest.approx(4.5) and s["n"] == 10
    assert math.isnan(summarize([])["median"])


def test_settled_compares_two_windows() -> None:
    assert not settled([5, 4, 1, 1], window=2, tolerance=0.1)
    assert settled([5, 4, 1.0, 1.02, 1.01, 1.0], window=2, tolerance=0.1)
    assert not settled([1.0], window=2, tolerance=0.1)


def test_cell_statistics_from_known_steps() -> None:
    steps = [{"step_s": 0.1, "data_s": 0.01, "samples": 10.0}] * 4 + [{"step_s": 0.2, "data_s": 0.05, "samples": 10.0}] * 4
    repeats = [0] * 4 + [1] * 4
    st = cell_statistics(steps, repeats, batch_size=10)
    assert st["steps_timed"] == 8
    assert st["step_ms_median"] == pytest.approx(150.0)
    assert st["samples_per_s"] == pytest.approx(10 / 0.15)
    assert st["samples_per_s_repeats"] == pytest.approx([100.0, 50.0])
    assert st["repeat_spread_pct"] == pytest.approx(100 * 50 / 75)
    assert st["data_wait_pct"] == pytest.approx(100 * (0.04 + 0.2) / 1.2)
