"""A ``bench.ab`` run's result, typed: both sides, the plan it ran under and the paired result per
benchmark, written as ``ab.json`` (the same keys as always, so files written before still read) and
read back by the history, the HTML report and ``bench.history bisect``. No torch import."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.paired.result import PairedResult, PairedRun, Verdict


@dataclass
class AbSide:
    """What a side ran: as given on the command line, its commit (None: this checkout) and config file."""

    given: str
    commit: str | None = None
    config: str | None = None
    describe: str = ""


@dataclass
class AbReport:
    sides: dict[str, AbSide]
    order: str
    min_effect_pct: float
    budget_s: float
    run: PairedRun
    readings: str | None = None  # how the cell readings started (None: pytest-benchmark tests)
    notes: list[str] = field(default_factory=list)

    @property
    def results(self) -> dict[str, PairedResult]:
        return self.run.results

    def failures(self, fail_threshold_pct: float | None) -> list[str]:
        """Significant slowdowns beyond the threshold (CI's exit 1); none when no threshold is given."""
        if fail_threshold_pct is None:
            return []
        return [
            f"{key}: B is {100 * (1 - v.ratio):.1f}% slower than A (threshold {fail_threshold_pct:g}%)"
            for key, v in self.results.items()
            if v.ci_high < 1.0 and 100 * (1 - v.ratio) > fail_threshold_pct
        ]

    def slower(self) -> bool:
        return any(v.verdict == Verdict.SLOWER for v in self.results.values())

    def to_dict(self) -> dict[str, Any]:
        out = {
            "sides": {name: asdict(s) for name, s in self.sides.items()},
            "order": self.order,
            "min_effect_pct": self.min_effect_pct,
            "budget_s": self.budget_s,
            **self.run.to_dict(),
            "notes": self.notes,
        }
        if self.readings:
            out["readings"] = self.readings
        return out

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> AbReport:
        sides = {
            name: AbSide(**{k: v for k, v in s.items() if k in AbSide.__dataclass_fields__})
            for name, s in raw.get("sides", {}).items()
        }
        return cls(
            sides=sides,
            order=str(raw.get("order", "abba")),
            min_effect_pct=float(raw.get("min_effect_pct", 3.0)),
            budget_s=float(raw.get("budget_s", 0.0)),
            run=PairedRun.from_dict(raw),
            readings=raw.get("readings"),
            notes=list(raw.get("notes", [])),
        )

    def write(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_dict(), indent=2, default=str) + "\n")

    @classmethod
    def read(cls, path: Path) -> AbReport:
        return cls.from_dict(json.loads(path.read_text()))
