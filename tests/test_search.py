from __future__ import annotations

import itertools
from typing import Any

import pytest

from bench.search import Searcher, contributions, coordinate_search, finalists, usable, values_key

SPACE = {"precision": ["fp32", "bf16"], "model.memory_format": ["contiguous", "channels_last"],
         "data.batch_size": [32, 64, 128, 256, 512], "data.num_workers": [0, 2], "train.compile": ["off", "default"]}
START = {"precision": "fp32", "model.memory_format": "contiguous", "data.batch_size": 64, "data.num_workers": 2, "train.compile": "off"}


def fake(values: dict[str, Any]) -> dict[str, Any]:
    """A planted landscape: bf16 x1.5, channels_last x1.3, batch 128 best, no workers x1.2;
    compile is fastest of all but fails its guards, so it must never win."""
    sps = 1000.0
    sps *= 1.5 if values["precision"] == "bf16" else 1.0
    sps *= 1.3 if values["model.memory_format"] == "channels_last" else 1.0
    sps *= {32: 0.7, 64: 0.9, 128: 1.0, 256: 0.85, 512: 0.6}[values["data.batch_size"]]
    sps *= 1.2 if values["data.num_workers"] == 0 else 1.0
    compiled = values["train.compile"] != "off"
    return {"status": "ok", "samples_per_s": sps * (3.0 if compiled else 1.0), "guards_ok": not compiled,
            "peak_mem_mb": values["data.batch_size"] * 2.0}


def test_finds_the_planted_fastest_guard_passing_configuration() -> None:
    calls: list[dict] = []

    def measure(v: dict) -> dict:
        calls.append(v)
        return fake(v)

    searcher = Searcher(measure, budget_s=1e9)
    result = coordinate_search(START, SPACE, searcher)
    best = max((dict(zip(SPACE, combo)) for combo in itertools.product(*SPACE.values())),
               key=lambda v: fake(v)["samples_per_s"] if usable(fake(v)) else 0)
    assert result.winner == best == {"precision": "bf16", "model.memory_format": "channels_last", "data.batch_size": 128,
                                     "data.num_workers": 0, "train.compile": "off"}
    assert result.winner_record["samples_per_s"] == pytest.approx(1000 * 1.5 * 1.3 * 1.2)
    assert len(calls) == len({tuple(sorted(c.items())) for c in calls})  # each configuration measured once
    assert not result.budget_exhausted


def test_memory_cap_stops_larger_batches() -> None:
    seen: list[int] = []

    def measure(v: dict) -> dict:
        seen.append(v["data.batch_size"])
        return fake(v)

    coordinate_search(START, {"data.batch_size": SPACE["data.batch_size"]}, Searcher(measure, 1e9), mem_cap_mb=300)
    assert 256 in seen and 512 not in seen  # 256 -> 512 MB > cap: nothing larger is tried


def test_budget_is_respected() -> None:
    now = [0.0]

    def measure(v: dict) -> dict:
        now[0] += 10.0  # every measurement takes 10 "seconds"
        return fake(v)

    result = coordinate_search(START, SPACE, Searcher(measure, budget_s=35.0, clock=lambda: now[0]))
    assert result.budget_exhausted and len(result.trials) <= 5


def test_reserve_leaves_time_for_what_follows_the_search() -> None:
    now = [0.0]

    def measure(v: dict) -> dict:
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
    assert rows["precision"]["speedup"] == pytest.approx(1.5) and rows["data.num_workers"]["speedup"] == pytest.approx(1.2)
    # against the start's pooled samples/s when given (the start read 900 here, the pool says 1,000)
    rows = {r["axis"]: r for r in contributions(START, winner, searcher, start_sps=1000.0)}
    assert rows["precision"]["speedup"] == pytest.approx(1.5 * 0.9)


def test_finalists_are_the_fastest_distinct_usable_trials() -> None:
    from bench.search import finalists

    result = coordinate_search(START, SPACE, Searcher(fake, 1e9))
    top = finalists(result, k=3)
    assert len(top) == 3 and START not in top
    assert top[0] == result.winner
    assert all(v["train.compile"] == "off" for v in top)  # the guard-failing compiled configs never qualify
    speeds = [fake(v)["samples_per_s"] for v in top]
    assert speeds == sorted(speeds, reverse=True)


def test_contributions_are_complete_even_after_the_budget() -> None:
    now = [0.0]
    searcher = Searcher(fake, budget_s=1.0, clock=lambda: now[0])
    now[0] = 100.0  # budget long spent
    winner = {**START, "precision": "bf16", "data.batch_size": 128}
    assert {r["axis"] for r in contributions(START, winner, searcher)} == {"precision", "data.batch_size"}


def _noisy(first_reading: dict[str, float], recheck_guard_fails: set[str] = frozenset()) -> tuple[Any, list[tuple[str, str | None]]]:
    """The planted landscape read through noise: a configuration's first reading is scaled by
    ``first_reading[key]`` (default 1), its second reading is the true value."""
    calls: list[tuple[str, str | None]] = []

    def measure(values: dict[str, Any], label: str | None = None) -> dict[str, Any]:
        key = values_key(values)
        calls.append((key, label))
        rec = fake(values)
        if label is None:
            rec["samples_per_s"] *= first_reading.get(key, 1.0)
        elif key in recheck_guard_fails:
            rec["guards_ok"] = False
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
    assert calls == [(values_key(START), None), (values_key(CL), None), (values_key(START), "recheck"), (values_key(CL), "recheck")]
    true_cl = fake(CL)["samples_per_s"]
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
    from bench.search import SearchResult

    a, b = {**START, "precision": "bf16"}, CL
    ok = {"status": "ok", "guards_ok": True}
    # a: one reading of 1,100; b: first reading 1,000, second 1,400 (pooled 1,183): b ranks first
    result = SearchResult(START, b, {**ok, "samples_per_s": 900.0}, {**ok, "samples_per_s": 1000.0},
                          trials=[(START, {**ok, "samples_per_s": 900.0}), (a, {**ok, "samples_per_s": 1100.0}),
                                  (b, {**ok, "samples_per_s": 1000.0})],
                          scores={values_key(START): 900.0, values_key(a): 1100.0, values_key(b): (1000.0 * 1400.0) ** 0.5})
    assert finalists(result, k=2) == [b, a]


def test_rechecks_of_an_earlier_run_are_reused() -> None:
    measure, _ = _noisy({values_key(CL): 0.75})
    first = Searcher(measure, 1e9)
    coordinate_search(START, CL_SPACE, first, recheck_band=0.15)
    again, calls = _noisy({})
    result = coordinate_search(START, CL_SPACE, Searcher(again, 1e9, known=first.cache, known_rechecks=first.recheck_cache),
                               recheck_band=0.15)
    assert calls == [] and result.winner == CL


def test_every_lever_gets_a_reading_before_a_close_call_gets_a_second() -> None:
    space = {**CL_SPACE, "data.num_workers": [2, 0], "train.compile": ["off", "default"]}
    for budget, rechecked in ((45.0, False), (1e9, True)):
        now = [0.0]
        measure, calls = _noisy({values_key(CL): 0.75})

        def timed(values: dict[str, Any], *label: str) -> dict[str, Any]:
            now[0] += 10.0  # each measurement: 10 "seconds"
            return measure(values, *label)

        result = coordinate_search(START, space, Searcher(timed, budget, clock=lambda: now[0]), recheck_band=0.15)
        tried = {k for v, _ in result.trials for k in space if v[k] != START[k]}
        assert tried == set(space)  # all three levers read at least once
        assert bool(result.rechecks) is rechecked  # at 45 s the close call had to wait: 2 rechecks + 2 untried > budget


def test_a_slow_first_cell_does_not_spend_the_budget_estimate() -> None:
    # The first cell of a run pays for cold caches (34 s here, then ~14 s per cell): costed at 34 s,
    # a reserve of 20 cells (680 s) exceeded the whole budget and the search stopped after the start.
    now = [0.0]

    def measure(v: dict) -> dict:
        now[0] += 34.0 if not now[0] else 14.0
        return fake(v)

    searcher = Searcher(measure, budget_s=540.0, clock=lambda: now[0], reserve_s=lambda s: 20 * (s.trial_seconds or 0))
    result = coordinate_search(START, SPACE, searcher)
    assert searcher.trial_seconds == 14.0
    # trials may start until 540 - 20 x 14 = 260 s: the whole search (34 + 14 x 14 = 230 s) fits
    assert not result.budget_exhausted and len(result.trials) == 15
    assert result.winner == coordinate_search(START, SPACE, Searcher(fake, 1e9)).winner
