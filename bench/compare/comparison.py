"""Did B get slower than A? Two runs' cells matched by their axis values, each pair with a bootstrap
interval for the throughput ratio and a verdict (numbers only; bench.report.tables formats, bench.compare
is the CLI). No torch import.

A configuration measured more than once in a run (``bench.tune``: search reading, second reading,
final rounds) is compared on all its readings: pooled steps for the ratio, and a bootstrap that
resamples whole readings before steps, so the drift between readings widens the interval. A change is
significant when the interval excludes 1 *and* the change is larger than the noise threshold: the
larger of ``min_threshold_pct`` and half the between-repeat spread measured in either run.

Time-to-target cells (``measure.mode: time_to_target``) are compared by what they measured: A's score
over B's (above 1: B reaches the target sooner) with the interval of their runs resampled; a cell that
reached the target in A and not in B fails the comparison like a guard that regressed.

Memory is compared too: what each configuration added to its process tree (``mem_added_mb``), a change
beyond the noise (``MEM_THRESHOLD_PCT``, ``MEM_THRESHOLD_MB``, the readings' own spread) reported as more or
less, and more memory beyond ``--fail-threshold`` fails like a slowdown.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.cells.contract import ERROR, FAIL, OK, PASS, CellRecord, GuardResult
from bench.cells.store import read_records
from bench.cells.target import TARGET_UNIT
from bench.paired.result import Verdict, verdict
from bench.stats import bootstrap_ratio_readings, geometric_mean
from bench.target.scoring import speedup_interval
from trainer_core.errors import TrainbenchError

ENV_KEYS = ("torch", "cuda", "cudnn", "cpu", "gpus", "torch_threads", "threads")
# The one verdict vocabulary (bench.paired.result), as this module's names.
FASTER, SLOWER, SAME, NOT_COMPARED = Verdict.FASTER, Verdict.SLOWER, Verdict.NO_CHANGE, Verdict.NOT_COMPARED
_GUARD_RANK = {PASS: 0, "nondeterministic": 1, FAIL: 2, ERROR: 3}


class CompareError(TrainbenchError):
    """A results directory is missing or unreadable."""


@dataclass
class Readings:
    """Every record of one configuration in one run (one, or several for a bench.tune run)."""

    records: list[CellRecord]

    @property
    def measured(self) -> list[CellRecord]:
        return [r for r in self.records if r.status == OK and (r.step_s or r.time_to_target is not None)]

    @property
    def cell_id(self) -> str | None:
        return (self.measured or self.records)[0].cell_id

    @property
    def status(self) -> str:
        return OK if self.measured else self.records[-1].status

    @property
    def rate(self) -> float | None:
        """Throughput in the workload's unit, pooled over the readings."""
        rates = [r.rate for r in self.measured if r.rate]
        return rates[0] if len(rates) == 1 else (geometric_mean(rates) if rates else None)

    @property
    def unit(self) -> str:
        return (self.measured or self.records)[0].unit

    @property
    def repeat_spread_pct(self) -> float:
        return max((r.repeat_spread_pct or 0.0 for r in self.measured), default=0.0)

    @property
    def guards(self) -> dict[str, GuardResult]:
        """Each guard at its worst over the readings: one failing reading is a failing configuration."""
        worst: dict[str, GuardResult] = {}
        for r in self.records:
            for name, g in r.guards.items():
                if _GUARD_RANK.get(g.status, 0) >= _GUARD_RANK.get(worst[name].status if name in worst else PASS, 0):
                    worst[name] = g
        return worst


def axis_key(axes: dict[str, Any]) -> str:
    return ", ".join(f"{k}={axes[k]}" for k in sorted(axes)) or "base"


def load_results(path: str | Path) -> tuple[dict[str, Any], dict[str, Readings]]:
    """(env, {axis key: readings}) of a results directory (or its cells.jsonl)."""
    p = Path(path)
    cells = p / "cells.jsonl" if p.is_dir() else p
    if not cells.is_file():
        raise CompareError(f"{path}: no cells.jsonl (expected a results/<run-id> directory)")
    env_path = cells.parent / "env.json"
    env = json.loads(env_path.read_text()) if env_path.is_file() else {}
    grouped: dict[str, list[CellRecord]] = {}
    for r in read_records(cells):
        grouped.setdefault(axis_key(r.axes), []).append(r)
    return env, {k: Readings(rs) for k, rs in grouped.items()}


def compare_to_target(a: Readings, b: Readings, min_threshold_pct: float) -> dict[str, Any] | None:
    """A time-to-target pair: A's score / B's and its run-resampled interval; None when neither side is such
    a cell (one that is, against one that is not, is not compared: the two measured different things)."""
    ta = next((r.time_to_target for r in a.measured if r.time_to_target), None)
    tb = next((r.time_to_target for r in b.measured if r.time_to_target), None)
    if ta is None and tb is None:
        return None
    if ta is None or tb is None:
        return {"verdict": NOT_COMPARED, "status_a": "throughput" if ta is None else "time to target",
                "status_b": "throughput" if tb is None else "time to target"}  # fmt: skip
    out: dict[str, Any] = {"unit": TARGET_UNIT, "throughput_a": ta.score_s, "throughput_b": tb.score_s,
                           "readings_a": len(ta.runs), "readings_b": len(tb.runs)}  # fmt: skip
    if not (ta.reached and tb.reached):
        out["verdict"] = NOT_COMPARED
        out["target_lost"] = ta.target.describe() if ta.reached else None
        return out
    assert ta.score_s and tb.score_s
    ratio = ta.score_s / tb.score_s
    lo, hi = speedup_interval(ta, tb)
    out.update(ratio=ratio, ci_low=lo, ci_high=hi, change_pct=100.0 * (ratio - 1.0),
               noise_threshold_pct=min_threshold_pct, verdict=verdict(ratio, lo, hi, min_threshold_pct))  # fmt: skip
    return out


# Memory is compared like throughput: a change counts when it is beyond the noise, here the larger of this
# share, this many MiB (allocator rounding, a sampled peak) and the spread of either side's own readings.
MEM_THRESHOLD_PCT, MEM_THRESHOLD_MB = 10.0, 16.0


def compare_memory(a: Readings, b: Readings) -> dict[str, Any]:
    """What each side's configuration added to its process tree (mem_added_mb, mean over readings) and
    whether B's is beyond the noise: verdict more / less / no change (empty where either side lacks it)."""
    ma = [r.mem_added_mb for r in a.measured if r.mem_added_mb is not None]
    mb = [r.mem_added_mb for r in b.measured if r.mem_added_mb is not None]
    if not ma or not mb:
        return {}
    mean_a, mean_b = sum(ma) / len(ma), sum(mb) / len(mb)
    spread = max(max(ma) - min(ma), max(mb) - min(mb))
    noise_mb = max(MEM_THRESHOLD_MB, MEM_THRESHOLD_PCT / 100 * mean_a, spread)
    change = mean_b - mean_a
    word = "no change" if abs(change) <= noise_mb else ("more" if change > 0 else "less")
    pct = 100.0 * change / mean_a if mean_a > 0 else None
    return {
        "mem_a_mb": mean_a,
        "mem_b_mb": mean_b,
        "mem_change_pct": pct,
        "mem_noise_mb": noise_mb,
        "mem_verdict": word,
    }


def compare_cell(a: Readings, b: Readings, min_threshold_pct: float) -> dict[str, Any]:
    out: dict[str, Any] = {"cell_id": b.cell_id or a.cell_id, "status_a": a.status, "status_b": b.status}
    out |= compare_memory(a, b)
    ga, gb = a.guards, b.guards
    out["guard_regressions"] = [g for g in ga if ga[g].status == PASS and g in gb and gb[g].status in (FAIL, ERROR)]
    if not a.measured or not b.measured:
        out["verdict"] = NOT_COMPARED
        return out
    to_target = compare_to_target(a, b, min_threshold_pct)
    if to_target is not None:
        return out | to_target
    ratio, lo, hi = bootstrap_ratio_readings([r.step_s for r in a.measured], [r.step_s for r in b.measured])
    noise = max(min_threshold_pct, 0.5 * a.repeat_spread_pct, 0.5 * b.repeat_spread_pct)
    out.update(
        throughput_a=a.rate,
        throughput_b=b.rate,
        unit=b.unit,
        readings_a=len(a.measured),
        readings_b=len(b.measured),
        ratio=ratio,
        ci_low=lo,
        ci_high=hi,
        change_pct=100.0 * (ratio - 1.0),
        noise_threshold_pct=noise,
        verdict=verdict(ratio, lo, hi, noise),
    )
    return out


def compare(path_a: str | Path, path_b: str | Path, min_threshold_pct: float = 2.0) -> dict[str, Any]:
    env_a, cells_a = load_results(path_a)
    env_b, cells_b = load_results(path_b)
    warnings = [
        f"environment changed: {k}: {env_a.get(k)!r} -> {env_b.get(k)!r}"
        for k in ENV_KEYS
        if k in env_a and k in env_b and env_a[k] != env_b[k]
    ]
    rows = [compare_cell(cells_a[k], cells_b[k], min_threshold_pct) | {"axes": k} for k in cells_a if k in cells_b]
    warnings += hardware_warnings([(cells_a[k], cells_b[k]) for k in cells_a if k in cells_b])
    return {
        "a": str(path_a),
        "b": str(path_b),
        "warnings": warnings,
        "rows": rows,
        "only_in_a": sorted(k for k in cells_a if k not in cells_b),
        "only_in_b": sorted(k for k in cells_b if k not in cells_a),
    }


def hardware_warnings(pairs: list[tuple[Readings, Readings]]) -> list[str]:
    """One line per pair of differing machines among the compared cells (records that name theirs)."""
    seen: dict[tuple[str, str], list[str]] = {}
    for a, b in pairs:
        ha = next((r.hardware for r in a.measured if r.hardware), None)
        hb = next((r.hardware for r in b.measured if r.hardware), None)
        if ha and hb and ha != hb:
            seen.setdefault((ha, hb), []).append(b.cell_id or "?")
    return [
        f"different hardware: {len(cells)} compared cell(s) ran on {ha!r} in A and {hb!r} in B "
        f"(e.g. {cells[0]}): the ratios compare machines as well as code"
        for (ha, hb), cells in seen.items()
    ]


def failures(result: dict[str, Any], fail_threshold_pct: float | None) -> list[str]:
    """Why the comparison fails (bench.compare's exit 1): a guard that passed in A and fails in B, a
    significant slowdown beyond the threshold, or no cell compared at all (a gate that compared nothing
    cannot say "no regression")."""
    out = []
    if not any(r.get("verdict") not in (None, NOT_COMPARED) for r in result["rows"]):
        out.append(
            f"no cell was compared: {len(result['rows'])} matched by their axes, none measured on both sides "
            f"({len(result['only_in_a'])} only in A, {len(result['only_in_b'])} only in B)"
        )
    for r in result["rows"]:
        if r["guard_regressions"]:
            out.append(f"{r['cell_id']}: guard(s) passed in A, fail in B: {', '.join(r['guard_regressions'])}")
        if r.get("target_lost"):
            out.append(f"{r['cell_id']}: reached {r['target_lost']} in A, not in B")
        if fail_threshold_pct is not None and r.get("verdict") == SLOWER and -r["change_pct"] > fail_threshold_pct:
            out.append(f"{r['cell_id']}: {-r['change_pct']:.1f}% slower (limit {fail_threshold_pct:g}%)")
        grew = r.get("mem_change_pct")
        if fail_threshold_pct is not None and r.get("mem_verdict") == "more" and grew and grew > fail_threshold_pct:
            out.append(f"{r['cell_id']}: needs {grew:.1f}% more memory ({r['mem_a_mb']:.0f} -> {r['mem_b_mb']:.0f} "
                       f"MiB added; limit {fail_threshold_pct:g}%)")  # fmt: skip
    return out
