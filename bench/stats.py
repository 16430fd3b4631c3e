"""Statistics of timing samples. No formatting here (see bench/report.py)."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from typing import Any


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile, q in [0, 100], of already sorted values."""
    if not sorted_values:
        return math.nan
    pos = (len(sorted_values) - 1) * q / 100.0
    lo, hi = math.floor(pos), math.ceil(pos)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def summarize(values: Sequence[float]) -> dict[str, float]:
    """median, p10, p90, IQR, mean, stdev, min, max, n of a sample."""
    s = sorted(values)
    if not s:
        return {k: math.nan for k in ("median", "p10", "p90", "iqr", "mean", "stdev", "min", "max")} | {"n": 0}
    return {
        "median": statistics.median(s),
        "p10": percentile(s, 10),
        "p90": percentile(s, 90),
        "iqr": percentile(s, 75) - percentile(s, 25),
        "mean": statistics.fmean(s),
        "stdev": statistics.stdev(s) if len(s) > 1 else 0.0,
        "min": s[0],
        "max": s[-1],
        "n": len(s),
    }


def settled(times: Sequence[float], window: int, tolerance: float) -> bool:
    """True when the medians of the last two windows differ by at most ``tolerance`` (relative)."""
    if len(times) < 2 * window:
        return False
    a = statistics.median(times[-2 * window : -window])
    b = statistics.median(times[-window:])
    return abs(a - b) <= tolerance * max(a, b)


def cell_statistics(steps: list[dict[str, float]], repeat_of_step: list[int], batch_size: int) -> dict[str, Any]:
    """Throughput figures of a cell from per-step records (keys: step_s, data_s, h2d_s, ...)."""
    step_s = [s["step_s"] for s in steps]
    st = summarize(step_s)
    total = sum(step_s)
    per_repeat: dict[int, list[float]] = {}
    for rec, r in zip(steps, repeat_of_step):
        per_repeat.setdefault(r, []).append(rec["step_s"])
    # Repeat throughput from its own total time: what a user would see over that stretch.
    repeat_sps = [batch_size * len(v) / sum(v) for _, v in sorted(per_repeat.items())]
    out: dict[str, Any] = {
        "steps_timed": len(step_s),
        "step_ms_median": st["median"] * 1e3,
        "step_ms_p10": st["p10"] * 1e3,
        "step_ms_p90": st["p90"] * 1e3,
        "step_ms_iqr": st["iqr"] * 1e3,
        "samples_per_s": batch_size / st["median"] if st["median"] > 0 else math.nan,
        "samples_per_s_repeats": repeat_sps,
        "repeat_spread_pct": 100.0 * (max(repeat_sps) - min(repeat_sps)) / statistics.median(repeat_sps) if repeat_sps else math.nan,
        "data_wait_pct": 100.0 * sum(s["data_s"] for s in steps) / total if total > 0 else math.nan,
        "data_wait_ms_median": summarize([s["data_s"] for s in steps])["median"] * 1e3,
    }
    if any("h2d_s" in s for s in steps):
        out["h2d_ms_median"] = summarize([s.get("h2d_s", 0.0) for s in steps])["median"] * 1e3
    return out
