"""Measure and guard one cell, in this process (or one rank of a data-parallel cell).

Steps: set the cell up (its config as a cell runs it, the Trainer with the timing hooks); time the
first step apart when the model is compiled; count FLOPs on the eager module; warm up and time the
repeats (:mod:`bench.measure.timing`); read peak memory; trace a few more steps when profiling is on (after
the timed repeats, so the table is never measured under the profiler); run the guards; assemble the
:class:`~bench.cells.contract.CellRecord`.
"""

from __future__ import annotations

import contextlib
import importlib
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from bench.cells.contract import OK, CellRecord, CellSpec, ProfileConfig, guards_ok
from bench.guards.checks import FiniteWatch, run_guards
from bench.measure.comm import CommTimer
from bench.measure.lockstep import in_turns_only, lockstep, lockstep_figures
from bench.measure.memory import (
    HostMark,
    TreeSampler,
    data_bytes,
    device_peak,
    host_mark,
    host_split,
    host_step,
    step_split,
    tree_figures,
    tree_now,
)
from bench.measure.profiling import ProfilerHook, maybe_profile, schedule_steps, stamp_distributed_info, trace_files
from bench.measure.timing import (
    CELL_OVERRIDES,
    StepTimer,
    current_rss_bytes,
    flops_per_step,
    measure,
    run_steps,
    synchronize,
)
from bench.stats import cell_statistics, summarize
from bench.trace.analysis import breakdown, load_trace
from trainer_core import distributed
from trainer_core.config import RunConfig, apply_overrides
from trainer_core.factory import Run, build_run
from trainer_core.loading import validate_config
from trainer_core.models import build_model
from trainer_core.phases import PHASES
from trainer_core.precision import resolve_device
from trainer_core.provenance import machine_identity


@dataclass
class CellSetup:
    config: RunConfig
    device: torch.device
    run: Run
    timer: StepTimer
    watch: FiniteWatch
    prof_hook: ProfilerHook | None
    rss_start: int
    comm: CommTimer | None = None  # a data-parallel rank's all-reduce timer
    mem_baseline: int = 0  # PSS of the process tree before the data and model are built, bytes
    sampler: TreeSampler | None = None  # samples the tree's PSS from then until the timed steps end
    host_start: HostMark | None = None  # the host's books at the baseline (malloc, file pages, Python's arenas)


def set_up(spec: CellSpec) -> CellSetup:
    """The cell's config as a cell runs it (step-driven, grad norms tracked, its threads) and its Trainer
    with the timing and finite-watch hooks (and the profiler's labels when profiling is on)."""
    torch.set_num_threads(spec.threads)
    # torch.optim imports torch._dynamo (and sympy) on its first optimizer: well over 100 MB that belongs to
    # the torch import, not to the configuration, so it is loaded before the baseline.
    importlib.import_module("torch._dynamo")
    rss_start = current_rss_bytes()
    sampler = TreeSampler()
    baseline, host_start = sum(tree_now(skip=sampler.elders)), host_mark()
    sampler.__enter__()
    config = validate_config(
        apply_overrides(spec.config, {**CELL_OVERRIDES, "train.threads": spec.threads}), source=f"cell {spec.cell_id}"
    )
    device = resolve_device(config.device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    timer, watch = StepTimer(device), FiniteWatch()
    prof_hook = ProfilerHook() if spec.profile.enabled and spec.trace_dir else None
    run = build_run(config, hooks=[timer, watch] + ([prof_hook] if prof_hook else []))
    comm = CommTimer.attach(run.trainer.step_model)  # before the first backward, as DDP requires
    return CellSetup(config, device, run, timer, watch, prof_hook, rss_start, comm, baseline, sampler, host_start)


def timed_steps(setup: CellSetup, spec: CellSpec) -> tuple[dict[str, Any], float | None]:
    """The warm-up and timed repeats (raw samples), and the all-reduce time per step of a data-parallel rank."""
    trainer, comm = setup.run.trainer, setup.comm
    steps_before, comm_before = trainer.global_step, comm.seconds if comm else 0.0
    raw = measure(trainer, setup.run.data.train_loader, setup.timer, spec.measure)
    steps = trainer.global_step - steps_before
    return raw, (1e3 * (comm.seconds - comm_before) / steps if comm and steps else None)


def first_step_seconds(setup: CellSetup, x: torch.Tensor, y: torch.Tensor) -> float | None:
    """torch.compile compiles at the first call: that step is timed on its own, apart from throughput."""
    if setup.config.train.compile == "off":
        return None
    synchronize(setup.device)
    t0 = time.perf_counter()
    setup.run.trainer.train_step(x, y)
    synchronize(setup.device)
    return time.perf_counter() - t0


def eager_flops(setup: CellSetup, x: torch.Tensor, y: torch.Tensor) -> int:
    """FLOPs of one step, counted on the eager module: FlopCounterMode cannot see inside a compiled graph."""
    trainer = setup.run.trainer
    # The module under the compiler: the model, or its DistributedDataParallel wrapper (whose all-reduce
    # keeps the ranks' weights equal through this step).
    compiled, trainer.step_model = trainer.step_model, getattr(trainer.step_model, "_orig_mod", trainer.step_model)
    try:
        return flops_per_step(trainer, x, y)
    finally:
        trainer.step_model = compiled


def shape_model(setup: CellSetup) -> torch.nn.Module:
    """The model whose layer shapes the analytic FLOP count reads: FSDP's sharded model cannot be copied
    (the count runs a copy on the meta device), so a fresh unsharded build of the same architecture stands
    in for it, without touching the seeded random streams."""
    model = setup.run.trainer.model
    if not distributed.is_sharded(model):
        return model
    with torch.random.fork_rng(devices=[]):
        return build_model(setup.config.model, setup.run.data.facts())


def flops_warning(model: torch.nn.Module, counted: int, analytic: int | None) -> str | None:
    """When the two FLOP counts disagree by more than 1.5x, which one to trust (and the known cause)."""
    if not analytic or not counted or 1 / 1.5 < counted / analytic < 1.5:
        return None
    grouped = any(isinstance(m, torch.nn.modules.conv._ConvNd) and m.groups > 1 for m in model.modules())
    why = (
        " FlopCounterMode counts the backward of grouped (depthwise) convolutions without dividing by the groups "
        "(pytorch/pytorch#183405): the analytic count and MFU are right"
        if grouped
        else ""
    )
    return f"counted FLOPs are {counted / analytic:.1f}x the analytic count.{why}"


def memory_figures(setup: CellSetup, x: torch.Tensor, y: torch.Tensor) -> dict[str, Any]:
    """Peak memory: the CUDA allocator's peak on a GPU; on a CPU the process RSS high-water mark and its growth.
    On every device: the process tree's baseline, peak and loader workers (PSS), and what torch holds by kind
    from one more training step (bench.measure.memory)."""
    if setup.sampler is not None:
        setup.sampler.__exit__(None, None, None)
    tree = tree_figures(setup.mem_baseline, setup.sampler) if setup.sampler is not None else {}
    peak = device_peak(setup.device)  # before the split's own step and profiler
    split = split_figures(setup, x, y)
    if setup.device.type == "cuda":
        return {**peak, "mem_reserved_mb": torch.cuda.max_memory_reserved(setup.device) / 2**20, **tree, **split}
    return {**peak, "rss_growth_mb": peak["peak_mem_mb"] - setup.rss_start / 2**20, **tree, **split}


def split_figures(setup: CellSetup, x: torch.Tensor, y: torch.Tensor) -> dict[str, Any]:
    """mem_split_mb from two more training steps (the timed steps are over): one read by the host's books on
    a CPU (what the process holds beside torch's tensors, and the step's own peak), one profiled (what torch
    holds by kind); a model whose tensors cannot be read this way (FSDP's sharded parameters) says why."""
    trainer, start = setup.run.trainer, setup.host_start if setup.device.type == "cpu" else None
    try:
        host = host_step(trainer, x, y) if start is not None else None
        split = step_split(trainer, x, y, data=data_bytes(setup.run.data) / 2**20)
    except Exception as e:  # noqa: BLE001 - the split is a figure, never the cell's failure
        return {"mem_split_error": f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:200]}
    if start is None or host is None:
        return {"mem_split_mb": split}
    out: dict[str, Any] = {"mem_split_mb": {**split, **host_split(split, start, host)}}
    if host.own_peak and host.end.high_water is not None:
        out["mem_split_peak_mb"] = (host.end.high_water - setup.rss_start) / 2**20
    return out


def profile_cell(
    setup: CellSetup, cfg: ProfileConfig, trace_dir: Path, timed_median_ms: float
) -> tuple[dict[str, Any], float | None]:
    """Trace a few steps *after* the timed repeats, time them with the same hook to report the profiler's
    slowdown, and break the trace down: the record's profile fields, and the collectives' time per timed
    step that the trace saw (:func:`traced_collectives_ms`)."""
    trainer, timer = setup.run.trainer, setup.timer
    timer.start()
    with (
        maybe_profile(
            True,
            trace_dir,
            setup.device,
            wait=cfg.wait,
            warmup=cfg.warmup,
            active=cfg.active,
            record_shapes=cfg.record_shapes,
            profile_memory=cfg.profile_memory,
            with_stack=cfg.with_stack,
            with_flops=cfg.with_flops,
            gzip=cfg.gzip,
            hook=setup.prof_hook,
        ),
        memory_history(cfg.memory_snapshot, setup.device, trace_dir) as snapshot,
    ):
        run_steps(trainer, setup.run.data.train_loader, schedule_steps(cfg.wait, cfg.warmup, cfg.active))
    active = timer.stop()[-cfg.active :]
    files = trace_files(trace_dir)
    if not files:
        return {"profile_error": f"no trace written to {trace_dir}"}, None
    stamp_distributed_info(files)
    size_mb = sum(f.stat().st_size for f in files) / 2**20
    b = breakdown(load_trace(files[-1]))
    share = b["reduced_precision_share"]
    out: dict[str, Any] = {
        "trace_dir": str(trace_dir),
        "trace_mb": size_mb,
        "profiler_slowdown": summarize([r["step_s"] for r in active])["median"] * 1e3 / timed_median_ms,
        "prof_phase_pct": {p: b["phase_pct"][p] for p in (*PHASES, "other")},
        "top_ops": b["top_ops"],
        "reduced_precision_pct": None if share is None else 100.0 * share,
        **snapshot,
    }
    if size_mb > cfg.max_trace_mb:
        out["trace_warning"] = (
            f"trace is {size_mb:.0f} MB (> {cfg.max_trace_mb:.0f} MB): shorten profile.active or drop with_stack"
        )
    if setup.config.precision != "fp32" and share is not None and share < 0.05:
        out["mixed_precision_warning"] = (
            f"{setup.config.precision} cell but only {100 * share:.0f}% of matmul/conv ops ran in reduced precision"
        )
    return out, traced_collectives_ms(b, timed_median_ms)


@contextlib.contextmanager
def memory_history(enabled: bool, device: torch.device, folder: Path) -> Iterator[dict[str, str]]:
    """Over the profiled steps, the CUDA caching allocator's history (Composer's memory-snapshot callback does
    the same), dumped to ``folder/memory_snapshot.pickle``; the record's fields say where, or why not."""
    out: dict[str, str] = {}
    if enabled and device.type != "cuda":
        out["memory_snapshot_skipped"] = (
            f"the snapshot records the CUDA caching allocator; this cell ran on {device.type} (see mem_split_mb)"
        )
    if not enabled or device.type != "cuda":
        yield out
        return
    torch.cuda.memory._record_memory_history(max_entries=100_000)
    try:
        yield out
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / "memory_snapshot.pickle"
        torch.cuda.memory._dump_snapshot(str(path))
        out["memory_snapshot"] = str(path)
    finally:
        torch.cuda.memory._record_memory_history(enabled=None)


def traced_collectives_ms(b: dict[str, Any], timed_median_ms: float) -> float | None:
    """The collectives' time per timed step, from their share of the traced steps (the profiler slows
    a step down, so its milliseconds are not the timed step's): what a rank without DDP's timed hook
    (FSDP) reports as its communication time. It includes the time spent waiting for a slower rank."""
    comm, traced_step_ms = b.get("communication") or {}, b["mean_ms"].get("step_ms")
    if comm.get("collective_ms_per_step") is None or not traced_step_ms:
        return None
    return comm["collective_ms_per_step"] / traced_step_ms * timed_median_ms


def identity(spec: CellSpec, setup: CellSetup) -> dict[str, Any]:
    """The record's fields that say which cell this is and how it ran (not what it measured)."""
    policy = setup.run.trainer.policy
    return {
        "cell_id": spec.cell_id,
        "axes": spec.axes,
        "role": spec.role,
        "status": OK,
        "reason": "; ".join(policy.notes) or None,  # one line for the tables
        "notes": list(policy.notes),  # each note whole, for summary.md's list
        "precision": setup.config.precision,
        "device": str(setup.device),
        "batch_size": setup.config.data.batch_size,
        "emulated": policy.emulated,
        "optim": setup.config.scaled_optim().to_dict(),
        "threads": torch.get_num_threads(),
    }


def measure_cell(spec: CellSpec) -> CellRecord:
    """Measure then guard one cell in this process (one rank of a data-parallel cell: the same steps)."""
    t_start = time.perf_counter()
    setup = set_up(spec)
    trainer = setup.run.trainer
    x, y = next(iter(setup.run.data.train_loader))
    first_s = first_step_seconds(setup, x, y)
    flops = eager_flops(setup, x, y)
    analytic = trainer.workload.flops_per_step(shape_model(setup), x)
    with (
        setup.sampler.paused() if setup.sampler is not None else contextlib.nullcontext(),
        lockstep(spec.lockstep, setup.timer) as baton,
    ):
        raw, comm_ms = timed_steps(setup, spec)
    alone = lockstep_figures(baton, raw["steps"]) if baton else {}
    raw = in_turns_only(raw)
    items = trainer.workload.items(y)  # a full batch's items (samples, or tokens)
    stats = cell_statistics(
        raw["steps"], raw["repeat_of_step"], setup.config.data.batch_size, items, trainer.workload.unit
    )
    median_s = stats["step_ms_median"] / 1e3
    achieved = flops / median_s if median_s > 0 else math.nan
    peak_flops = spec.peaks.get(setup.config.precision)
    mfu = 100.0 * analytic / median_s / peak_flops if analytic and peak_flops and median_s > 0 else None
    memory = memory_figures(setup, x, y)
    profile: dict[str, Any] = {}
    traced_comm_ms = None  # FSDP's collectives have no timed hook: the trace's share stands in
    if setup.prof_hook is not None:
        profile, traced_comm_ms = profile_cell(setup, spec.profile, Path(str(spec.trace_dir)), stats["step_ms_median"])
    guards = run_guards(setup.config, spec.guards, setup.device, trainer, setup.watch)
    return CellRecord(
        **identity(spec, setup),
        **stats,
        **memory,
        flops_per_step=flops,
        flops_analytic_per_step=analytic,
        mfu_pct=mfu,
        flops_warning=flops_warning(trainer.model, flops, analytic),
        compile_s=None if first_s is None else max(0.0, first_s - median_s),
        tflops=achieved / 1e12,
        pct_of_peak=100.0 * achieved / peak_flops if peak_flops else None,
        warmup_steps=raw["warmup_steps"],
        warmup_settled=raw["warmup_settled"],
        steps_per_repeat=raw["steps_per_repeat"],
        step_s=[r["step_s"] for r in raw["steps"]],
        phase_s={f"{p}_s": sum(r.get(f"{p}_s", 0.0) for r in raw["steps"]) for p in PHASES},
        **profile,
        guards={g.name: g for g in guards},
        guards_ok=guards_ok(guards),
        skipped_fp16_steps=int(trainer.counters["skipped_steps"]),
        cell_seconds=time.perf_counter() - t_start,
        comm_ms_per_step=comm_ms if comm_ms is not None else traced_comm_ms,
        machine=machine_identity(),
        unstable=raw.get("unstable", False),
        remeasured=raw.get("remeasured", False),
        **alone,
    )
