from __future__ import annotations

import itertools
from typing import Any

import pytest

from bench.cells.contract import CellRecord
from bench.tune.search import Searcher, contributions, coordinate_search, finalists, values_key

SPACE = {
    "precision": ["fp32", "bf16"],
    "model.memory_format": ["contiguous", "channels_last"],
    "data.batch_size": [32, 64, 128, 256, 512],
    "data.num_workers": [0, 2],
    "train.compile": ["off", "default"],
}
START = {
    "precision": "fp32",
    "model.memory_format": "contiguous",
    "data.batch_size": 64,
    "data.num_workers": 2,
    "train.compile": "off",
}


def fake(values: dict[str, Any]) -> CellRecord:
    """A planted landscape: bf16 x1.5, channels_last x1.3, batch 128 best, no workers x1.2;
    compile is fastest of all but fails its guards, so it must never win."""
    sps = 1000.0
    sps *= 1.5 if values["precision"] == "bf16" else 1.0
    sps *= 1.3 if values["model.memory_format"] == "channels_last" else 1.0
    sps *= {32: 0.7, 64: 0.9, 128: 1.0, 256: 0.85, 512: 0.6}[values["data.batch_size"]]
    sps *= 1.2 if values["data.num_workers"] == 0 else 1.0
    compiled = values["train.compile"] != "off"
    return CellRecord(
        status="ok",
        samples_per_s=sps * (3.0 if compiled else 1.0),
        guards_ok=not compiled,
        peak_mem_mb=values["data.batch_size"] * 2.0,
    )


def test_finds_the_planted_fastest_guard_passing_configuration() -> None:
    calls: list[dict] = []

    def measure(v: dict) -> CellRecord:
        calls.append(v)
        return fake(v)

    searcher = Searcher(measure, budget_s=1e9)
    result = coordinate_search(START, SPACE, searcher)
    best = max(
        (dict(zip(SPACE, combo)) for combo in itertools.product(*SPACE.values())),
        key=lambda v: fake(v).samples_per_s if fake(v).usable else 0,
    )
    assert (
        result.winner
        == best
        == {
            "precision": "bf16",
            "model.memory_format": "channels_last",
            "data.batch_size": 128,
            "data.num_workers": 0,
            "train.compile": "off",
        }
    )
    assert result.winner_record.samples_per_s == pytest.approx(1000 * 1.5 * 1.3 * 1.2)
    assert len(calls) == len({tuple(sorted(c.items())) for c in calls})  # each configuration measured once
    assert not result.budget_exhausted


def test_memory_cap_stops_larger_batches() -> None:
    seen: list[int] = []

    def measure(v: dict) -> CellRecord:
        seen.append(v["data.batch_size"])
        return fake(v)

    coordinate_search(START, {"data.batch_size": SPACE["data.batch_size"]}, Searcher(measure, 1e9), mem_cap_mb=300)
    assert 256 in seen and 512 not in seen  # 256 -> 512 MB > cap: nothing larger is tried


def test_budget_is_respected() -> None:
    now = [0.0]

    def measure(v: dict) -> CellRecord:
        now[0] += 10.0  # every measurement takes 10 "seconds"
        return fake(v)

    result = coordinate_search(START, SPACE, Searcher(measure, budget_s=35.0, clock=lambda: now[0]))
    assert result.budget_exhausted and len(result.trials) <= 5


def test_reserve_leaves_time_for_what_follows_the_search() -> None:
    now = [0.0]

    def measure(v: dict) -> CellRecord:
        now[0] += 10.0
        return fake(v)

    # 100 s in all, of which 5 trials' worth (measured: 10 s each) is kept for the final rounds
    searcher = Searcher(measure, budget_s=100.0, clock=lambda: now[0], reserve_s=lambda s: 5 * (s.trial_seconds or 0))
    result = coordinate_search(START, SPACE, searcher)
    assert result.budget_exhausted and searcher.trial_seconds == 10.0
    assert len(result.trials) == 6 and now[0] == 60.0  # the last trial started at 50 s = 100 - 5 x 10


def test_contributions_one_change_at_a_time() -> None:
    searcher = Searcher(fake, 1e9)
    winner = {**START, "precision": "bf16", "data.num_workers": 0}
    rows = {r["axis"]: r for r in contributions(START, winner, searcher)}
    assert set(rows) == {"precision", "data.num_workers"}
    assert rows["precision"]["speedup"] == pytest.approx(1.5) and rows["data.num_workers"]["speedup"] == pytest.approx(
        1.2
    )
    # against the start's pooled samples/s when given (the start read 900 here, the pool says 1,000)
    rows = {r["axis"]: r for r in contributions(START, winner, searcher, start_sps=1000.0)}
    assert rows["precision"]["speedup"] == pytest.approx(1.5 * 0.9)


def test_finalists_are_the_fastest_distinct_usable_trials() -> None:
    from bench.tune.search import finalists

    result = coordinate_search(START, SPACE, Searcher(fake, 1e9))
    top = finalists(result, k=3)
    assert len(top) == 3 and START not in top
    assert top[0] == result.winner
    assert all(v["train.compile"] == "off" for v in top)  # the guard-failing compiled configs never qualify
    speeds = [fake(v).samples_per_s for v in top]
    assert speeds == sorted(speeds, reverse=True)


def test_contributions_are_complete_even_after_the_budget() -> None:
    now = [0.0]
    searcher = Searcher(fake, budget_s=1.0, clock=lambda: now[0])
    now[0] = 100.0  # budget long spent
    winner = {**START, "precision": "bf16", "data.batch_size": 128}
    assert {r["axis"] for r in contributions(START, winner, searcher)} == {"precision", "data.batch_size"}


def test_contributions_left_unmeasured_say_so_and_measure_nothing() -> None:
    calls: list[dict] = []
    searcher = Searcher(lambda v: calls.append(v) or fake(v), 1e9)
    searcher.get(START)
    searcher.get({**START, "precision": "bf16"})  # the search tried this lever alone
    winner = {**START, "precision": "bf16", "data.batch_size": 128}
    rows = {r["axis"]: r for r in contributions(START, winner, searcher, measure_missing=False)}
    assert len(calls) == 2 and rows["precision"]["speedup"] == pytest.approx(1.5)
    assert rows["data.batch_size"]["status"] == "not measured" and rows["data.batch_size"]["speedup"] is None


def _noisy(
    first_reading: dict[str, float], recheck_guard_fails: set[str] = frozenset()
) -> tuple[Any, list[tuple[str, str | None]]]:
    """The planted landscape read through noise: a configuration's first reading is scaled by
    ``first_reading[key]`` (default 1), its second reading is the true value."""
    calls: list[tuple[str, str | None]] = []

    def measure(values: dict[str, Any], label: str | None = None) -> CellRecord:
        key = values_key(values)
        calls.append((key, label))
        rec = fake(values)
        if label is None:
            rec.samples_per_s *= first_reading.get(key, 1.0)
        elif key in recheck_guard_fails:
            rec.guards_ok = False
        return rec

    return measure, calls


CL = {**START, "model.memory_format": "channels_last"}
CL_SPACE = {"model.memory_format": ["contiguous", "channels_last"]}


def test_a_close_call_gets_a_second_reading_of_both_sides() -> None:
    # channels_last is truly 1.3x the start, but its first reading came out at 0.75 of its true
    # value, 0.975x the start: within 15%, so too close to call on one reading each.
    measure, calls = _noisy({values_key(CL): 0.75})
    plain = coordinate_search(START, CL_SPACE, Searcher(measure, 1e9))
    assert plain.winner == START  # one unlucky reading loses a real 1.3x lever

    measure, calls = _noisy({values_key(CL): 0.75})
    result = coordinate_search(START, CL_SPACE, Searcher(measure, 1e9), recheck_band=0.15)
    assert result.winner == CL
    assert calls == [
        (values_key(START), None),
        (values_key(CL), None),
        (values_key(START), "recheck"),
        (values_key(CL), "recheck"),
    ]
    true_cl = fake(CL).samples_per_s
    assert result.readings[values_key(CL)] == pytest.approx([0.75 * true_cl, true_cl])
    assert result.score(CL) == pytest.approx((0.75 * true_cl * true_cl) ** 0.5)
    assert [v for v, _ in result.rechecks] == [START, CL]


def test_clear_differences_are_not_measured_twice() -> None:
    measure, calls = _noisy({})
    result = coordinate_search(START, SPACE, Searcher(measure, 1e9), recheck_band=0.05)
    # every step of the planted landscape is more than 5% (and then 2% min_gain) apart
    assert all(label is None for _, label in calls) and not result.rechecks
    assert result.winner["model.memory_format"] == "channels_last"


def test_a_guard_that_fails_on_the_second_reading_disqualifies() -> None:
    measure, _ = _noisy({values_key(CL): 0.75}, recheck_guard_fails={values_key(CL)})
    result = coordinate_search(START, CL_SPACE, Searcher(measure, 1e9), recheck_band=0.15)
    assert result.winner == START and result.score(CL) == 0.0
    assert finalists(result, k=3) == []  # never a finalist either


def test_finalists_are_ranked_by_pooled_readings() -> None:
    from bench.tune.search import SearchResult

    a, b = {**START, "precision": "bf16"}, CL

    def ok(sps: float) -> CellRecord:
        return CellRecord(status="ok", guards_ok=True, samples_per_s=sps)

    # a: one reading of 1,100; b: first reading 1,000, second 1,400 (pooled 1,183): b ranks first
    result = SearchResult(
        START,
        b,
        ok(900.0),
        ok(1000.0),
        trials=[(START, ok(900.0)), (a, ok(1100.0)), (b, ok(1000.0))],
        scores={values_key(START): 900.0, values_key(a): 1100.0, values_key(b): (1000.0 * 1400.0) ** 0.5},
    )
    assert finalists(result, k=2) == [b, a]


def test_rechecks_of_an_earlier_run_are_reused() -> None:
    measure, _ = _noisy({values_key(CL): 0.75})
    first = Searcher(measure, 1e9)
    coordinate_search(START, CL_SPACE, first, recheck_band=0.15)
    again, calls = _noisy({})
    result = coordinate_search(
        START, CL_SPACE, Searcher(again, 1e9, known=first.cache, known_rechecks=first.recheck_cache), recheck_band=0.15
    )
    assert calls == [] and result.winner == CL


def test_an_earlier_runs_cells_cost_what_their_processes_took() -> None:
    # A resumed search plans the finals from what the reused cells cost: the start's 220 s, not the
    # resumed run's average trial.
    slow = {**START, "precision": "bf16"}
    known = {values_key(START): CellRecord(status="ok", samples_per_s=900.0, cell_seconds=220.0),
             values_key(slow): CellRecord(status="ok", samples_per_s=1000.0, cell_seconds=40.0),
             values_key(CL): CellRecord(status="failed", reason="killed")}  # fmt: skip
    searcher = Searcher(lambda v, *label: fake(v), 1e9, known=known)
    assert searcher.cost(START) == 220.0 and searcher.timed(slow) == 40.0
    assert searcher.timed(CL) is None and searcher.trial_seconds == pytest.approx(130.0)
    assert searcher.measured(START) and not searcher.trials  # reused, and still a trial only once visited


def test_a_value_that_trains_as_the_current_best_is_not_tried() -> None:
    # Say the workers change nothing at batch 128 (where the search stands when it reaches that axis): the
    # value is never measured there, so it cannot win on its reading (the landscape would pick it).
    def same(a: dict[str, Any], b: dict[str, Any]) -> bool:
        def rest(v: dict[str, Any]) -> dict[str, Any]:
            return {k: x for k, x in v.items() if k != "data.num_workers"}

        return a == b or (a["data.batch_size"] == b["data.batch_size"] == 128 and rest(a) == rest(b))

    calls: list[dict[str, Any]] = []
    result = coordinate_search(START, SPACE, Searcher(lambda v, *label: calls.append(v) or fake(v), 1e9), same=same)
    assert result.winner["data.batch_size"] == 128 and result.winner["data.num_workers"] == 2
    assert not [v for v in calls if v["data.batch_size"] == 128 and v["data.num_workers"] == 0]


def test_every_lever_gets_a_reading_before_a_close_call_gets_a_second() -> None:
    space = {**CL_SPACE, "data.num_workers": [2, 0], "train.compile": ["off", "default"]}
    for budget, rechecked in ((45.0, False), (1e9, True)):
        now = [0.0]
        measure, calls = _noisy({values_key(CL): 0.75})

        def timed(values: dict[str, Any], *label: str, now: list[float] = now, measure: Any = measure) -> CellRecord:
            now[0] += 10.0  # each measurement: 10 "seconds"
            return measure(values, *label)

        searcher = Searcher(timed, budget, clock=lambda now=now: now[0])
        result = coordinate_search(START, space, searcher, recheck_band=0.15)
        tried = {k for v, _ in result.trials for k in space if v[k] != START[k]}
        assert tried == set(space)  # all three levers read at least once
        assert bool(result.rechecks) is rechecked  # at 45 s the close call had to wait: 2 rechecks + 2 untried > budget


def test_a_slow_first_cell_does_not_spend_the_budget_estimate() -> None:
    # The first cell of a run pays for cold caches (34 s here, then ~14 s per cell): costed at 34 s,
    # a reserve of 20 cells (680 s) exceeded the whole budget and the search stopped after the start.
    now = [0.0]

    def measure(v: dict) -> CellRecord:
        now[0] += 34.0 if not now[0] else 14.0
        return fake(v)

    searcher = Searcher(measure, budget_s=540.0, clock=lambda: now[0], reserve_s=lambda s: 20 * (s.trial_seconds or 0))
    result = coordinate_search(START, SPACE, searcher)
    assert searcher.trial_seconds == 14.0
    # trials may start until 540 - 20 x 14 = 260 s: the whole search (34 + 12 x 14 = 202 s) fits
    unbounded = coordinate_search(START, SPACE, Searcher(fake, 1e9))
    assert not result.budget_exhausted and len(result.trials) == len(unbounded.trials) == 13
    assert result.winner == unbounded.winner


PIPE_SPACE = {
    "precision": ["fp32", "bf16"],
    "model.memory_format": ["contiguous", "channels_last"],
    "data.batch_size": [32, 64, 128, 256, 512],
    "data.pipeline": ["classic", "tensor"],
    "train.compile": ["off", "default"],
}
PIPE_START = {
    "precision": "fp32",
    "model.memory_format": "contiguous",
    "data.batch_size": 64,
    "data.pipeline": "classic",
    "train.compile": "off",
}


def bottlenecked(values: dict[str, Any]) -> CellRecord:
    """Compute speed (bf16 x1.5, channels_last x1.3, batch 128 best) behind an input pipeline: the
    classic one caps samples/s (less so at larger batches), so channels_last reads as nothing there
    and batch 512 looks best; compile x1.1 on whatever it is given."""
    compute = 600.0 * (1.5 if values["precision"] == "bf16" else 1.0)
    compute *= 1.3 if values["model.memory_format"] == "channels_last" else 1.0
    compute *= {32: 0.7, 64: 0.85, 128: 1.0, 256: 0.97, 512: 0.93}[values["data.batch_size"]]
    cap = (
        {32: 600, 64: 650, 128: 700, 256: 720, 512: 760}[values["data.batch_size"]]
        if values["data.pipeline"] == "classic"
        else 1e9
    )
    sps = min(compute, cap) * (1.1 if values["train.compile"] != "off" else 1.0)
    return CellRecord(status="ok", samples_per_s=sps, guards_ok=True, peak_mem_mb=1.0)


def test_a_lever_masked_by_a_bottleneck_is_judged_again_once_the_bottleneck_moves() -> None:
    best = max(
        (dict(zip(PIPE_SPACE, combo)) for combo in itertools.product(*PIPE_SPACE.values())),
        key=lambda v: bottlenecked(v).samples_per_s,
    )
    assert best == {
        "precision": "bf16",
        "model.memory_format": "channels_last",
        "data.batch_size": 128,
        "data.pipeline": "tensor",
        "train.compile": "default",
    }
    one_pass = coordinate_search(PIPE_START, PIPE_SPACE, Searcher(bottlenecked, 1e9), max_passes=1)
    assert one_pass.winner["model.memory_format"] == "contiguous" and one_pass.winner["data.batch_size"] == 512
    calls: list[dict[str, Any]] = []

    def measure(values: dict[str, Any]) -> CellRecord:
        calls.append(values)
        return bottlenecked(values)

    result = coordinate_search(PIPE_START, PIPE_SPACE, Searcher(measure, 1e9), late_axes=("train.compile",))
    assert result.winner == best and result.passes >= 2
    # From the second pass the batch axis walks from 512 down to 128 and stops at 64 (slower): the far
    # sizes are not measured again behind the fast pipeline.
    fast = [
        c["data.batch_size"]
        for c in calls
        if c["data.pipeline"] == "tensor" and c["model.memory_format"] == "channels_last"
    ]
    assert 32 not in fast and 64 in fast
    # The late axis is tried once, on the settled configuration, never under the other axes' trials.
    compiled = [c for c in calls if c["train.compile"] != "off"]
    assert compiled == [{**best}]


def test_later_passes_leave_time_for_the_late_axes() -> None:
    now = [0.0]

    def measure(values: dict[str, Any]) -> CellRecord:
        now[0] += 10.0
        return bottlenecked(values)

    # Pass 1 takes 8 trials (80 s) with the start; the second pass stops at 110 s, when its next trial and
    # the compile trial (2 trials' worth) would no longer fit in 130 s.
    searcher = Searcher(measure, 130.0, clock=lambda: now[0])
    result = coordinate_search(PIPE_START, PIPE_SPACE, searcher, late_axes=("train.compile",), late_trial_cost=2.0)
    compiled = [v for v, _ in result.trials if v["train.compile"] != "off"]
    assert len(compiled) == 1 and not result.budget_exhausted and result.passes == 2
    assert now[0] == 120.0  # the compile trial started at 110 s, on the second pass's best so far
    assert compiled[0]["model.memory_format"] == "channels_last"
