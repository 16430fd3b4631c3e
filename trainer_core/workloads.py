"""Workloads: how a batch becomes a loss, what evaluation reports, what throughput counts, and an
analytic FLOPs formula where the field has a standard one.

The Trainer's step, checkpointing, exact resume and determinism are the same for every workload: it
only asks its workload for the loss of (outputs, targets), how many items a batch holds (samples or
tokens), and the evaluation metrics. Registered by name with ``@register_workload``; ``workload:`` in a
config names one (``auto``: ``causal_lm`` for text data, else ``classification``) or gives your own
as ``package.module:Class``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from trainer_core.errors import ConfigError
from trainer_core.imports import import_callable


class Workload:
    """The base: classification-style defaults. Subclass, override what differs, register."""

    name = "workload"
    unit = "samples"  # what throughput counts per second: "samples" or "tokens"

    def __init__(self, loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None) -> None:
        self.loss_fn = loss if loss is not None else nn.CrossEntropyLoss()

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The training loss, in fp32 whatever the outputs' dtype (bf16-true logits would otherwise give a
        bf16 log-softmax)."""
        return self.loss_fn(outputs.float(), targets)

    def items(self, targets: torch.Tensor) -> int:
        """How many throughput items a batch holds."""
        return int(targets.shape[0])

    def tiny_batch(self, x: torch.Tensor, y: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The first ``n`` samples of a batch: what an overfit check memorises."""
        return x[:n], y[:n]

    def correct(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Correct predictions in a batch (a device tensor: read in bulk after evaluation)."""
        return (outputs.argmax(dim=-1) == targets).sum()

    def summary(self, loss: float, correct: int, items: int) -> dict[str, float]:
        """Evaluation metrics from the mean loss over items and the count of correct predictions."""
        return {"loss": loss, "accuracy": correct / items if items else math.nan}

    def flops_per_step(self, model: nn.Module, x: torch.Tensor) -> int | None:
        """Analytic FLOPs of one training step on batch ``x`` (forward + backward), or None."""
        forward = conv_linear_flops(model, x)
        return None if forward is None else 3 * forward  # backward: ~2x forward (input and weight gradients)


WORKLOADS: dict[str, type[Workload]] = {}


def register_workload(name: str) -> Callable[[type[Workload]], type[Workload]]:
    def add(cls: type[Workload]) -> type[Workload]:
        if name in WORKLOADS:
            raise ValueError(f"workload {name!r} is registered twice")
        cls.name = name
        WORKLOADS[name] = cls
        return cls

    return add


@register_workload("classification")
class Classification(Workload):
    """One label per sample; cross-entropy (or ``model.loss``); accuracy; samples/s."""


@register_workload("causal_lm")
class CausalLM(Workload):
    """Next-token prediction on token windows: (x, y) are [B, T] token ids, y shifted by one; the loss is
    cross-entropy over every position; evaluation reports loss, perplexity and next-token accuracy;
    throughput counts tokens."""

    unit = "tokens"
    tiny_context = 32  # tokens per window in a tiny batch

    def tiny_batch(self, x: torch.Tensor, y: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``n`` windows cut to their first ``tiny_context`` tokens: whole windows of a few hundred tokens
        sit at the edge of what a small model memorises in a few dozen steps, and whether it escapes the
        unigram plateau in time then depends on which windows were drawn."""
        return x[:n, : self.tiny_context], y[:n, : self.tiny_context]

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return self.loss_fn(outputs.float().reshape(-1, outputs.shape[-1]), targets.reshape(-1))

    def items(self, targets: torch.Tensor) -> int:
        return int(targets.numel())

    def summary(self, loss: float, correct: int, items: int) -> dict[str, float]:
        return {**super().summary(loss, correct, items), "perplexity": math.exp(min(loss, 700.0))}

    def flops_per_step(self, model: nn.Module, x: torch.Tensor) -> int | None:
        """nanoGPT's (PaLM appendix B) count: 6N per token for the weights (N without the position
        embedding; the tied token embedding counts once, as the output layer) plus 12·L·H·Q·T per token
        for attention, times the tokens of the batch."""
        cfg = getattr(model, "config", None)
        if cfg is None or not hasattr(model, "num_params"):
            return None
        t = x.shape[-1]
        per_token = (
            6 * model.num_params(non_embedding=True) + 12 * cfg.n_layer * cfg.n_head * (cfg.n_embd // cfg.n_head) * t
        )
        return int(per_token * x.numel())


def resolve_loss(path: str | None) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None:
    """``model.loss``: a function ``loss(outputs, targets)`` given as ``package.module:function``."""
    if path is None:
        return None
    return _import(path, "model.loss")


def build_workload(name: str, data_kind: str, loss_path: str | None = None) -> Workload:
    """The workload a config names (``auto``: causal_lm for text data, else classification)."""
    if name == "auto":
        name = "causal_lm" if data_kind == "text" else "classification"
    if name in WORKLOADS:
        cls = WORKLOADS[name]
    elif ":" in name:
        cls = _import(name, "workload")
        if not (isinstance(cls, type) and issubclass(cls, Workload)):
            raise ConfigError(f"workload: {name} is not a subclass of trainer_core.workloads.Workload")
    else:
        raise ConfigError(
            f"workload: unknown workload {name!r}; expected auto, {', '.join(WORKLOADS)} or 'package.module:Class'"
        )
    workload = cls(resolve_loss(loss_path))
    workload.name = name  # an imported workload is named by its import path
    return workload


def _import(path: str, key: str) -> Any:
    return import_callable(path, key)


def conv_linear_flops(model: nn.Module, x: torch.Tensor) -> int | None:
    """Forward FLOPs of the convolutions and linear layers from their shapes (2 per multiply-add), from
    one forward pass on the meta device (nothing computed, nothing allocated): the standard count for
    CNNs and MLPs. None if the model cannot run on the meta device."""
    total = 0

    def count(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        nonlocal total
        if isinstance(module, nn.modules.conv._ConvNd):
            k = math.prod(module.kernel_size) * (module.in_channels // module.groups)
            total += 2 * k * output.numel()
        elif isinstance(module, nn.Linear):
            total += 2 * module.in_features * output.numel()

    try:
        meta = _meta_copy(model)
    except Exception:  # a user model that cannot be copied to the meta device
        return None
    handles = [
        m.register_forward_hook(count) for m in meta.modules() if isinstance(m, (nn.modules.conv._ConvNd, nn.Linear))
    ]
    try:
        with torch.no_grad():
            meta(torch.empty(x.shape, dtype=torch.float32, device="meta").contiguous())
    except Exception:
        return None
    finally:
        for h in handles:
            h.remove()
    return total or None


def _meta_copy(model: nn.Module) -> nn.Module:
    import copy

    clone = copy.deepcopy(model).float()
    return clone.to_empty(device="meta")
