"""What ``bench.ab`` reads in each round (a :class:`~bench.paired.engine.Subject`): a cell per side, launched
by an executor with that side's code (this checkout, or a revision's worktree), or pytest-benchmark tests
run at each side's code (:mod:`bench.launch.pytest_bench`), compared benchmark by benchmark. Every record
is appended to the run's ``cells.jsonl`` as it arrives, the failed and retaken ones included. Guards run
on the warm-up reading of each side; the others only time."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.cells.contract import CellRecord, CellSpec, GuardsConfig, LockstepSpec, MeasureConfig
from bench.cells.store import append_record
from bench.launch.executor import Executor, Handle
from bench.launch.forked import SERVER_ROUNDS, ForkedExecutor
from bench.launch.pipes import make_channels
from bench.paired.cells import reading
from bench.paired.engine import Reading, ReadingError
from trainer_core.errors import ConfigError

CELL_KEY = "cell"  # the one key of a cell subject (pytest-benchmark subjects key by benchmark name)
FORKED, FRESH = "forked", "fresh"  # how a cell reading starts (bench.ab --readings): the executor it picks
# --interleave: a round reads A's cell, then B's (readings), or runs both at once, their timed steps in turns
READINGS, STEPS = "readings", "steps"
# --turn-ms: in turns, how long a side keeps the baton; each turn's first step (after the partner's) is untimed
TURN_MS = 100.0


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


def ab_measure(reading_s: float, mode: str = "throughput") -> MeasureConfig:
    """One timed stretch per reading (the rounds are the repeats), no re-measurement of its own; an inference
    cell's reading times forward calls the same way (``measure.mode: inference``)."""
    return MeasureConfig(mode=mode, repeats=1, min_time_s=reading_s, max_time_s=max(10.0, 3 * reading_s),
                         unstable_spread_pct=None)  # fmt: skip


@dataclass
class CellSubject:
    """A cell per side (the specs may differ: two configs), each reading launched by ``executor``, whose
    servers (if it has any) are renewed every ``renew_every`` rounds."""

    sides: dict[str, Side]
    specs: dict[str, CellSpec]
    run_dir: Path
    executor: Executor
    renew_every: int = SERVER_ROUNDS

    def spec_for(self, arm: str, label: str, first: bool) -> CellSpec:
        side = self.sides[arm]
        update: dict[str, Any] = {"cell_id": f"{side.name}-{label}", "role": f"ab-{side.name}"}
        if not first:
            update["guards"] = GuardsConfig(enabled=[])
        return self.specs[arm].model_copy(update=update)

    def executor_of(self, arm: str) -> Executor:
        return self.executor

    def launch(self, arm: str, spec: CellSpec, label: str) -> Handle:
        side = self.sides[arm]
        try:
            return self.executor_of(arm).submit(spec, self.run_dir / "cells", side.code_root)
        except ConfigError as e:
            raise ReadingError(f"{side.name}, {label}: {e}") from None

    def record(self, arm: str, rec: CellRecord, label: str) -> dict[str, Reading]:
        side = self.sides[arm]
        append_record(self.run_dir / "cells.jsonl", rec)
        return {CELL_KEY: reading(rec, f"{side.name} ({side.given}), {label}")}

    def read(self, arm: str, label: str, first: bool) -> dict[str, Reading]:
        try:
            rec = self.launch(arm, self.spec_for(arm, label, first), label)()
        except ConfigError as e:
            raise ReadingError(f"{self.sides[arm].name}, {label}: {e}") from None
        return self.record(arm, rec, label)

    def executors(self) -> list[Executor]:
        return [self.executor]

    def start_round(self, r: int) -> None:
        if r > 0 and r % self.renew_every == 0:
            for executor in self.executors():
                executor.close()
            # executors with servers start them all at once, ready before the round (others have none)
            for arm, side in self.sides.items():
                if isinstance(executor := self.executor_of(arm), ForkedExecutor):
                    executor.prepare([side.code_root])
            for executor in self.executors():
                if isinstance(executor, ForkedExecutor):
                    executor.wait_ready()

    def close(self) -> None:
        for executor in self.executors():
            executor.close()


@dataclass
class LockstepSubject(CellSubject):
    """Both sides' cells at once, their timed steps in turns (:mod:`bench.measure.lockstep`): each side has
    its own executor (a forked server runs one cell at a time), and a round is one reading of both."""

    partner: Executor | None = None  # the second side's executor
    turn_ms: float = 0.0  # how long a side keeps the baton (0: one step)

    def executor_of(self, arm: str) -> Executor:
        return self.partner if self.partner is not None and arm == list(self.sides)[1] else self.executor

    def executors(self) -> list[Executor]:
        return [self.executor, *([self.partner] if self.partner is not None else [])]

    def read_together(self, order: list[str], label: str, first: bool) -> dict[str, dict[str, Reading]]:
        channels = make_channels(self.run_dir / "lockstep", (order[0], order[1]))
        handles = {}
        for i, arm in enumerate(order):
            spec = self.spec_for(arm, label, first)
            pipes = LockstepSpec(read_pipe=channels[arm][0], write_pipe=channels[arm][1], first=i == 0,
                                 timeout_s=spec.measure.cell_timeout_s, turn_ms=self.turn_ms)  # fmt: skip
            handles[arm] = self.launch(arm, spec.model_copy(update={"lockstep": pipes}), label)
        with ThreadPoolExecutor(max_workers=2) as pool:  # both cells run at once, each waits on its own launch
            futures = {arm: pool.submit(handle) for arm, handle in handles.items()}
            try:
                records = {arm: f.result() for arm, f in futures.items()}
            except ConfigError as e:
                raise ReadingError(f"{label}: {e}") from None
        return {arm: self.record(arm, records[arm], label) for arm in order}


@dataclass
class PytestSubject:
    """pytest-benchmark tests run at each side's code (its own tests folder), optionally one group."""

    sides: dict[str, Side]
    pytest_args: str
    group: str | None
    run_dir: Path
    timeout_s: float = 600.0
    decided: set[str] = field(default_factory=set)  # benchmarks no longer read: their intervals are narrow
    others: set[str] = field(default_factory=set)  # benchmarks outside --group: run once, then deselected

    def narrow(self, decided: set[str]) -> None:
        self.decided = set(decided)

    def start_round(self, r: int) -> None:
        pass

    def close(self) -> None:
        pass

    def read(self, arm: str, label: str, first: bool) -> dict[str, Reading]:
        from bench.launch.pytest_bench import run

        side = self.sides[arm]
        out = {}
        try:
            got = run(side.code_root, self.pytest_args, self.group, self.timeout_s, sorted(self.decided | self.others))
        except ConfigError as e:
            raise ReadingError(f"{side.name}, {label}: {e}") from None
        self.others.update(got.others)
        for rec in got.records:
            key = str(rec.cell_id)
            rec = rec.model_copy(update={"cell_id": f"{side.name}-{label}-{key}", "role": f"ab-{side.name}"})
            append_record(self.run_dir / "cells.jsonl", rec)
            out[key] = reading(rec, f"{side.name} ({side.given}), {label}")
        return out
