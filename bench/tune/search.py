"""Coordinate search for the fastest guard-passing configuration (pure logic: the measurement is injected).

Start from the user's configuration; for each axis in turn, try every other value with the rest held
at the current best; move when a guard-passing candidate is faster by more than ``min_gain``; repeat
passes until one changes nothing or the time budget runs out. Larger batch sizes stop being tried once
one of them exceeds the memory cap or fails (e.g. out of memory).

Close calls are measured again. On a shared machine one reading of a configuration can be 15-20% off
the next one (docs/measurements.md), so a single reading cannot tell a 10% lever from noise. When a
candidate and the current best are within ``recheck_band`` of each other, both get a second reading,
and the decision (and the finalists' ranking) uses the geometric mean of each configuration's readings.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Any

from bench.cells.contract import FAILED, CellRecord
from bench.stats import geometric_mean
from bench.tune.levers import levers_of

Record = CellRecord
# measure(values) for a first reading; measure(values, "recheck") for another reading of known values
Measure = Callable[..., Record]
# What a reading is worth, higher better (samples/s, or 1 / seconds to a target); None: it cannot count
Value = Callable[[Record], float | None]
RECHECK = "recheck"


def throughput(record: Record) -> float | None:
    """The default objective: a guard-passing reading's throughput."""
    return record.rate if record.usable else None


def values_key(values: dict[str, Any]) -> str:
    return ", ".join(f"{k}={values[k]}" for k in sorted(values))


@dataclass
class SearchResult:
    start: dict[str, Any]
    winner: dict[str, Any]
    start_record: Record
    winner_record: Record
    trials: list[tuple[dict[str, Any], Record]] = field(default_factory=list)
    budget_exhausted: bool = False
    passes: int = 0
    # values_key -> samples/s of every guard-passing reading (two for a close call), and their pooled
    # value (0 when any reading failed or broke a guard)
    readings: dict[str, list[float]] = field(default_factory=dict)
    scores: dict[str, float] = field(default_factory=dict)
    rechecks: list[tuple[dict[str, Any], Record]] = field(default_factory=list)

    def score(self, values: dict[str, Any]) -> float:
        return self.scores.get(values_key(values), 0.0)


class Searcher:
    """Measures each distinct configuration once (a cache keyed by its values), within a time budget;
    :meth:`recheck` adds a second reading of a configuration.

    ``reserve_s(searcher)`` is time the search must leave for work that follows it (the caller's
    side-by-side re-measurements); it is asked before each trial, so it can scale with the measured
    cost of a trial (``trial_seconds``). ``known``/``known_rechecks``: records of an earlier run
    (``--resume``), used instead of measuring again; their ``cell_seconds`` count as their cost.
    ``value``: what a reading is worth (the objective).
    """

    def __init__(
        self,
        measure: Measure,
        budget_s: float,
        clock: Callable[[], float] = time.monotonic,
        known: dict[str, Record] | None = None,
        reserve_s: Callable[[Searcher], float] = lambda searcher: 0.0,
        known_rechecks: dict[str, Record] | None = None,
        value: Value = throughput,
    ) -> None:
        self.measure, self.value = measure, value
        self.budget_s = budget_s
        self.clock = clock
        self.reserve_s = reserve_s
        self.t0 = clock()
        self.cache: dict[str, Record] = dict(known or {})
        self.recheck_cache: dict[str, Record] = dict(known_rechecks or {})
        self.trials: list[tuple[dict[str, Any], Record]] = []
        self.rechecks: list[tuple[dict[str, Any], Record]] = []
        self._visited: set[str] = set()
        self._cold_done = False  # the first measurement is made (and left out of the timings below)
        self._seconds: dict[str, list[float]] = {}  # wall time of each later measurement, by configuration
        for key, record in [*self.cache.items(), *self.recheck_cache.items()]:
            # An earlier run's cells cost what their processes took: without it a resumed plan costed the
            # start's slow runs to the target as an average trial and under-reserved the finals.
            if record.cell_seconds:
                self._seconds.setdefault(key, []).append(record.cell_seconds)

    @property
    def trial_seconds(self) -> float | None:
        """Mean wall time of one measurement made by this searcher, the first left out; None before
        the second. The first pays for cold caches (torch's libraries read from disk after an install
        or another venv evicted them: it can take twice as long as the next cells); counted, it made the
        reserve for the final rounds exceed the whole budget and the search stopped after the start."""
        later = [t for times in self._seconds.values() for t in times]
        return sum(later) / len(later) if later else None

    def measured(self, values: dict[str, Any]) -> bool:
        """Has ``values`` a reading (this run's, or an earlier run's given as ``known``)?"""
        return values_key(values) in self.cache

    def timed(self, values: dict[str, Any]) -> float | None:
        """The mean wall time of this searcher's own measurements of ``values``; None if it made none."""
        own = self._seconds.get(values_key(values))
        return sum(own) / len(own) if own else None

    def cost(self, values: dict[str, Any]) -> float:
        """What measuring ``values`` again should take: its own readings' mean wall time when this
        searcher timed any (a compiled or classic-pipeline cell costs up to twice an average one),
        else the average trial (0 before two measurements)."""
        own = self.timed(values)
        return own if own is not None else (self.trial_seconds or 0.0)

    def time_left(self) -> float:
        """Seconds of the budget left for measuring, after the reserve."""
        return self.budget_s - self.reserve_s(self) - (self.clock() - self.t0)

    def out_of_time(self) -> bool:
        return self.time_left() < 0

    def can_afford(self, n: float) -> bool:
        """Time for ``n`` more measurements at the cost measured so far?"""
        return self.time_left() >= n * (self.trial_seconds or 0.0)

    def get(self, values: dict[str, Any]) -> Record:
        """Measure ``values`` unless already known; either way it counts as a trial of this search
        (a resumed search reuses earlier measurements but must still rank and report them)."""
        key = values_key(values)
        if key not in self.cache:
            self.cache[key] = self._timed(values)
        if key not in self._visited:
            self._visited.add(key)
            self.trials.append((dict(values), self.cache[key]))
        return self.cache[key]

    def recheck(self, values: dict[str, Any]) -> Record:
        """A second reading of ``values`` (once per configuration; later calls return it)."""
        key = values_key(values)
        if key not in self.recheck_cache:
            self.recheck_cache[key] = self._timed(values, RECHECK)
        record = self.recheck_cache[key]
        if all(v != values for v, _ in self.rechecks):
            self.rechecks.append((dict(values), record))
        return record

    def _records(self, values: dict[str, Any]) -> list[Record]:
        key = values_key(values)
        return [r for r in (self.cache.get(key), self.recheck_cache.get(key)) if r is not None]

    def readings(self, values: dict[str, Any]) -> list[float]:
        """The objective's value of this configuration's readings that count so far."""
        return [v for v in map(self.value, self._records(values)) if v is not None]

    def score(self, values: dict[str, Any]) -> float:
        """Pooled value; 0 if any reading does not count (failed, broke a guard, missed the target: a
        flaky guard disqualifies)."""
        records, readings = self._records(values), self.readings(values)
        return geometric_mean(readings) if records and len(readings) == len(records) else 0.0

    def _timed(self, values: dict[str, Any], *label: str) -> Record:
        t0 = self.clock()
        record = self.measure(dict(values), *label)
        if self._cold_done:  # not the first: that one pays for cold caches (see trial_seconds)
            self._seconds.setdefault(values_key(values), []).append(self.clock() - t0)
        self._cold_done = True
        return record


class _BudgetSpent(Exception):
    """Raised inside the search when no further trial fits the time budget."""


class CoordinateSearch:
    """Coordinate search over ``space`` from ``start`` (see the module docstring and :func:`coordinate_search`).

    Its state is the current best configuration and its record; its steps: :meth:`first_pass` (every
    axis once, every value), :meth:`later_passes` (optional; axes judged before the last move again,
    the batch axis walked to its neighbours), :meth:`late_pass` (the late axes, once, on the settled
    configuration). :meth:`attempt` measures one candidate and moves when :meth:`better` says so.
    """

    def __init__(
        self,
        start: dict[str, Any],
        space: dict[str, list[Any]],
        searcher: Searcher,
        *,
        min_gain: float = 0.02,
        max_passes: int = 3,
        mem_cap_mb: float | None = None,
        batch_key: str = "data.batch_size",
        recheck_band: float = 0.0,
        late_axes: Collection[str] = (),
        late_trial_cost: float = 1.0,
        same: Callable[[dict[str, Any], dict[str, Any]], bool] | None = None,
    ) -> None:
        self.start, self.space, self.searcher = dict(start), space, searcher
        self.same = same or (lambda a, b: a == b)
        self.min_gain, self.max_passes, self.mem_cap_mb, self.batch_key = min_gain, max_passes, mem_cap_mb, batch_key
        self.recheck_band = recheck_band
        self.early = [a for a in space if a not in late_axes]
        self.late = [a for a in space if a in late_axes]
        self.late_units = late_trial_cost * self.others(self.late)
        self.current = dict(start)
        self.best: Record | None = None
        self.passes = 0

    def others(self, axes: list[str]) -> int:
        """Values of these axes other than one each (the current)."""
        return sum(len(self.space[a]) - 1 for a in axes)

    def run(self) -> SearchResult:
        start_record = self.best = self.searcher.get(self.current)
        exhausted = False
        if self.searcher.value(start_record) is not None:  # nothing can be judged against a start that does not count
            try:
                if self.first_pass():
                    self.later_passes()
                self.late_pass()
            except _BudgetSpent:
                exhausted = True
        s = self.searcher
        return SearchResult(
            dict(self.start),
            self.current,
            start_record,
            self.best,
            list(s.trials),
            exhausted,
            self.passes,
            {values_key(v): s.readings(v) for v, _ in s.trials},
            {values_key(v): s.score(v) for v, _ in s.trials},
            list(s.rechecks),
        )

    def first_pass(self) -> bool:
        """Every value of every early axis. In this pass a close call gets its second reading only while the
        budget still covers every value not yet tried once (every lever is read before any is read twice)."""
        self.passes = 1
        changed = False
        for i, axis in enumerate(self.early):
            changed |= self.sweep(axis, self.others(self.early[i + 1 :] + self.late))
        return changed

    def later_passes(self) -> None:
        """Passes while one changes something; each stops where the late axes' trials would no longer fit."""
        changed = True
        while changed and self.passes < self.max_passes:
            changed = False
            self.passes += 1
            reserve = self.late_units + 1
            for axis in self.early:
                try:
                    if axis == self.batch_key and self.current.get(axis) in self.space[axis]:
                        changed |= self.walk(axis, reserve)
                    else:
                        changed |= self.sweep(axis, None, reserve)
                except _BudgetSpent:
                    if self.searcher.out_of_time():
                        raise
                    return

    def late_pass(self) -> None:
        for i, axis in enumerate(self.late):
            self.sweep(axis, self.others(self.late[i + 1 :]))

    def better(self, candidate: dict[str, Any], untried: float) -> bool:
        """Is ``candidate`` faster than the current best by more than min_gain? Within recheck_band of each
        other, both get a second reading first (current first: its reading is older, so they pair up in time)."""
        s = self.searcher
        new, old = s.score(candidate), s.score(self.current)
        close = new > 0.0 and old > 0.0 and abs(math.log(new / old)) < math.log1p(self.recheck_band)
        if close and s.can_afford(2 + untried):
            for values in (self.current, candidate):
                s.recheck(values)
            new, old = s.score(candidate), s.score(self.current)
        if new == 0.0 or old == 0.0:
            return new > 0.0
        return new > old * (1 + self.min_gain)

    def attempt(self, axis: str, value: Any, untried: float, reserve_units: float = 0.0) -> str:
        """Measure the current best with ``axis`` set to ``value``: "moved", "kept" or "too_big"."""
        if self.searcher.out_of_time() or not self.searcher.can_afford(reserve_units):
            raise _BudgetSpent
        candidate = {**self.current, axis: value}
        record = self.searcher.get(candidate)
        if (
            axis == self.batch_key
            and value > self.current.get(axis, 0)
            and (
                record.status == FAILED or (self.mem_cap_mb is not None and (record.peak_mem_mb or 0) > self.mem_cap_mb)
            )
        ):
            return "too_big"  # larger batches will not fit either
        if self.better(candidate, untried + reserve_units):
            self.current, self.best = candidate, record
            return "moved"
        return "kept"

    def sweep(self, axis: str, untried_after: int | None, reserve_units: float = 0.0) -> bool:
        """Every other value of ``axis``. ``untried_after``: values of later axes not yet read (first pass
        only, for the recheck coverage rule); None in later passes."""
        values = sorted(self.space[axis]) if axis == self.batch_key else list(self.space[axis])
        moved = False
        for j, value in enumerate(values):
            if value == self.current.get(axis) or self.same({**self.current, axis: value}, self.current):
                continue
            untried = 0 if untried_after is None else untried_after + len(values) - 1 - j
            outcome = self.attempt(axis, value, untried, reserve_units)
            if outcome == "too_big":
                break
            moved |= outcome == "moved"
        return moved

    def walk(self, axis: str, reserve_units: float) -> bool:
        """The batch sizes next to the current one; on outward while each step wins."""
        sizes = sorted(self.space[axis])
        for step in (1, -1):
            i, moved = sizes.index(self.current[axis]) + step, False
            while 0 <= i < len(sizes) and self.attempt(axis, sizes[i], 0, reserve_units) == "moved":
                moved, i = True, i + step
            if moved:
                return True
        return False


def coordinate_search(
    start: dict[str, Any], space: dict[str, list[Any]], searcher: Searcher, **options: Any
) -> SearchResult:
    """Coordinate search over ``space`` from ``start``.

    ``recheck_band``: candidates within this share of the current best (either side) get a second
    reading of both before the decision (0: never; bench.tune uses 0.15). In the first pass a recheck
    is only taken while the budget still covers every value not yet tried once: every lever gets a
    reading before any close call gets a second one.

    Levers interact: behind a bottleneck (a slow input pipeline) a compute lever reads as nothing, and
    the batch size that wins depends on both. So passes repeat while one changes something; a
    configuration already measured is not measured again, so a later pass only pays for axes judged
    before the last move. From the second pass on, the batch axis tries only the sizes next to the
    current one, moving on outward while that wins (it has many values and a single best).

    ``late_axes`` (e.g. compilation: slow to try, and every later trial would pay for it) are judged
    once, after the other axes have settled; later passes stop early enough to leave time for them,
    costing each of their trials ``late_trial_cost`` ordinary trials. ``same(a, b)``: the two train
    alike (a value that changes nothing where the others stand, such as an lr scaling rule at the
    reference batch, is not tried: its reading could only win on noise). Other options: ``min_gain``,
    ``max_passes``, ``mem_cap_mb`` (larger batches stop once one exceeds it or fails), ``batch_key``.
    """
    return CoordinateSearch(start, space, searcher, **options).run()


def contributions(
    start: dict[str, Any],
    winner: dict[str, Any],
    searcher: Searcher,
    start_sps: float | None = None,
    measure_missing: bool = True,
) -> list[dict[str, Any]]:
    """Each lever on its own: the start with only that axis set to the winner's value, against the
    start's value (``start_sps``: e.g. pooled over every reading of it; default: the search's).

    Not bounded by the search budget: at most one measurement per axis, and a table with rows
    silently missing would misreport what the winner is made of. ``measure_missing=False`` (each
    would be a whole training run of the start) keeps the row of one the search did not measure, as
    "not measured".
    """
    base = searcher.value(searcher.get(start))
    base_sps = start_sps or searcher.score(start)
    rows = []
    for axis in levers_of(start, winner):
        alone = {**start, axis: winner[axis]}
        if not measure_missing and not searcher.measured(alone):
            rows.append({"axis": axis, "from": start.get(axis), "to": winner[axis], "status": "not measured",
                         "guards_ok": None, "speedup": None})  # fmt: skip
            continue
        record = searcher.get(alone)
        value = searcher.value(record)
        rows.append(
            {
                "axis": axis,
                "from": start.get(axis),
                "to": winner[axis],
                "status": record.status,
                "guards_ok": record.guards_ok,
                "speedup": (value / base_sps) if value is not None and base is not None and base_sps else None,
            }
        )
    return rows


def ranked(
    trials: list[tuple[dict[str, Any], Record]],
    score: Callable[[dict[str, Any]], float],
    exclude: dict[str, Any],
    k: int,
) -> list[dict[str, Any]]:
    """The k best-scoring distinct configurations among ``trials`` with a score above 0, ``exclude`` left out."""
    order = sorted((v for v, _ in trials if score(v) > 0 and v != exclude), key=score, reverse=True)
    out: list[dict[str, Any]] = []
    for values in order:
        if values not in out:
            out.append(values)
        if len(out) == k:
            break
    return out


def finalists(result: SearchResult, k: int = 3) -> list[dict[str, Any]]:
    """The k fastest distinct guard-passing configurations the search measured (the start excluded),
    ranked by their pooled readings.

    The search's readings are few and noisy on a shared machine, so the final choice is made by
    re-measuring these side by side, not by the search's readings.
    """
    return ranked(result.trials, result.score, result.start, k)
