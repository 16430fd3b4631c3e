"""Coordinate search for the fastest guard-passing configuration (pure logic: the measurement is injected).

Start from the user's configuration; for each axis in turn, try every other value with the rest held
at the current best; move when a guard-passing candidate is faster by more than ``min_gain``; repeat
passes until one changes nothing or the time budget runs out. Larger batch sizes stop being tried once
one of them exceeds the memory cap or fails (e.g. out of memory).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

Record = dict[str, Any]
Measure = Callable[[dict[str, Any]], Record]


def values_key(values: dict[str, Any]) -> str:
    return ", ".join(f"{k}={values[k]}" for k in sorted(values))


def usable(record: Record) -> bool:
    """Measured, and every guard passed: only such a configuration may win."""
    return record.get("status") == "ok" and bool(record.get("guards_ok")) and (record.get("samples_per_s") or 0) > 0


@dataclass
class SearchResult:
    start: dict[str, Any]
    winner: dict[str, Any]
    start_record: Record
    winner_record: Record
    trials: list[tuple[dict[str, Any], Record]] = field(default_factory=list)
    budget_exhausted: bool = False
    passes: int = 0


class Searcher:
    """Measures each distinct configuration once (a cache keyed by its values), within a time budget.

    ``reserve_s(searcher)`` is time the search must leave for work that follows it (the caller's
    side-by-side re-measurements); it is asked before each trial, so it can scale with the measured
    cost of a trial (``trial_seconds``).
    """

    def __init__(self, measure: Measure, budget_s: float, clock: Callable[[], float] = time.monotonic,
                 known: dict[str, Record] | None = None,
                 reserve_s: Callable[["Searcher"], float] = lambda searcher: 0.0) -> None:
        self.measure = measure
        self.budget_s = budget_s
        self.clock = clock
        self.reserve_s = reserve_s
        self.t0 = clock()
        self.cache: dict[str, Record] = dict(known or {})
        self.trials: list[tuple[dict[str, Any], Record]] = []
        self._visited: set[str] = set()
        self._measured_s = 0.0
        self._measured_n = 0

    @property
    def trial_seconds(self) -> float | None:
        """Mean wall time of one measurement made by this searcher (None before the first)."""
        return self._measured_s / self._measured_n if self._measured_n else None

    def out_of_time(self) -> bool:
        return self.clock() - self.t0 > self.budget_s - self.reserve_s(self)

    def get(self, values: dict[str, Any]) -> Record:
        """Measure ``values`` unless already known; either way it counts as a trial of this search
        (a resumed search reuses earlier measurements but must still rank and report them)."""
        key = values_key(values)
        if key not in self.cache:
            t0 = self.clock()
            self.cache[key] = self.measure(dict(values))
            self._measured_s += self.clock() - t0
            self._measured_n += 1
        if key not in self._visited:
            self._visited.add(key)
            self.trials.append((dict(values), self.cache[key]))
        return self.cache[key]


def coordinate_search(start: dict[str, Any], space: dict[str, list[Any]], searcher: Searcher, *,
                      min_gain: float = 0.02, max_passes: int = 3, mem_cap_mb: float | None = None,
                      batch_key: str = "data.batch_size") -> SearchResult:
    current = dict(start)
    start_record = best = searcher.get(current)
    exhausted = False
    passes = 0
    changed = True
    while changed and passes < max_passes and not exhausted:
        changed = False
        passes += 1
        for axis, values in space.items():
            ordered = sorted(values) if axis == batch_key else list(values)
            for value in ordered:
                if value == current.get(axis):
                    continue
                if searcher.out_of_time():
                    exhausted = True
                    break
                candidate = {**current, axis: value}
                record = searcher.get(candidate)
                too_big = record.get("status") == "failed" or (
                    mem_cap_mb is not None and (record.get("peak_mem_mb") or 0) > mem_cap_mb)
                if axis == batch_key and too_big and value > current.get(axis, 0):
                    break  # larger batches will not fit either
                if usable(record) and (not usable(best) or record["samples_per_s"] > best["samples_per_s"] * (1 + min_gain)):
                    current, best, changed = candidate, record, True
            if exhausted:
                break
    return SearchResult(dict(start), current, start_record, best, list(searcher.trials), exhausted, passes)


def contributions(start: dict[str, Any], winner: dict[str, Any], searcher: Searcher) -> list[dict[str, Any]]:
    """Each lever on its own: the start with only that axis set to the winner's value.

    Not bounded by the search budget: at most one measurement per axis, and a table with rows
    silently missing would misreport what the winner is made of.
    """
    base = searcher.get(start)
    rows = []
    for axis in winner:
        if winner[axis] == start.get(axis):
            continue
        record = searcher.get({**start, axis: winner[axis]})
        rows.append({"axis": axis, "from": start.get(axis), "to": winner[axis], "status": record.get("status"),
                     "guards_ok": record.get("guards_ok"),
                     "speedup": (record["samples_per_s"] / base["samples_per_s"]) if usable(record) and usable(base) else None})
    return rows


def finalists(result: SearchResult, k: int = 3) -> list[dict[str, Any]]:
    """The k fastest distinct guard-passing configurations the search measured (the start excluded).

    One measurement per candidate is noisy on a shared machine, so the final choice is made by
    re-measuring these side by side, not by the search's single readings.
    """
    ranked = sorted(((v, r) for v, r in result.trials if usable(r) and v != result.start),
                    key=lambda vr: vr[1]["samples_per_s"], reverse=True)
    out: list[dict[str, Any]] = []
    for values, _ in ranked:
        if values not in out:
            out.append(values)
        if len(out) == k:
            break
    return out
