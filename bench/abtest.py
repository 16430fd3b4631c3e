"""Interleaved A/B re-measurement (``python -m bench.ab``): two configurations, or one configuration at
two git revisions, measured in alternating rounds (A B, then B A, ...), each reading a fresh process.

Why interleaved: two runs measured one after the other see different machines (another tenant, a
clock change, a warm cache), and per-run intervals cannot see that drift. Within a round A and B run
minutes apart at most, so the per-round ratio B/A cancels slow drift; the verdict is a bootstrap over
rounds, then steps, of those paired ratios (:func:`bench.stats.bootstrap_paired_ratios`). Rounds go
on until the interval is narrow enough to decide at the stated minimum effect, or the budget ends.

The subjects measured: a cell (a training config, or one cell of a matrix file), run with
:func:`bench.launcher.launch_cell`; or pytest-benchmark tests (:mod:`bench.pytest_bench`), compared
benchmark by benchmark. Guards run on the first reading of each side; the others only time.
"""

from __future__ import annotations

import json
import math
import random
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from bench.contract import ERROR, FAIL, CellRecord, CellSpec, GuardsConfig, MeasureConfig
from bench.launcher import CellServer, append_record, launch_cell
from bench.stats import bootstrap_paired_ratios, summarize
from trainer_core.errors import ConfigError, TrainbenchError

FASTER, SLOWER, NO_CHANGE = "faster", "slower", "no change"
CELL_KEY = "cell"  # the one key of a cell subject (pytest-benchmark subjects key by benchmark name)


class AbError(TrainbenchError):
    """A reading failed or broke a guard: there is nothing sound to compare."""


@dataclass
class Side:
    """One side of the comparison: which code runs (this checkout, or a revision's worktree) and, for a
    cell subject, which config file it reads."""

    name: str
    given: str
    code_root: Path
    commit: str | None = None
    config: str | None = None

    def describe(self) -> str:
        code = f"code at {self.commit[:12]}" if self.commit else "code of this checkout"
        return f"{self.name} = {self.given} ({code}" + (f", {self.config})" if self.config else ")")


@dataclass
class AbPlan:
    """When to stop: at least ``min_rounds``, then as soon as every interval is narrow enough to decide
    at ``min_effect_pct`` (half-width at most half of it), or when another round would pass the budget."""

    budget_s: float = 300.0
    min_rounds: int = 3
    max_rounds: int = 40
    min_effect_pct: float = 3.0
    order: str = "abba"
    seed: int = 0
    started: float = field(default_factory=time.perf_counter)

    def elapsed(self) -> float:
        return time.perf_counter() - self.started


class Subject(Protocol):
    def read(self, side: Side, label: str, first: bool) -> dict[str, CellRecord]:
        """One reading of ``side`` in a fresh process: a record per key (guards on the ``first`` one)."""
        ...

    def start_round(self, r: int) -> None:
        """Called before round ``r`` (and its retakes) is read."""
        ...

    def close(self) -> None:
        """The run is over: stop whatever the readings ran on."""
        ...


# Forked readings come from one server per code root (both sides share it when they run the same code).
# A server's children share its address-space layout, a property of the process that a new interpreter
# would draw afresh; fresh servers every SERVER_ROUNDS rounds draw it again, so a run samples several.
SERVER_ROUNDS = 5
FORKED, FRESH = "forked", "fresh"  # how a cell reading starts (bench.ab --readings)


@dataclass
class CellSubject:
    """A cell per side (the specs may differ: two configs), read with ``launch_cell``: in a new
    interpreter, or (``forked``) in a child of a :class:`~bench.launcher.CellServer` for the side's code."""

    specs: dict[str, CellSpec]
    cell_dir: Path
    forked: bool = False
    servers: dict[Path, CellServer] = field(default_factory=dict)

    def read(self, side: Side, label: str, first: bool) -> dict[str, CellRecord]:
        spec = self.specs[side.name]
        update: dict[str, Any] = {"cell_id": f"{side.name}-{label}", "role": f"ab-{side.name}"}
        if not first:
            update["guards"] = GuardsConfig(enabled=[])
        if self.forked and side.code_root not in self.servers:
            self.servers[side.code_root] = CellServer(side.code_root)
        server = self.servers.get(side.code_root)
        return {CELL_KEY: launch_cell(spec.model_copy(update=update), self.cell_dir, side.code_root, server)}

    def start_round(self, r: int) -> None:
        if r > 0 and r % SERVER_ROUNDS == 0:
            self.close()

    def close(self) -> None:
        for server in self.servers.values():
            server.close()
        self.servers.clear()


@dataclass
class PytestSubject:
    """pytest-benchmark tests run at each side's code (its own tests folder), optionally one group."""

    pytest_args: str
    group: str | None
    timeout_s: float = 600.0

    def start_round(self, r: int) -> None:
        pass

    def close(self) -> None:
        pass

    def read(self, side: Side, label: str, first: bool) -> dict[str, CellRecord]:
        from bench.pytest_bench import run

        out = {}
        for rec in run(side.code_root, self.pytest_args, self.group, self.timeout_s):
            key = str(rec.cell_id)
            out[key] = rec.model_copy(update={"cell_id": f"{side.name}-{label}-{key}", "role": f"ab-{side.name}"})
        return out


def ab_measure(reading_s: float) -> MeasureConfig:
    """One timed stretch per reading (the rounds are the repeats), no re-measurement of its own."""
    return MeasureConfig(repeats=1, min_time_s=reading_s, max_time_s=max(10.0, 3 * reading_s), unstable_spread_pct=None)


def verdict(ratio: float, low: float, high: float, min_effect_pct: float) -> str:
    """faster / slower: the interval excludes 1 *and* the change is at least the minimum effect (a
    real but smaller change is not worth a verdict); anything else reads no change. Whether the
    interval also rules out a change of that size is :func:`resolved`."""
    m = min_effect_pct / 100.0
    if high < 1.0 and ratio <= 1.0 - m:
        return SLOWER
    if low > 1.0 and ratio >= 1.0 + m:
        return FASTER
    return NO_CHANGE


def resolved(low: float, high: float, min_effect_pct: float) -> bool:
    """The whole interval lies within +-min effect: 'no change' then also means 'no change that large'."""
    m = min_effect_pct / 100.0
    return low >= 1.0 - m and high <= 1.0 + m


def round_order(plan: AbPlan, r: int, sides: tuple[Side, Side]) -> list[Side]:
    """ABBA: A first in odd rounds, B first in even ones (so neither always runs on a warmer machine);
    random: a seeded coin per round."""
    flip = random.Random(plan.seed * 100_003 + r).random() < 0.5 if plan.order == "random" else r % 2 == 1
    return list(reversed(sides)) if flip else list(sides)


def take_reading(subject: Subject, side: Side, r: int, cells_path: Path, again: int = 0) -> dict[str, CellRecord]:
    """One reading, appended to cells.jsonl as it arrives; a failed or guard-breaking one ends the run.
    Round 0 is the warm-up round: guards run, and its timings are not used. ``again``: the how-manieth
    retake of round ``r`` (its label says so; the stalled readings stay on record under their own)."""
    label = (f"r{r:02d}" if r else "warmup") + (f"-again{again}" if again else "")
    try:
        got = subject.read(side, label, first=r == 0)
    except ConfigError as e:
        raise AbError(f"{side.name}, {label}: {e}") from None
    for rec in got.values():
        append_record(cells_path, rec)
        if rec.status != "ok" or not rec.step_s:
            raise AbError(f"{side.name} ({side.given}), {label}: {rec.status}: {rec.reason}")
        if rec.guards_ok is False:
            broken = ", ".join(f"{n}: {g.detail}" for n, g in rec.guards.items() if g.status in (FAIL, ERROR))
            raise AbError(f"{side.name} ({side.given}) broke a guard, so its speed means nothing: {broken}")
    return got


def analyse(rounds: list[dict[str, dict[str, CellRecord]]], sides: tuple[Side, Side], min_effect_pct: float) -> dict:
    """Per key both sides have: ratio B/A (throughput), its interval, per-round ratios, the verdict."""
    a, b = sides[0].name, sides[1].name
    keys = [k for k in rounds[0][a] if all(k in rd[a] and k in rd[b] for rd in rounds)]
    out: dict[str, Any] = {}
    for key in keys:
        a_recs, b_recs = [rd[a][key] for rd in rounds], [rd[b][key] for rd in rounds]
        # step-time ratios -> throughput ratios when a step carries different work (batch or block size)
        scale = (b_recs[0].items_per_step or 1.0) / (a_recs[0].items_per_step or 1.0)
        ratio, lo, hi, per_round = bootstrap_paired_ratios([r.step_s for r in a_recs], [r.step_s for r in b_recs])
        ratio, lo, hi = ratio * scale, lo * scale, hi * scale
        out[key] = {
            "ratio": ratio,
            "ci_low": lo,
            "ci_high": hi,
            "verdict": verdict(ratio, lo, hi, min_effect_pct),
            "resolved": resolved(lo, hi, min_effect_pct),
            "per_round": [x * scale for x in per_round],
            "a_rate": [r.rate for r in a_recs],
            "b_rate": [r.rate for r in b_recs],
            "unit": a_recs[0].unit,
        }
    return out


def decided(result: dict[str, Any], min_effect_pct: float) -> bool:
    """Every interval at most +-min_effect/2 wide (relative to its ratio): more rounds would not
    change what can be said at that effect size."""
    half = min_effect_pct / 200.0
    return bool(result) and all((v["ci_high"] - v["ci_low"]) / 2.0 <= half * v["ratio"] for v in result.values())


# A stall (the process or the machine stopped or slowed for a while) is not the code: a change of the
# code is in every reading of its side, a stall in one. A round with a stalled reading is taken again
# (both sides, so the pair stays a pair), at most MAX_RETAKES times a run. Two kinds were seen here:
# - the whole reading slow: every step of a 1 ms reading took 40 ms. STALL_FACTOR: its median step
#   against its side's typical one;
# - the machine changing speed midway: a reading's median step 1.5-1.7x its own fastest tenth, where its
#   side's other readings sit at 1.03-1.1x (a tenant's burst covering half of it). UNSTEADY_FACTOR: that
#   ratio against its side's typical ratio. A code change scales every step, so it leaves that ratio be.
# Only slow readings count: nothing makes a reading spuriously fast.
STALL_FACTOR = 3.0
UNSTEADY_FACTOR = 1.25
MAX_RETAKES = 3


def step_shape(rec: CellRecord) -> tuple[float, float]:
    """A reading's median step, and its unsteadiness: the median over its fastest tenth's step (its 10th
    percentile), near 1 when it ran steadily."""
    s = summarize(rec.step_s)
    return s["median"], s["median"] / s["p10"]


def stall(reading: dict[str, dict[str, CellRecord]], before: list[dict[str, dict[str, CellRecord]]]) -> str | None:
    """Why this round cannot be paired, or None: a reading STALL_FACTOR x its side's typical step, or
    UNSTEADY_FACTOR x its side's typical unsteadiness (typical: the median over that side's earlier
    rounds, or its warm-up before there are any)."""
    for side, got in reading.items():
        for key, rec in got.items():
            past = [step_shape(rd[side][key]) for rd in before if key in rd.get(side, {}) and rd[side][key].step_s]
            if not past or not rec.step_s:
                continue
            typical, steady = statistics.median(p[0] for p in past), statistics.median(p[1] for p in past)
            mine, wobble = step_shape(rec)
            if mine > STALL_FACTOR * typical:
                return (
                    f"{side}'s {key} reading took {1e3 * mine:.3g} ms a step, {mine / typical:.1f}x its "
                    f"typical {1e3 * typical:.3g} ms"
                )
            if wobble > UNSTEADY_FACTOR * steady:
                return (
                    f"{side}'s {key} reading changed speed midway: its median step is {wobble:.2f}x its "
                    f"fastest tenth's (typically {steady:.2f}x)"
                )
    return None


def paired_round(
    subject: Subject, sides: tuple[Side, Side], plan: AbPlan, r: int, cells_path: Path, reference: list, retaken: list
) -> dict[str, dict[str, CellRecord]]:
    """Round ``r``'s readings, taken again while one of them stalled (until the run's retakes are spent);
    each retake is appended to ``retaken`` with its reason."""
    again = 0
    subject.start_round(r)
    while True:
        got = {s.name: take_reading(subject, s, r, cells_path, again) for s in round_order(plan, r, sides)}
        why = stall(got, reference)
        if why is None or len(retaken) >= MAX_RETAKES:
            return got
        retaken.append({"round": r, "why": why})
        print(f"round {r} taken again: {why} (a stall, not the code)", flush=True)
        again += 1


def interleave(subject: Subject, sides: tuple[Side, Side], plan: AbPlan, run_dir: Path) -> dict[str, Any]:
    """A warm-up round (guards on both sides; the first process of a run meets cold caches, so its
    timing is not used), then rounds until decided, the budget or ``max_rounds``; the analysis of
    every timed round. A round with a stalled reading is taken again (see STALL_FACTOR)."""
    cells_path = run_dir / "cells.jsonl"
    warmup = {s.name: take_reading(subject, s, 0, cells_path) for s in sides}
    rounds: list[dict[str, dict[str, CellRecord]]] = []
    retaken: list[dict[str, Any]] = []
    result: dict[str, Any] = {}
    round_s: list[float] = []
    for r in range(1, plan.max_rounds + 1):
        t0 = time.perf_counter()
        rounds.append(paired_round(subject, sides, plan, r, cells_path, rounds or [warmup], retaken))
        round_s.append(time.perf_counter() - t0)
        result = analyse(rounds, sides, plan.min_effect_pct)
        if not result:
            raise AbError("A and B have no benchmark in common: nothing to compare")
        said = [f"{k}: B/A {v['ratio']:.3f} [{v['ci_low']:.3f}, {v['ci_high']:.3f}]" for k, v in result.items()]
        print(f"round {r}: {'; '.join(said)}", flush=True)
        next_round = sorted(round_s)[len(round_s) // 2]  # a typical round
        if r >= plan.min_rounds and (
            decided(result, plan.min_effect_pct) or plan.elapsed() + next_round > plan.budget_s
        ):
            break
    return {"rounds": len(rounds), "seconds": plan.elapsed(), "results": result, "retaken": retaken}


# The spread (sd of the log per-round ratios) above which a run says its rounds disagree widely: in the
# A/B experiment of docs/measurements.md the runs' spreads had a median of 7%, and the runs above 10% got
# intervals 23-35% wide from their 7 rounds.
NOISY_ROUND_SD = 0.10


def round_sd(per_round: list[float]) -> float | None:
    """The sd of the log per-round ratios (None below 3 rounds)."""
    return statistics.stdev(math.log(x) for x in per_round) if len(per_round) >= 3 else None


def noise_notes(result: dict[str, Any], configs: dict[str, dict[str, Any]]) -> list[str]:
    """What to tell the user when the rounds disagree widely: how much, and for CPU cells on glibc's
    default malloc policy (whose large blocks come from mmap or the heap depending on each process's
    history, so processes of the same code can run at different speeds) the setting that removes that."""
    notes = []
    for key, v in result.get("results", {}).items():
        sd = round_sd(v["per_round"])
        if sd is None or sd <= NOISY_ROUND_SD:
            continue
        note = f"{key}: the per-round ratios spread by {100 * sd:.0f}% (sd of their logs): a narrow interval needs "
        note += "many rounds"
        if any(_cpu_default_malloc(c) for c in configs.values()):
            note += (
                "; on a CPU, glibc's default malloc policy places large buffers per process (heap or mmap), "
                "one source of that: --set train.malloc=retain on both sides removes it"
            )
        notes.append(note)
    return notes


def _cpu_default_malloc(config: dict[str, Any]) -> bool:
    from bench.matrix import resolve_device_name

    cpu = resolve_device_name(str(config.get("device", "auto"))) == "cpu"
    return cpu and config.get("train", {}).get("malloc", "default") == "default"


def write_outputs(run_dir: Path, report: dict[str, Any], markdown: str) -> list[Path]:
    (run_dir / "ab.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    (run_dir / "ab.md").write_text(markdown + "\n")
    return [run_dir / "ab.json", run_dir / "ab.md", run_dir / "cells.jsonl"]


def failures(report: dict[str, Any], fail_threshold_pct: float | None) -> list[str]:
    """Significant slowdowns beyond the threshold (CI's exit 1); none when no threshold is given."""
    if fail_threshold_pct is None:
        return []
    return [
        f"{key}: B is {100 * (1 - v['ratio']):.1f}% slower than A (threshold {fail_threshold_pct:g}%)"
        for key, v in report["results"].items()
        if v["ci_high"] < 1.0 and 100 * (1 - v["ratio"]) > fail_threshold_pct
    ]


def open_ab_dir(out: Path, sides: tuple[Side, Side], threads: int, extra: dict[str, Any]) -> Path:
    """results/ab-<time>/ with env.json: provenance, both sides (given, commit, config), the command."""
    import sys

    from trainer_core.provenance import environment_info

    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    out.mkdir(parents=True, exist_ok=True)
    for n in range(1, 100):  # two runs started in the same second (a bisection's probes) get their own
        run_dir = out / (f"ab-{stamp}" if n == 1 else f"ab-{stamp}-{n}")
        try:
            run_dir.mkdir()
            break
        except FileExistsError:
            continue
    else:
        raise AbError(f"{out}: 99 A/B runs started in the second {stamp}; not overwriting any")
    env = {
        **environment_info(),
        "kind": "ab",
        "command": sys.argv,
        "threads": threads,
        "sides": {s.name: {"given": s.given, "commit": s.commit, "config": s.config} for s in sides},
        **extra,
    }
    (run_dir / "env.json").write_text(json.dumps(env, indent=2, default=str) + "\n")
    return run_dir


def ab_report(result: dict[str, Any], sides: tuple[Side, Side], plan: AbPlan) -> dict[str, Any]:
    """ab.json: the sides, the plan and every key's verdict with its per-round figures."""
    return {
        "sides": {
            s.name: {"given": s.given, "commit": s.commit, "config": s.config, "describe": s.describe()} for s in sides
        },
        "order": plan.order,
        "min_effect_pct": plan.min_effect_pct,
        "budget_s": plan.budget_s,
        **result,
    }
