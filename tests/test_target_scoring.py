"""MLPerf-style scoring of time to target and the checks beside it, on fixed inputs worked out by hand."""

from __future__ import annotations

import math

import pytest

from bench.cells.target import Target, TargetRun
from bench.target.scoring import mlperf_mean, p_beyond_target, score_runs, speedup_interval, too_fast

ACC = Target(metric="val_accuracy", value=0.9)
LOSS = Target(metric="val_loss", value=1.9)


def run(
    seconds: float,
    reached: bool = True,
    epochs: float = 3.0,
    final: float = 0.91,
    seed: int = 0,
    confirmation: float | None = None,
) -> TargetRun:
    return TargetRun(seed=seed, reached=reached, seconds=seconds, setup_s=1.0, compile_s=None, epochs=epochs,
                     steps=int(epochs * 100), samples=int(epochs * 6400), final=final,
                     confirmation=confirmation)  # fmt: skip


def test_the_fastest_and_the_slowest_are_dropped() -> None:
    assert mlperf_mean([5.0, 1.0, 3.0, 2.0, 4.0]) == 3.0
    assert mlperf_mean([1.0, 2.0, 3.0, 4.0, math.inf]) == 3.0  # a run that did not converge is the slowest
    assert mlperf_mean([2.0, 4.0]) == 3.0  # below three runs nothing is dropped


def test_five_converged_runs_are_scored_by_the_middle_three() -> None:
    runs = [run(s, epochs=e, seed=i) for i, (s, e) in enumerate([(10, 2), (12, 3), (14, 3), (16, 4), (30, 6)])]
    r = score_runs(ACC, runs)
    assert r.status == "reached" and r.reached and r.converged == 5
    assert r.score_s == pytest.approx(14.0) and r.score_with_setup_s == pytest.approx(15.0)
    assert (r.min_s, r.max_s) == (10.0, 30.0)
    # CV of 10, 12, 14, 16, 30: mean 16.4, sample sd sqrt(251.2 / 4) = 7.9246
    assert r.cv_pct == pytest.approx(100 * 7.9246 / 16.4, abs=0.01)
    assert r.epochs_to_target == pytest.approx(10 / 3) and r.samples_to_target == pytest.approx(64000 / 3)


def test_one_run_that_never_converges_is_tolerated_two_are_not() -> None:
    one = score_runs(ACC, [run(10), run(12), run(14), run(16), run(99, reached=False, final=0.85)])
    assert one.status == "reached" and one.converged == 4
    assert one.score_s == pytest.approx(14.0)  # 12, 14, 16: the fastest and the non-converged run dropped
    two = score_runs(ACC, [run(10), run(12), run(14), run(99, False, final=0.8), run(99, False, final=0.8)])
    assert two.status == "not reached" and two.score_s is None and not two.reached
    assert two.note == "2 of 5 runs did not reach val_accuracy >= 0.9"
    few = score_runs(ACC, [run(10), run(99, reached=False)])
    assert few.status == "not reached" and "fewer than 3 runs every run must reach it" in (few.note or "")


def test_the_final_metric_is_tested_beyond_the_target_one_sided() -> None:
    # finals 0.92, 0.93, 0.94 against 0.9: t = 0.03 / (0.01 / sqrt 3) = 5.196 with 2 degrees of freedom, whose
    # upper tail is 1/2 - t / (2 sqrt(2 + t^2)) = 0.01755
    assert p_beyond_target([0.92, 0.93, 0.94], ACC) == pytest.approx(0.01755, abs=1e-4)
    # a loss is beyond its target below it: the same figures mirrored
    assert p_beyond_target([1.88, 1.87, 1.86], LOSS) == pytest.approx(0.01755, abs=1e-4)
    assert p_beyond_target([0.95, 0.95], ACC) == 0.0 and p_beyond_target([0.85, 0.85], ACC) == 1.0
    assert p_beyond_target([0.95], ACC) is None
    lucky = score_runs(ACC, [run(10, final=f) for f in (0.92, 0.93, 0.94)])
    assert lucky.lucky and "p = 0.018 >= 0.01" in (lucky.note or "")
    sure = score_runs(ACC, [run(10, final=f) for f in (0.95, 0.951, 0.952, 0.953, 0.954)])
    assert not sure.lucky and sure.note is None and sure.p_beyond_target < 1e-6


def test_the_luck_check_tests_the_evaluation_after_the_crossing() -> None:
    # Stopped at their first crossing, finals sit just over the target whatever the model: tested, they
    # would flag a healthy cell. The evaluation after it tells a model that keeps the quality...
    crossings = (0.901, 0.903, 0.902, 0.904, 0.9005)
    healthy = score_runs(ACC, [run(10, final=f, confirmation=f + 0.02) for f in crossings])
    assert not healthy.lucky and healthy.p_beyond_target < 1e-4
    # ... from one that met it by a fluctuation and fell back (same crossings, confirmations around 0.9)
    fluke = score_runs(
        ACC, [run(10, final=f, confirmation=c) for f, c in zip(crossings, (0.89, 0.91, 0.9, 0.895, 0.905))]
    )
    assert fluke.lucky and fluke.p_beyond_target > 0.4 and "one evaluation after meeting it" in (fluke.note or "")
    # without a confirmation (the run's last allowed epoch met it) the final is what is tested
    assert score_runs(ACC, [run(10, final=f) for f in crossings]).p_beyond_target == pytest.approx(
        p_beyond_target(list(crossings), ACC)
    )


def test_a_cell_far_faster_in_epochs_than_the_reference_is_flagged() -> None:
    ref = score_runs(ACC, [run(10, epochs=e) for e in (3, 3, 4, 3, 4)])
    leak = score_runs(ACC, [run(2, epochs=e) for e in (1, 1, 1, 1, 2)])
    same = score_runs(ACC, [run(10, epochs=e) for e in (3, 4, 3, 4, 3)])
    warning = too_fast(leak, ref)
    assert warning is not None and "1.20 epochs against the reference's 3.40" in warning and "data leak" in warning
    assert too_fast(same, ref) is None and too_fast(ref, leak) is None


def test_the_speedup_interval_resamples_each_cells_runs() -> None:
    base = score_runs(ACC, [run(10.0) for _ in range(5)])
    fast = score_runs(ACC, [run(5.0) for _ in range(5)])
    assert speedup_interval(base, fast) == pytest.approx((2.0, 2.0))
    spread = score_runs(ACC, [run(s) for s in (4.0, 5.0, 6.0, 5.0, 5.0)])
    low, high = speedup_interval(base, spread)
    assert 10 / 6 <= low < 2.0 < high <= 10 / 4
