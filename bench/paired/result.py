"""What a comparison of two configurations concludes, typed: the verdict vocabulary every command speaks
(``bench.ab``, ``bench.tune``'s finalists, ``bench.overhead``, ``bench.compare``, ``bench.history``), the
rule that gives it, and the paired result of a run of rounds as ``ab.json`` keeps it. No torch import.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from enum import Enum
from typing import Any

from bench.stats import bootstrap_paired_ratios


class Verdict(str, Enum):
    """Is B faster than A? A str, so it is written to JSON and SQLite as its text."""

    FASTER = "faster"
    SLOWER = "slower"
    NO_CHANGE = "no change"
    NOT_COMPARED = "not compared"  # one side has no measurement: nothing was judged

    def __str__(self) -> str:
        return self.value


def verdict(ratio: float, low: float, high: float, min_effect_pct: float) -> Verdict:
    """faster / slower: the interval excludes 1 *and* the change is at least the minimum effect (a real but
    smaller change is not worth a verdict); anything else is no change. Whether the interval also rules out
    a change of that size is :func:`resolved`."""
    m = min_effect_pct / 100.0
    return called(slower=high < 1.0 and ratio <= 1.0 - m, faster=low > 1.0 and ratio >= 1.0 + m)


def paired_verdict(low: float, high: float, min_effect_pct: float) -> Verdict:
    """The paired engine's rule, on the interval alone: faster / slower when the interval excludes 1 *and*
    reaches the minimum effect (a change of that size is among what the rounds allow); no change otherwise,
    which covers an interval that excludes 1 but lies wholly within the minimum effect (a real, smaller
    change). Rounds go on until the half-width is min_effect/2, so a true change of exactly the minimum
    effect is called in most runs, where the estimate-based :func:`verdict` would call it in half of them
    (the estimate falls on either side of the threshold). :func:`verdict` stays for unpaired readings
    (``bench.compare``, the history), whose few readings give intervals too narrow to lean on alone."""
    m = min_effect_pct / 100.0
    return called(slower=high < 1.0 and low <= 1.0 - m, faster=low > 1.0 and high >= 1.0 + m)


def called(slower: bool, faster: bool) -> Verdict:
    return Verdict.SLOWER if slower else Verdict.FASTER if faster else Verdict.NO_CHANGE


def resolved(low: float, high: float, min_effect_pct: float) -> bool:
    """The whole interval lies within +-min effect: 'no change' then also means 'no change that large'."""
    m = min_effect_pct / 100.0
    return low >= 1.0 - m and high <= 1.0 + m


@dataclass
class PairedResult:
    """B against A over paired rounds: the throughput ratio B/A (above 1: B is faster), its 95% interval,
    the verdict, each round's ratio and each side's throughput per round."""

    ratio: float
    ci_low: float
    ci_high: float
    verdict: Verdict
    resolved: bool
    per_round: list[float]
    a_rate: list[float]
    b_rate: list[float]
    unit: str

    @classmethod
    def from_rounds(
        cls,
        a_steps: Sequence[Sequence[float]],
        b_steps: Sequence[Sequence[float]],
        scale: float,
        min_effect_pct: float,
        unit: str,
    ) -> PairedResult:
        """From each round's step times of A and of B (``scale``: B's items per step over A's, which turns
        step-time ratios into throughput ratios when a step carries different work)."""
        ratio, lo, hi, per_round = bootstrap_paired_ratios(a_steps, b_steps)
        ratio, lo, hi = ratio * scale, lo * scale, hi * scale
        return cls(
            ratio=ratio,
            ci_low=lo,
            ci_high=hi,
            verdict=paired_verdict(lo, hi, min_effect_pct),
            resolved=resolved(lo, hi, min_effect_pct),
            per_round=[x * scale for x in per_round],
            a_rate=[],
            b_rate=[],
            unit=unit,
        )

    def decided(self, min_effect_pct: float) -> bool:
        """The interval at most +-min_effect/2 wide (relative to the ratio): more rounds would not change what
        can be said at that effect size."""
        return (self.ci_high - self.ci_low) / 2.0 <= min_effect_pct / 200.0 * self.ratio

    @property
    def half_width_pct(self) -> float:
        """Half the interval's width, % of the ratio: how precisely the change is known."""
        return 100.0 * (self.ci_high - self.ci_low) / 2.0 / self.ratio if self.ratio else math.inf

    def rounds_to_decide(self, min_effect_pct: float) -> int | None:
        """About how many rounds this interval needs for a half-width of min_effect/2 (what :meth:`decided`
        asks): the half-width shrinks as one over the root of the rounds, so ``n (half-width / target)^2``.
        Scaled from the interval itself, not from a formula for a plain mean, because the trimmed mean and
        the widening for few rounds make the interval wider than a t interval of the same rounds. None below
        3 rounds (no spread to go by)."""
        n = len(self.per_round)
        if n < 3:
            return None
        target = min_effect_pct / 2.0
        return max(n, math.ceil(n * (self.half_width_pct / target) ** 2))

    def round_sd(self) -> float | None:
        """The sd of the log per-round ratios (None below 3 rounds): how much the rounds disagree."""
        return statistics.stdev(math.log(x) for x in self.per_round) if len(self.per_round) >= 3 else None

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "verdict": self.verdict.value}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> PairedResult:
        """From ``ab.json`` (any version written so far: keys it lacks read as empty)."""
        known = {k: raw[k] for k in cls.__dataclass_fields__ if k in raw}
        known["verdict"] = Verdict(known.get("verdict", Verdict.NO_CHANGE.value))
        known.setdefault("resolved", False)
        for key in ("per_round", "a_rate", "b_rate"):
            known.setdefault(key, [])
        known.setdefault("unit", "samples/s")
        return cls(**known)


@dataclass
class Retake:
    """A round taken again, and why (a stalled reading: the machine, not the code)."""

    round: int
    why: str


@dataclass
class PairedRun:
    """A finished run of paired rounds: how many rounds, how long, each benchmark's result, the retakes."""

    rounds: int
    seconds: float
    results: dict[str, PairedResult]
    retaken: list[Retake] = field(default_factory=list)

    def decided(self, min_effect_pct: float) -> bool:
        return bool(self.results) and all(r.decided(min_effect_pct) for r in self.results.values())

    def to_dict(self) -> dict[str, Any]:
        """The keys ``ab.json`` has always had: rounds, seconds, results (per key), retaken."""
        return {
            "rounds": self.rounds,
            "seconds": self.seconds,
            "results": {k: v.to_dict() for k, v in self.results.items()},
            "retaken": [asdict(r) for r in self.retaken],
        }

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> PairedRun:
        return cls(
            rounds=int(raw.get("rounds", 0)),
            seconds=float(raw.get("seconds", 0.0)),
            results={k: PairedResult.from_dict(v) for k, v in raw.get("results", {}).items()},
            retaken=[Retake(int(r["round"]), str(r["why"])) for r in raw.get("retaken", [])],
        )
