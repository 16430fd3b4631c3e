"""What ``bench.ab`` reads in each round (a :class:`~bench.paired.engine.Subject`): a cell per side, launched
by an executor with that side's code (this checkout, or a revision's worktree), or pytest-benchmark tests
run at each side's code (:mod:`bench.launch.pytest_bench`), compared benchmark by benchmark. Every record
is appended to the run's ``cells.jsonl`` as it arrives, the failed and retaken ones included. Guards run
on the warm-up reading of each side; the others only time."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.cells.contract import CellSpec, GuardsConfig, MeasureConfig
from bench.cells.store import append_record
from bench.launch.executor import Executor
from bench.launch.forked import SERVER_ROUNDS
from bench.paired.cells import reading
from bench.paired.engine import Reading, ReadingError
from trainer_core.errors import ConfigError

CELL_KEY = "cell"  # the one key of a cell subject (pytest-benchmark subjects key by benchmark name)
FORKED, FRESH = "forked", "fresh"  # how a cell reading starts (bench.ab --readings): the executor it picks


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

    def read(self, arm: str, label: str, first: bool) -> dict[str, Reading]:
        side, spec = self.sides[arm], self.specs[arm]
        update: dict[str, Any] = {"cell_id": f"{side.name}-{label}", "role": f"ab-{side.name}"}
        if not first:
            update["guards"] = GuardsConfig(enabled=[])
        try:
            rec = self.executor.submit(spec.model_copy(update=update), self.run_dir / "cells", side.code_root)()
        except ConfigError as e:
            raise ReadingError(f"{side.name}, {label}: {e}") from None
        append_record(self.run_dir / "cells.jsonl", rec)
        return {CELL_KEY: reading(rec, f"{side.name} ({side.given}), {label}")}

    def start_round(self, r: int) -> None:
        if r > 0 and r % self.renew_every == 0:
            self.executor.close()

    def close(self) -> None:
        self.executor.close()


@dataclass
class PytestSubject:
    """pytest-benchmark tests run at each side's code (its own tests folder), optionally one group."""

    sides: dict[str, Side]
    pytest_args: str
    group: str | None
    run_dir: Path
    timeout_s: float = 600.0

    def start_round(self, r: int) -> None:
        pass

    def close(self) -> None:
        pass

    def read(self, arm: str, label: str, first: bool) -> dict[str, Reading]:
        from bench.launch.pytest_bench import run

        side = self.sides[arm]
        out = {}
        try:
            records = run(side.code_root, self.pytest_args, self.group, self.timeout_s)
        except ConfigError as e:
            raise ReadingError(f"{side.name}, {label}: {e}") from None
        for rec in records:
            key = str(rec.cell_id)
            rec = rec.model_copy(update={"cell_id": f"{side.name}-{label}-{key}", "role": f"ab-{side.name}"})
            append_record(self.run_dir / "cells.jsonl", rec)
            out[key] = reading(rec, f"{side.name} ({side.given}), {label}")
        return out
