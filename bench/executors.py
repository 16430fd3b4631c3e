"""Where a matrix's cells run: ``local`` (each cell a process on this machine, one after another) or
``submitit`` (one job per cell: Slurm where there is one, submitit's local executor otherwise). An
executor takes a cell's spec and folder and returns a handle; calling the handle waits for the cell's
record. The runner appends records to ``cells.jsonl`` in matrix order as they arrive, so ``--resume``
works the same whichever executor ran the finished cells.

Registered with ``@register_executor(name)``: ``(options: dict[str, str], run_dir: Path) -> Executor``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.contract import FAILED, CellRecord, CellSpec
from bench.launcher import launch_cell
from trainer_core.errors import ConfigError

Handle = Callable[[], CellRecord]
Executor = Callable[[CellSpec, Path], Handle]
EXECUTORS: dict[str, Callable[[dict[str, str], Path], Executor]] = {}


def register_executor(name: str) -> Callable[[Callable[[dict[str, str], Path], Executor]], Any]:
    def add(factory: Callable[[dict[str, str], Path], Executor]) -> Callable[[dict[str, str], Path], Executor]:
        if name in EXECUTORS:
            raise ValueError(f"executor {name!r} is registered twice")
        EXECUTORS[name] = factory
        return factory

    return add


def parse_options(items: list[str]) -> dict[str, str]:
    """``--executor-opt key=value`` (repeatable) -> {key: value}."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--executor-opt {item!r}: expected key=value")
        out[key.strip()] = value.strip()
    return out


def check_options(name: str, options: dict[str, str]) -> None:
    """Refuse an unknown executor or option before anything is written."""
    if name not in EXECUTORS:
        raise ConfigError(f"--executor {name!r}: unknown executor; expected one of {', '.join(EXECUTORS)}")
    allowed = EXECUTOR_OPTIONS.get(name, {})
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        expected = f"expected one of {', '.join(allowed)}" if allowed else f"the {name} executor takes none"
        raise ConfigError(f"--executor-opt {unknown[0]}: unknown; {expected}")


def build_executor(name: str, options: dict[str, str], run_dir: Path) -> Executor:
    check_options(name, options)
    return EXECUTORS[name](options, run_dir)


@register_executor("local")
def local_executor(options: dict[str, str], run_dir: Path) -> Executor:
    """Each cell in its own process on this machine, started when its record is asked for (one at a time)."""
    return lambda spec, cell_dir: lambda: launch_cell(spec, cell_dir)


# --executor-opt keys the submitit executor reads, and the submitit parameter each one sets.
SUBMITIT_OPTIONS = {
    "cluster": "which submitit backend: slurm, local or debug (default: slurm when sbatch is on PATH, else local)",
    "partition": "Slurm partition (slurm_partition)",
    "gpus_per_node": "GPUs per job (gpus_per_node)",
    "cpus_per_task": "CPU cores per job (cpus_per_task)",
    "mem_gb": "memory per job (mem_gb)",
    "timeout_min": "job time limit in minutes (default: the cell's cell_timeout_s plus 5 minutes)",
    "exclusive": "true (default on Slurm): a whole node per cell, so no other job shares its hardware",
    "concurrent": "true (default on Slurm): submit every cell at once; false: one job at a time",
}


EXECUTOR_OPTIONS: dict[str, dict[str, str]] = {"local": {}, "submitit": SUBMITIT_OPTIONS}


@register_executor("submitit")
def submitit_executor(options: dict[str, str], run_dir: Path) -> Executor:
    """One submitit job per cell; the job runs the cell exactly as the local executor does (its own
    process, its timeout), so the record is the same. Concurrent on Slurm, where each job gets a node of
    its own; one at a time with submitit's local executor, whose jobs would share (and slow) this machine."""
    try:
        import submitit
    except ImportError:
        raise ConfigError("--executor submitit: the submitit package is not installed (pip install submitit)") from None
    executor = submitit.AutoExecutor(folder=run_dir / "submitit" / "%j", cluster=options.get("cluster"))
    slurm = executor.cluster == "slurm"
    concurrent = options.get("concurrent", str(slurm)).lower() == "true"
    base = _submitit_parameters(options, slurm)

    def submit(spec: CellSpec, cell_dir: Path) -> Handle:
        timeout_min = int(options.get("timeout_min", math.ceil(spec.measure.cell_timeout_s / 60) + 5))
        executor.update_parameters(name=f"trainbench-{spec.cell_id}", timeout_min=timeout_min, **base)
        if not concurrent:
            return lambda: _wait(executor.submit(launch_cell, spec, cell_dir), spec)
        job = executor.submit(launch_cell, spec, cell_dir)
        return lambda: _wait(job, spec)

    return submit


def _submitit_parameters(options: dict[str, str], slurm: bool) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for key in ("gpus_per_node", "cpus_per_task", "mem_gb"):
        if key in options:
            params[key] = int(options[key])
    if "partition" in options:
        params["slurm_partition"] = options["partition"]
    if slurm and options.get("exclusive", "true").lower() == "true":
        params["slurm_exclusive"] = True
    return params


def _wait(job: Any, spec: CellSpec) -> CellRecord:
    """The job's record; a job that died before its cell could report is a failed cell with submitit's reason."""
    try:
        return job.result()
    except Exception as e:  # submitit raises its own job errors (UncompletedJobError, FailedJobError)
        reason = (
            f"submitit job {job.job_id}: {str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__}"
        )
        return CellRecord.not_measured(FAILED, reason, spec.cell_id, spec.axes, device=spec.device, role=spec.role)
