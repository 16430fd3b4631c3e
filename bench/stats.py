"""Statistics of timing samples: every figure the harness derives from raw samples is computed here
(numbers in, numbers out; numpy only, no formatting: see bench/report.py)."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from typing import Any

import numpy as np


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
        return dict.fromkeys(("median", "p10", "p90", "iqr", "mean", "stdev", "min", "max"), math.nan) | {"n": 0}
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


def cell_statistics(
    steps: list[dict[str, float]],
    repeat_of_step: list[int],
    batch_size: int,
    items_per_step: float | None = None,
    unit: str = "samples",
) -> dict[str, Any]:
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
        "items_per_step": float(items_per_step or batch_size),
        "throughput": (items_per_step or batch_size) / st["median"] if st["median"] > 0 else math.nan,
        "throughput_unit": f"{unit}/s",
        "samples_per_s_repeats": repeat_sps,
        "repeat_spread_pct": spread_pct(repeat_sps) if repeat_sps else math.nan,
        "data_wait_pct": 100.0 * sum(s["data_s"] for s in steps) / total if total > 0 else math.nan,
        "data_wait_ms_median": summarize([s["data_s"] for s in steps])["median"] * 1e3,
    }
    if any("h2d_s" in s for s in steps):
        out["h2d_ms_median"] = summarize([s.get("h2d_s", 0.0) for s in steps])["median"] * 1e3
    return out


def spread_pct(rates: Sequence[float]) -> float:
    """(max - min) / median of repeated throughput readings, %: how much the repeats disagree."""
    return 100.0 * (max(rates) - min(rates)) / statistics.median(rates) if len(rates) > 1 else 0.0


def geometric_mean(values: Sequence[float]) -> float:
    """Geometric mean of positive readings (0 when there are none): how readings of one configuration
    are pooled (a ratio between two pooled values is then the mean of the log-ratios)."""
    return math.exp(sum(math.log(v) for v in values) / len(values)) if values else 0.0


def round_ratios(a_rounds: Sequence[Sequence[float]], b_rounds: Sequence[Sequence[float]]) -> list[float]:
    """Per paired round, median step of A / median step of B (the throughput ratio B/A of that round)."""
    return [float(np.median(a) / np.median(b)) for a, b in zip(a_rounds, b_rounds)]


def bootstrap_ratio_readings(
    a_readings: Sequence[Sequence[float]], b_readings: Sequence[Sequence[float]], n: int = 2000, seed: int = 0
) -> tuple[float, float, float]:
    """Throughput ratio B/A = median step A / median step B of readings that are *not* paired (two runs,
    each with one or more readings of a configuration: ``bench.compare``), with a 95% two-level bootstrap
    interval: A's and B's readings resampled independently, then steps within each. The interval then
    includes how much readings of one configuration disagree, which resampling pooled steps cannot see.
    (Paired rounds have their own estimator: :func:`bootstrap_paired_ratios`.)"""
    if not a_readings or not b_readings:
        raise ValueError("need at least one reading of A and of B")
    a = [np.asarray(r, dtype=float) for r in a_readings]
    b = [np.asarray(r, dtype=float) for r in b_readings]
    rng = np.random.default_rng(seed)
    ratios = np.empty(n)
    for i in range(n):
        ra = np.concatenate([a[k][rng.integers(0, len(a[k]), size=len(a[k]))] for k in rng.integers(0, len(a), len(a))])
        rb = np.concatenate([b[k][rng.integers(0, len(b[k]), size=len(b[k]))] for k in rng.integers(0, len(b), len(b))])
        ratios[i] = np.median(ra) / np.median(rb)
    point = float(np.median(np.concatenate(a)) / np.median(np.concatenate(b)))
    return point, float(np.percentile(ratios, 2.5)), float(np.percentile(ratios, 97.5))


def step_change(values: Sequence[float], window: int = 5, min_effect_pct: float = 5.0) -> dict[str, Any] | None:
    """Is the latest of a throughput series (higher is better, oldest first) a regression against the
    runs before it? The baseline is the median of up to ``window`` previous readings; the threshold is
    the larger of ``min_effect_pct`` and twice their relative median absolute deviation (their own
    noise), so a noisy cell needs a larger drop. None when fewer than 3 earlier readings exist."""
    if len(values) < 4:
        return None
    prev = np.asarray(values[-1 - window : -1], dtype=float)
    base = float(np.median(prev))
    mad_pct = 100.0 * float(np.median(np.abs(prev - base))) / base if base > 0 else math.inf
    threshold = max(min_effect_pct, 2.0 * mad_pct)
    change = 100.0 * (values[-1] / base - 1.0) if base > 0 else math.nan
    return {
        "latest": float(values[-1]),
        "baseline": base,
        "change_pct": change,
        "threshold_pct": threshold,
        "regression": bool(change < -threshold),
        "improvement": bool(change > threshold),
    }


def step_change_lower_better(
    values: Sequence[float], window: int = 5, min_effect_pct: float = 5.0
) -> dict[str, Any] | None:
    """:func:`step_change` for a series where lower is better (memory): judged on the reciprocals, reported in
    the series' own values (change_pct positive: the latest needs more)."""
    if any(v <= 0 for v in values):
        return None
    inverse = step_change([1.0 / v for v in values], window, min_effect_pct)
    if inverse is None:
        return None
    latest, base = 1.0 / inverse["latest"], 1.0 / inverse["baseline"]
    return {**inverse, "latest": latest, "baseline": base, "change_pct": 100.0 * (latest / base - 1.0)}


def trimmed_mean(values: np.ndarray, trim: float, axis: int = -1) -> np.ndarray:
    """Mean of what is left after dropping the ``trim`` share of values at each end (along ``axis``)."""
    v = np.sort(np.asarray(values, dtype=float), axis=axis)
    cut = int(trim * v.shape[axis])
    return np.take(v, np.arange(cut, v.shape[axis] - cut), axis=axis).mean(axis=axis)


def t_quantile(p: float, dof: int) -> float:
    """Student's t quantile: exact closed forms for 1 and 2 degrees of freedom (two and three A/B rounds),
    else the Cornish-Fisher expansion around the normal one (within 1% of the exact value from 3 degrees
    of freedom up, 0.1% from 6); no scipy needed."""
    if dof == 1:
        return math.tan(math.pi * (p - 0.5))
    if dof == 2:
        return (2 * p - 1) / math.sqrt(2 * p * (1 - p))
    z = statistics.NormalDist().inv_cdf(p)
    v = float(dof)
    return (
        z
        + (z**3 + z) / (4 * v)
        + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * v**2)
        + (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / (384 * v**3)
    )


def expanded_percentiles(k: int, level: float = 0.95) -> tuple[float, float]:
    """Percentiles of a bootstrap distribution that give a ``level`` interval from ``k`` resampled
    units: Hesterberg's expanded percentile interval, which widens the plain percentile interval by
    sqrt(k/(k-1)) * t/z so that few units (a handful of A/B rounds) do not give too narrow a one."""
    if k < 2:
        return 100 * (1 - level) / 2, 100 * (1 + level) / 2
    alpha = (1 - level) / 2
    z_adj = math.sqrt(k / (k - 1)) * t_quantile(1 - alpha, max(k - 1, 1))
    tail = 100 * statistics.NormalDist().cdf(-z_adj)
    return tail, 100 - tail


def trimmed_t_interval(values: Sequence[float], trim: float, level: float = 0.95) -> tuple[float, float] | None:
    """Yuen's interval for the ``trim``-trimmed mean: the winsorized standard deviation over the share of
    values kept, Student's t with (kept - 1) degrees of freedom. None with fewer than two values kept."""
    v = np.sort(np.asarray(values, dtype=float))
    n = len(v)
    cut = int(trim * n)
    kept = n - 2 * cut
    if kept < 2:
        return None
    center = float(v[cut : n - cut].mean())
    winsorized = np.clip(v, v[cut], v[n - cut - 1])
    se = float(np.std(winsorized, ddof=1)) * math.sqrt(n) / kept
    half = t_quantile(1 - (1 - level) / 2, kept - 1) * se
    return center - half, center + half


def bootstrap_paired_ratios(
    a_rounds: Sequence[Sequence[float]],
    b_rounds: Sequence[Sequence[float]],
    n: int = 2000,
    seed: int = 0,
    trim: float = 0.2,
) -> tuple[float, float, float, list[float]]:
    """Interleaved A/B: throughput ratio B/A from the per-round ratios (median step of A / median step
    of B within round i, measured side by side), pooled as a ``trim``-trimmed mean of their logs, with
    a 95% bootstrap interval that resamples rounds, then steps within each reading (expanded for the
    few rounds an A/B has: :func:`expanded_percentiles`, and never narrower than Yuen's t interval of the
    trimmed mean, :func:`trimmed_t_interval`). Pairing is what
    makes drift cancel: a machine that slows down slows both readings of a round, so their ratio holds
    still while the readings move. Trimming is for the rounds a burst of other load hit one reading
    of and not the other (on a shared machine, a reading at twice its step time): they are dropped
    from both ends instead of dragging the mean. Returns (ratio, low, high, per-round ratios)."""
    if len(a_rounds) != len(b_rounds) or not a_rounds:
        raise ValueError("need the same, non-zero number of rounds for A and B")
    rng = np.random.default_rng(seed)
    k = len(a_rounds)
    log_boot = np.empty((k, n))  # per round: log ratio of step-resampled medians, n draws
    for i, (a, b) in enumerate(zip(a_rounds, b_rounds)):
        a_arr, b_arr = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
        ma = np.median(a_arr[rng.integers(0, len(a_arr), size=(n, len(a_arr)))], axis=1)
        mb = np.median(b_arr[rng.integers(0, len(b_arr), size=(n, len(b_arr)))], axis=1)
        log_boot[i] = np.log(ma / mb)
    picks = rng.integers(0, k, size=(n, k))  # rounds resampled with replacement, per draw
    draws = np.exp(trimmed_mean(log_boot[picks, np.arange(n)[:, None]], trim, axis=1))
    per_round = round_ratios(a_rounds, b_rounds)
    point = float(np.exp(trimmed_mean(np.log(per_round), trim)))
    lo_pct, hi_pct = expanded_percentiles(k)
    lo, hi = float(np.percentile(draws, lo_pct)), float(np.percentile(draws, hi_pct))
    # A bootstrap cannot reach past the rounds it resamples: from three rounds its interval is about
    # their range, which holds the truth three times in four, not 19 in 20. Yuen's t interval of the
    # same trimmed mean widens with few rounds as it should; the wider of the two is reported.
    yuen = trimmed_t_interval(np.log(per_round), trim)
    if yuen is not None:
        lo, hi = min(lo, math.exp(yuen[0])), max(hi, math.exp(yuen[1]))
    return point, lo, hi, per_round
