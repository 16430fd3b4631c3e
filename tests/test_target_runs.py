"""Runs to a target inside a cell: the clock, stopping at the target (after an epoch or mid-epoch), a
target never reached, and resuming an interrupted cell."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from conftest import tiny_overrides

from bench.cells.contract import CellSpec, MeasureConfig
from bench.guards.checks import QUICK_GUARDS
from bench.target import runs as target_runs
from bench.target.runs import CLOCK_KEY, TargetClock, run_one, seed_config, seed_runs, target_cell
from trainer_core.factory import build_run
from trainer_core.loading import load_config


def spec(tmp: Path | None = None, runs: int = 3, **measure: Any) -> CellSpec:
    config = load_config(None, tiny_overrides(**{"train.epochs": 6}))
    m = {"mode": "time_to_target", "target": {"metric": "val_accuracy", "value": 0.8}, "runs": runs, **measure}
    return CellSpec(cell_id="c", config=config.to_dict(), threads=1, measure=MeasureConfig.model_validate(m),
                    guards=QUICK_GUARDS, state_dir=str(tmp) if tmp else None)  # fmt: skip


def test_each_seed_trains_until_the_target_and_the_cell_is_scored_and_guarded() -> None:
    record = target_cell(spec())
    t = record.time_to_target
    assert t is not None and t.status == "reached" and [r.seed for r in t.runs] == [42, 43, 44]
    for r in t.runs:
        assert r.reached and r.evals[-1]["value"] >= 0.8 and r.final == r.evals[-1]["value"]
        assert all(e["value"] < 0.8 for e in r.evals[:-1])  # the clock stopped at the first evaluation that met it
        assert r.confirmation is not None or r.epochs == 6  # then one more epoch off the clock (when one is left)
        assert r.epochs == len(r.evals) and r.steps == 6 * r.epochs and r.samples == 192 * r.epochs
        seconds = [e["seconds"] for e in r.evals]
        assert seconds == sorted(seconds) and r.seconds == seconds[-1] > 0 and r.setup_s > 0
    assert record.guards_ok and set(record.guards) == {"overfit", "finite", "determinism", "resume"}
    assert record.samples_per_s and record.samples_per_s > 0 and record.optim and record.optim["lr"] == 0.01


def test_an_evaluation_every_k_steps_stops_mid_epoch() -> None:
    s = spec(runs=1, eval_every=4)
    r = run_one(s, 42, None)
    assert (
        r.reached and r.steps % 4 == 0 and [e["steps"] for e in r.evals] == [4.0 * (i + 1) for i in range(len(r.evals))]
    )
    assert r.epochs == pytest.approx(r.steps / 6) and r.samples == 32 * r.steps  # 6 steps of 32 an epoch


def test_a_target_never_met_trains_every_allowed_epoch_and_is_not_reached() -> None:
    s = spec(runs=3, max_epochs=2, target={"metric": "val_loss", "value": 1e-6})
    t = target_cell(s).time_to_target
    assert t is not None and t.status == "not reached" and t.score_s is None and t.converged == 0
    assert all(not r.reached and r.epochs == 2 and len(r.evals) == 2 and r.confirmation is None for r in t.runs)
    assert t.note == "3 of 3 runs did not reach val_loss <= 1e-06"


def test_an_interrupted_seed_resumes_with_its_clock_and_evaluations(tmp_path: Path) -> None:
    s = spec(tmp_path, runs=1)
    state = tmp_path / "seed-42"
    # What a kill after the first epoch's checkpoint leaves: last_model.pt mid-way through epoch 2.
    run = build_run(seed_config(s, 42), checkpoint_dir=state)
    assert s.measure.target is not None
    clock = TargetClock(s.measure.target, "epoch", run.data.val_loader, len(run.data.train_loader))
    run.trainer.hooks.append(clock)
    clock.start(run.trainer)
    run.trainer.fit(run.data.train_loader, run.data.val_loader, stop_after_steps=8)
    carried = run.trainer.counters[CLOCK_KEY]
    assert (state / "last_model.pt").exists() and carried > 0
    r = run_one(s, 42, state)
    assert r.resumed and 0 < r.evals[0]["seconds"] <= carried and r.evals[0]["epochs"] == 1.0
    assert r.seconds > carried and r.steps == 6 * r.epochs  # the same steps as an uninterrupted run
    fresh = run_one(spec(runs=1), 42, None)
    assert (r.epochs, r.final) == (fresh.epochs, fresh.final)  # the resumed run trained exactly the same


def test_finished_seeds_are_read_back_not_trained_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    s = spec(tmp_path, runs=2)
    first = seed_runs(s)
    assert (tmp_path / "seed-42" / "run.json").exists() and not (tmp_path / "seed-42" / "last_model.pt").exists()

    def no_training(*args: Any) -> None:
        raise AssertionError("a finished seed was trained again")

    monkeypatch.setattr(target_runs, "run_one", no_training)
    assert seed_runs(s) == first


@pytest.mark.parametrize("confirm", [True, False])
def test_the_confirmation_epoch_is_trained_and_evaluated_off_the_clock(confirm: bool) -> None:
    s = spec(runs=1)
    assert s.measure.target is not None
    run = build_run(seed_config(s, 42))
    clock = TargetClock(s.measure.target, "epoch", run.data.val_loader, len(run.data.train_loader), confirm)
    run.trainer.hooks.append(clock)
    clock.start(run.trainer)
    run.trainer.fit(run.data.train_loader, run.data.val_loader)
    reached = clock.reached
    assert reached is not None and reached["epochs"] < 6  # met before the last epoch: one is left to confirm
    assert len(run.trainer.history) == reached["epochs"] + (1 if confirm else 0)
    assert (clock.confirmation == run.trainer.history[-1]["val_accuracy"]) if confirm else clock.confirmation is None
    # the clock stopped at the target: the confirmation epoch is not on it
    assert clock.elapsed(run.trainer) == reached["seconds"] == run.trainer.counters[CLOCK_KEY]
