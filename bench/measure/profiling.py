"""Optional torch.profiler capture around the Trainer's own step.

:func:`maybe_profile` is a context manager that yields ``None`` when profiling is off, so callers
have one code path. Traces are written by ``tensorboard_trace_handler`` as
``<trace_dir>/<WORKER_NAME>.<time_ns>.pt.trace.json[.gz]``: one cell per folder, nothing else in it,
which is the layout the TensorBoard PyTorch Profiler plugin lists as one run per folder.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch.profiler import ProfilerActivity, record_function

from trainer_core.trainer import BaseHook, StepResult, Trainer

# The plugin reads files matching ^(.*?)(\.\d+)?\.pt\.trace\.json(\.gz)?$ and takes group 1 as the
# worker: a worker name ending in ".<digits>" would be cut short, so this one has none.
WORKER_NAME = "trainbench"
DISTRIBUTED_INFO = {"backend": "none", "rank": 0, "world_size": 1}


class ProfilerHook(BaseHook):
    """``record_function`` labels around each phase of the step, and ``prof.step()`` after it."""

    def __init__(self) -> None:
        self.prof: torch.profiler.profile | None = None

    def phase(self, name: str) -> contextlib.AbstractContextManager[Any]:
        return record_function(name) if self.prof is not None else contextlib.nullcontext()

    def on_step_end(self, trainer: Trainer, result: StepResult) -> None:
        if self.prof is not None:
            self.prof.step()


def schedule_steps(wait: int, warmup: int, active: int) -> int:
    """Steps to run so that the profiler's single cycle completes and its trace is written."""
    return wait + warmup + active


@contextlib.contextmanager
def maybe_profile(
    enabled: bool,
    trace_dir: str | Path,
    device: torch.device,
    *,
    wait: int = 1,
    warmup: int = 1,
    active: int = 3,
    record_shapes: bool = True,
    profile_memory: bool = False,
    with_stack: bool = False,
    with_flops: bool = False,
    gzip: bool = False,
    hook: ProfilerHook | None = None,
) -> Iterator[torch.profiler.profile | None]:
    """Profile the steps run inside the block (call ``prof.step()`` per step, or pass ``hook``)."""
    if not enabled:
        yield None
        return
    trace_dir = Path(trace_dir)
    trace_dir.mkdir(parents=True, exist_ok=True)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    prof = torch.profiler.profile(
        activities=activities,
        schedule=torch.profiler.schedule(wait=wait, warmup=warmup, active=active, repeat=1),
        on_trace_ready=torch.profiler.tensorboard_trace_handler(str(trace_dir), worker_name=WORKER_NAME, use_gzip=gzip),
        record_shapes=record_shapes,
        profile_memory=profile_memory,
        with_stack=with_stack,
        with_flops=with_flops,
    )
    # HolisticTraceAnalysis needs a rank in every trace; a single process is rank 0 of 1.
    prof.preset_metadata_json("distributedInfo", json.dumps(DISTRIBUTED_INFO))
    if hook is not None:
        hook.prof = prof
    try:
        with prof:
            yield prof
    finally:
        if hook is not None:
            hook.prof = None


def trace_files(trace_dir: str | Path) -> list[Path]:
    d = Path(trace_dir)
    return (
        sorted(p for p in d.iterdir() if p.name.endswith((".pt.trace.json", ".pt.trace.json.gz"))) if d.is_dir() else []
    )


def stamp_distributed_info(files: list[Path]) -> None:
    """Write this rank's place in the job into its traces' ``distributedInfo`` (rank, world size,
    backend), which HolisticTraceAnalysis reads to load a folder of traces as one multi-rank job. The
    profiler records it only in some builds; without it every rank's trace claims to be rank 0 of 1."""
    import gzip

    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return
    info = {"backend": dist.get_backend(), "rank": dist.get_rank(), "world_size": dist.get_world_size()}
    for path in files:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rt") as f:
            trace = json.load(f)
        if trace.get("distributedInfo", {}).get("world_size") == info["world_size"]:
            continue
        trace["distributedInfo"] = {**trace.get("distributedInfo", {}), **info}
        tmp = path.with_name(path.name + ".tmp")
        with opener(tmp, "wt") as f:
            json.dump(trace, f)
        tmp.replace(path)
