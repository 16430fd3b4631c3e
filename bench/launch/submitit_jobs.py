"""The ``submitit`` executor: one submitit job per cell (Slurm where there is one, submitit's local executor
otherwise). The job runs the cell exactly as the local executor does (its own process, its timeout), so
the record is the same. Concurrent on Slurm, where each job gets a node of its own; one at a time with
submitit's local executor, whose jobs would share (and slow) this machine."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from bench.cells.contract import FAILED, CellRecord, CellSpec
from bench.launch.executor import Executor, Handle, register_executor
from bench.launch.process import launch_cell
from bench.launch.revisions import REPO_ROOT
from trainer_core.errors import ConfigError

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


class SubmititExecutor:
    def __init__(self, options: dict[str, str], run_dir: Path) -> None:
        try:
            import submitit
        except ImportError:
            raise ConfigError(
                "--executor submitit: the submitit package is not installed (pip install submitit)"
            ) from None
        self.options = options
        self.executor = submitit.AutoExecutor(folder=run_dir / "submitit" / "%j", cluster=options.get("cluster"))
        slurm = self.executor.cluster == "slurm"
        self.concurrent = options.get("concurrent", str(slurm)).lower() == "true"
        self.base = _submitit_parameters(options, slurm)

    def submit(self, spec: CellSpec, cell_dir: Path, code_root: Path = REPO_ROOT) -> Handle:
        timeout_min = int(self.options.get("timeout_min", math.ceil(spec.measure.cell_timeout_s / 60) + 5))
        self.executor.update_parameters(name=f"trainbench-{spec.cell_id}", timeout_min=timeout_min, **self.base)
        if not self.concurrent:
            return lambda: _wait(self.executor.submit(launch_cell, spec, cell_dir, code_root), spec)
        job = self.executor.submit(launch_cell, spec, cell_dir, code_root)
        return lambda: _wait(job, spec)

    def close(self) -> None:
        return None


@register_executor("submitit", SUBMITIT_OPTIONS)
def submitit_executor(options: dict[str, str], run_dir: Path) -> Executor:
    return SubmititExecutor(options, run_dir)


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
        first = str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
        reason = f"submitit job {job.job_id}: {first}"
        return CellRecord.not_measured(FAILED, reason, spec.cell_id, spec.axes, device=spec.device, role=spec.role)
