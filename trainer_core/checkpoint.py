"""Full-state checkpoints: one dict of named state_dicts, written atomically, loaded as data only.

A checkpoint is loaded with ``torch.load(weights_only=True)``: it can hold tensors, numbers, strings,
lists and dicts, never code. Every failure to read one becomes a one-line :class:`CheckpointError`.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from trainer_core.errors import CheckpointError

FORMAT_VERSION = 1

# Keys of the checkpoint dict. The Trainer builds and reads the dict only through these names.
KEY_FORMAT = "trainbench_checkpoint_format"
KEY_MODEL = "model"
KEY_OPTIMIZER = "optimizer"
KEY_SCHEDULER = "scheduler"
KEY_SCALER = "scaler"
KEY_EPOCH = "epoch"  # epoch in progress (0-based)
KEY_GLOBAL_STEP = "global_step"  # optimizer steps taken in total
KEY_BATCH_IN_EPOCH = "batch_in_epoch"  # batches of `epoch` already consumed (0 = epoch start)
KEY_SAMPLES_IN_EPOCH = "samples_in_epoch"  # samples of `epoch` already consumed (sampler restart offset)
KEY_BEST_METRIC = "best_metric"  # best validation loss so far
KEY_BEST_EPOCH = "best_epoch"
KEY_EARLY_STOPPING = "early_stopping"
KEY_RNG = "rng"
KEY_LOSS_HISTORY = "loss_history"  # per-step training loss
KEY_HISTORY = "history"  # per-epoch records
KEY_COUNTERS = "counters"  # skipped fp16 steps, samples seen, training seconds
KEY_CONFIG = "config"
KEY_TORCH_VERSION = "torch_version"
KEY_GIT_COMMIT = "git_commit"
KEY_TIMESTAMP = "timestamp"
# Why training ended (None while it is in progress). Optional: checkpoints written before it existed
# lack it, and the reason is then inferred from the epoch, step and early-stopping state.
KEY_END_REASON = "end_reason"
# Optional: every rank's RNG states, in rank order, when the run was data-parallel (KEY_RNG is rank 0's).
KEY_RNG_PER_RANK = "rng_per_rank"
# Optional: every rank's module buffers (batch-norm running statistics), in rank order, when FSDP trained
# the model: it keeps each rank's own buffers (DDP copies rank 0's to all), and KEY_MODEL holds rank 0's.
KEY_BUFFERS_PER_RANK = "buffers_per_rank"
END_EPOCHS, END_MAX_STEPS, END_EARLY_STOPPED, END_STOPPED = "epochs", "max_steps", "early_stopped", "stopped"

REQUIRED_KEYS = (
    KEY_FORMAT,
    KEY_MODEL,
    KEY_OPTIMIZER,
    KEY_SCHEDULER,
    KEY_SCALER,
    KEY_EPOCH,
    KEY_GLOBAL_STEP,
    KEY_BATCH_IN_EPOCH,
    KEY_SAMPLES_IN_EPOCH,
    KEY_BEST_METRIC,
    KEY_BEST_EPOCH,
    KEY_EARLY_STOPPING,
    KEY_RNG,
    KEY_LOSS_HISTORY,
    KEY_HISTORY,
    KEY_COUNTERS,
    KEY_CONFIG,
    KEY_TORCH_VERSION,
    KEY_GIT_COMMIT,
    KEY_TIMESTAMP,
)

BEST_NAME = "best_model.pt"
LAST_NAME = "last_model.pt"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_save(obj: Any, path: str | Path) -> None:
    """Write ``obj`` to ``path`` so that a reader sees either the old file or the complete new one.

    Temp file in the same folder (rename is only atomic within one filesystem), fsync the data,
    rename over the target, then fsync the folder so the rename itself survives a power cut.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    started = time.time()
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; a checkpoint gets normal file modes
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        # BaseException: a KeyboardInterrupt mid-save must not leave a stray temp file either.
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _remove_stale_temps(path, started)
    try:
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:  # some filesystems do not allow fsync on a directory
        pass


def _remove_stale_temps(path: Path, before: float) -> None:
    """Temp files of earlier saves of ``path`` that were killed mid-write (SIGKILL skips cleanup): each
    is as large as a checkpoint, so they are removed once a newer save of the same file has completed.
    Only files older than this save are touched."""
    for stale in path.parent.glob(f".{path.name}.*.tmp"):
        try:
            if stale.stat().st_mtime < before:
                stale.unlink()
        except FileNotFoundError:
            pass


def load_checkpoint_file(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read and check a trainbench checkpoint; never executes code from the file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: checkpoint is empty (0 bytes)")
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # zip errors, unpickling errors, EOF: all mean "unreadable"
        first = _summarise_load_error(e)
        raise CheckpointError(
            f"{path}: unreadable checkpoint (truncated, corrupt, or not saved by trainbench): "
            f"{type(e).__name__}: {first}"
        ) from None
    if not isinstance(obj, dict) or KEY_FORMAT not in obj:
        raise CheckpointError(f"{path}: not a trainbench checkpoint (no '{KEY_FORMAT}' key)")
    if obj[KEY_FORMAT] != FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format {obj[KEY_FORMAT]} is not supported (expected {FORMAT_VERSION})"
        )
    missing = [k for k in REQUIRED_KEYS if k not in obj]
    if missing:
        raise CheckpointError(f"{path}: checkpoint is missing keys: {', '.join(missing)}")
    return obj


def _summarise_load_error(e: Exception) -> str:
    text = str(e).strip()
    marker = "WeightsUnpickler error:"
    if marker in text:  # torch's weights_only refusal: the one informative sentence is after this marker
        text = text.split(marker, 1)[1].strip()
    first = text.splitlines()[0] if text else ""
    first = first.split(". ")[0]
    return first if len(first) <= 160 else first[:157] + "..."


def describe_state_dict_mismatch(err: RuntimeError) -> str:
    """Condense torch's multi-line load_state_dict error into one line."""
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    body = " ".join(lines[1:]) if len(lines) > 1 else (lines[0] if lines else "state_dict mismatch")
    return body if len(body) <= 300 else body[:297] + "..."
