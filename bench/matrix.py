"""Matrix files: schema, validation, expansion into cells, and static skip reasons.

A matrix YAML has ``name``, ``base`` (a full training config, same schema as ``bench.train``),
``axes`` (dotted config key -> list of values), optional ``exclude``/``include`` partial cells, and
the ``measure``, ``guards`` and ``profile`` sections. Every cell's config is validated before any
cell starts; errors name the matrix file and the key.
"""

from __future__ import annotations

import itertools
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from trainer_core.config import RunConfig, format_validation_error, apply_overrides, read_yaml, validate_config
from trainer_core.errors import ConfigError, PrecisionError
from trainer_core.host_memory import malloc_unsupported_reason
from trainer_core.precision import check_support

GUARDS: tuple[str, ...] = ("overfit", "finite", "determinism", "resume")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class MeasureConfig(_Section):
    warmup_steps: int = Field(5, ge=1, description="Minimum warm-up steps before timing.")
    max_warmup_steps: int = Field(60, ge=1, description="Warm-up stops here even if step time has not settled.")
    max_warmup_s: float = Field(20.0, gt=0, description="Warm-up also stops after this many seconds (slow cells, e.g. emulated fp16).")
    settle_window: int = Field(5, ge=2, description="Warm-up is settled when two consecutive windows of this many steps have medians within settle_tolerance.")
    settle_tolerance: float = Field(0.1, gt=0, description="Relative difference of window medians that counts as settled.")
    min_steps: int = Field(10, ge=2, description="Minimum timed steps per repeat (unless max_time_s allows fewer, never below 3).")
    min_time_s: float = Field(1.0, ge=0, description="Each repeat runs at least this long (step count estimated from warm-up).")
    max_time_s: float = Field(10.0, gt=0, description="Each repeat runs at most about this long (caps min_steps for slow cells).")
    max_steps_per_repeat: int = Field(500, ge=3, description="Cap on steps per repeat.")
    repeats: int = Field(3, ge=1, description="Timed repeats per cell; the spread between them is reported.")
    cell_timeout_s: float = Field(600, gt=0, description="A cell still running after this long is killed and marked failed.")

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
    enabled: list[Literal["overfit", "finite", "determinism", "resume"]] = Field(default_factory=lambda: list(GUARDS), description="Guards run on every cell.")
    overfit_samples: int = Field(16, ge=1, description="Size of the tiny batch to memorise (capped at the cell's batch size).")
    overfit_steps: int = Field(100, ge=1, description="Steps allowed to memorise it.")
    overfit_ratio: dict[str, float] = Field(default_factory=lambda: {"fp32": 0.1, "bf16": 0.15, "bf16-true": 0.15, "fp16": 0.15},
                                            description="Pass when the final loss is below this share of the initial loss, per precision.")
    short_run_steps: int = Field(4, ge=1, description="Steps per short run of the determinism and resume guards.")


class ProfileConfig(_Section):
    enabled: bool = Field(False, description="Capture torch.profiler traces per cell, in steps separate from the timed ones.")
    wait: int = Field(1, ge=0, description="Profiler schedule: steps skipped before tracing.")
    warmup: int = Field(1, ge=0, description="Profiler schedule: warm-up steps (traced, then discarded).")
    active: int = Field(3, ge=1, le=50, description="Profiler schedule: recorded steps (keep short: trace size grows with it).")
    record_shapes: bool = Field(True, description="Record input shapes and dtypes (needed for the mixed-precision check).")
    profile_memory: bool = Field(False, description="Record tensor allocations.")
    with_stack: bool = Field(False, description="Record Python stacks (large traces).")
    with_flops: bool = Field(False, description="Estimate FLOPs of matmul/conv operators in the trace.")
    gzip: bool = Field(False, description="Write .pt.trace.json.gz instead of .pt.trace.json.")
    max_trace_mb: float = Field(50.0, gt=0, description="Warn when a cell's trace is larger than this.")


class MatrixSpec(_Section):
    name: str = Field(..., description="Matrix name (part of the run id).")
    base: dict[str, Any] = Field(default_factory=dict, description="Training config shared by all cells (bench.train schema).")
    axes: dict[str, list[Any]] = Field(..., description="Dotted config key -> values; cells are the cartesian product.")
    exclude: list[dict[str, Any]] = Field(default_factory=list, description="Partial cells to drop (every given key matches).")
    include: list[dict[str, Any]] = Field(default_factory=list, description="Extra cells; keys not given take the base config's value.")
    measure: MeasureConfig = Field(default_factory=MeasureConfig, description="Timing method.")
    guards: GuardsConfig = Field(default_factory=GuardsConfig, description="Correctness guards.")
    profile: ProfileConfig = Field(default_factory=ProfileConfig, description="Profiler switch and schedule.")

    @model_validator(mode="after")
    def _non_empty_axes(self) -> "MatrixSpec":
        for key, values in self.axes.items():
            if not values:
                raise ValueError(f"axes.{key}: needs at least one value")
        return self


@dataclass
class Cell:
    """One configuration to measure."""

    cell_id: str
    axes: dict[str, Any]
    config: RunConfig
    skip_reason: str | None = None


def _check_key(key: str, where: str, source: str) -> None:
    """A dotted key must name a RunConfig field (anything below a free-form dict such as model.kwargs is allowed)."""
    model: Any = RunConfig
    for i, part in enumerate(key.split(".")):
        fields = getattr(model, "model_fields", None)
        if fields is None:
            return  # below a dict-typed field
        if part not in fields:
            raise ConfigError(f"{source}: {where}{key}: unknown config key '{'.'.join(key.split('.')[: i + 1])}'")
        model = fields[part].annotation
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            if i < len(key.split(".")) - 1 and model is not dict and getattr(model, "__origin__", None) is not dict:
                raise ConfigError(f"{source}: {where}{key}: '{part}' is a value, not a section")
            return


_ABBREV = {"precision": "", "device": "", "batch_size": "bs", "num_workers": "nw", "pin_memory": "pin",
           "pipeline": "", "name": "", "memory_format": "", "persistent_workers": "pw", "prefetch_factor": "pf"}


def _short(key: str, value: Any) -> str:
    last = key.split(".")[-1]
    prefix = _ABBREV.get(last, last)
    if isinstance(value, bool):
        text = "T" if value else "F"
    else:
        text = str(value)
    return re.sub(r"[^A-Za-z0-9_]+", "_", f"{prefix}{text}").strip("_")


def cell_id_for(axes: dict[str, Any]) -> str:
    """Deterministic, filesystem-safe id from the axis values (same values -> same id, across runs)."""
    return "-".join(_short(k, v) for k, v in axes.items()) or "base"


def lever_skip_reason(config: RunConfig, device: torch.device) -> str | None:
    """Performance levers this machine cannot apply: such cells are skipped, not failed."""
    import shutil

    if config.train.compile != "off" and device.type == "cpu" and not any(shutil.which(c) for c in ("g++", "c++", "clang++")):
        return "torch.compile on CPU needs a C++ compiler (none found on PATH)"
    reason = malloc_unsupported_reason(config.train.malloc)
    if reason:
        return reason
    if config.optim.fused:
        from torch.utils._foreach_utils import _get_fused_kernels_supported_devices

        if device.type not in _get_fused_kernels_supported_devices():
            return f"optim.fused is not supported on {device.type} by torch {torch.__version__}"
    return None


def static_skip_reason(config: RunConfig) -> str | None:
    """Why a cell cannot run on this machine, decided before launching it; None if it can."""
    dev = config.device
    if dev == "auto":
        dev = "cuda" if torch.cuda.is_available() else "cpu"
    if dev.startswith("cuda"):
        if not torch.cuda.is_available():
            return "CUDA not available"
        index = int(dev.split(":")[1]) if ":" in dev else 0
        if index >= torch.cuda.device_count():
            return f"{dev} not present ({torch.cuda.device_count()} CUDA device(s))"
    elif config.data.pin_memory:
        return "pin_memory has no effect without an accelerator"
    lever = lever_skip_reason(config, torch.device(dev))
    if lever:
        return lever
    try:
        supported, _, notes = check_support(config.precision, torch.device(dev))
    except PrecisionError as e:
        return str(e)
    if not supported:
        return "; ".join(notes)
    return None


def load_matrix(path: str | Path, device_override: str | None = None) -> MatrixSpec:
    p = Path(path)
    raw = read_yaml(p)
    try:
        spec = MatrixSpec.model_validate(raw)
    except ValidationError as e:
        raise ConfigError(format_validation_error(e, str(p), set())) from None
    if device_override is not None:
        spec.base = apply_overrides(spec.base, {"device": device_override})
        spec.axes.pop("device", None)
    return spec


def _matches(axes: dict[str, Any], partial: dict[str, Any]) -> bool:
    return all(k in axes and axes[k] == v for k, v in partial.items())


def expand(spec: MatrixSpec, source: str = "<matrix>") -> list[Cell]:
    """Cartesian product of the axes, minus excludes, plus includes; every cell config validated."""
    for key in spec.axes:
        _check_key(key, "axes.", source)
    for i, part in enumerate(spec.exclude):
        for key in part:
            if key not in spec.axes:
                raise ConfigError(f"{source}: exclude[{i}].{key}: not an axis (axes: {', '.join(spec.axes)})")
    for i, part in enumerate(spec.include):
        for key in part:
            _check_key(key, f"include[{i}].", source)
    validate_config(spec.base, source=f"{source}: base")

    keys = list(spec.axes)
    combos = [dict(zip(keys, values)) for values in itertools.product(*(spec.axes[k] for k in keys))]
    combos = [c for c in combos if not any(_matches(c, ex) for ex in spec.exclude)]
    for extra in spec.include:
        if extra not in combos:
            combos.append(dict(extra))

    cells: list[Cell] = []
    seen: dict[str, int] = {}
    for axes in combos:
        flat_overrides = dict(axes)
        try:
            config = validate_config(apply_overrides(spec.base, flat_overrides), source=source, overridden=set())
        except ConfigError as e:
            raise ConfigError(f"{e} (cell {axes})") from None
        cid = cell_id_for(axes)
        if cid in seen:  # two value sets that shorten to the same id: keep ids unique and stable
            seen[cid] += 1
            cid = f"{cid}-{seen[cid]}"
        else:
            seen[cid] = 0
        cells.append(Cell(cid, axes, config, static_skip_reason(config)))
    return cells


def preflight_config(config: RunConfig, source: str, where: str = "") -> None:
    """The run's own pre-flight (model factory and arguments, data files; no training), as a one-line
    :class:`ConfigError` naming ``source`` (and ``where``: the cell)."""
    from trainer_core.errors import TrainbenchError
    from trainer_core.factory import preflight

    try:
        preflight(config)
    except TrainbenchError as e:
        raise ConfigError(f"{source}: {e}{where}") from None


def preflight_cells(cells: list[Cell], source: str) -> None:
    """Before any cell starts: each distinct model and dataset the cells will use, resolved once, so a
    matrix that cannot run stops with one line instead of failing in every cell."""
    seen: set[str] = set()
    for cell in cells:
        c = cell.config
        key = repr((c.model.name, sorted(c.model.kwargs.items()), c.data.name, c.data.root, c.data.download))
        if key not in seen:
            seen.add(key)
            preflight_config(c, source, f" (cell {cell.cell_id})" if len(cells) > 1 else "")


def parse_filter(items: list[str]) -> dict[str, Any]:
    """``--filter key=value`` -> {key: typed value} (values read as YAML, like --set)."""
    from trainer_core.config import parse_override

    return dict(parse_override(item) for item in items)


def select(cells: list[Cell], filters: dict[str, Any]) -> list[Cell]:
    """Cells whose axis values (or resolved config values) match every filter."""
    out = []
    for cell in cells:
        flat = cell.config.to_dict()
        ok = True
        for key, want in filters.items():
            have = cell.axes.get(key)
            if key not in cell.axes:
                node: Any = flat
                for part in key.split("."):
                    node = node.get(part) if isinstance(node, dict) else None
                have = node
            if have != want:
                ok = False
                break
        if ok:
            out.append(cell)
    return out
