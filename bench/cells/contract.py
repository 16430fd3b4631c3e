"""The contract of a cell: what a cell process is given (:class:`CellSpec`) and what it gives back
(:class:`CellRecord`), plus the measurement, guard and profiler sections both carry.

Light on purpose (Pydantic, no torch): the runner, tune, compare, report and the history read and
write cells only through these models. Records written before the schema had a version (or with
profiler shares as flat ``prof_<phase>_pct`` keys) are read as version 1 and converted on the way in;
keys this version does not know are kept as they are.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from bench.cells.inference import InferenceResult
from bench.cells.target import Target, TargetResult
from trainer_core.phases import PHASES

SCHEMA_VERSION = 2
OK, FAILED, SKIPPED = "ok", "failed", "skipped"
PASS, FAIL, NONDETERMINISTIC, ERROR = "pass", "fail", "nondeterministic", "error"
GUARD_OK_STATUSES = (PASS, NONDETERMINISTIC)  # a cell may be recommended with these
TARGET_TIMEOUT_S = 12 * 3600


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LockstepSpec(_Section):
    """A cell that times its steps in turns with a partner cell (bench.measure.lockstep)."""

    read_pipe: str = Field(..., description="Named pipe the partner writes to this cell.")
    write_pipe: str = Field(..., description="Named pipe this cell writes to the partner.")
    first: bool = Field(..., description="Whether this cell takes the first timed step.")
    timeout_s: float = Field(120.0, gt=0, description="A partner silent this long is treated as done.")
    turn_ms: float = Field(
        0.0, ge=0, description="A turn lasts this long and at least two steps, its first one untimed; 0: one step."
    )


class MeasureConfig(_Section):
    warmup_steps: int = Field(5, ge=1, description="Minimum warm-up steps before timing.")
    max_warmup_steps: int = Field(60, ge=1, description="Warm-up stops here even if step time has not settled.")
    max_warmup_s: float = Field(
        20.0, gt=0, description="Warm-up also stops after this many seconds (slow cells, e.g. emulated fp16)."
    )
    settle_window: int = Field(
        5,
        ge=2,
        description="Warm-up is settled when two consecutive windows of this many steps have medians within "
        "settle_tolerance.",
    )
    settle_tolerance: float = Field(
        0.1, gt=0, description="Relative difference of window medians that counts as settled."
    )
    min_steps: int = Field(
        10, ge=2, description="Minimum timed steps per repeat (unless max_time_s allows fewer, never below 3)."
    )
    min_time_s: float = Field(
        1.0, ge=0, description="Each repeat runs at least this long (step count estimated from warm-up)."
    )
    max_time_s: float = Field(
        10.0, gt=0, description="Each repeat runs at most about this long (caps min_steps for slow cells)."
    )
    max_steps_per_repeat: int = Field(500, ge=3, description="Cap on steps per repeat.")
    repeats: int = Field(3, ge=1, description="Timed repeats per cell; the spread between them is reported.")
    unstable_spread_pct: float | None = Field(
        25.0,
        gt=0,
        description="Repeats whose samples/s spread ((max - min) / median) exceeds this are timed again, as many "
        "more repeats; still above it, the cell is marked unstable (None: never).",
    )
    cell_timeout_s: float = Field(
        600,
        gt=0,
        description="A cell still running after this long is killed and marked failed (time_to_target: "
        f"{TARGET_TIMEOUT_S // 3600} h unless set).",
    )
    mode: Literal["throughput", "time_to_target", "inference", "fit"] = Field(
        "throughput",
        description="throughput: timed steps after a warm-up (samples/s); time_to_target: seeded runs trained "
        "until `target` is first met, scored by MLPerf's rule (bench/cells/target.py); inference: forward calls "
        "of the model under infer.runtime, timed the same way (warm-up, min_steps and min_time_s per repeat), "
        "with parity against fp64 as the cell's guard (bench/cells/inference.py); fit: a memory probe, trained "
        "min_steps steps and an evaluation (or fit_epochs epochs) under max_memory_mb (bench/fit/probe.py).",
    )
    max_memory_mb: float | None = Field(
        None, gt=0, description="fit: the cap on the process tree's memory (PSS, MiB; on CUDA the allocator's)."
    )
    fit_epochs: int | None = Field(
        None, ge=1, description="fit: train this many whole epochs (with their evaluations) instead of min_steps."
    )
    target: Target | None = Field(None, description="time_to_target: the metric and the value to reach.")
    runs: int = Field(5, ge=1, description="time_to_target: runs per cell, seeds seed, seed+1, ...")
    max_epochs: int | None = Field(
        None,
        ge=1,
        description="time_to_target: epochs a run may train before it counts as not reached "
        "(None: the config's train.epochs; the LR schedule is sized for it).",
    )
    eval_every: Literal["epoch"] | int = Field(
        "epoch", description="time_to_target: evaluate the target metric after every epoch, or every K steps."
    )
    confirm: bool = Field(
        True,
        description="time_to_target: after the evaluation that meets the target, train on to the next one off "
        "the clock; the luck check tests that evaluation (a first crossing is selected for being high).",
    )
    reference: str | None = Field(
        None,
        description="time_to_target: the cell whose epochs to target the others are checked against "
        "(None: the first measured cell).",
    )

    @field_validator("eval_every")
    @classmethod
    def _positive_steps(cls, v: Literal["epoch"] | int) -> Literal["epoch"] | int:
        if isinstance(v, int) and v < 1:
            raise ValueError("eval_every: 'epoch' or a number of steps (at least 1)")
        return v

    @model_validator(mode="after")
    def _target_mode(self) -> MeasureConfig:
        if self.mode == "time_to_target" and self.target is None:
            raise ValueError("mode time_to_target needs target: {metric: ..., value: ...}")
        if self.mode == "time_to_target" and "cell_timeout_s" not in self.model_fields_set:
            self.cell_timeout_s = TARGET_TIMEOUT_S  # several full trainings, not a few timed seconds
        return self

    def steps_per_repeat(self, step_estimate_s: float) -> int:
        """Timed steps per repeat for a cell whose warm-up steps took ``step_estimate_s``."""
        if step_estimate_s <= 0:
            return self.min_steps
        n = max(self.min_steps, math.ceil(self.min_time_s / step_estimate_s))
        n = min(n, self.max_steps_per_repeat)
        if n * step_estimate_s > self.max_time_s:
            n = max(3, int(self.max_time_s / step_estimate_s))
        return n


class GuardsConfig(_Section):
    enabled: list[str] | None = Field(
        None,
        description="Guards run on every cell, by name from the guard registry (bench/guards/checks.py); "
        "None: every registered guard (resolved when the spec is built).",
    )
    overfit_samples: int = Field(
        16, ge=1, description="Size of the tiny batch to memorise (capped at the cell's batch size)."
    )
    overfit_steps: int = Field(100, ge=1, description="Steps allowed to memorise it.")
    overfit_ratio: dict[str, float] = Field(
        default_factory=lambda: {"fp32": 0.1, "bf16": 0.15, "bf16-true": 0.15, "fp16": 0.15},
        description="Pass when the final loss is below this share of the initial loss, per precision.",
    )
    short_run_steps: int = Field(4, ge=1, description="Steps per short run of the determinism and resume guards.")

    @field_validator("enabled")
    @classmethod
    def _known_guards(cls, names: list[str] | None, info: ValidationInfo) -> list[str] | None:
        # The registry's names come in through the validation context (bench.matrix passes them): the registry
        # imports torch and this contract, so the contract cannot import it.
        known = (info.context or {}).get("guards")
        for name in names or []:
            if known is not None and name not in known:
                raise ValueError(f"unknown guard {name!r}; expected one of {', '.join(known)}")
        return names


class ProfileConfig(_Section):
    enabled: bool = Field(
        False, description="Capture torch.profiler traces per cell, in steps separate from the timed ones."
    )
    wait: int = Field(1, ge=0, description="Profiler schedule: steps skipped before tracing.")
    warmup: int = Field(1, ge=0, description="Profiler schedule: warm-up steps (traced, then discarded).")
    active: int = Field(
        3, ge=1, le=50, description="Profiler schedule: recorded steps (keep short: trace size grows with it)."
    )
    record_shapes: bool = Field(
        True, description="Record input shapes and dtypes (needed for the mixed-precision check)."
    )
    profile_memory: bool = Field(False, description="Record tensor allocations.")
    with_stack: bool = Field(False, description="Record Python stacks (large traces).")
    with_flops: bool = Field(False, description="Estimate FLOPs of matmul/conv operators in the trace.")
    gzip: bool = Field(False, description="Write .pt.trace.json.gz instead of .pt.trace.json.")
    max_trace_mb: float = Field(50.0, gt=0, description="Warn when a cell's trace is larger than this.")
    memory_snapshot: bool = Field(
        False,
        description="CUDA: record the caching allocator's history over the profiled steps and write "
        "memory_snapshot.pickle beside the trace (open it at pytorch.org/memory_viz); a CPU cell says it skipped.",
    )


class CellSpec(BaseModel):
    """Everything a cell process needs: written by the launcher as ``cells/<cell>.spec.json``."""

    model_config = ConfigDict(extra="forbid")

    schema_version: int = Field(SCHEMA_VERSION, description="Version of this contract.")
    cell_id: str = Field(..., description="Deterministic, filesystem-safe id of the cell.")
    axes: dict[str, Any] = Field(
        default_factory=dict, description="The cell's axis values (dotted config key -> value)."
    )
    config: dict[str, Any] = Field(..., description="The cell's full training config (RunConfig as a dict).")
    device: str = Field("cpu", description="The resolved device the cell runs on ('cpu', 'cuda', 'cuda:N').")
    threads: int = Field(..., ge=1, description="torch intra-op threads in the cell process.")
    measure: MeasureConfig = Field(default_factory=MeasureConfig, description="Timing method.")
    guards: GuardsConfig = Field(default_factory=GuardsConfig, description="Correctness guards.")
    profile: ProfileConfig = Field(default_factory=ProfileConfig, description="Profiler switch and schedule.")
    trace_dir: str | None = Field(None, description="Folder for this cell's trace (used when profile.enabled).")
    peaks: dict[str, float] = Field(
        default_factory=dict,
        description="Measured matmul FLOP/s on this device, per precision (the '% of peak' reference).",
    )
    role: str | None = Field(
        None, description="Why the cell was measured (bench.tune: search, recheck, final-..., or None)."
    )
    lockstep: LockstepSpec | None = Field(
        None, description="Time the steps in turns with a partner cell (bench.ab --interleave steps); None: alone."
    )
    state_dir: str | None = Field(
        None,
        description="time_to_target: folder where each seed's finished run and checkpoint are kept, so an "
        "interrupted cell resumes (None: nothing kept).",
    )

    def to_json(self) -> str:
        """The spec file's text. Fields added after revisions that ``bench.ab`` may still run (LATE_FIELDS) are
        written only when set: such a revision refuses unknown keys, and a cell that does not use them runs
        there as before."""
        exclude: dict[str, Any] = {}
        for path, unset in LATE_FIELDS.items():
            *parents, name = path.split(".")
            owner: Any = self
            for part in parents:
                owner = getattr(owner, part)
            if owner is None or getattr(owner, name) != unset:
                continue  # set (or inside a field left out already): written
            node = exclude
            for part in parents:
                node = node.setdefault(part, {})
            node[name] = True
        return self.model_dump_json(indent=2, exclude=exclude)


# Fields added after revisions that bench.ab may still run, dotted, with the value that means "not used";
# a parent before the fields added inside it later.
LATE_FIELDS: dict[str, Any] = {"lockstep": None, "lockstep.turn_ms": 0.0}


class GuardResult(BaseModel):
    """One guard's verdict on one cell."""

    name: str = Field(..., description="The guard's registered name.")
    status: Literal["pass", "fail", "nondeterministic", "error"] = Field(..., description="Its verdict.")
    detail: str = Field("", description="What it checked and found, one line.")

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump()


def guards_ok(results: list[GuardResult] | dict[str, GuardResult]) -> bool:
    """A cell may be recommended only if no guard failed or errored."""
    values = results.values() if isinstance(results, dict) else results
    return all(r.status in GUARD_OK_STATUSES for r in values)


HOST_SPLIT = ("library", "runtime", "malloc_held", "python")  # mem_split_mb's keys from the host's own books (CPU)


def _phase_peaks(split: dict[str, float]) -> tuple[float, float]:
    """(what the backward holds above the rest: activations and its own rise; what the optimizer's step
    holds: gradients and its temporaries), MiB, by a split (CellRecord.mem_split_mb)."""
    during_backward = split.get("activations", 0.0) + split.get("backward", 0.0)
    return during_backward, split.get("grads", 0.0) + split.get("temporaries", 0.0)


def peak_in_optimizer(split: dict[str, float]) -> bool:
    """Whether the step's peak is in the optimizer's step (else in the backward), by a split."""
    during_backward, during_optimizer = _phase_peaks(split)
    return during_optimizer > during_backward


def held_at_peak(split: dict[str, float]) -> float:
    """MiB of torch's tensors live at the step's peak by a split (CellRecord.mem_split_mb): the data,
    parameters and optimizer state always; then either the forward's activations with the backward's rise
    above them, or the gradients with the optimizer's temporaries (never both: activations are freed by the
    time the optimizer steps)."""
    held = sum(split.get(k, 0.0) for k in ("data", "params", "optimizer"))
    return held + max(_phase_peaks(split))


class CellRecord(BaseModel):
    """What one cell produced: one line of ``cells.jsonl``. Failed and skipped cells fill only the
    identity fields and ``reason``."""

    model_config = ConfigDict(extra="allow")

    schema_version: int = Field(
        SCHEMA_VERSION, description="Version of this contract (1: records written before it had one)."
    )
    cell_id: str | None = Field(None, description="The cell's id.")
    axes: dict[str, Any] = Field(default_factory=dict, description="The cell's axis values.")
    status: Literal["ok", "failed", "skipped"] = Field(
        ..., description="ok: measured; failed: with its reason; skipped: cannot run here."
    )
    reason: str | None = Field(
        None, description="Why it failed or was skipped, or the precision policy's notes in one line."
    )
    notes: list[str] = Field(default_factory=list, description="The precision policy's notes, each whole.")
    role: str | None = Field(None, description="Why it was measured (bench.tune roles), None for a matrix cell.")
    precision: str | None = Field(None, description="Precision policy of the cell.")
    device: str | None = Field(None, description="Device it ran on.")
    batch_size: int | None = Field(None, description="Samples per optimizer step and rank (data.batch_size).")
    emulated: bool | None = Field(None, description="The precision has no native instructions on this device.")
    optim: dict[str, Any] | None = Field(
        None, description="The lr and warm-up steps the cell trained with (optim.lr_scaling applied) and how."
    )
    threads: int | None = Field(None, description="torch intra-op threads in the cell process.")
    steps_timed: int | None = Field(None, description="Timed steps over all repeats.")
    step_ms_median: float | None = Field(None, description="Median step time, ms (data wait included).")
    step_ms_p10: float | None = Field(None, description="10th percentile of step time, ms.")
    step_ms_p90: float | None = Field(None, description="90th percentile of step time, ms.")
    step_ms_iqr: float | None = Field(None, description="Interquartile range of step time, ms.")
    samples_per_s: float | None = Field(None, description="Batch size / median step time.")
    items_per_step: float | None = Field(None, description="What throughput counts in one step: samples, or tokens.")
    throughput: float | None = Field(None, description="items_per_step / median step time, in throughput_unit.")
    throughput_unit: str | None = Field(None, description="'samples/s' or 'tokens/s' (the workload's unit).")
    samples_per_s_repeats: list[float] = Field(
        default_factory=list, description="samples/s of each timed repeat, from its own total time."
    )
    repeat_spread_pct: float | None = Field(None, description="(max - min) / median of the repeats' samples/s, %.")
    data_wait_pct: float | None = Field(None, description="Share of the timed steps spent waiting for data, %.")
    data_wait_ms_median: float | None = Field(None, description="Median data wait per step, ms.")
    h2d_ms_median: float | None = Field(None, description="Median host-to-device copy time per step, ms.")
    peak_mem_mb: float | None = Field(
        None, description="CUDA allocator peak, or on CPU the process RSS high-water mark, MiB."
    )
    rss_growth_mb: float | None = Field(None, description="CPU: RSS high-water mark minus RSS at cell start, MiB.")
    mem_baseline_mb: float | None = Field(
        None, description="PSS of the cell process and its children before the data and model were built, MiB."
    )
    mem_peak_mb: float | None = Field(
        None,
        description="Peak PSS of the cell process plus its loader workers (sampled together, outside the timed "
        "steps: a sample costs milliseconds of a core), MiB.",
    )
    mem_workers_mb: float | None = Field(None, description="Peak PSS of the loader workers alone, MiB.")
    mem_hwm_mb: float | None = Field(None, description="The kernel's high-water mark of the cell process (VmHWM), MiB.")
    mem_reserved_mb: float | None = Field(None, description="CUDA: the caching allocator's peak reserved memory, MiB.")
    mem_split_mb: dict[str, float] | None = Field(
        None,
        description="What torch held in one training step, MiB: params, grads, optimizer (exact tensor sizes), "
        "activations (how far allocations rose over the forward and loss), backward (how far over the backward), "
        "temporaries (over the optimizer step) and data (the splits held in memory); on CPU also library "
        "(file-backed pages mapped since the baseline), runtime (malloc's blocks in use that are no tensor of "
        "the model's), malloc_held (freed blocks glibc kept, near the step's peak) and python (CPython's own "
        "arenas: the interpreter's objects).",
    )
    mem_split_peak_mb: float | None = Field(
        None,
        description="CPU: the cell process's high-water mark over the split's own step above its start (the "
        "kernel's mark reset before it), MiB: the increase the split is checked against.",
    )
    mem_split_error: str | None = Field(None, description="Why mem_split_mb could not be taken.")
    memory_snapshot: str | None = Field(None, description="CUDA: the profiled steps' allocator snapshot (.pickle).")
    memory_snapshot_skipped: str | None = Field(None, description="Why no memory snapshot was written.")
    mem_cap_mb: float | None = Field(None, description="fit: the memory cap the probe trained under, MiB.")
    mem_headroom_mb: float | None = Field(None, description="fit: the cap minus the probe's peak, MiB.")
    mem_kind: str | None = Field(None, description="Which memory figure peak_mem_mb is.")
    flops_per_step: int | None = Field(
        None, description="FLOPs of one step (forward + backward) by torch.utils.flop_counter."
    )
    compile_s: float | None = Field(
        None, description="torch.compile: first step minus a median step, s (not in samples/s)."
    )
    tflops: float | None = Field(None, description="Achieved TFLOP/s at the median step.")
    flops_analytic_per_step: int | None = Field(
        None,
        description="FLOPs of one step by the workload's analytic formula (6N per token + attention; conv shapes).",
    )
    mfu_pct: float | None = Field(
        None,
        description="Model FLOPs utilisation: analytic FLOP/s at the median step as % of the measured matmul peak.",
    )
    flops_warning: str | None = Field(None, description="The counted and analytic FLOPs disagree, and which to read.")
    pct_of_peak: float | None = Field(
        None, description="Achieved FLOP/s as % of this run's matmul peak in the cell's dtype."
    )
    warmup_steps: int | None = Field(None, description="Warm-up steps taken before timing.")
    warmup_settled: bool | None = Field(None, description="Did step time settle within the warm-up limits.")
    steps_per_repeat: int | None = Field(None, description="Timed steps per repeat.")
    step_s: list[float] = Field(
        default_factory=list, description="Every timed step, s (the raw samples behind every figure)."
    )
    phase_s: dict[str, float] = Field(
        default_factory=dict, description="Seconds in each phase over the timed steps (keys '<phase>_s')."
    )
    trace_dir: str | None = Field(None, description="Folder of the cell's torch.profiler trace.")
    trace_mb: float | None = Field(None, description="Size of the trace, MiB.")
    profiler_slowdown: float | None = Field(None, description="Median profiled step / median timed step.")
    prof_phase_pct: dict[str, float] = Field(
        default_factory=dict, description="Share of the traced step in each phase and 'other', %."
    )
    top_ops: list[dict[str, Any]] = Field(
        default_factory=list, description="Operators with the most self time per step in the trace."
    )
    reduced_precision_pct: float | None = Field(
        None, description="Share of traced matmul/conv operators with bf16/fp16 inputs, %."
    )
    trace_warning: str | None = Field(None, description="The trace is larger than profile.max_trace_mb.")
    mixed_precision_warning: str | None = Field(
        None, description="A bf16/fp16 cell whose matmuls barely ran in reduced precision."
    )
    profile_error: str | None = Field(None, description="Why no trace was analysed.")
    guards: dict[str, GuardResult] = Field(default_factory=dict, description="Each guard's verdict, by name.")
    guards_ok: bool | None = Field(None, description="No guard failed or errored.")
    skipped_fp16_steps: int | None = Field(None, description="fp16 steps the GradScaler skipped (inf/NaN gradients).")
    cell_seconds: float | None = Field(None, description="Wall time of the whole cell process, s.")
    machine: dict[str, Any] | None = Field(
        None, description="Where it ran: hostname, CPU model, GPUs, NVIDIA driver (trainer_core.provenance)."
    )
    unstable: bool | None = Field(
        None, description="Its repeats disagreed beyond measure.unstable_spread_pct even when timed again."
    )
    remeasured: bool | None = Field(
        None, description="Its first repeats disagreed and were replaced by (or joined with) a second set."
    )
    lockstep_alone_steps: int | None = Field(
        None, description="In lockstep with a partner: timed steps taken after the partner was done (alone)."
    )
    lockstep_partner_silent: bool | None = Field(
        None, description="In lockstep: the partner fell silent (died, or never got ready) and this cell went on alone."
    )
    world_size: int = Field(1, description="Ranks (processes) of a data-parallel cell; 1 for one process.")
    threads_per_rank: int | None = Field(None, description="torch threads in each rank of a data-parallel cell.")
    rank_step_ms_median: list[float] = Field(
        default_factory=list, description="Data-parallel: each rank's median step time, ms, in rank order."
    )
    straggler_pct: float | None = Field(
        None, description="Data-parallel: (slowest - fastest) / fastest of the ranks' median steps, %."
    )
    comm_ms_per_step: float | None = Field(
        None,
        description="Data-parallel: time collectives were in flight per step, ms (rank 0): DDP's gradient "
        "all-reduces from a timed hook, or for FSDP the profiled steps' all-gathers and reduce-scatters (none "
        "without profile.enabled); they overlap compute, so this bounds what communication costs the step.",
    )
    comm_pct: float | None = Field(None, description="comm_ms_per_step as a share of the median step, %.")
    time_to_target: TargetResult | None = Field(
        None, description="measure.mode time_to_target: every seed's run and the cell's score."
    )
    inference: InferenceResult | None = Field(
        None, description="measure.mode inference: the runtime's latency percentiles, items/s and parity."
    )

    @model_validator(mode="before")
    @classmethod
    def _upgrade(cls, data: Any) -> Any:
        """Version 1 records: no schema_version; profiler shares as flat prof_<phase>_pct keys."""
        if not isinstance(data, dict) or "schema_version" in data:
            return data
        data = {**data, "schema_version": 1}
        flat = {p: data.pop(f"prof_{p}_pct") for p in (*PHASES, "other") if f"prof_{p}_pct" in data}
        if flat and "prof_phase_pct" not in data:
            data["prof_phase_pct"] = {p: v for p, v in flat.items() if v is not None}
        return data

    @property
    def mem_added_mb(self) -> float | None:
        """What the configuration added to the process tree, MiB: the sampled peak minus the baseline, or where
        larger the kernel's exact high-water mark of the cell process above its start (a sample can fall
        between two steps' peaks) plus the workers' peak."""
        if self.mem_peak_mb is None or self.mem_baseline_mb is None:
            return None
        sampled = self.mem_peak_mb - self.mem_baseline_mb
        exact = None if self.rss_growth_mb is None else self.rss_growth_mb + (self.mem_workers_mb or 0.0)
        return max(sampled, exact) if exact is not None else sampled

    @property
    def mem_split_gap_pct(self) -> float | None:
        """How far the split plus the workers is from the measured increase, % of the increase (+: it
        explains more than was measured; -: less, e.g. pages no category holds: thread stacks, a split taken
        without the host's books). The increase is the split's own step's peak plus the workers' where the
        kernel could time it (glibc keeps a different share of freed blocks from one step to the next, so
        another step's peak would not match the books), else mem_added_mb. On CUDA the split's tensors but
        the data (which stays on the host) against the allocator's peak (peak_mem_mb)."""
        split = self.mem_split_mb
        if not split:
            return None
        if self.mem_kind == "cuda_max_allocated":
            added = self.peak_mem_mb
            return 100.0 * (held_at_peak({**split, "data": 0.0}) - added) / added if added else None
        added = self.mem_added_mb
        if self.mem_split_peak_mb is not None:
            added = self.mem_split_peak_mb + (self.mem_workers_mb or 0.0)
        if not added:
            return None
        host = sum(split.get(k, 0.0) for k in HOST_SPLIT)
        return 100.0 * (held_at_peak(split) + host + (self.mem_workers_mb or 0.0) - added) / added

    @property
    def rate(self) -> float | None:
        """Throughput in the workload's unit (records written before it had one: samples/s)."""
        return self.throughput if self.throughput is not None else self.samples_per_s

    @property
    def rate_band(self) -> tuple[float, float] | None:
        """Throughput at the 90th and at the 10th percentile step (the p10-p90 band of the rate)."""
        rate, med, p10, p90 = self.rate, self.step_ms_median, self.step_ms_p10, self.step_ms_p90
        if not (rate and med and p10 and p90):
            return None
        return rate * med / p90, rate * med / p10

    def readings(self) -> list[list[float]]:
        """The timed steps as the repeats that took them (one reading each), for unpaired intervals."""
        n = self.steps_per_repeat or len(self.step_s)
        return [self.step_s[i : i + n] for i in range(0, len(self.step_s), n)] if n else []

    @property
    def unit(self) -> str:
        return self.throughput_unit or "samples/s"

    @property
    def hardware(self) -> str | None:
        """The parts of its machine that decide speed (not the host name: a cluster's nodes are alike)."""
        m = self.machine
        if not m:
            return None
        gpus = ", ".join(m.get("gpus") or []) or "no GPU"
        return f"{m.get('cpu')}; {gpus}" + (f"; driver {m['driver']}" if m.get("driver") else "")

    @property
    def usable(self) -> bool:
        """Measured, and every guard passed: only such a record may win a comparison."""
        return self.status == OK and bool(self.guards_ok) and (self.rate or 0) > 0

    def failed_guards(self) -> list[str]:
        """The guards that did not pass (failed or errored), by name: what keeps a cell from winning."""
        return [name for name, g in self.guards.items() if g.status not in GUARD_OK_STATUSES]

    def guard_status(self, name: str) -> str:
        g = self.guards.get(name)
        return g.status if g else ""

    def to_json(self) -> str:
        """One line of cells.jsonl (None and empty fields left out, so failed cells stay short)."""
        return self.model_dump_json(exclude_none=True)

    @classmethod
    def not_measured(
        cls, status: str, reason: str, cell_id: str | None, axes: dict[str, Any], **identity: Any
    ) -> CellRecord:
        """A failed or skipped cell's record."""
        return cls(status=status, reason=reason, cell_id=cell_id, axes=axes, **identity)


def first_seen(keys: Iterable[Iterable[str]]) -> list[str]:
    """Every key of these collections once, in the order it first appears."""
    return list(dict.fromkeys(k for ks in keys for k in ks))


def guard_names(records: list[CellRecord]) -> list[str]:
    """The guards that ran on these records, in the order they first appear (columns of the tables)."""
    return first_seen(r.guards for r in records)
