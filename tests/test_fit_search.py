"""bench.fit's search on a table of what fits: doubling, then bisection; a start that does not fit halves; the
chosen batch must pass the longer confirmation, else the next smaller one that fitted is confirmed."""

from __future__ import annotations

from bench.fit.search import Probe, largest_fit, search


def table(limit: int, epoch_limit: int | None = None) -> tuple[list[int], object, object]:
    calls: list[int] = []

    def probe(b: int) -> Probe:
        calls.append(b)
        return Probe(b, b <= limit, peak_mb=float(b))

    def confirm(b: int) -> Probe:
        calls.append(-b)
        return Probe(b, b <= (epoch_limit if epoch_limit is not None else limit), confirm=True)

    return calls, probe, confirm


def test_doubling_then_bisection_to_an_eighth() -> None:
    calls, probe, _ = table(300)
    best, probes = largest_fit(64, probe, max_batch=4096)
    assert calls[:4] == [64, 128, 256, 512] and 256 <= best <= 300 and best > 256
    assert all(p.fits == (p.batch <= 300) for p in probes)
    assert best >= 300 - 300 // 8  # bisected down to an eighth of the batch


def test_a_start_that_does_not_fit_halves_and_max_batch_caps() -> None:
    calls, probe, _ = table(20)
    best, _ = largest_fit(64, probe, max_batch=4096)
    assert calls[:3] == [64, 32, 16] and 16 <= best <= 20
    calls, probe, _ = table(10_000)
    assert largest_fit(64, probe, max_batch=200)[0] == 200 and max(calls) == 200
    calls, probe, _ = table(0)
    assert largest_fit(8, probe, max_batch=64)[0] is None and calls == [8, 4, 2, 1]


def test_a_batch_that_fits_steps_but_not_an_epoch_is_not_chosen() -> None:
    calls, probe, confirm = table(300, epoch_limit=100)
    result = search(64, probe, confirm, max_batch=4096)
    assert result.chosen is not None and result.chosen <= 100 and result.confirmed is not None
    assert [-c for c in calls if c < 0][0] > 100  # the largest short-probe fit was tried first, and failed
    calls, probe, confirm = table(300, epoch_limit=20)  # below every batch that fitted: halving further
    assert search(64, probe, confirm, max_batch=4096).chosen == 16
    calls, probe, confirm = table(300, epoch_limit=0)
    assert search(64, probe, confirm, max_batch=4096).chosen is None
