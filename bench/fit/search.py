"""The largest batch size that fits (pure logic: the probe is injected, no torch).

Doubling from the start batch while probes fit (halving first when the start does not), then bisection between
the largest batch that fitted and the smallest that did not, down to ``granularity`` of the former. The chosen
batch must then pass a longer confirmation (an epoch): training state can grow (a metric buffer, the allocator's
fragmentation), so a batch that fits for a few steps may not for an epoch. When it fails, the next smaller batch
that fitted is confirmed instead, and so on.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Probe:
    batch: int
    fits: bool
    peak_mb: float | None = None
    reason: str | None = None
    confirm: bool = False  # the longer run (an epoch), not a few steps


@dataclass
class FitResult:
    chosen: int | None
    probes: list[Probe] = field(default_factory=list)

    @property
    def confirmed(self) -> Probe | None:
        return next((p for p in self.probes if p.confirm and p.fits and p.batch == self.chosen), None)


def largest_fit(
    start: int, probe: Callable[[int], Probe], max_batch: int, granularity: float = 0.125
) -> tuple[int | None, list[Probe]]:
    """(the largest batch that fitted a short probe, or None when batch 1 did not; every probe in order)."""
    done: dict[int, Probe] = {}

    def fits(b: int) -> bool:
        if b not in done:
            done[b] = probe(b)
        return done[b].fits

    lo, hi = None, None  # largest that fits, smallest that does not
    b = min(start, max_batch)
    if fits(b):
        lo = b
        while lo < max_batch and fits(min(2 * lo, max_batch)):
            lo = min(2 * lo, max_batch)
        hi = min(2 * lo, max_batch) if lo < max_batch else None
    else:
        hi = b
        while hi > 1:
            b = max(1, hi // 2)
            if fits(b):
                lo = b
                break
            hi = b
    while lo is not None and hi is not None and hi - lo > max(1, int(lo * granularity)):
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid)
    return lo, list(done.values())


def search(start: int, probe: Callable[[int], Probe], confirm: Callable[[int], Probe], max_batch: int) -> FitResult:
    """The largest batch that fits a short probe and then passes ``confirm``."""
    best, probes = largest_fit(start, probe, max_batch)
    candidates = sorted({p.batch for p in probes if p.fits}, reverse=True)
    for b in candidates:
        check = confirm(b)
        probes.append(check)
        if check.fits:
            return FitResult(b, probes)
    # Nothing that fitted a short probe survived the long one: below the smallest, halving.
    b = (candidates[-1] if candidates else (best or 1)) // 2
    while b >= 1:
        check = confirm(b)
        probes.append(check)
        if check.fits:
            return FitResult(b, probes)
        b //= 2
    return FitResult(None, probes)
