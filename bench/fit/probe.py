"""A memory probe (``measure.mode: fit``): does this configuration train within ``measure.max_memory_mb``?

It trains for real through the Trainer's own loop, the loader workers at their real prefetch and an evaluation
included, in its own process under an enforced limit:

- a watchdog thread samples the process tree as it would stand alone, the process's anonymous resident memory
  plus its loader workers' own pages (:func:`bench.measure.memory.standalone_now`; PSS would count the pages a
  forked probe shares with its server at half, RSS the library pages a new interpreter touches while importing
  and a forked one never maps, and either would answer differently by executor), and kills the whole tree with
  SIGKILL the moment it exceeds the cap, as the kernel's OOM killer would;
- ``RLIMIT_AS`` as a backstop for what a sample can miss: this process's address space may grow by the cap's
  headroom (plus a margin for address space that is reserved, not used: glibc's thread arenas), so a runaway
  allocation fails inside the probe.

Either way the launcher reads a probe that died as "does not fit"; the search that started it goes on.
"""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import time

import torch

from bench.cells.contract import OK, CellRecord, CellSpec
from bench.measure.memory import MB, TreeSampler, children, high_water_bytes, standalone_now, vm_size_bytes
from trainer_core.config import apply_overrides
from trainer_core.factory import build_run
from trainer_core.loading import validate_config
from trainer_core.provenance import machine_identity

RESERVED_MARGIN_MB = 1024  # address space a process reserves without using it (thread arenas, mappings)


def limit_address_space(cap_bytes: int) -> None:
    """RLIMIT_AS at today's address space plus the cap's headroom and a margin (Linux; a no-op elsewhere)."""
    try:
        headroom = max(0, cap_bytes - sum(standalone_now()))
        limit = (vm_size_bytes() or 0) + headroom + RESERVED_MARGIN_MB * MB
        resource.setrlimit(resource.RLIMIT_AS, (limit, resource.getrlimit(resource.RLIMIT_AS)[1]))
    except (OSError, ValueError):
        return


class Watchdog(TreeSampler):
    """A tree sampler that kills the tree (workers first, then itself) once the tree, as it would stand alone,
    exceeds the cap."""

    def __init__(self, cap_bytes: int, every_s: float = 0.1) -> None:
        super().__init__(every_s=every_s, footprint=standalone_now)
        self.cap_bytes = cap_bytes

    def sample(self) -> None:
        super().sample()
        if self.peak_total > self.cap_bytes:
            for pid in children(self.pid):
                with contextlib.suppress(OSError):  # a worker that already exited
                    os.kill(pid, signal.SIGKILL)
            os.kill(self.pid, signal.SIGKILL)


def probe_cell(spec: CellSpec) -> CellRecord:
    """Train ``measure.min_steps`` steps (or whole epochs with ``measure.fit_epochs``) and one evaluation under
    the cap; the record says what the tree needed at its peak and how much of the cap was left."""
    t0 = time.perf_counter()
    m = spec.measure
    assert m.max_memory_mb is not None
    cap = int(m.max_memory_mb * MB)
    torch.set_num_threads(spec.threads)
    if torch.device(spec.device).type != "cuda":
        limit_address_space(cap)
    over = {"train.threads": spec.threads, "logging.tensorboard": False, "logging.jsonl": False,
            "logging.progress_bar": "off", "checkpoint.save_last": False, "checkpoint.save_best": False}  # fmt: skip
    if m.fit_epochs:
        over.update({"train.epochs": m.fit_epochs, "train.max_steps": None})
    config = validate_config(apply_overrides(spec.config, over), source=f"cell {spec.cell_id}")
    device = torch.device(spec.device)
    if device.type == "cuda":  # the cap is the device's: the caching allocator refuses beyond it (OutOfMemoryError)
        total = torch.cuda.get_device_properties(device).total_memory
        torch.cuda.set_per_process_memory_fraction(min(1.0, cap / total), device)
        cap = 2**62  # the host side is not what is capped
    with Watchdog(cap) as dog:
        run = build_run(config)
        trainer = run.trainer
        if m.fit_epochs:
            trainer.fit(run.data.train_loader, run.data.val_loader)
        else:
            trainer.fit(run.data.train_loader, None, stop_after_steps=m.min_steps)
            trainer.evaluate(run.data.val_loader or run.data.test_loader)
    hwm = high_water_bytes(os.getpid())
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else dog.peak_total
    return CellRecord(
        cell_id=spec.cell_id, axes=spec.axes, role=spec.role, status=OK, precision=config.precision,
        device=spec.device, batch_size=config.data.batch_size, threads=spec.threads, steps_timed=trainer.global_step,
        mem_peak_mb=peak / MB, mem_workers_mb=dog.peak_workers / MB, mem_hwm_mb=hwm / MB if hwm else None,
        mem_cap_mb=m.max_memory_mb, mem_headroom_mb=m.max_memory_mb - peak / MB,
        mem_kind="cuda_max_allocated" if device.type == "cuda" else "standalone_anon",
        cell_seconds=time.perf_counter() - t0, machine=machine_identity(), guards_ok=True,
    )  # fmt: skip
