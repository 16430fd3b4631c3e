"""Export a checkpoint (``python -m bench.export`` is the CLI): rebuild the model from the checkpoint's own config,
take real inputs from the run's test split, export, check parity against fp64 (at batch 1 and at a larger
batch when the batch is dynamic), and publish the file with a manifest, all or nothing."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from bench.export.formats import FORMATS, Format
from bench.export.parity import Parity, check_parity
from trainer_core import checkpoint as ck
from trainer_core.config import RunConfig, apply_overrides
from trainer_core.errors import CheckpointError, ConfigError
from trainer_core.factory import build_run
from trainer_core.loading import validate_config
from trainer_core.precision import PrecisionPolicy, resolve_precision
from trainer_core.provenance import environment_info

# Failure kinds, each its own exit code (bad input is 2, as everywhere).
EXIT_EXPORT, EXIT_NUMERICS, EXIT_RUNTIME = 3, 4, 5
PARITY_SAMPLES = 64  # test-split inputs the parity check runs on
DYNAMIC_EXAMPLE_BATCH = 2  # exporters specialise a dim of size 0 or 1: a dynamic batch is traced at 2


class ExportFailure(Exception):
    """The export did not give a usable model: ``kind`` is export, numerics or runtime."""

    def __init__(self, kind: str, message: str, parity: list[Parity] | None = None) -> None:
        super().__init__(message)
        self.kind, self.parity = kind, parity or []

    @property
    def exit_code(self) -> int:
        return {"export": EXIT_EXPORT, "numerics": EXIT_NUMERICS}.get(self.kind, EXIT_RUNTIME)


@dataclass
class Source:
    """A model rebuilt from a checkpoint (fp32, eval mode) and real inputs from its run's test split."""

    path: Path
    config: RunConfig
    model: nn.Module
    inputs: torch.Tensor
    policy: PrecisionPolicy
    state: dict[str, Any]


def test_inputs(run: Any, samples: int) -> torch.Tensor:
    """The first ``samples`` inputs of the test split as the model takes them (the data's own transform, e.g.
    uint8 normalised per batch, applied; fp32)."""
    parts, n = [], 0
    for x, _ in run.data.test_loader:
        x = x.to(run.trainer.device)
        x = run.data.input_transform(x) if run.data.input_transform is not None else x
        parts.append(x)
        n += int(x.shape[0])
        if n >= samples:
            break
    if not parts:
        raise ConfigError(f"data.name={run.config.data.name}: the test split is empty; parity needs real inputs")
    return torch.cat(parts)[:samples]


def load_source(path: Path, device: str | None = None, samples: int = PARITY_SAMPLES) -> Source:
    """The checkpoint's model with its weights, in fp32 and eval mode, and ``samples`` test inputs."""
    state = ck.load_checkpoint_file(path)
    over = {"train.compile": "off", **({"device": device} if device else {})}
    config = validate_config(apply_overrides(state[ck.KEY_CONFIG], over), source=f"{path} (stored config)")
    run = build_run(config)
    model = run.model
    try:
        model.load_state_dict(state[ck.KEY_MODEL])
    except RuntimeError as e:
        raise CheckpointError(
            f"{path}: weights do not fit the config's model: {ck.describe_state_dict_mismatch(e)}"
        ) from None
    model = model.float().eval()
    policy = resolve_precision(config.precision, run.trainer.device)
    return Source(path, config, model, test_inputs(run, samples), policy, state)


def parity_batches(inputs: torch.Tensor, example_batch: int, dynamic_batch: bool) -> list[torch.Tensor]:
    """The batches parity runs at: the example's size, or with a dynamic batch, 1 and a larger one (not
    the example's: a batch frozen to the example's size must show)."""
    if not dynamic_batch:
        return [inputs[:example_batch]]
    larger = min(len(inputs), max(2 * example_batch + 1, 8))
    return [inputs[:1], inputs[:larger]]


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def formats_that_export(src: Source, example: torch.Tensor, dynamic_batch: bool, but: str) -> list[str]:
    """Which other formats export this model (the hint after an export failure)."""
    ok = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, fmt in FORMATS.items():
            if name == but or fmt.missing():
                continue
            try:
                fmt.export(src.model, example, Path(tmp) / f"m{fmt.suffix}", dynamic_batch)
                ok.append(name)
            except Exception:  # noqa: BLE001 - any exporter error means "does not export"
                continue
    return ok


def default_out(checkpoint: Path, fmt: str) -> Path:
    """RUN/export/<format> for RUN/checkpoints/<file>; else export/<format> beside the checkpoint."""
    run_dir = checkpoint.parent.parent if checkpoint.parent.name == "checkpoints" else checkpoint.parent
    return run_dir / "export" / fmt


def check_out(out: Path) -> None:
    """An output folder that is free and writable, before any work (a finished export is never replaced)."""
    if out.exists():
        raise ConfigError(f"--out {out}: already exists (an earlier export is kept); choose another --out")
    parent = next((p for p in (out, *out.parents) if p.exists()), Path("."))
    if not parent.is_dir() or not os.access(parent, os.W_OK):
        raise ConfigError(f"--out {out}: {parent} is not a writable folder")


def export_and_check(
    src: Source, fmt: Format, folder: Path, batch: int, dynamic_batch: bool
) -> tuple[Path, dict[str, Any], list[Parity], float]:
    """Export into ``folder`` and check parity: (file, the exporter's facts, parity per batch, export seconds)."""
    example_batch = DYNAMIC_EXAMPLE_BATCH if dynamic_batch else min(batch, len(src.inputs))
    example = src.inputs[:example_batch]
    path = folder / f"model{fmt.suffix}"
    t0 = time.perf_counter()
    try:
        facts = fmt.export(src.model, example, path, dynamic_batch)
    except Exception as e:  # noqa: BLE001 - the exporter's own error, reported in one line
        others = formats_that_export(src, example, dynamic_batch, but=fmt.name)
        works = f"; formats that export it: {', '.join(others)}" if others else "; no other format exports it"
        raise ExportFailure("export", f"{fmt.name}: {type(e).__name__}: {_first_line(e)}{works}") from None
    seconds = time.perf_counter() - t0
    try:
        runner = fmt.load(path, src.inputs.device)
    except Exception as e:  # noqa: BLE001 - the exported file would not load
        raise ExportFailure("runtime", f"{fmt.name}: loading: {type(e).__name__}: {_first_line(e)}") from None
    results: list[Parity] = []
    for x in parity_batches(src.inputs, example_batch, dynamic_batch):  # the first failure, of either kind, is it
        try:
            results.append(check_parity(src.model, runner, x, src.policy))
        except Exception as e:  # noqa: BLE001 - the exported model failed to run at this batch
            raise ExportFailure(
                "runtime", f"{fmt.name} at batch {len(x)}: {type(e).__name__}: {_first_line(e)}", results
            ) from None
        if not results[-1].passed:
            raise ExportFailure("numerics", f"{fmt.name} at batch {len(x)}: {results[-1].reason}", results)
    return path, {**facts, "example_batch": example_batch}, results, seconds


def _first_line(e: BaseException) -> str:
    return next((line.strip() for line in str(e).splitlines() if line.strip()), "")[:300]


def manifest(src: Source, fmt: Format, path: Path, facts: dict[str, Any], parity: list[Parity], seconds: float,
             dynamic_batch: bool) -> dict[str, Any]:  # fmt: skip
    """What the export folder says about itself: its source, how it was made, its input, its parity."""
    x = src.inputs
    return {
        "format": fmt.name,
        "file": path.name,
        "sha256": sha256(path),
        "bytes": path.stat().st_size,
        "export_s": seconds,
        **facts,
        "source": {
            "checkpoint": str(src.path.resolve()),
            "sha256": sha256(src.path),
            "git_commit": src.state.get(ck.KEY_GIT_COMMIT),
            "epoch": int(src.state[ck.KEY_EPOCH]),
            "global_step": int(src.state[ck.KEY_GLOBAL_STEP]),
            "model": src.config.model.name,
            "precision": src.config.precision,
        },
        "input": {
            "shape": ["batch" if dynamic_batch else facts["example_batch"], *x.shape[1:]],
            "dtype": str(x.dtype).replace("torch.", ""),
            "dynamic_batch": dynamic_batch,
            "what": "the model's input after the data's own transform (what the trainer feeds the model)",
        },
        "parity": [p.model_dump() for p in parity],
        "environment": environment_info(),
    }


def export_checkpoint(
    checkpoint: Path, fmt_name: str, out: Path | None = None, dynamic_batch: bool = False,
    batch: int | None = None, device: str | None = None,
) -> tuple[Path, dict[str, Any]]:  # fmt: skip
    """Export ``checkpoint`` to ``out`` (default RUN/export/<format>): (the folder, its manifest). Raises
    ConfigError/CheckpointError on bad input, ExportFailure when the export is unusable; either way nothing
    is left at ``out``."""
    from bench.export.formats import format_named

    fmt = format_named(fmt_name)
    if fmt.missing():
        raise ConfigError(f"--format {fmt.name}: needs {', '.join(fmt.missing())} (pip install -e '.[export]')")
    out = out or default_out(checkpoint, fmt.name)
    check_out(out)
    src = load_source(checkpoint, device)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    staging.chmod(0o755)  # mkdtemp's 0700 is for the staging; the published folder reads like any other
    try:
        path, facts, parity, seconds = export_and_check(
            src, fmt, staging, batch or src.config.data.batch_size, dynamic_batch
        )
        info = manifest(src, fmt, path, facts, parity, seconds, dynamic_batch)
        (staging / "manifest.json").write_text(json.dumps(info, indent=2, default=str) + "\n")
        staging.rename(out)  # all or nothing: the folder appears whole
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out, info
