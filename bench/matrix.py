"""Matrix files: schema, validation, expansion into cells, and static skip reasons.

A matrix YAML has ``name``, ``base`` (a full training config, same schema as ``bench.train``),
``axes`` (dotted config key -> list of values), optional ``exclude``/``include`` partial cells, and
the ``measure``, ``guards`` and ``profile`` sections. Every cell's config is validated before any
cell starts; errors name the matrix file and the key.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from bench.cells.contract import GuardsConfig, MeasureConfig, ProfileConfig
from bench.guards.checks import GUARDS, resolved
from trainer_core.config import RunConfig, apply_overrides, format_validation_error, read_yaml
from trainer_core.distributed import fsdp_skip_reason
from trainer_core.errors import ConfigError, PrecisionError
from trainer_core.host_memory import malloc_unsupported_reason
from trainer_core.loading import validate_config
from trainer_core.precision import check_support


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class MatrixSpec(_Section):
    name: str = Field(..., description="Matrix name (part of the run id).")
    base: dict[str, Any] = Field(
        default_factory=dict, description="Training config shared by all cells (bench.train schema)."
    )
    axes: dict[str, list[Any]] = Field(..., description="Dotted config key -> values; cells are the cartesian product.")
    exclude: list[dict[str, Any]] = Field(
        default_factory=list, description="Partial cells to drop (every given key matches)."
    )
    variants: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="Named partial configs (dotted keys), crossed with the axes as one more axis, 'variant': "
        "what must change together, e.g. a model with its own data. Each cell's id starts with its variant's name.",
    )
    include: list[dict[str, Any]] = Field(
        default_factory=list,
        description="Extra cells; keys not given take the base config's value. An optional 'name' names the "
        "cell (its id: the name, then its values on the axes) instead of spelling every key in the id.",
    )
    measure: MeasureConfig = Field(default_factory=MeasureConfig, description="Timing method.")
    guards: GuardsConfig = Field(default_factory=GuardsConfig, description="Correctness guards.")
    profile: ProfileConfig = Field(default_factory=ProfileConfig, description="Profiler switch and schedule.")
    skip_emulated: bool = Field(
        False,
        description="Skip (with the reason) cells whose precision has no native instructions on their device: they "
        "would run, only many times slower (e.g. bf16 on a CPU without AVX512-BF16/AMX).",
    )

    @model_validator(mode="after")
    def _non_empty_axes(self) -> MatrixSpec:
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

    @property
    def device(self) -> str:
        """The device the cell runs on: the config's, with 'auto' resolved on this machine."""
        return resolve_device_name(self.config.device)


def resolve_device_name(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


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


_ABBREV = {
    "variant": "",
    "runtime": "",
    "precision": "",
    "device": "",
    "batch_size": "bs",
    "num_workers": "nw",
    "pin_memory": "pin",
    "pipeline": "",
    "name": "",
    "memory_format": "",
    "persistent_workers": "pw",
    "prefetch_factor": "pf",
}


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


def has_cxx_compiler() -> bool:
    """torch.compile's inductor builds C++ kernels on a CPU: is a compiler on PATH?"""
    import shutil

    return any(shutil.which(c) for c in ("g++", "c++", "clang++"))


def lever_skip_reason(config: RunConfig, device: torch.device) -> str | None:
    """Performance levers this machine cannot apply: such cells are skipped, not failed."""
    if config.train.compile != "off" and device.type == "cpu" and not has_cxx_compiler():
        return "torch.compile on CPU needs a C++ compiler (none found on PATH)"
    reason = (
        infer_skip_reason(config, device)
        or malloc_unsupported_reason(config.train.malloc)
        or fsdp_skip_reason(config.train.strategy, device, config.model.memory_format)
    )
    if reason:
        return reason
    if config.optim.fused:
        from torch.utils._foreach_utils import _get_fused_kernels_supported_devices

        if device.type not in _get_fused_kernels_supported_devices():
            return f"optim.fused is not supported on {device.type} by torch {torch.__version__}"
    return None


def infer_skip_reason(config: RunConfig, device: torch.device) -> str | None:
    """An inference runtime this machine or this cell cannot run (the default, eager, always runs)."""
    from bench.cells.inference import EXPORTED_RUNTIMES
    from bench.export.formats import FORMATS

    runtime = config.infer.runtime
    if runtime == "compile" and device.type == "cpu" and not has_cxx_compiler():
        return "infer.runtime compile on CPU needs a C++ compiler (none found on PATH)"
    if runtime not in EXPORTED_RUNTIMES:
        return None
    missing = FORMATS[EXPORTED_RUNTIMES[runtime]].missing()
    if missing:
        return f"infer.runtime {runtime} needs {', '.join(missing)} (pip install -e '.[export]')"
    if config.precision != "fp32":
        return f"infer.runtime {runtime} runs the fp32 export; precision {config.precision} is for eager and compile"
    return None


def static_skip_reason(config: RunConfig, skip_emulated: bool = False) -> str | None:
    """Why a cell cannot run on this machine, decided before launching it; None if it can."""
    dev = resolve_device_name(config.device)
    if dev.startswith("cuda"):
        if not torch.cuda.is_available():
            return "CUDA not available"
        index = int(dev.split(":")[1]) if ":" in dev else 0
        if index >= torch.cuda.device_count():
            return f"{dev} not present ({torch.cuda.device_count()} CUDA device(s))"
        ranks = config.train.world_size if config.train.strategy != "single" else 1
        if ranks > torch.cuda.device_count():
            return f"{ranks} ranks need {ranks} CUDA devices ({torch.cuda.device_count()} here)"
    elif config.data.pin_memory:
        return "pin_memory has no effect without an accelerator"
    lever = lever_skip_reason(config, torch.device(dev))
    if lever:
        return lever
    try:
        supported, emulated, notes = check_support(config.precision, torch.device(dev))
    except PrecisionError as e:
        return str(e)
    if not supported:
        return "; ".join(notes)
    if skip_emulated and emulated:
        return f"{config.precision} is emulated on this {dev.split(':')[0].upper()} (skip_emulated: true)"
    return None


def load_matrix(path: str | Path, device_override: str | None = None) -> MatrixSpec:
    p = Path(path)
    raw = read_yaml(p)
    try:
        spec = MatrixSpec.model_validate(raw, context={"guards": tuple(GUARDS)})
    except ValidationError as e:
        raise ConfigError(format_validation_error(e, str(p), set())) from None
    spec.guards = resolved(spec.guards)
    if device_override is not None:
        spec.base = apply_overrides(spec.base, {"device": device_override})
        spec.axes.pop("device", None)
    return spec


def _matches(axes: dict[str, Any], partial: dict[str, Any]) -> bool:
    return all(k in axes and axes[k] == v for k, v in partial.items())


INCLUDE_NAME = "name"  # in an include entry: the cell's name, not a config key
VARIANT = "variant"  # the axis of the matrix's named variants


def _check_keys(spec: MatrixSpec, source: str) -> None:
    """Every axis, variant, exclude and include key names a config key (or an axis); errors name the place."""
    for key in spec.axes:
        _check_key(key, "axes.", source)
    for name, part in spec.variants.items():
        for key in part:
            _check_key(key, f"variants.{name}.", source)
    named = [*([VARIANT] if spec.variants else []), *spec.axes]
    for i, part in enumerate(spec.exclude):
        for key in part:
            if key not in named:
                raise ConfigError(f"{source}: exclude[{i}].{key}: not an axis (axes: {', '.join(named)})")
    for i, part in enumerate(spec.include):
        for key in part:
            if key == VARIANT and part[key] not in spec.variants:
                raise ConfigError(
                    f"{source}: include[{i}].variant: no variant {part[key]!r} ({', '.join(spec.variants)})"
                )
            if key not in (INCLUDE_NAME, VARIANT):
                _check_key(key, f"include[{i}].", source)


def expand(spec: MatrixSpec, source: str = "<matrix>") -> list[Cell]:
    """Cartesian product of the axes, minus excludes, plus includes; every cell config validated."""
    _check_keys(spec, source)
    validate_config(spec.base, source=f"{source}: base")

    keys = list(spec.axes)
    combos = [dict(zip(keys, values)) for values in itertools.product(*(spec.axes[k] for k in keys))]
    if spec.variants:
        combos = [{VARIANT: name, **c} for name in spec.variants for c in combos]
    combos = [c for c in combos if not any(_matches(c, ex) for ex in spec.exclude)]
    for extra in spec.include:
        if extra not in combos:
            combos.append(dict(extra))

    cells: list[Cell] = []
    seen: dict[str, int] = {}
    for combo in combos:
        axes = {k: v for k, v in combo.items() if k != INCLUDE_NAME}
        flat_overrides = {k: v for k, v in axes.items() if k != VARIANT}
        if VARIANT in axes:
            flat_overrides = {**spec.variants[axes[VARIANT]], **flat_overrides}
        try:
            config = validate_config(apply_overrides(spec.base, flat_overrides), source=source, overridden=set())
        except ConfigError as e:
            raise ConfigError(f"{e} (cell {axes})") from None
        cid = cell_id_for(axes)
        if INCLUDE_NAME in combo:
            cid = "-".join([str(combo[INCLUDE_NAME]), cell_id_for({k: v for k, v in axes.items() if k in spec.axes})])
        if cid in seen:  # two value sets that shorten to the same id: keep ids unique and stable
            seen[cid] += 1
            cid = f"{cid}-{seen[cid]}"
        else:
            seen[cid] = 0
        if spec.measure.mode in ("time_to_target", "inference") and config.train.strategy != "single":
            raise ConfigError(
                f"{source}: measure.mode: {spec.measure.mode} runs each cell in one process; cell {cid} has "
                f"train.strategy {config.train.strategy} (data-parallel {spec.measure.mode} is not supported yet)"
            )
        cells.append(Cell(cid, axes, config, static_skip_reason(config, spec.skip_emulated)))
    ref = spec.measure.reference
    if ref is not None and ref not in {c.cell_id for c in cells}:
        ids = ", ".join(c.cell_id for c in cells)
        raise ConfigError(f"{source}: measure.reference: no cell {ref!r} (cells: {ids})")
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
