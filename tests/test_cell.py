"""bench.cell: one cell measured and guarded in-process (the runner starts it as its own process)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import tiny_overrides

from bench.cells.contract import CellSpec, GuardsConfig, MeasureConfig, ProfileConfig
from bench.measure.entry import run_cell
from bench.measure.timing import StepTimer
from bench.report.tables import summary_markdown
from trainer_core.config import apply_overrides
from trainer_core.text import write_sample_text

# unstable_spread_pct=None: these tests count the steps a cell takes (a second set of repeats would add some)
MEASURE = MeasureConfig(
    warmup_steps=2,
    settle_window=2,
    max_warmup_steps=6,
    min_steps=4,
    min_time_s=0.0,
    repeats=2,
    unstable_spread_pct=None,
)


def _spec(tmp_path: Path, profile: dict[str, Any]) -> CellSpec:
    return CellSpec(
        cell_id="c",
        threads=torch.get_num_threads(),
        config=apply_overrides({}, tiny_overrides(**{"data.n_samples": 512})),
        measure=MEASURE,
        guards=GuardsConfig(enabled=[]),
        profile=ProfileConfig(**profile),
        trace_dir=str(tmp_path / "trace"),
    )


def test_timed_steps_never_run_under_the_profiler(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The throughput table must not include the profiler's overhead: it traces extra steps after the repeats.
    seen: list[bool] = []
    original = StepTimer.on_step_end

    def spy(self: StepTimer, trainer: Any, result: Any) -> None:
        if self.enabled:
            seen.append(torch.autograd._profiler_enabled())
        original(self, trainer, result)

    monkeypatch.setattr(StepTimer, "on_step_end", spy)
    record = run_cell(_spec(tmp_path, {"enabled": True, "wait": 0, "warmup": 1, "active": 2}))
    measured = record.warmup_steps + record.steps_timed
    assert len(seen) == measured + 3  # warm-up and repeats, then the profile's 0 + 1 + 2 steps
    assert not any(seen[:measured])  # no warm-up or timed step was recorded under the profiler
    assert sum(seen[measured:]) == 2  # its 2 active steps were (its warm-up step runs before recording starts)
    assert record.trace_dir and record.profiler_slowdown > 0


def test_an_oversized_trace_is_flagged_in_the_record_and_the_summary(tmp_path: Path) -> None:
    record = run_cell(_spec(tmp_path, {"enabled": True, "wait": 0, "warmup": 1, "active": 2, "max_trace_mb": 0.001}))
    assert record.trace_mb > 0.001
    assert record.trace_warning.startswith(f"trace is {record.trace_mb:.0f} MB (> 0 MB): shorten profile.active")
    assert f"`c`: {record.trace_warning}" in summary_markdown([record], {"matrix_name": "t"})
    quiet = run_cell(_spec(tmp_path / "b", {"enabled": True, "wait": 0, "warmup": 1, "active": 2}))
    assert quiet.trace_warning is None


def test_a_language_model_cell_counts_tokens_and_reports_mfu(tmp_path: Path) -> None:
    text = write_sample_text(tmp_path / "t.txt", words=3000)
    config = apply_overrides(
        {},
        tiny_overrides(
            **{
                "data.name": "text",
                "data.path": str(text),
                "data.batch_size": 4,
                "data.n_samples": 4000,
                "data.n_test_samples": 16,
                "model.name": "GPT",
                "model.kwargs": {"n_layer": 1, "n_head": 2, "n_embd": 32, "block_size": 16},
            }
        ),
    )
    spec = CellSpec(
        cell_id="lm",
        threads=torch.get_num_threads(),
        config=config,
        measure=MEASURE,
        guards=GuardsConfig(enabled=["finite"]),
        peaks={"fp32": 1e11},
    )
    record = run_cell(spec)
    assert record.throughput_unit == "tokens/s" and record.items_per_step == 4 * 16
    assert record.throughput == pytest.approx(record.samples_per_s * 16)
    # nanoGPT's count by hand, char vocabulary V of the text, d=32, one block, T=16, 4 windows a step:
    # non-embedding parameters: block 2*64 (layer norms) + 32*96+96 (qkv) + 32*32+32 (proj) + 32*128+128
    # + 128*32+32 (MLP) = 12,704, final norm 64, tied token embedding 32 V (positions left out);
    # per token 6 N + 12 * layers * heads * head size * T = 6 (12,768 + 32 V) + 12 * 1 * 2 * 16 * 16.
    vocab = len(set(text.read_text(encoding="utf-8")))
    assert record.flops_analytic_per_step == 4 * 16 * (6 * (12_768 + 32 * vocab) + 6_144)
    assert abs(record.flops_analytic_per_step / record.flops_per_step - 1) < 0.1  # the profiler's count agrees
    assert record.mfu_pct == pytest.approx(100 * record.flops_analytic_per_step / (record.step_ms_median / 1e3) / 1e11)
    assert record.guards["finite"].status == "pass"


def test_the_spec_file_names_a_late_field_only_when_it_is_set() -> None:
    # a git revision from before `lockstep` refuses unknown keys: a cell that does not use it must still run there
    import json

    from bench.cells.contract import LockstepSpec

    spec = CellSpec(cell_id="c", config={}, threads=1)
    assert "lockstep" not in json.loads(spec.to_json())
    pipes = LockstepSpec(read_pipe="/p/to-A", write_pipe="/p/to-B", first=True)
    paired = json.loads(spec.model_copy(update={"lockstep": pipes}).to_json())
    assert paired["lockstep"]["first"] is True and CellSpec.model_validate(paired).lockstep == pipes
    # turns of one step are what a revision from before turn_ms takes: the key is left out then
    assert "turn_ms" not in paired["lockstep"]
    longer = json.loads(spec.model_copy(update={"lockstep": pipes.model_copy(update={"turn_ms": 150.0})}).to_json())
    assert longer["lockstep"]["turn_ms"] == 150.0
