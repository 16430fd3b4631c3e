"""The paired-rounds engine: is B faster than A? Every command that asks (``bench.ab``, ``bench.tune``'s
side-by-side finalists, ``bench.overhead``) measures its arms here, in rounds, each arm read once a round.

Why rounds: two runs measured one after the other see different machines (another tenant, a clock change,
a warm cache), and per-run intervals cannot see that drift. Within a round the arms run minutes apart at
most, so the per-round ratio B/A cancels slow drift; the result is a bootstrap over rounds, then steps,
of those paired ratios (:func:`bench.stats.bootstrap_paired_ratios`, typed as
:class:`~bench.paired.result.PairedResult`).

- **Order**: the arms rotate (two arms: A B, then B A, ...), so no arm always runs on a warmer machine;
  ``random``: a seeded shuffle per round.
- **Retakes**: a round with a stalled reading (see STALL_FACTOR) is read again, every arm of it, at most
  MAX_RETAKES times a run; the stalled readings stay on record under their own labels.
- **Stopping**: at least ``min_rounds``, then as soon as every interval is narrow enough to decide at the
  minimum effect, or when another round would pass the budget, or at ``max_rounds``.
- **Failures**: a reading that cannot be used ends the run (:class:`ReadingError`), unless its arm is
  droppable (a tune finalist): then that arm is out, its readings with it.

What is measured is a :class:`Subject`: it reads an arm in a fresh process and returns a
:class:`Reading` per key (one key for a cell; one per benchmark for pytest-benchmark tests). No torch.
"""

from __future__ import annotations

import math
import random
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from bench.paired.result import PairedResult, PairedRun, Retake
from bench.stats import summarize
from trainer_core.errors import TrainbenchError


class ReadingError(TrainbenchError):
    """A reading failed or broke a guard: there is nothing sound to compare."""


@dataclass(frozen=True)
class Reading:
    """One reading of one arm: its step times (s), the items a step processes (samples or tokens) and their
    unit; ``failed`` says why it cannot be used (a failed cell, a broken guard), None when it can."""

    steps: list[float]
    items_per_step: float = 1.0
    unit: str = "samples/s"
    failed: str | None = None

    @property
    def rate(self) -> float:
        """Items per second at the median step."""
        return self.items_per_step / statistics.median(self.steps) if self.steps else 0.0


Round = dict[str, dict[str, Reading]]  # arm -> key -> reading


class Subject(Protocol):
    """What the rounds read. A subject may also have ``read_together(arms, label, first) -> {arm: {key:
    Reading}}``: both arms of a two-arm round read at once (their steps in turns, bench.measure.lockstep);
    the engine then calls it instead of ``read`` per arm. A subject that reads several keys a reading may
    have ``narrow(decided: set[str])``: those keys' comparisons are decided, so its next readings may leave
    them out and the budget goes to the keys whose intervals are still wide."""

    def read(self, arm: str, label: str, first: bool) -> dict[str, Reading]:
        """One reading of ``arm`` (labelled ``label``): a reading per key (``first``: the warm-up's)."""
        ...

    def start_round(self, r: int) -> None:
        """Called before round ``r`` (and its retakes) is read."""
        ...

    def close(self) -> None:
        """The run is over: stop whatever the readings ran on."""
        ...


@dataclass
class RoundsPlan:
    """How many rounds, in what order, and when to stop (see the module's docstring)."""

    budget_s: float = 300.0
    min_rounds: int = 3
    max_rounds: int = 40
    min_effect_pct: float = 3.0
    order: str = "abba"
    seed: int = 0
    warmup: bool = True  # a first round whose timings are not used (cold caches); guards run in it
    started: float = field(default_factory=time.perf_counter)

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    @classmethod
    def fixed(cls, rounds: int, min_effect_pct: float = 3.0, warmup: bool = False) -> RoundsPlan:
        """Exactly ``rounds`` rounds (no early stop, no budget): tune's finals, the overhead comparison."""
        return cls(math.inf, rounds, rounds, min_effect_pct, warmup=warmup)


def round_order(plan: RoundsPlan, r: int, arms: Sequence[str]) -> list[str]:
    """Rotation: round ``r`` starts ``r`` arms in (two arms: A first in even rounds, B first in odd ones);
    random: a seeded shuffle per round."""
    if plan.order == "random":
        out = list(arms)
        random.Random(plan.seed * 100_003 + r).shuffle(out)
        return out
    k = r % len(arms)
    return [*arms[k:], *arms[:k]]


# A stall (the process or the machine stopped or slowed for a while) is not the code: a change of the
# code is in every reading of its arm, a stall in one. A round with a stalled reading is taken again
# (every arm, so the readings stay paired), at most MAX_RETAKES times a run. Two kinds were seen here:
# - the whole reading slow: every step of a 1 ms reading took 40 ms. STALL_FACTOR: its median step
#   against its arm's typical one;
# - the machine changing speed midway: a reading's median step 1.5-1.7x its own fastest tenth, where its
#   arm's other readings sit at 1.03-1.1x (a tenant's burst covering half of it). UNSTEADY_FACTOR: that
#   ratio against its arm's typical ratio. A code change scales every step, so it leaves that ratio be.
# Only slow readings count: nothing makes a reading spuriously fast.
STALL_FACTOR = 3.0
UNSTEADY_FACTOR = 1.25
MAX_RETAKES = 3


def step_shape(steps: Sequence[float]) -> tuple[float, float]:
    """A reading's median step, and its unsteadiness: the median over its fastest tenth's step (its 10th
    percentile), near 1 when it ran steadily."""
    s = summarize(steps)
    return s["median"], s["median"] / s["p10"]


def stall(reading: Round, before: list[Round]) -> str | None:
    """Why this round cannot be paired, or None: a reading STALL_FACTOR x its arm's typical step, or
    UNSTEADY_FACTOR x its arm's typical unsteadiness (typical: the median over that arm's earlier rounds,
    or its warm-up before there are any)."""
    for arm, got in reading.items():
        for key, rec in got.items():
            past = [step_shape(rd[arm][key].steps) for rd in before if key in rd.get(arm, {}) and rd[arm][key].steps]
            if not past or not rec.steps:
                continue
            typical, steady = statistics.median(p[0] for p in past), statistics.median(p[1] for p in past)
            mine, wobble = step_shape(rec.steps)
            if mine > STALL_FACTOR * typical:
                return (
                    f"{arm}'s {key} reading took {1e3 * mine:.3g} ms a step, {mine / typical:.1f}x its "
                    f"typical {1e3 * typical:.3g} ms"
                )
            if wobble > UNSTEADY_FACTOR * steady:
                return (
                    f"{arm}'s {key} reading changed speed midway: its median step is {wobble:.2f}x its "
                    f"fastest tenth's (typically {steady:.2f}x)"
                )
    return None


@dataclass
class Rounds:
    """The rounds taken so far: per round, each arm's readings; the retakes; the arms dropped and why."""

    arms: list[str]
    taken: list[Round] = field(default_factory=list)
    warmup: Round | None = None
    retaken: list[Retake] = field(default_factory=list)
    dropped: dict[str, str] = field(default_factory=dict)

    def live(self) -> list[str]:
        return [a for a in self.arms if a not in self.dropped]

    def drop(self, arm: str, why: str) -> None:
        self.dropped[arm] = why
        for rd in [*self.taken, *([self.warmup] if self.warmup else [])]:
            rd.pop(arm, None)

    def steps(self, arm: str, key: str) -> list[list[float]]:
        return [rd[arm][key].steps for rd in self.taken if arm in rd and key in rd[arm]]

    def compare(self, base: str, other: str, min_effect_pct: float) -> dict[str, PairedResult]:
        """Per key both arms read in the first round: ``other`` against ``base`` (B/A, throughput), over the
        rounds that read the key on both sides (a key decided early is not read after)."""
        if not self.taken or base not in self.taken[0] or other not in self.taken[0]:
            return {}
        keys = [k for k in self.taken[0][base] if k in self.taken[0][other]]
        out = {}
        for key in keys:
            both = [rd for rd in self.taken if key in rd.get(base, {}) and key in rd.get(other, {})]
            a, b = [rd[base][key] for rd in both], [rd[other][key] for rd in both]
            scale = (b[0].items_per_step or 1.0) / (a[0].items_per_step or 1.0)
            result = PairedResult.from_rounds(
                [x.steps for x in a], [x.steps for x in b], scale, min_effect_pct, a[0].unit
            )
            result.a_rate, result.b_rate = [x.rate for x in a], [x.rate for x in b]
            out[key] = result
        return out


def take_reading(
    arm: str, label: str, got: dict[str, Reading], rounds: Rounds, droppable: set[str]
) -> dict[str, Reading] | None:
    """``arm``'s reading ``got`` (labelled ``label``) if it can be used; None when the arm failed and was
    dropped. A failed reading of an arm that cannot be dropped ends the run."""
    failed = next((rec.failed for rec in got.values() if rec.failed), None)
    if failed is None and any(not rec.steps for rec in got.values()):
        failed = f"{arm}, {label}: measured no step"
    if failed is None:
        return got
    if arm not in droppable:
        raise ReadingError(failed)
    rounds.drop(arm, failed)
    print(f"{arm} is out: {failed}", flush=True)
    return None


def read_round(subject: Subject, rounds: Rounds, plan: RoundsPlan, r: int, droppable: set[str]) -> Round:
    """Round ``r``'s readings, taken again while one of them stalled (until the run's retakes are spent)."""
    again = 0
    subject.start_round(r)
    while True:
        got: Round = {}
        label = (f"r{r:02d}" if r else "warmup") + (f"-again{again}" if again else "")
        order = round_order(plan, r, rounds.live())
        together = getattr(subject, "read_together", None)  # a subject that reads the arms at once (lockstep)
        raw = together(order, label, first=r == 0) if together is not None and len(order) == 2 else {}
        for arm in order:
            one = raw[arm] if arm in raw else subject.read(arm, label, first=r == 0)
            reading = take_reading(arm, label, one, rounds, droppable)
            if reading is not None:
                got[arm] = reading
        reference = rounds.taken or ([rounds.warmup] if rounds.warmup else [])
        why = stall(got, reference) if r else None
        if why is None or len(rounds.retaken) >= MAX_RETAKES:
            return got
        rounds.retaken.append(Retake(r, why))
        print(f"round {r} taken again: {why} (a stall, not the code)", flush=True)
        again += 1


def run_rounds(
    subject: Subject,
    arms: Sequence[str],
    plan: RoundsPlan,
    droppable: Sequence[str] = (),
    on_round: Callable[[int, Rounds], None] | None = None,
) -> Rounds:
    """The warm-up round (when the plan has one), then rounds until every arm against the first is decided,
    the budget or ``max_rounds``. ``on_round`` sees the rounds after each one (to print progress)."""
    rounds = Rounds(list(arms))
    drop = set(droppable)
    if plan.warmup:
        rounds.warmup = read_round(subject, rounds, plan, 0, drop)
    round_s: list[float] = []
    for r in range(1, plan.max_rounds + 1):
        t0 = time.perf_counter()
        rounds.taken.append(read_round(subject, rounds, plan, r, drop))
        round_s.append(time.perf_counter() - t0)
        if on_round is not None:
            on_round(r, rounds)
        next_round = sorted(round_s)[len(round_s) // 2]  # a typical round
        if r < plan.min_rounds:
            continue
        finished, decided_keys = decision(rounds, plan)
        if finished or plan.elapsed() + next_round > plan.budget_s:
            break
        narrow = getattr(subject, "narrow", None)
        if narrow is not None and plan.max_rounds > plan.min_rounds:  # a fixed plan reads every key each round
            narrow(decided_keys)
    return rounds


def decision(rounds: Rounds, plan: RoundsPlan) -> tuple[bool, set[str]]:
    """From one comparison of every live arm against the first, at the plan's minimum effect: whether all
    are decided on every key, and the keys decided for every arm (those a subject may stop reading)."""
    base, others = rounds.arms[0], [a for a in rounds.live() if a != rounds.arms[0]]
    results = [rounds.compare(base, o, plan.min_effect_pct) for o in others]
    if not others or not all(results):
        return False, set()
    finished = all(r.decided(plan.min_effect_pct) for res in results for r in res.values())
    keys = set.intersection(*(set(res) for res in results))
    return finished, {k for k in keys if all(res[k].decided(plan.min_effect_pct) for res in results)}


def paired_run(
    subject: Subject, arms: tuple[str, str], plan: RoundsPlan, on_round: Callable[[int, Rounds], None] | None = None
) -> PairedRun:
    """Two arms, A and B: the rounds, then B against A per key (what ``bench.ab`` reports)."""
    rounds = run_rounds(subject, arms, plan, on_round=on_round)
    results = rounds.compare(arms[0], arms[1], plan.min_effect_pct)
    if not results:
        raise ReadingError("A and B have no benchmark in common: nothing to compare")
    return PairedRun(len(rounds.taken), plan.elapsed(), results, rounds.retaken)
