"""Two cells that take turns step by step (``bench.ab --interleave steps``): both processes are alive at once
and hand a baton back and forth through two named pipes, so each timed step of A sits between two of B's.

Why: on a shared machine the speed itself can change every few seconds, whatever the code does
(docs/measurements.md, 2026-12-06: readings of the same code a few seconds apart fell into two speeds).
Readings of A and B taken one after the other then often land in different speeds and the per-round ratios
spread widely; steps tens of milliseconds apart share the machine's state, whatever it is.

The protocol, one byte per message on each side's outgoing pipe:

- ``R`` (ready): each side, once set up, says so and waits for the other's, so no setup runs beside a
  timed step. The side told ``first`` then holds the baton.
- ``T`` (turn): after each timed step (its time recorded), the holder hands the baton over and waits for it
  to come back; the wait is not timed (:class:`~bench.measure.timing.StepTimer` restarts its clock). With
  ``turn_ms`` > 0 the holder keeps the baton for that long and at least two steps, and the turn's first
  step is left out of the measurement (:func:`in_turns_only`): a step that follows the partner's steps
  pays a cost of its own (most likely the caches now holding the partner's data), of about the same time
  for the workloads measured, so it slows a side with short steps more than one with long steps
  (docs/measurements.md, "What a turn costs"). The steps after it run on warm caches, still a fraction of
  a second from the partner's. Turns of equal time (not of equal steps) keep two sides with different
  step times reading together until both are done.
- ``D`` (done): a side whose timed steps are over says so, then waits for the other's ``D`` before going on
  (its evaluation, guards and memory step must not run beside the other's timed steps). A side that reads
  ``D`` while waiting for the baton steps on alone; its record counts those steps (``lockstep_alone``).

A partner silent for ``timeout_s`` (it died, or its setup failed) is treated as done, and the record says so.
"""

from __future__ import annotations

import contextlib
import os
import select
import time
from collections.abc import Iterator
from typing import Any, Protocol

from bench.cells.contract import LockstepSpec
from bench.launch.pipes import DONE, READY, TURN


class Baton:
    """One side of the exchange (see the module's docstring)."""

    def __init__(self, spec: LockstepSpec) -> None:
        # O_RDWR never blocks on open and never reads EOF: the other side may open its ends later, or die.
        self.fd_in = os.open(spec.read_pipe, os.O_RDWR)
        self.fd_out = os.open(spec.write_pipe, os.O_RDWR)
        self.first, self.timeout_s, self.turn_s = spec.first, spec.timeout_s, spec.turn_ms / 1e3
        self.holding = False
        self.taken = 0  # timed steps taken in this turn
        self.turn_start = 0.0  # perf_counter when this side's turn began
        self.partner_done = False
        self.alone_steps = 0
        self.silent = False  # the partner said nothing for timeout_s

    def _read(self) -> bytes:
        ready, _, _ = select.select([self.fd_in], [], [], self.timeout_s)
        if not ready:
            self.silent = self.partner_done = True
            return DONE
        return os.read(self.fd_in, 1)

    def _await(self, *wanted: bytes) -> bytes:
        while True:
            got = self._read()
            if got in wanted or got == DONE:
                return got

    def enter(self) -> None:
        """Say ready, wait for the partner's ready; the first side then holds the baton."""
        os.write(self.fd_out, READY)
        self.partner_done = self._await(READY) == DONE
        self.holding = self.first or self.partner_done
        self.turn_start = time.perf_counter()

    def take(self) -> None:
        """Before a timed stretch: hold the baton (wait for it unless already held or alone)."""
        if self.holding or self.partner_done:
            return
        self.partner_done = self._await(TURN) == DONE
        self.holding = True
        self.turn_start = time.perf_counter()

    def hand_over(self) -> None:
        """After a timed step: at the turn's last step, give the baton and wait until it comes back (or the
        partner is done)."""
        if self.partner_done:
            self.alone_steps += 1
            return
        self.taken += 1
        if self.turn_s and (self.taken < 2 or time.perf_counter() - self.turn_start < self.turn_s):
            return
        self.taken = 0
        os.write(self.fd_out, TURN)
        self.holding = False
        self.take()

    def finish(self) -> None:
        """Timed steps over: say done, wait for the partner's done."""
        os.write(self.fd_out, DONE)
        while not self.partner_done:
            self.partner_done = self._read() == DONE

    def close(self) -> None:
        os.close(self.fd_in)
        os.close(self.fd_out)


class TakesTurns(Protocol):
    """What takes the turns: the cell's StepTimer (:mod:`bench.measure.timing`), which hands the baton over
    after each timed step and keeps the wait out of the step's time."""

    baton: Baton | None


@contextlib.contextmanager
def lockstep(spec: LockstepSpec | None, timer: TakesTurns) -> Iterator[Baton | None]:
    """The timed stretch of a cell in lockstep with its partner: ``timer`` (a StepTimer) takes turns through
    the baton inside; nothing changes when ``spec`` is None."""
    if spec is None:
        yield None
        return
    baton = Baton(spec)
    baton.enter()
    timer.baton = baton
    try:
        yield baton
    finally:
        timer.baton = None
        baton.finish()
        baton.close()


def lockstep_figures(baton: Baton, steps: list[dict[str, float]]) -> dict[str, object]:
    """The record's lockstep fields: the measured steps taken alone, and whether the partner fell silent."""
    return {"lockstep_alone_steps": sum(1 for r in steps if r.get("alone")), "lockstep_partner_silent": baton.silent}


def in_turns_only(raw: dict[str, Any]) -> dict[str, Any]:
    """The measured steps taken in turns, without those a side took alone after its partner was done (they
    share no moment with the partner: a faster side would otherwise be read mostly alone) and without the
    steps that opened a turn of several (they pay for the partner's use of the caches). All of them when
    none is left (a partner that never came)."""
    keep = [i for i, r in enumerate(raw["steps"]) if not r.get("alone") and not r.get("turn_opening")]
    if not keep or len(keep) == len(raw["steps"]):
        return raw
    return {**raw, "steps": [raw["steps"][i] for i in keep], "repeat_of_step": [raw["repeat_of_step"][i] for i in keep]}
