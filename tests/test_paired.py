"""The paired-rounds engine: the verdict rules, the round order, the stopping rule, drift cancelling, stall
retakes and dropped arms, with a simulated machine (a fake subject) so every property is checked without
timing anything real."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest

from bench.paired.engine import Reading, ReadingError, RoundsPlan, round_order, run_rounds
from bench.paired.engine import paired_run as run_pair
from bench.paired.result import PairedResult, PairedRun, Verdict, paired_verdict, resolved, verdict

SLOWER, FASTER, NO_CHANGE = Verdict.SLOWER, Verdict.FASTER, Verdict.NO_CHANGE
AB = ("A", "B")


def test_verdict_needs_significance_and_the_minimum_effect() -> None:
    assert verdict(0.95, 0.93, 0.97, 3.0) == SLOWER
    assert verdict(1.05, 1.03, 1.07, 3.0) == FASTER
    assert verdict(0.985, 0.975, 0.995, 3.0) == NO_CHANGE  # real, but smaller than the minimum effect
    assert verdict(0.95, 0.85, 1.05, 3.0) == NO_CHANGE  # not significant
    assert resolved(0.98, 1.02, 3.0) and not resolved(0.85, 1.05, 3.0)
    assert str(SLOWER) == "slower" and NO_CHANGE == "no change"  # written to JSON and SQLite as text


def test_the_paired_verdict_reads_the_interval_so_a_change_of_exactly_the_minimum_effect_is_called() -> None:
    assert paired_verdict(0.958, 0.986, 3.0) == SLOWER  # estimate 0.972: the old rule said no change
    assert paired_verdict(1.014, 1.042, 3.0) == FASTER
    assert paired_verdict(0.975, 0.995, 3.0) == NO_CHANGE  # real, but the whole interval within 3%
    assert paired_verdict(0.95, 1.01, 3.0) == NO_CHANGE  # not significant
    assert verdict(0.972, 0.958, 0.986, 3.0) == NO_CHANGE  # unpaired readings keep the estimate's threshold
    # The engine's results carry it: a true 3% slowdown, rounds scattered +-1%, is "slower".
    a = [[1.0] for _ in range(12)]
    b = [[1.0 / (0.97 * (1.0 + 0.01 * ((-1) ** i) * (i % 3)))] for i in range(12)]
    r = PairedResult.from_rounds(a, b, 1.0, 3.0, "samples/s")
    assert r.ci_low < 0.97 < r.ci_high and r.verdict == SLOWER
    # a real change within the minimum effect is said as such
    from bench.ab.report import verdict_line

    small = PairedResult(0.985, 0.978, 0.992, NO_CHANGE, True, [0.985] * 8, [], [], "samples/s")
    assert "no change of 3% or more: B is slower by 1.5%, a real change smaller" in verdict_line("cell", small, 3.0)


def test_rotation_alternates_two_arms_rotates_more_and_random_order_is_seeded() -> None:
    plan = RoundsPlan()
    assert [round_order(plan, r, AB) for r in (1, 2, 3, 4)] == [["B", "A"], ["A", "B"], ["B", "A"], ["A", "B"]]
    assert [round_order(plan, r, ["s", "f1", "f2"])[0] for r in range(6)] == ["s", "f1", "f2", "s", "f1", "f2"]
    rnd = RoundsPlan(order="random", seed=3)
    first = [round_order(rnd, r, AB)[0] for r in range(1, 41)]
    assert first == [round_order(rnd, r, AB)[0] for r in range(1, 41)]
    assert 5 < first.count("A") < 35


class Machine:
    """A fake subject: a step of A takes 10 ms times a machine factor that drifts between readings
    (slowly, by up to 40%: far more than the effects tested), another arm takes ``effect[arm]`` times
    that; each reading is 40 noisy steps of 32 items. ``labels`` lists the readings in the order taken."""

    def __init__(self, effect: float | dict[str, float], drift: float = 0.4, seed: int = 0) -> None:
        self.effect = effect if isinstance(effect, dict) else {"B": effect}
        self.drift, self.rng, self.reads = drift, np.random.default_rng(seed), 0
        self.labels: list[str] = []

    def steps(self, arm: str) -> list[float]:
        self.reads += 1
        factor = 1.0 + self.drift * math.sin(self.reads / 20.0) + 0.02 * self.rng.standard_normal()
        mean = 0.010 * factor * self.effect.get(arm, 1.0)
        return list(mean * (1 + 0.03 * self.rng.standard_normal(40)))

    def read(self, arm: str, label: str, first: bool) -> dict[str, Reading]:
        self.labels.append(f"{arm}-{label}")
        return {"cell": Reading(self.steps(arm), 32.0, "samples/s")}

    def start_round(self, r: int) -> None:
        pass

    def close(self) -> None:
        pass


@pytest.mark.parametrize(("effect", "expected"), [(1.0, NO_CHANGE), (1 / 0.95, SLOWER), (0.9, FASTER)])
def test_paired_rounds_see_through_drift(effect: float, expected: Verdict) -> None:
    plan = RoundsPlan(budget_s=60, min_rounds=4, max_rounds=30, min_effect_pct=3.0)
    machine = Machine(effect)
    out = run_pair(machine, AB, plan)
    v = out.results["cell"]
    assert v.verdict == expected
    assert v.ci_low <= 1 / effect <= v.ci_high  # the interval holds the planted ratio
    assert out.rounds < 30 and out.decided(3.0)  # stopped because it could decide
    assert out.retaken == []  # drift between readings is what pairing cancels, not a stall
    # readings the unpaired way (A's and B's rates pooled apart) spread far wider than the paired ratios
    # (unpaired rounds would spread as wide as the readings: sqrt(2) times A's own spread)
    assert np.std(np.log(v.a_rate)) > 2.5 * np.std(np.log(v.per_round))
    assert machine.labels[:2] == ["A-warmup", "B-warmup"] and len(machine.labels) == 2 + 2 * out.rounds


class Failing(Machine):
    def __init__(self, failing: str, why: str = "failed: killed by signal 9") -> None:
        super().__init__(1.0)
        self.failing, self.why = failing, why

    def read(self, arm: str, label: str, first: bool) -> dict[str, Reading]:
        got = super().read(arm, label, first)
        if arm == self.failing:
            return {"cell": Reading([], failed=f"{arm}, {label}: {self.why}")}
        return got


def test_a_failed_reading_ends_the_run_unless_its_arm_may_be_dropped() -> None:
    with pytest.raises(ReadingError, match="A, warmup: failed: killed by signal 9"):
        run_pair(Failing("A"), AB, RoundsPlan())
    with pytest.raises(ReadingError, match="B, warmup: broke a guard"):
        run_pair(Failing("B", "broke a guard"), AB, RoundsPlan())
    # tune's finals: a finalist that fails is out (its readings with it), the others go on
    machine = Failing("f1")
    done = run_rounds(machine, ["start", "f1", "f2"], RoundsPlan.fixed(3), droppable=["f1", "f2"])
    assert done.live() == ["start", "f2"] and "f1, r01: failed" in done.dropped["f1"]
    assert len(done.taken) == 3 and all(set(rd) == {"start", "f2"} for rd in done.taken)
    assert not any(label.startswith("f1-r02") for label in machine.labels)  # never read again
    with pytest.raises(ReadingError):  # the start is not droppable
        run_rounds(Failing("start"), ["start", "f1"], RoundsPlan.fixed(2), droppable=["f1"])


def test_the_budget_stops_an_undecided_run_and_a_fixed_plan_runs_its_rounds() -> None:
    plan = RoundsPlan(budget_s=0.0, min_rounds=3, max_rounds=30, min_effect_pct=0.1)
    assert run_pair(Machine(1.0, drift=0.4), AB, plan).rounds == 3
    machine = Machine(0.5, drift=0.0)
    done = run_rounds(machine, AB, RoundsPlan.fixed(5))  # decided after two rounds, yet five are taken
    assert len(done.taken) == 5 and not any("warmup" in label for label in machine.labels)


def test_different_batch_sizes_compare_throughput_not_step_time() -> None:
    class Sizes(Machine):
        def read(self, arm: str, label: str, first: bool) -> dict[str, Reading]:
            step, items = (0.010, 32.0) if arm == "A" else (0.016, 64.0)
            return {"cell": Reading([step] * 5, items)}

    v = run_pair(Sizes(1.0), AB, RoundsPlan(min_rounds=3, max_rounds=3)).results["cell"]
    assert v.ratio == pytest.approx(64 / 0.016 / (32 / 0.010))  # 1.25x the samples/s
    assert v.verdict == FASTER and v.a_rate == [pytest.approx(3200.0)] * 3


def test_the_paired_result_by_hand() -> None:
    # three rounds of one step each: per-round ratios 0.9, 1.1, 0.8 (A's step over B's); 20% trimming of three
    # rounds trims none, so the ratio is their geometric mean
    r = PairedResult.from_rounds([[0.9], [1.1], [0.8]], [[1.0], [1.0], [1.0]], 1.0, 3.0, "samples/s")
    assert r.per_round == pytest.approx([0.9, 1.1, 0.8])
    assert r.ratio == pytest.approx((0.9 * 1.1 * 0.8) ** (1 / 3))
    assert r.round_sd() == pytest.approx(float(np.std(np.log([0.9, 1.1, 0.8]), ddof=1)))
    assert PairedResult.from_dict(r.to_dict()) == r


def test_ab_json_written_before_reads_as_a_typed_run() -> None:
    # an ab.json of revision 1544271 (before the engine was typed): the same keys, read back
    old = {"rounds": 2, "seconds": 9.5, "retaken": [{"round": 2, "why": "stall"}], "results": {"cell": {
        "ratio": 0.5, "ci_low": 0.45, "ci_high": 0.55, "verdict": "slower", "resolved": False,
        "per_round": [0.5, 0.5], "a_rate": [10.0, 10.0], "b_rate": [5.0, 5.0], "unit": "samples/s"}}}  # fmt: skip
    run = PairedRun.from_dict(old)
    assert run.results["cell"].verdict == SLOWER and run.retaken[0].why == "stall"
    assert run.to_dict() == old


class Disturbed(Machine):
    """The simulated machine without drift, but the readings named in ``hit`` get their steps through
    ``disturb``: a stall or a burst of other load."""

    def __init__(self, effect: float, hit: set[str], disturb: Callable[[list[float]], list[float]]) -> None:
        super().__init__(effect, drift=0.0)
        self.hit, self.disturb = hit, disturb

    def read(self, arm: str, label: str, first: bool) -> dict[str, Reading]:
        got = super().read(arm, label, first)
        if f"{arm}-{label}" in self.hit:
            got["cell"] = Reading(self.disturb(got["cell"].steps), 32.0)
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


def test_a_stalled_reading_is_taken_again_with_its_round() -> None:
    machine = stalling(1 / 0.5, {"A-r02"})
    out = run_pair(machine, AB, RoundsPlan(budget_s=60, min_rounds=2, max_rounds=2, min_effect_pct=3.0))
    v = out.results["cell"]
    assert v.verdict == SLOWER and v.ratio == pytest.approx(0.5, rel=0.05)  # not 'no change'
    assert [x.round for x in out.retaken] == [2] and "A's cell reading took" in out.retaken[0].why
    assert machine.labels[2:] == ["B-r01", "A-r01", "A-r02", "B-r02", "A-r02-again1", "B-r02-again1"]


def test_stall_retakes_are_bounded_and_a_slower_arm_is_no_stall() -> None:
    everything = {f"A-r{r:02d}" for r in range(1, 5)} | {f"A-r{r:02d}-again{k}" for r in range(1, 5) for k in (1, 2, 3)}
    out = run_pair(stalling(1.0, everything), AB, RoundsPlan(budget_s=60, min_rounds=2, max_rounds=2))
    assert len(out.retaken) == 3 and out.rounds == 2  # then the stalled round is kept, and said
    five_x = run_pair(stalling(5.0, set()), AB, RoundsPlan(min_rounds=2, max_rounds=2))
    assert five_x.retaken == [] and five_x.results["cell"].verdict == SLOWER  # B against B's own


def test_a_reading_that_changed_speed_midway_is_taken_again() -> None:
    out = run_pair(unsteady(1.0, {"B-r02"}), AB, RoundsPlan(min_rounds=3, max_rounds=3))
    assert [x.round for x in out.retaken] == [2] and "changed speed midway" in out.retaken[0].why
    v = out.results["cell"]
    assert v.verdict == NO_CHANGE and v.ci_low <= 1.0 <= v.ci_high


def test_stalls_are_retaken_in_a_plan_without_warmup_too() -> None:
    # tune's finals and bench.overhead have no warm-up round: round 1 is the reference for round 2
    machine = stalling(1.0, {"B-r02"})
    done = run_rounds(machine, AB, RoundsPlan.fixed(3))
    assert [x.round for x in done.retaken] == [2] and "B-r02-again1" in machine.labels


def test_an_undecided_interval_says_its_half_width_and_the_rounds_that_would_decide_it() -> None:
    from bench.ab.report import verdict_line

    rng = np.random.default_rng(3)
    ratios = np.exp(rng.normal(0.0, 0.05, 6))  # six rounds spread 5% (sd of log ratios)
    r = PairedResult.from_rounds([[x] for x in ratios], [[1.0]] * 6, 1.0, 3.0, "samples/s")
    assert r.half_width_pct == pytest.approx(100 * (r.ci_high - r.ci_low) / 2 / r.ratio)
    sd = r.round_sd()
    assert sd is not None and r.rounds_to_decide(3.0) == math.ceil(6 * (r.half_width_pct / 1.5) ** 2) > 6
    line = verdict_line("cell", r, 3.0, seconds_per_round=20.0)
    assert f"+-{r.half_width_pct:.1f}%)" in line
    assert f"about {r.rounds_to_decide(3.0)} rounds (--budget-s {20 * r.rounds_to_decide(3.0)})" in line
    tight = PairedResult.from_rounds([[1.0]] * 6, [[1.0]] * 6, 1.0, 3.0, "samples/s")  # decided: no hint
    assert tight.decided(3.0) and "rounds' spread" not in verdict_line("cell", tight, 3.0, 20.0)
    two = PairedResult.from_rounds([[0.9], [1.1]], [[1.0], [1.0]], 1.0, 3.0, "samples/s")
    assert two.rounds_to_decide(3.0) is None and "rounds' spread" not in verdict_line("cell", two, 3.0, 20.0)


class TwoSpeeds(Machine):
    """A machine that runs at one of two speeds (1.45x apart), drawn afresh every few hundred milliseconds:
    a reading's steps all land in the speed of their moment. Arms read one after the other land in different
    speeds half the time; arms read together (steps in turns) share each moment's speed."""

    def mode(self) -> float:
        return 1.45 if self.rng.random() < 0.5 else 1.0

    def steps(self, arm: str) -> list[float]:
        self.reads += 1
        return list(0.010 * self.mode() * self.effect.get(arm, 1.0) * (1 + 0.03 * self.rng.standard_normal(40)))


class TogetherOnTwoSpeeds(TwoSpeeds):
    def read_together(self, order: list[str], label: str, first: bool) -> dict[str, dict[str, Reading]]:
        self.labels.append(f"{'+'.join(order)}-{label}")
        mode = self.mode()
        return {
            arm: {
                "cell": Reading(
                    list(0.010 * mode * self.effect.get(arm, 1.0) * (1 + 0.03 * self.rng.standard_normal(40))), 32.0
                )
            }  # fmt: skip
            for arm in order
        }


def test_arms_read_together_share_the_machines_speed_and_decide_sooner() -> None:
    plan = RoundsPlan(budget_s=60, min_rounds=4, max_rounds=30, min_effect_pct=3.0)
    apart = run_pair(TwoSpeeds(1 / 0.95, seed=1), AB, plan).results["cell"]
    together_machine = TogetherOnTwoSpeeds(1 / 0.95, seed=1)
    together = run_pair(together_machine, AB, plan)
    v = together.results["cell"]
    assert v.verdict == SLOWER and v.ci_low <= 0.95 <= v.ci_high and together.rounds < 10
    assert apart.ci_high - apart.ci_low > 3 * (v.ci_high - v.ci_low)  # one after the other: the speeds' spread
    # the engine asked for both arms at once, in the round's order, and never for one arm alone
    assert together_machine.labels[:3] == ["A+B-warmup", "B+A-r01", "A+B-r02"]


class TwoKeys(Machine):
    """Two benchmarks a reading (pytest-benchmark's case): "quiet" steady, "noisy" with rounds scattered
    +-6%; like PytestSubject it leaves out the keys the engine says are decided."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__(1.0, drift=0.0, seed=seed)
        self.decided: set[str] = set()
        self.read_keys: list[set[str]] = []

    def narrow(self, decided: set[str]) -> None:
        self.decided = set(decided)

    def read(self, arm: str, label: str, first: bool) -> dict[str, Reading]:
        out = {}
        for key, scatter in (("quiet", 0.001), ("noisy", 0.06)):
            if key not in self.decided:
                mean = 0.010 * (1 + scatter * self.rng.standard_normal())
                out[key] = Reading(list(mean * (1 + 0.01 * self.rng.standard_normal(20))), 32.0)
        self.read_keys.append(set(out))
        return out


def test_the_budget_goes_to_the_keys_whose_interval_is_still_wide() -> None:
    machine = TwoKeys()
    out = run_pair(machine, AB, RoundsPlan(budget_s=60, min_rounds=3, max_rounds=30, min_effect_pct=3.0))
    quiet, noisy = out.results["quiet"], out.results["noisy"]
    assert quiet.decided(3.0) and len(quiet.per_round) == 3  # decided at the first chance, then not read
    assert len(noisy.per_round) == out.rounds > 3 and machine.read_keys[-1] == {"noisy"}
    assert quiet.verdict == noisy.verdict == NO_CHANGE
    # a fixed plan reads every key every round
    fixed = TwoKeys()
    done = run_rounds(fixed, AB, RoundsPlan.fixed(5))
    assert all(keys == {"quiet", "noisy"} for keys in fixed.read_keys)
    assert len(done.compare("A", "B", 3.0)["quiet"].per_round) == 5
