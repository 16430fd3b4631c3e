"""Honest timing of the Trainer's own step: warm-up until settled, synchronised timed repeats,
per-phase times through the Trainer's step hooks, FLOPs per step, peak memory, and a matmul peak.

Only raw samples are produced here; :mod:`bench.stats` turns them into figures.
"""

from __future__ import annotations

import contextlib
import math
import resource
import statistics
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import torch
from torch.utils.data import DataLoader

from bench.cells.contract import MeasureConfig
from bench.stats import settled, spread_pct
from trainer_core import distributed
from trainer_core.trainer import BaseHook, StepResult, Trainer

if TYPE_CHECKING:  # the baton's module imports nothing of this one at run time
    from bench.measure.lockstep import Baton

# Runs driven for a number of steps or seconds, not epochs: no early stopping, no validation-driven
# stop, no logging files.
STEP_DRIVEN_OVERRIDES: dict[str, Any] = {
    "train.epochs": 1_000_000,
    "train.max_steps": None,
    "train.early_stopping.patience": None,
    "logging.tensorboard": False,
    "logging.jsonl": False,
    "logging.progress_bar": "off",
}
# A cell also tracks the grad norm, for the finite guard.
CELL_OVERRIDES: dict[str, Any] = {**STEP_DRIVEN_OVERRIDES, "logging.track_grad_norm": True}


def synchronize(device: torch.device) -> None:
    """Wait for queued device work: a step is over when its kernels are, not when Python returns."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class StepTimer(BaseHook):
    """Times each step end to end (previous step end -> this step end, data wait included) and each phase.

    CPU phases are timed with perf_counter (the CPU runs them synchronously). On CUDA, the
    device-side phases are timed with CUDA events, read after the per-step synchronize; ``data``
    (waiting for the loader) is host time everywhere.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.cuda = device.type == "cuda"
        self.enabled = False
        self.records: list[dict[str, float]] = []
        self._phase_s: dict[str, float] = {}
        self._events: list[tuple[str, Any, Any]] = []
        self._last_end = 0.0
        self.baton: Baton | None = None  # in lockstep with a partner cell: steps taken in turns

    def start(self) -> None:
        """Begin a timed stretch; the first step is measured from here (once this cell has the baton)."""
        if self.baton is not None:
            self.baton.take()
        synchronize(self.device)
        self._phase_s = {}
        self._events = []
        self.enabled = True
        self._last_end = time.perf_counter()

    def stop(self) -> list[dict[str, float]]:
        """End the stretch and hand over its records."""
        self.enabled = False
        out, self.records = self.records, []
        return out

    @contextlib.contextmanager
    def _timed(self, name: str) -> Iterator[None]:
        if self.cuda and name != "data":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            yield
            end.record()
            self._events.append((name, start, end))
        else:
            t0 = time.perf_counter()
            yield
            self._phase_s[name] = self._phase_s.get(name, 0.0) + time.perf_counter() - t0

    def phase(self, name: str) -> contextlib.AbstractContextManager[Any]:
        return self._timed(name) if self.enabled else contextlib.nullcontext()

    def on_step_end(self, trainer: Trainer, result: StepResult) -> None:
        if not self.enabled:
            return
        synchronize(self.device)
        now = time.perf_counter()
        rec = {"step_s": now - self._last_end, "samples": float(result.batch_size), "items": float(result.items)}
        for name, seconds in self._phase_s.items():
            rec[f"{name}_s"] = seconds
        for name, start, end in self._events:
            rec[f"{name}_s"] = rec.get(f"{name}_s", 0.0) + start.elapsed_time(end) / 1e3  # ms -> s
        rec.setdefault("data_s", 0.0)
        if self.baton is not None:  # in lockstep: whether this step was taken alone (the partner was done)
            rec["alone"] = float(self.baton.partner_done)
            if self.baton.turn_s:  # and whether it opened a turn (it ran after the partner's steps)
                rec["turn_opening"] = float(self.baton.taken == 0)
        self.records.append(rec)
        self._phase_s = {}
        self._events = []
        self._last_end = now
        if self.baton is not None:  # the partner's step, while this cell waits, is not this cell's time
            self.baton.hand_over()
            self._last_end = time.perf_counter()


def run_steps(trainer: Trainer, loader: DataLoader, n: int) -> None:
    """n optimizer steps through the Trainer's own loop (epoch boundaries handled by fit).

    Fewer steps would silently shrink a timed repeat, so a run that ends early (train.epochs or
    train.max_steps reached) is an error, not a shorter measurement.
    """
    before = trainer.global_step
    trainer.fit(loader, None, stop_after_steps=n)
    if trainer.global_step - before != n:
        raise RuntimeError(
            f"asked for {n} steps, the run ended after {trainer.global_step - before} "
            "(train.epochs / train.max_steps reached): raise them for measurement"
        )


def measure(trainer: Trainer, loader: DataLoader, timer: StepTimer, cfg: MeasureConfig) -> dict[str, Any]:
    """Warm up until step time settles, then ``cfg.repeats`` timed repeats. Returns raw samples."""
    warm: list[float] = []
    is_settled = False
    t0 = time.perf_counter()
    while len(warm) < cfg.max_warmup_steps:
        timer.start()
        run_steps(trainer, loader, cfg.settle_window)
        warm += [r["step_s"] for r in timer.stop()]
        # Ranks of a data-parallel cell decide together (each step is a collective): settled when every
        # rank has settled, out of warm-up time when any rank is, and rank 0's repeat length for all.
        if len(warm) >= cfg.warmup_steps and distributed.all_true(
            settled(warm, cfg.settle_window, cfg.settle_tolerance)
        ):
            is_settled = True
            break
        if len(warm) >= cfg.warmup_steps and not distributed.all_true(time.perf_counter() - t0 <= cfg.max_warmup_s):
            break
    n = distributed.broadcast_object(cfg.steps_per_repeat(statistics.median(warm[-cfg.settle_window :])))
    first = timed_repeats(trainer, loader, timer, n, cfg.repeats)
    out = {"warmup_steps": len(warm), "warmup_settled": is_settled, "steps_per_repeat": n}
    limit = cfg.unstable_spread_pct
    if limit is None or cfg.repeats < 2 or distributed.all_true(repeat_spread_pct(first) <= limit):
        return {**out, "steps": [s for rep in first for s in rep], "repeat_of_step": _labels(first)}
    # The repeats disagree: time as many again. A second set that agrees replaces the first (something
    # disturbed the machine then); one that does not joins it, and the cell is reported unstable.
    second = timed_repeats(trainer, loader, timer, n, cfg.repeats)
    stable = distributed.all_true(repeat_spread_pct(second) <= limit)
    kept = second if stable else first + second
    return {
        **out,
        "steps": [s for rep in kept for s in rep],
        "repeat_of_step": _labels(kept),
        "remeasured": True,
        "unstable": not stable,
    }


def timed_repeats(
    trainer: Trainer, loader: DataLoader, timer: StepTimer, n: int, repeats: int
) -> list[list[dict[str, float]]]:
    """``repeats`` timed stretches of ``n`` steps: each one's step records."""
    out = []
    for _ in range(repeats):
        timer.start()
        run_steps(trainer, loader, n)
        out.append(timer.stop())
    return out


def repeat_spread_pct(repeats: list[list[dict[str, float]]]) -> float:
    """How much the repeats' throughputs (steps per second of each stretch) disagree, %."""
    return spread_pct([len(r) / sum(s["step_s"] for s in r) for r in repeats if r])


def _labels(repeats: list[list[dict[str, float]]]) -> list[int]:
    return [i for i, rep in enumerate(repeats) for _ in rep]


def flops_per_step(trainer: Trainer, x: torch.Tensor, y: torch.Tensor) -> int:
    """FLOPs of one training step (forward + backward; the optimizer's elementwise work is not counted).

    This takes a real step, so call it during warm-up.
    """
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False, custom_mapping=_missing_flop_formulas()) as counter:
        trainer.train_step(x, y)
    trainer.flush()
    return int(counter.get_total_flops())


def _missing_flop_formulas() -> dict[Any, Any]:
    """FLOP formulas for the CPU's fused attention kernel, which FlopCounterMode counts only from some
    torch versions on (without them a GPT cell on CPU counts no attention FLOPs at all): the same
    formulas torch uses for its CUDA attention kernels."""
    from torch.utils import flop_counter as fc

    aten = torch.ops.aten
    forward = getattr(aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    backward = getattr(aten, "_scaled_dot_product_flash_attention_for_cpu_backward", None)
    if forward is None or backward is None or not hasattr(fc, "sdpa_backward_flop_count"):
        return {}

    def sdpa(query_shape: Any, key_shape: Any, value_shape: Any, *args: Any, **kwargs: Any) -> int:
        return fc.sdpa_flop_count(query_shape, key_shape, value_shape)

    def sdpa_backward(grad_shape: Any, query_shape: Any, key_shape: Any, value_shape: Any, *a: Any, **k: Any) -> int:
        return fc.sdpa_backward_flop_count(grad_shape, query_shape, key_shape, value_shape)

    return {op: f for op, f in ((forward, sdpa), (backward, sdpa_backward)) if op not in fc.flop_registry}


def matmul_peak_flops(device: torch.device, dtype: torch.dtype, min_time_s: float = 0.3) -> dict[str, float]:
    """Achieved FLOP/s of a square matmul in ``dtype``: this run's reference 'peak' for % of peak.

    fp16 on CPUs without native support is orders of magnitude slower, so the size shrinks until one
    matmul is quick; the figure says what the hardware does, not what a datasheet promises.
    """
    n = 2048 if device.type == "cuda" else 1024
    for _ in range(4):
        a = torch.randn(n, n, device=device).to(dtype)
        b = torch.randn(n, n, device=device).to(dtype)
        torch.mm(a, b)  # warm-up (and kernel selection)
        synchronize(device)
        t0 = time.perf_counter()
        torch.mm(a, b)
        synchronize(device)
        one = time.perf_counter() - t0
        if one < 0.5:
            break
        n //= 4
    # The best of a few short stretches: a peak is a maximum, and on a shared machine one stretch can
    # land in a slow moment (MFU against a low peak would read too high).
    reps = max(1, int(min_time_s / PEAK_STRETCHES / max(one, 1e-6)))
    best = math.inf
    for _ in range(PEAK_STRETCHES):
        synchronize(device)
        t0 = time.perf_counter()
        for _ in range(reps):
            torch.mm(a, b)
        synchronize(device)
        best = min(best, time.perf_counter() - t0)
    return {"n": n, "repeats": reps, "stretches": PEAK_STRETCHES, "flops_per_s": 2 * n**3 * reps / best}


PEAK_STRETCHES = 5


def peak_rss_bytes() -> int:
    """High-water mark of this process's resident memory (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def current_rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * resource.getpagesize()
    except OSError:
        return peak_rss_bytes()
