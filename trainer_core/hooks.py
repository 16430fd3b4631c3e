"""The Trainer's hook API: what a step produced, and the observer protocol of the step and epoch.

A hook wraps each named phase of the step in a context manager (timers, device syncs, profiler
labels) and sees every step's result and every epoch's record, so tools measure and report *the*
training loop instead of keeping a copy of it.
"""

from __future__ import annotations

import contextlib
import sys
from contextlib import AbstractContextManager as ContextManager
from dataclasses import dataclass
from typing import Any, Protocol, TextIO

import torch

# The trainer_core.trainer.Trainer calling the hook. Named, not imported: the trainer imports this module
# (a type-only import back would still be an import cycle).
Trainer = Any

_NULL = contextlib.nullcontext()


@dataclass
class StepResult:
    """What one optimizer step produced. Tensors stay on the device: reading them forces a sync."""

    step: int
    batch_size: int
    loss: torch.Tensor
    grad_norm: torch.Tensor | None
    skipped: bool  # fp16: GradScaler found inf/NaN gradients and skipped the update
    items: int = 0  # what throughput counts in this batch: samples, or tokens for a language model


class StepHook(Protocol):
    """Observer of the Trainer's step. Both methods are optional in practice (see :class:`BaseHook`)."""

    def phase(self, name: str) -> ContextManager[Any]: ...

    def on_step_end(self, trainer: Trainer, result: StepResult) -> None: ...

    def on_epoch_end(self, trainer: Trainer, record: dict[str, Any]) -> None: ...


class BaseHook:
    """No-op hook to subclass."""

    def phase(self, name: str) -> ContextManager[Any]:
        return _NULL

    def on_step_end(self, trainer: Trainer, result: StepResult) -> None:
        return None

    def on_epoch_end(self, trainer: Trainer, record: dict[str, Any]) -> None:
        """Called after validation, outside the timed training region."""
        return


def format_epoch(record: dict[str, Any]) -> str:
    """One line per finished epoch, as bench.train prints it."""
    return (
        f"epoch {record['epoch']:>3}  train_loss {record['train_loss']:.4f}  val_loss {record['val_loss']:.4f}  "
        f"val_acc {record['val_accuracy']:.4f}  lr {record['lr']:.2e}"
    )


class EpochPrinter(BaseHook):
    """Prints each epoch's line when that epoch ends (flushed: it reaches a pipe or log file at once)."""

    def __init__(self, out: TextIO | None = None) -> None:
        self.out = out

    def on_epoch_end(self, trainer: Trainer, record: dict[str, Any]) -> None:
        print(format_epoch(record), file=self.out or sys.stdout, flush=True)
