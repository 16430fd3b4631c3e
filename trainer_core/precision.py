"""Precision policy: the one place that maps (precision, device) to (autocast context, GradScaler).

The train step calls ``policy.autocast()`` around forward + loss, ``policy.cast_input()`` on each batch
and uses ``policy.scaler`` when it is not None; the Trainer casts the model with ``policy.cast_model()``.
Nothing else branches on the precision name.
"""

from __future__ import annotations

import contextlib
import functools
from contextlib import AbstractContextManager as ContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from trainer_core.config import PRECISIONS
from trainer_core.errors import DeviceError, PrecisionError

# The dtype each precision computes matmuls/convs in.
COMPUTE_DTYPES: dict[str, torch.dtype] = {
    "fp32": torch.float32,
    "fp16": torch.float16,
    "bf16": torch.bfloat16,
    "bf16-true": torch.bfloat16,
}
_TRUE = {"bf16-true"}  # parameters themselves in the low dtype, no autocast


@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """CPU feature flags from /proc/cpuinfo (empty where that file does not exist)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


@functools.lru_cache(maxsize=1)
def cpu_model_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()


@dataclass
class PrecisionPolicy:
    """A resolved precision: autocast factory, optional GradScaler, and what to tell the user."""

    name: str
    device_type: str
    autocast_dtype: torch.dtype | None
    scaler: torch.amp.GradScaler | None
    emulated: bool = False
    notes: list[str] = field(default_factory=list)
    param_dtype: torch.dtype | None = None  # set for "-true" precisions: model and float inputs cast to it

    def cast_model(self, model: torch.nn.Module) -> torch.nn.Module:
        return model if self.param_dtype is None else model.to(self.param_dtype)

    def cast_input(self, x: torch.Tensor) -> torch.Tensor:
        """Floating inputs follow the parameters' dtype; integer inputs (indices) are left alone."""
        if self.param_dtype is None or not x.is_floating_point():
            return x
        return x.to(self.param_dtype)

    def autocast(self) -> ContextManager[Any]:
        """A fresh context for forward + loss; a no-op for fp32."""
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device_type, dtype=self.autocast_dtype)

    def metadata(self) -> dict[str, Any]:
        """What the run records about numerics (TF32 switches matter for 'fp32' on Ampere+)."""
        return {
            "precision": self.name,
            "device_type": self.device_type,
            "autocast_dtype": str(self.autocast_dtype).replace("torch.", "") if self.autocast_dtype else None,
            "param_dtype": str(self.param_dtype).replace("torch.", "") if self.param_dtype else "float32",
            "grad_scaler": self.scaler is not None,
            "emulated": self.emulated,
            "notes": list(self.notes),
            "cuda_matmul_allow_tf32": bool(torch.backends.cuda.matmul.allow_tf32),
            "cudnn_allow_tf32": bool(torch.backends.cudnn.allow_tf32),
            "float32_matmul_precision": torch.get_float32_matmul_precision(),
        }


def check_support(precision: str, device: torch.device) -> tuple[bool, bool, list[str]]:
    """Return (supported, emulated, notes) for ``precision`` on ``device`` without building anything."""
    if precision not in PRECISIONS:
        raise PrecisionError(f"precision: unknown precision {precision!r}; expected one of {', '.join(PRECISIONS)}")
    notes: list[str] = []
    if precision == "fp32":
        return True, False, notes
    if device.type == "cuda":
        if precision.startswith("bf16") and not torch.cuda.is_bf16_supported(including_emulation=False):
            name = torch.cuda.get_device_name(device)
            return False, False, [f"bf16 not supported on this GPU ({name})"]
        return True, False, notes
    if device.type == "cpu":
        flags = cpu_flags()
        if precision == "fp16":
            native = bool({"avx512_fp16", "amx_fp16"} & flags)
            if not native:
                notes.append(
                    "fp16 on this CPU is emulated (no AVX512-FP16/AMX-FP16): expect it to be much slower than fp32"
                )
            return True, not native, notes
        native = bool({"avx512_bf16", "amx_bf16"} & flags)
        if not native:
            notes.append("bf16 on this CPU has no native instructions (no AVX512-BF16/AMX-BF16): expect it to be slow")
        return True, not native, notes
    return False, False, [f"{precision} autocast is not supported by trainbench on device type {device.type!r}"]


def resolve_precision(precision: str, device: torch.device) -> PrecisionPolicy:
    """Resolve once per run. Raises :class:`PrecisionError` where the device cannot run it."""
    supported, emulated, notes = check_support(precision, device)
    if not supported:
        raise PrecisionError(f"precision={precision}: " + "; ".join(notes))
    # Only fp16 needs loss scaling: its 5-bit exponent underflows small gradients; bf16 has fp32's range.
    scaler = torch.amp.GradScaler(device.type) if precision == "fp16" else None
    if precision in _TRUE:
        # No fp32 master weights: an update smaller than ~1/256 of a weight rounds away (bf16 keeps 8
        # significant bits), so late, small-learning-rate training can stall. Faster: no per-step casts.
        notes.append(
            f"{precision}: parameters, gradients and optimizer state in {precision.split('-')[0]} "
            "(no fp32 master weights): small updates can round away, so check accuracy"
        )
        return PrecisionPolicy(
            precision, device.type, None, scaler, emulated, notes, param_dtype=COMPUTE_DTYPES[precision]
        )
    dtype = None if precision == "fp32" else COMPUTE_DTYPES[precision]
    return PrecisionPolicy(precision, device.type, dtype, scaler, emulated, notes)


def resolve_device(spec: str) -> torch.device:
    """'auto' -> cuda if available else cpu; 'cuda[:N]' must exist."""
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(spec)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(f"device={spec}: CUDA is not available on this machine")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise DeviceError(f"device={spec}: only {torch.cuda.device_count()} CUDA device(s) present")
    return dev
