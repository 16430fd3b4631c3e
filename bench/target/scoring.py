"""Scoring time to target, by MLPerf Training's rules, and the two checks beside the score. No torch.

- **Score** (MLPerf Training rules, "Benchmark results"): the runs' times to target, the fastest and the
  slowest dropped, the mean of the rest. At most one run may fail to reach the target; it then counts as
  the slowest (and is the one dropped). With fewer than three runs nothing is dropped and every run must
  reach the target.
- **Lucky?** A one-sided one-sample t-test that the runs' metric is beyond the target (modded-nanogpt's
  record rule: p < 0.01), so a cell that meets the target only by chance is flagged. modded-nanogpt tests
  runs of a fixed length; a run here stops at its first crossing, a value selected for being high, so each
  run trains on to one more evaluation off the clock (``measure.confirm``) and that evaluation is tested.
- **Too fast to be true?** Epochs to target significantly fewer than a reference cell's (MLPerf's reference
  convergence points; here a one-sided Welch test, p < 0.01): a guard bug or a data leak looks like that.
"""

from __future__ import annotations

import math
import statistics
import warnings
from collections.abc import Sequence

import numpy as np

from bench.cells.target import Target, TargetResult, TargetRun

P_LUCKY = 0.01  # modded-nanogpt's record threshold
P_FAST = 0.01


def mlperf_mean(times: Sequence[float]) -> float:
    """Mean without the fastest and the slowest (all of them below three); ``inf`` stands for a run
    that did not converge and so is the slowest."""
    ordered = sorted(times)
    kept = ordered[1:-1] if len(ordered) >= 3 else ordered
    return statistics.fmean(kept)


def failures_allowed(n_runs: int) -> int:
    return 1 if n_runs >= 3 else 0


def p_beyond_target(finals: Sequence[float], target: Target) -> float | None:
    """One-sided p-value of 'the mean final metric is beyond the target' (above it for an accuracy, below
    for a loss). None with fewer than two runs; runs that all agree give 0 or 1 without a t-test."""
    if len(finals) < 2:
        return None
    if statistics.pstdev(finals) == 0.0:
        beyond = finals[0] < target.value if target.lower_is_better else finals[0] > target.value
        return 0.0 if beyond else 1.0
    alternative = "less" if target.lower_is_better else "greater"
    with warnings.catch_warnings():  # finals that nearly agree: scipy warns of precision, the p-value stands
        warnings.simplefilter("ignore", RuntimeWarning)
        from scipy import stats as sps  # here: importing scipy.stats costs every cell process most of a second

        return float(sps.ttest_1samp(list(finals), target.value, alternative=alternative).pvalue)


def luck_sample(run: TargetRun) -> float:
    """What the luck check tests of a run: the evaluation after the one that met the target when there is
    one (the first crossing itself is selected for being high: tested, it flags healthy cells), else the last."""
    return run.confirmation if run.confirmation is not None else run.final


def score_runs(target: Target, runs: Sequence[TargetRun]) -> TargetResult:
    """The cell's :class:`TargetResult` from its runs."""
    converged = [r for r in runs if r.reached]
    failed = len(runs) - len(converged)
    p = p_beyond_target([luck_sample(r) for r in runs], target)
    common = {"target": target, "runs": list(runs), "converged": len(converged), "p_beyond_target": p}
    if not converged or failed > failures_allowed(len(runs)):
        note = f"{failed} of {len(runs)} runs did not reach {target.describe()}"
        if len(runs) < 3 and converged:
            note += " (with fewer than 3 runs every run must reach it)"
        return TargetResult(**common, reached=False, status="not reached", note=note)
    times = [r.seconds for r in converged] + [math.inf] * failed
    with_setup = [r.seconds_with_setup for r in converged] + [math.inf] * failed
    scored = sorted(converged, key=lambda r: r.seconds)
    if len(runs) >= 3:
        scored = scored[1:] if failed else scored[1:-1]
    secs = [r.seconds for r in converged]
    lucky = p is not None and p >= P_LUCKY
    return TargetResult(
        **common,
        reached=True,
        status="reached",
        score_s=mlperf_mean(times),
        score_with_setup_s=mlperf_mean(with_setup),
        min_s=min(secs),
        max_s=max(secs),
        cv_pct=100.0 * statistics.stdev(secs) / statistics.fmean(secs) if len(secs) > 1 else None,
        epochs_to_target=statistics.fmean(r.epochs for r in scored),
        samples_to_target=statistics.fmean(r.samples for r in scored),
        lucky=lucky,
        note=(
            f"met by a small margin: the runs' {target.metric} one evaluation after meeting it is not significantly "
            f"beyond {target.value:g} (one-sided t over {len(runs)} runs, p = {p:.3f} >= {P_LUCKY}); more runs "
            "would tell whether it holds"
            if lucky
            else None
        ),
    )


def too_fast(result: TargetResult, reference: TargetResult) -> str | None:
    """A one-line warning when ``result`` reached the target in significantly fewer epochs than the
    reference cell (one-sided Welch t-test on the converged runs' epochs, p < 0.01); None otherwise."""
    mine = [r.epochs for r in result.runs if r.reached]
    ref = [r.epochs for r in reference.runs if r.reached]
    if len(mine) < 2 or len(ref) < 2 or not result.reached:
        return None
    if statistics.pstdev(mine) == 0.0 and statistics.pstdev(ref) == 0.0:
        fewer = mine[0] < ref[0]
        p = 0.0 if fewer else 1.0
    else:
        from scipy import stats as sps

        p = float(sps.ttest_ind(mine, ref, equal_var=False, alternative="less").pvalue)
    if math.isnan(p) or p >= P_FAST:
        return None
    return (
        f"reached the target in {statistics.fmean(mine):.2f} epochs against the reference's "
        f"{statistics.fmean(ref):.2f} (p = {p:.4f}): check for a data leak or a guard bug before trusting it"
    )


def run_times(result: TargetResult) -> list[float]:
    """Each run's time to target, ``inf`` for a run that did not reach it (the slowest, by the rule)."""
    return [r.seconds if r.reached else math.inf for r in result.runs]


def speedup_interval(baseline: TargetResult, other: TargetResult, n: int = 2000, seed: int = 0) -> tuple[float, float]:
    """95% bootstrap interval of baseline score / other score: each cell's runs resampled (with
    replacement) and scored by the same rule; a draw that makes a cell 'not reached' is left out."""
    rng = np.random.default_rng(seed)
    a, b = np.array(run_times(baseline)), np.array(run_times(other))
    draws = []
    for _ in range(n):
        ra, rb = a[rng.integers(0, len(a), len(a))], b[rng.integers(0, len(b), len(b))]
        if np.isinf(ra).sum() > failures_allowed(len(ra)) or np.isinf(rb).sum() > failures_allowed(len(rb)):
            continue
        draws.append(mlperf_mean(list(ra)) / mlperf_mean(list(rb)))
    if not draws:
        return math.nan, math.nan
    return float(np.percentile(draws, 2.5)), float(np.percentile(draws, 97.5))
