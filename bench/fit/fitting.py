"""``bench.fit`` as a library: each probe a cell (``measure.mode: fit``) launched by an executor like every
other cell, read back as a :class:`bench.fit.search.Probe`; the search; fit.json and fit.md."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bench.cells.contract import OK, CellRecord, CellSpec, MeasureConfig
from bench.cells.store import append_record
from bench.fit.search import FitResult, Probe, search
from bench.launch.executor import Executor
from bench.matrix import resolve_device_name
from bench.measure.memory import machine_memory_mb
from trainer_core.config import RunConfig, apply_overrides
from trainer_core.loading import validate_config

PROBE_STEPS = 3  # a short probe: enough steps for the optimizer's state and the allocator's steady state
PROBE_TIMEOUT_S = 1800.0


def default_cap_mb(device: str = "cpu", share: float = 0.5) -> float:
    """A share of the machine's memory, or of the GPU's where the config trains on one."""
    if device.startswith("cuda"):
        import torch

        return torch.cuda.get_device_properties(torch.device(device)).total_memory / 2**20 * share
    return machine_memory_mb() * share


class Prober:
    """Launches probes of ``config`` at a batch size under ``cap_mb``; records each in cells.jsonl."""

    def __init__(self, config: RunConfig, cap_mb: float, run_dir: Path, executor: Executor, threads: int,
                 steps: int = PROBE_STEPS) -> None:  # fmt: skip
        self.config, self.cap_mb, self.run_dir, self.executor = config, cap_mb, run_dir, executor
        self.threads, self.steps = threads, steps

    def _run(self, batch: int, epochs: int | None) -> Probe:
        what = f"epoch{epochs}" if epochs else f"{self.steps}steps"
        config = validate_config(apply_overrides(self.config.to_dict(), {"data.batch_size": batch}))
        measure = MeasureConfig(mode="fit", max_memory_mb=self.cap_mb, fit_epochs=epochs, min_steps=self.steps,
                                cell_timeout_s=PROBE_TIMEOUT_S)  # fmt: skip
        spec = CellSpec(cell_id=f"bs{batch}-{what}", axes={"data.batch_size": batch}, config=config.to_dict(),
                        device=resolve_device_name(config.device), threads=self.threads, measure=measure,
                        role="confirm" if epochs else "probe")  # fmt: skip
        record = self.executor.submit(spec, self.run_dir / "cells")()
        append_record(self.run_dir / "cells.jsonl", record)
        fits = record.status == OK
        print(f"  batch {batch} ({what}): " + (f"fits, peak {record.mem_peak_mb:,.0f} MiB" if fits else
              f"does not fit ({record.reason})"), flush=True)  # fmt: skip
        return Probe(batch, fits, record.mem_peak_mb, None if fits else record.reason, confirm=bool(epochs))

    def probe(self, batch: int) -> Probe:
        return self._run(batch, None)

    def confirm(self, batch: int) -> Probe:
        return self._run(batch, 1)


def fit_batch(prober: Prober, start: int, max_batch: int) -> FitResult:
    return search(start, prober.probe, prober.confirm, max_batch)


def fit_report(config_path: str, cap_mb: float, result: FitResult, records: list[CellRecord]) -> dict[str, Any]:
    confirmed = result.confirmed
    return {
        "config": config_path,
        "cap_mb": cap_mb,
        "chosen_batch": result.chosen,
        "confirmed_peak_mb": confirmed.peak_mb if confirmed else None,
        "peak_kind": next((r.mem_kind for r in records if r.mem_kind), None),
        "headroom_mb": cap_mb - confirmed.peak_mb if confirmed and confirmed.peak_mb else None,
        "probes": [asdict(p) for p in result.probes],
        "cells": [r.cell_id for r in records],
    }


def write_fit(run_dir: Path, report: dict[str, Any]) -> str:
    from bench.fit.report import format_fit

    (run_dir / "fit.json").write_text(json.dumps(report, indent=2) + "\n")
    text = format_fit(report)
    (run_dir / "fit.md").write_text(text + "\n")
    return text
