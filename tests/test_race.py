"""bench.recipe_race.race: each side as a time-to-target spec, and the race's report on fixed runs."""

from __future__ import annotations

from conftest import REPO

from bench.cells.target import Target, TargetRun
from bench.recipe_race.race import format_race, side_spec
from bench.target.scoring import score_runs
from trainer_core.loading import load_config

TARGET = Target(metric="test_accuracy", value=0.9)


def _run(seconds: float, seed: int, reached: bool = True) -> TargetRun:
    return TargetRun(seed=seed, reached=reached, seconds=seconds, setup_s=0.5, epochs=2.0, steps=20, samples=640,
                     final=0.92 if reached else 0.85)  # fmt: skip


def test_a_side_is_a_time_to_target_spec_without_guards() -> None:
    config = load_config(REPO / "configs" / "tabular_mlp.yaml", ["train.epochs=7"])
    spec = side_spec("baseline", config, TARGET, runs=3, threads=2)
    assert spec.measure.mode == "time_to_target" and spec.measure.target == TARGET
    assert spec.measure.runs == 3 and spec.measure.max_epochs == 7 and spec.guards.enabled == []


def test_the_race_report_scores_both_sides_and_their_ratio() -> None:
    base = score_runs(TARGET, [_run(s, i) for i, s in enumerate((10.0, 12.0, 14.0))])
    cand = score_runs(TARGET, [_run(s, i) for i, s in enumerate((5.0, 6.0, 7.0))])
    result = {"baseline": {"config": "a.yaml", "overrides": [], **base.to_dict()},
              "candidate": {"config": "b.yaml", "overrides": [], **cand.to_dict()},
              "time_ratio": 0.5, "speedup_interval": (1.7, 2.4)}  # fmt: skip
    text = format_race(result)
    assert text.startswith("time to test_accuracy >= 0.9 (MLPerf scoring over 3 runs a side)")
    assert "| candidate | 1 | yes | 6.0 | 2 | 0.9200 |" in text
    assert "baseline: 12.0 s to target (min 10.0, max 14.0; 12.5 s with setup), 2.00 epochs, 3 of 3" in text
    assert "candidate/baseline time to target: 0.500 (2.00x faster; baseline/candidate 95% interval 1.70-2.40" in text
    lost = score_runs(TARGET, [_run(9.0, i, reached=False) for i in range(3)])
    result["candidate"] = {"config": "b.yaml", "overrides": [], **lost.to_dict()}
    result["time_ratio"] = None
    text = format_race(result)
    assert "candidate: not reached (3 of 3 runs did not reach test_accuracy >= 0.9)" in text
    assert "ratio: n/a (the target was not reached by both)" in text
