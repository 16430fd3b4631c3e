"""Numerical parity of an exported model, the TorchBench way: the eager model in fp64 is the reference; the
eager model in the run's own precision says how far that precision itself strays from it; the exported model
passes when its error is at most ``k`` times the eager error plus a small tolerance (``k`` per precision).
Also reported: max abs / rel difference against fp64 and top-1 agreement with eager (next-token agreement for
a language model: the argmax over the last dim of every position)."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable

import torch
from torch import nn

from bench.cells.inference import Parity
from trainer_core.precision import PrecisionPolicy

# Error multiplier per precision: the exported model may stray this many times as far from fp64 as the eager
# model in the run's precision does (TorchBench's accuracy check uses 2-3x).
K_BY_PRECISION = {"fp32": 2.0, "bf16": 3.0, "fp16": 3.0, "bf16-true": 3.0, "fp16-true": 3.0}
# Tolerance on top, relative to the reference's RMS: fp32 reorderings (fused kernels, another runtime's
# convolution) move an fp32 output by about 1e-7 of its scale, so 1e-4 is far above them and far below a bug.
RELATIVE_TOLERANCE = 1e-4


def _rms(t: torch.Tensor) -> float:
    return float(t.double().pow(2).mean().sqrt()) if t.numel() else 0.0


def eager_outputs(model: nn.Module, x: torch.Tensor, policy: PrecisionPolicy) -> tuple[torch.Tensor, torch.Tensor]:
    """(fp64 reference, the run's precision) outputs of the eager ``model`` (left as it was)."""
    with torch.no_grad():
        ref = copy.deepcopy(model).double().eval()(x.double() if x.is_floating_point() else x)
        own = policy.cast_model(copy.deepcopy(model)).eval()
        with policy.autocast():
            out = own(policy.cast_input(x))
    return ref, out.double()


def compare(ref: torch.Tensor, eager: torch.Tensor, exported: torch.Tensor, precision: str) -> Parity:
    """The verdict for one batch from the three outputs."""
    k, batch = K_BY_PRECISION.get(precision, 3.0), int(ref.shape[0]) if ref.dim() else 1
    tolerance = RELATIVE_TOLERANCE * _rms(ref)
    if exported.shape != ref.shape:
        return Parity(batch=batch, passed=False, k=k, tolerance=tolerance, eager_error=math.nan,
                      exported_error=math.inf, max_abs=math.inf, max_rel=math.inf, top1_agreement=0.0,
                      reason=f"output shape {tuple(exported.shape)}, eager gives {tuple(ref.shape)}")  # fmt: skip
    exported = exported.double()
    eager_error, exported_error = _rms(eager - ref), _rms(exported - ref)
    diff = (exported - ref).abs()
    max_abs = float(diff.max()) if diff.numel() else 0.0
    scale = float(ref.abs().max()) if ref.numel() else 0.0
    agree = float((exported.argmax(-1) == eager.argmax(-1)).double().mean()) if ref.dim() else 1.0
    finite = bool(torch.isfinite(exported).all())
    passed = finite and exported_error <= k * eager_error + tolerance
    reason = None
    if not passed:
        bound = f"{k:g} x eager's {eager_error:.3g} + {tolerance:.3g}"
        reason = f"error {exported_error:.3g} against fp64 > {bound}" if finite else "non-finite outputs"
    return Parity(batch=batch, passed=passed, k=k, tolerance=tolerance, eager_error=eager_error,
                  exported_error=exported_error, max_abs=max_abs, max_rel=max_abs / scale if scale else math.inf,
                  top1_agreement=agree, reason=reason)  # fmt: skip


def check_parity(
    model: nn.Module, runner: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, policy: PrecisionPolicy
) -> Parity:
    """Parity of ``runner`` (the exported model) on the batch ``x`` (real inputs, as the model takes them)."""
    ref, eager = eager_outputs(model, x, policy)
    with torch.no_grad():
        exported = runner(x)
    return compare(ref, eager, exported, policy.name)
