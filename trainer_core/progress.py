"""Progress of a training epoch, visible wherever the output goes.

On a terminal (stderr is a TTY): a tqdm bar. Anywhere else (CI logs, ``| tee``, ``nohup``, a
scheduler's log file): one line on stdout every ``every_s`` seconds with the step, the share of the
epoch done, samples/s and the epoch's ETA, so a long epoch is never silent. A bar redrawn with
carriage returns would be one endless line in such a log, which is why it is not used there.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any, TextIO


class EpochProgress:
    """One epoch's progress: ``update(step, samples)`` after every step, ``close()`` at the end.

    ``mode``: ``auto`` (bar on a TTY, timed lines elsewhere), ``on`` (always the bar), ``off``.
    ``total``: batches in the whole epoch (0 if unknown); ``initial``: batches already done (resume).
    """

    def __init__(
        self,
        mode: str,
        every_s: float,
        epoch: int,
        epochs: int,
        total: int,
        initial: int,
        out: TextIO | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.epoch, self.epochs, self.total, self.done = epoch, epochs, total, initial
        self.every_s = every_s
        self.out = out if out is not None else sys.stdout
        self.clock = clock
        self._bar: Any = None
        self._lines = False
        if mode == "on" or (mode == "auto" and sys.stderr.isatty()):
            from tqdm import tqdm

            self._bar = tqdm(
                total=total,
                initial=initial,
                desc=f"epoch {epoch}/{epochs}",
                unit="step",
                leave=False,
                dynamic_ncols=True,
            )
        elif mode == "auto" and every_s > 0:
            self._lines = True
        self._t0 = self._last = clock()
        self._steps = 0
        self._samples = 0

    def update(self, step: int, samples: int) -> None:
        self.done += 1
        self._steps += 1
        self._samples += samples
        if self._bar is not None:
            self._bar.update(1)
        elif self._lines:
            now = self.clock()
            if now - self._last >= self.every_s:
                self._last = now
                print(self.line(step, now - self._t0), file=self.out, flush=True)

    def line(self, step: int, elapsed: float) -> str:
        """``epoch 2/10  step 1234  batch 50/469 (11%)  1,234 samples/s  epoch ETA 45 s``"""
        where = f"batch {self.done}" + (f"/{self.total} ({100.0 * self.done / self.total:.0f}%)" if self.total else "")
        rate = self._samples / elapsed if elapsed > 0 else 0.0
        eta = ""
        if self.total and elapsed > 0 and self._steps:
            eta = f"  epoch ETA {elapsed / self._steps * max(0, self.total - self.done):.0f} s"
        return f"epoch {self.epoch}/{self.epochs}  step {step}  {where}  {rate:,.0f} samples/s{eta}"

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
