"""Inference as a cell's measurement (``measure.mode: inference``): what one runtime (``infer.runtime``) did with
the model at one batch size, and whether its outputs agree with the eager model's (parity, the cell's guard).
Light on purpose (Pydantic, no torch), like the rest of the cell contract that imports it."""

from __future__ import annotations

from pydantic import BaseModel, Field

# The runtimes that run an exported file, and the bench.export format each one loads.
EXPORTED_RUNTIMES = {"torchscript": "torchscript", "exported-program": "exported-program", "onnxruntime": "onnx"}
PARITY_GUARD = "parity"  # the guard an inference cell runs: its runtime's outputs against fp64


class Parity(BaseModel):
    """One parity check at one batch size (bench.export.parity computes it)."""

    batch: int = Field(..., description="Batch size the exported model was run at.")
    passed: bool = Field(..., description="exported_error <= k * eager_error + tolerance, outputs of the same shape.")
    k: float = Field(..., description="Error multiplier allowed for the run's precision.")
    tolerance: float = Field(..., description="Absolute tolerance added (a small share of the reference's RMS).")
    eager_error: float = Field(..., description="RMS error of the eager model in the run's precision against fp64.")
    exported_error: float = Field(..., description="RMS error of the runtime's output against fp64.")
    max_abs: float = Field(..., description="Largest |output - fp64| of any output element.")
    max_rel: float = Field(..., description="max_abs over the largest |fp64| output element.")
    top1_agreement: float = Field(..., description="Share of predictions (argmax of the last dim) equal to eager's.")
    reason: str | None = Field(None, description="Why it failed, in one line.")


class InferenceResult(BaseModel):
    """What an inference cell measured."""

    runtime: str = Field(..., description="infer.runtime of the cell.")
    batch: int = Field(..., description="Inputs per call (data.batch_size).")
    items_per_call: float = Field(..., description="What items/s counts per call: samples, or tokens for a LM.")
    latency_ms_p50: float = Field(..., description="Median latency of one call, ms (after warm-up, synchronised).")
    latency_ms_p90: float = Field(..., description="90th percentile latency, ms.")
    latency_ms_p99: float = Field(..., description="99th percentile latency, ms.")
    items_per_s: float = Field(..., description="items_per_call / median latency.")
    calls_timed: int = Field(..., description="Calls timed over all repeats.")
    seconds_timed: float = Field(..., description="Wall time of the timed calls, s.")
    export_s: float | None = Field(None, description="Exporting the model (or compiling it), s; not in the latency.")
    parity: Parity | None = Field(None, description="The runtime's outputs against fp64 at the cell's batch.")
