"""Interleaved A/B: the verdict rules, the round order, the stopping rule, and drift cancelling, with a
simulated machine (a fake subject) so every property is checked without timing anything real."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from bench import abtest
from bench.abtest import (
    CELL_KEY,
    FASTER,
    NO_CHANGE,
    SERVER_ROUNDS,
    SLOWER,
    AbError,
    AbPlan,
    CellSubject,
    Side,
    analyse,
    decided,
    failures,
    interleave,
    noise_notes,
    resolved,
    round_order,
    verdict,
)
from bench.contract import CellRecord, CellSpec, GuardResult
from bench.launcher import read_records


def test_verdict_needs_significance_and_the_minimum_effect() -> None:
    assert verdict(0.95, 0.93, 0.97, 3.0) == SLOWER
    assert verdict(1.05, 1.03, 1.07, 3.0) == FASTER
    assert verdict(0.985, 0.975, 0.995, 3.0) == NO_CHANGE  # real, but smaller than the minimum effect
    assert verdict(0.95, 0.85, 1.05, 3.0) == NO_CHANGE  # not significant
    assert resolved(0.98, 1.02, 3.0) and not resolved(0.85, 1.05, 3.0)


def test_abba_order_alternates_and_random_order_is_seeded() -> None:
    a, b = Side("A", "x", Path(".")), Side("B", "y", Path("."))
    plan = AbPlan()
    assert [[s.name for s in round_order(plan, r, (a, b))] for r in (1, 2, 3, 4)] == [
        ["B", "A"],
        ["A", "B"],
        ["B", "A"],
        ["A", "B"],
    ]
    rnd = AbPlan(order="random", seed=3)
    first = [round_order(rnd, r, (a, b))[0].name for r in range(1, 41)]
    assert first == [round_order(rnd, r, (a, b))[0].name for r in range(1, 41)]
    assert 5 < first.count("A") < 35


class Machine:
    """A fake subject: a step of A takes 10 ms times a machine factor that drifts between readings
    (slowly, by up to 40%: far more than the effects tested), B takes ``effect`` times that; each
    reading is 40 noisy steps."""

    def __init__(self, effect: float, drift: float = 0.4, seed: int = 0, broken: str | None = None) -> None:
        self.effect, self.drift, self.rng, self.broken, self.reads = (
            effect,
            drift,
            np.random.default_rng(seed),
            broken,
            0,
        )

    def read(self, side: Side, label: str, first: bool) -> dict[str, CellRecord]:
        self.reads += 1
        factor = 1.0 + self.drift * math.sin(self.reads / 20.0) + 0.02 * self.rng.standard_normal()
        mean = 0.010 * factor * (self.effect if side.name == "B" else 1.0)
        steps = list(mean * (1 + 0.03 * self.rng.standard_normal(40)))
        guards = {"finite": GuardResult(name="finite", status="fail" if self.broken == side.name else "pass")}
        ok = self.broken != side.name or not first
        rec = CellRecord(
            cell_id=f"{side.name}-{label}",
            status="ok",
            step_s=steps,
            samples_per_s=32 / np.median(steps),
            items_per_step=32,
            guards=guards if first else {},
            guards_ok=ok,
        )
        return {CELL_KEY: rec}

    def start_round(self, r: int) -> None:
        pass

    def close(self) -> None:
        pass


SIDES = (Side("A", "a.yaml", Path(".")), Side("B", "b.yaml", Path(".")))


@pytest.mark.parametrize(("effect", "expected"), [(1.0, NO_CHANGE), (1 / 0.95, SLOWER), (0.9, FASTER)])
def test_interleaved_rounds_see_through_drift(tmp_path: Path, effect: float, expected: str) -> None:
    plan = AbPlan(budget_s=60, min_rounds=4, max_rounds=30, min_effect_pct=3.0)
    out = interleave(Machine(effect), SIDES, plan, tmp_path)
    v = out["results"][CELL_KEY]
    assert v["verdict"] == expected
    assert v["ci_low"] <= 1 / effect <= v["ci_high"]  # the interval holds the planted ratio
    assert out["rounds"] < 30 and decided(out["results"], 3.0)  # stopped because it could decide
    assert out["retaken"] == []  # drift between readings is what pairing cancels, not a stall
    # readings the unpaired way (A's and B's rates pooled apart) spread far wider than the paired ratios
    assert np.std(np.log(v["a_rate"])) > 3 * np.std(np.log(v["per_round"]))
    records = read_records(tmp_path / "cells.jsonl")
    assert [r.cell_id for r in records[:2]] == ["A-warmup", "B-warmup"] and len(records) == 2 + 2 * out["rounds"]


def test_a_guard_failure_or_a_failed_reading_ends_the_run(tmp_path: Path) -> None:
    with pytest.raises(AbError, match="B .*broke a guard"):
        interleave(Machine(1.0, broken="B"), SIDES, AbPlan(), tmp_path)

    class Failing(Machine):
        def read(self, side: Side, label: str, first: bool) -> dict[str, CellRecord]:
            return {CELL_KEY: CellRecord(cell_id="x", status="failed", reason="killed by signal 9")}

    with pytest.raises(AbError, match="A .*warmup: failed: killed by signal 9"):
        interleave(Failing(1.0), SIDES, AbPlan(), tmp_path)
    assert read_records(tmp_path / "cells.jsonl")[-1].reason == "killed by signal 9"  # kept on record


def test_the_budget_stops_an_undecided_run(tmp_path: Path) -> None:
    plan = AbPlan(budget_s=0.0, min_rounds=3, max_rounds=30, min_effect_pct=0.1)
    assert interleave(Machine(1.0, drift=0.4), SIDES, plan, tmp_path)["rounds"] == 3


def test_different_batch_sizes_compare_throughput_not_step_time() -> None:
    def rec(step: float, items: int) -> CellRecord:
        return CellRecord(status="ok", step_s=[step] * 5, items_per_step=items, samples_per_s=items / step)

    rounds = [{"A": {CELL_KEY: rec(0.010, 32)}, "B": {CELL_KEY: rec(0.016, 64)}} for _ in range(3)]
    v = analyse(rounds, SIDES, 3.0)[CELL_KEY]
    assert v["ratio"] == pytest.approx(64 / 0.016 / (32 / 0.010))  # 1.25x the samples/s
    assert v["verdict"] == FASTER


def test_fail_threshold_only_on_a_significant_slowdown_beyond_it() -> None:
    report = {"results": {"cell": {"ratio": 0.90, "ci_low": 0.88, "ci_high": 0.92}}}
    assert failures(report, 5.0) and not failures(report, 15.0) and not failures(report, None)
    wide = {"results": {"cell": {"ratio": 0.90, "ci_low": 0.70, "ci_high": 1.10}}}
    assert not failures(wide, 5.0)
    json.dumps(report)


class Disturbed(Machine):
    """The simulated machine without drift, but the readings named in ``hit`` get their steps through
    ``disturb``: a stall or a burst of other load."""

    def __init__(self, effect: float, hit: set[str], disturb: Callable[[list[float]], list[float]]) -> None:
        super().__init__(effect, drift=0.0)
        self.hit, self.disturb = hit, disturb

    def read(self, side: Side, label: str, first: bool) -> dict[str, CellRecord]:
        got = super().read(side, label, first)
        if f"{side.name}-{label}" in self.hit:
            got[CELL_KEY] = got[CELL_KEY].model_copy(update={"step_s": self.disturb(got[CELL_KEY].step_s)})
        return got


def stalling(effect: float, stalls: set[str]) -> Disturbed:
    """Every step 40x as long: the stall seen here once, when a 1 ms reading ran all its steps at 37-54 ms."""
    return Disturbed(effect, stalls, lambda steps: [40 * s for s in steps])


def unsteady(effect: float, bursts: set[str]) -> Disturbed:
    """The last two thirds of the steps 1.6x slower: another tenant's burst over most of a reading (seen
    here as a median step 1.5-1.7x the reading's own fastest tenth)."""
    return Disturbed(
        effect, bursts, lambda steps: steps[: len(steps) // 3] + [1.6 * s for s in steps[len(steps) // 3 :]]
    )


def test_a_stalled_reading_is_taken_again_with_its_round(tmp_path: Path) -> None:
    plan = AbPlan(budget_s=60, min_rounds=2, max_rounds=2, min_effect_pct=3.0)
    out = interleave(stalling(1 / 0.5, {"A-r02"}), SIDES, plan, tmp_path)
    v = out["results"][CELL_KEY]
    assert v["verdict"] == SLOWER and v["ratio"] == pytest.approx(0.5, rel=0.05)  # not 'no change'
    assert [x["round"] for x in out["retaken"]] == [2] and "A's cell reading took" in out["retaken"][0]["why"]
    ids = [r.cell_id for r in read_records(tmp_path / "cells.jsonl")]
    assert ids[2:] == ["B-r01", "A-r01", "A-r02", "B-r02", "A-r02-again1", "B-r02-again1"]  # the stall on record


def test_stall_retakes_are_bounded_and_a_slower_side_is_no_stall(tmp_path: Path) -> None:
    everything = {f"A-r{r:02d}" for r in range(1, 5)} | {f"A-r{r:02d}-again{k}" for r in range(1, 5) for k in (1, 2, 3)}
    out = interleave(stalling(1.0, everything), SIDES, AbPlan(budget_s=60, min_rounds=2, max_rounds=2), tmp_path)
    assert len(out["retaken"]) == 3 and out["rounds"] == 2  # then the stalled round is kept, and said
    (tmp_path / "x").mkdir()
    five_x = interleave(stalling(5.0, set()), SIDES, AbPlan(min_rounds=2, max_rounds=2), tmp_path / "x")
    assert five_x["retaken"] == [] and five_x["results"][CELL_KEY]["verdict"] == SLOWER  # B against B's own


def test_widely_spread_rounds_get_a_note_naming_what_steadies_cpu_readings() -> None:
    wide = {"results": {CELL_KEY: {"per_round": [1.0, 1.25, 0.82, 1.1]}}}  # sd of the logs: 18%
    calm = {"results": {CELL_KEY: {"per_round": [1.0, 1.01, 0.99, 1.0]}}}
    cpu = {"A": {"device": "cpu"}, "B": {"device": "cpu"}}
    retained = {side: {"device": "cpu", "train": {"malloc": "retain"}} for side in "AB"}
    assert noise_notes(calm, cpu) == []
    (note,) = noise_notes(wide, cpu)
    assert "spread by 18%" in note and "--set train.malloc=retain" in note
    (note,) = noise_notes(wide, retained)
    assert "spread by 18%" in note and "malloc" not in note  # already on the steadier policy: only the spread


def test_a_reading_that_changed_speed_midway_is_taken_again(tmp_path: Path) -> None:
    out = interleave(unsteady(1.0, {"B-r02"}), SIDES, AbPlan(min_rounds=3, max_rounds=3), tmp_path)
    assert [x["round"] for x in out["retaken"]] == [2] and "changed speed midway" in out["retaken"][0]["why"]
    v = out["results"][CELL_KEY]
    assert v["verdict"] == NO_CHANGE and v["ci_low"] <= 1.0 <= v["ci_high"]


def test_forked_readings_share_a_server_per_code_and_renew_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    started: list[Path] = []
    closed: list[object] = []
    used: list[tuple[str, object]] = []

    class FakeServer:
        def __init__(self, code_root: Path) -> None:
            started.append(code_root)

        def close(self) -> None:
            closed.append(self)

    def fake_launch(spec: CellSpec, cell_dir: Path, code_root: Path, server: object) -> CellRecord:
        used.append((spec.cell_id, server))
        return CellRecord(cell_id=spec.cell_id, status="ok", step_s=[0.01])

    monkeypatch.setattr(abtest, "CellServer", FakeServer)
    monkeypatch.setattr(abtest, "launch_cell", fake_launch)
    spec = CellSpec(cell_id="x", config={}, threads=1)
    other = Side("C", "rev", tmp_path)  # another revision's code: a server of its own
    subject = CellSubject({"A": spec, "B": spec, "C": spec}, tmp_path, forked=True)
    for r in range(2 * SERVER_ROUNDS + 1):
        subject.start_round(r)
        for side in (*SIDES, other):
            subject.read(side, f"r{r:02d}", first=r == 0)
    subject.close()
    assert started == [Path("."), tmp_path] * 3  # renewed every SERVER_ROUNDS rounds, one per code root
    assert len(closed) == 6  # and every one of them closed
    for r in range(2 * SERVER_ROUNDS + 1):
        a, b, c = (server for cell_id, server in used if cell_id.endswith(f"r{r:02d}"))
        assert a is b and c is not a  # A and B run the same code: one server for both
    a_servers = [server for cell_id, server in used if cell_id.startswith("A-")]  # rounds 0, 1, ...
    assert a_servers[0] is a_servers[SERVER_ROUNDS - 1] and a_servers[0] is not a_servers[SERVER_ROUNDS]
    fresh = CellSubject({"A": spec}, tmp_path)
    fresh.read(SIDES[0], "r01", first=False)
    assert used[-1] == ("A-r01", None) and len(started) == 6  # fresh readings: no server at all
