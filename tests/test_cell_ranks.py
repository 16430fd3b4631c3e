"""Data-parallel cells: ranks launched from the cell, their records merged (global throughput, per-rank
steps, all-reduce time), the four guards and the ddp-equivalence guard on every rank, which passes on a
healthy model (DDP and FSDP, fp16 too) and catches a rank-dependent one; one trace per rank with its
distributed info."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import tiny_overrides

from bench.cells.contract import CellRecord, CellSpec, GuardResult, GuardsConfig, MeasureConfig, ProfileConfig
from bench.measure.entry import run_cell
from bench.measure.ranks import merge
from bench.trace.analysis import breakdown
from trainer_core.config import apply_overrides
from trainer_core.models import ResNet18

MEASURE = MeasureConfig(warmup_steps=2, settle_window=2, max_warmup_steps=6, min_steps=4, min_time_s=0.0, repeats=2)
GUARDS = GuardsConfig(overfit_samples=8, overfit_steps=40, short_run_steps=2)


def _spec(tmp_path: Path, model: str = "SimpleMLP", **extra: Any) -> CellSpec:
    over = tiny_overrides(
        **{
            "data.n_samples": 1024,
            "data.batch_size": 16,
            "train.strategy": "ddp",
            "train.world_size": 2,
            **({"model.name": model, "model.kwargs": {}} if model != "SimpleMLP" else {}),
        }
    )
    return CellSpec(
        cell_id="ddp",
        threads=2,
        config=apply_overrides({}, over),
        measure=MEASURE,
        guards=GUARDS,
        trace_dir=str(tmp_path / "trace"),
        peaks={"fp32": 1e11},
        **extra,
    )


@pytest.mark.slow
def test_a_two_rank_cell_is_measured_merged_and_guarded(tmp_path: Path) -> None:
    record = run_cell(_spec(tmp_path, profile=ProfileConfig(enabled=True, wait=1, warmup=1, active=2)))
    assert record.status == "ok", record.reason
    assert record.world_size == 2 and record.threads_per_rank == 1 and len(record.rank_step_ms_median) == 2
    assert record.items_per_step == 2 * 16  # the global batch
    assert record.samples_per_s == pytest.approx(32 / (record.step_ms_median / 1e3))
    assert record.step_ms_median >= min(record.rank_step_ms_median) * 0.999  # the job steps at its slowest rank
    assert record.comm_ms_per_step is not None and record.comm_ms_per_step > 0
    assert sorted(record.guards) == ["ddp_equivalence", "determinism", "finite", "overfit", "resume"]
    assert record.guards_ok, {k: g.detail for k, g in record.guards.items()}
    for rank in (0, 1):  # one trace per rank, which HTA reads as a two-rank job
        (trace,) = list((tmp_path / "trace" / f"rank{rank}").glob("*.pt.trace.json*"))
        doc = json.loads(trace.read_text())
        info = doc["distributedInfo"]
        assert info["rank"] == rank and info["world_size"] == 2 and info["backend"] == "gloo"
        comm = breakdown(doc)["communication"]  # what bench.trace prints per rank
        assert comm["rank"] == rank and comm["collectives"] == ["gloo:all_reduce"]


@pytest.mark.slow
def test_the_equivalence_guard_catches_a_rank_dependent_model(tmp_path: Path) -> None:
    record = run_cell(_spec(tmp_path, "bench.guards.planted:rank_dependent"))
    assert record.status == "ok"
    assert record.guards["ddp_equivalence"].status == "fail", record.guards["ddp_equivalence"].detail
    assert record.guards["determinism"].status == "pass" and not record.guards_ok


def test_merge_takes_the_slowest_rank_per_step_and_the_worst_verdict() -> None:
    def rank(steps: list[float], guard: str) -> CellRecord:
        return CellRecord(
            status="ok",
            batch_size=8,
            items_per_step=8,
            throughput_unit="samples/s",
            step_s=steps,
            step_ms_median=1e3 * sorted(steps)[len(steps) // 2],
            peak_mem_mb=100.0 + len(guard),
            threads=1,
            guards={"resume": GuardResult(name="resume", status=guard, detail=guard)},
        )

    merged = merge([rank([0.1, 0.3, 0.1], "pass"), rank([0.2, 0.1, 0.2], "fail")])
    assert merged.step_s == [0.2, 0.3, 0.2] and merged.world_size == 2
    assert merged.samples_per_s == pytest.approx(16 / 0.2) and merged.items_per_step == 16
    assert merged.guards["resume"].status == "fail" and merged.guards_ok is False
    assert merged.peak_mem_mb == 104.0 and merged.straggler_pct == pytest.approx(100.0)


@pytest.mark.slow
def test_an_fsdp_cell_shards_blocks_keeps_each_ranks_batch_norm_and_passes_its_guards(tmp_path: Path) -> None:
    # ResNet18's basic blocks are FSDP units and its batch-norm statistics stay per rank: the resume guard
    # passes only when a checkpoint restores every rank's own (DDP would have copied rank 0's to all)
    spec = _spec(tmp_path, "ResNet18", profile=ProfileConfig(enabled=True, wait=1, warmup=1, active=2))
    config = apply_overrides(
        spec.config,
        {"train.strategy": "fsdp", "model.kwargs": {"width": 4}, "data.name": "synthetic_images",
         "data.n_samples": 256},
    )  # fmt: skip
    record = run_cell(spec.model_copy(update={"config": config}))
    assert record.status == "ok", record.reason
    assert sorted(record.guards) == ["ddp_equivalence", "determinism", "finite", "overfit", "resume"]
    assert record.guards_ok, {k: g.detail for k, g in record.guards.items()}
    assert record.world_size == 2 and record.items_per_step == 32
    assert record.flops_analytic_per_step and record.mfu_pct  # counted on an unsharded twin of the model
    # the split reads rank 0's shards: parameters, gradients and Adam's state are about half of the model's
    split, whole = record.mem_split_mb, 4 * sum(p.numel() for p in ResNet18(width=4).parameters()) / 2**20
    assert split is not None and record.mem_split_error is None, record.mem_split_error
    assert 0.3 * whole <= split["params"] <= 0.7 * whole and split["optimizer"] == pytest.approx(
        2 * split["params"], rel=0.1
    )
    (trace,) = list((tmp_path / "trace" / "rank0").glob("*.pt.trace.json*"))
    comm = breakdown(json.loads(trace.read_text()))["communication"]
    assert "gloo:all_gather" in comm["collectives"]  # FSDP gathers each unit's weights from the shards
    assert record.comm_ms_per_step and 0 < record.comm_pct < 100  # no DDP hook: the trace's share of a step


def test_the_shard_units_are_blocks_and_never_split_tied_weights() -> None:
    from trainer_core.distributed import shard_units
    from trainer_core.gpt import GPT

    gpt = GPT(n_layer=2, n_head=2, n_embd=16, block_size=8)
    assert shard_units(gpt) == list(gpt.h)  # the embedding tied to lm_head stays with the root
    tied = torch.nn.Sequential(torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.ReLU()), torch.nn.Linear(2, 2))
    tied[1].weight = tied[0][0].weight
    assert shard_units(tied) == []
    resnet = ResNet18(width=4)
    assert shard_units(resnet) == list(resnet.layers)  # basic blocks; their shortcut convs are plain layers


@pytest.mark.slow
def test_an_fp16_cell_whose_first_steps_overflow_on_one_side_is_compared_at_a_lower_loss_scale(
    tmp_path: Path,
) -> None:
    spec = _spec(tmp_path)
    record = run_cell(spec.model_copy(update={"config": apply_overrides(spec.config, {"precision": "fp16"})}))
    equivalence = record.guards["ddp_equivalence"]
    assert equivalence.status == "pass", equivalence.detail
    assert "at initial loss scale 256" in equivalence.detail  # the default scale skipped steps on one side only


def test_fsdp_is_skipped_with_the_reason_where_it_cannot_shard() -> None:
    from bench.matrix import lever_skip_reason
    from trainer_core.loading import load_config

    config = load_config(None, tiny_overrides(**{"train.strategy": "fsdp", "train.world_size": 2}))
    assert lever_skip_reason(config, torch.device("cpu")) is None  # FSDP2 shards over gloo on CPU
    nhwc = load_config(None, tiny_overrides(**{"train.strategy": "fsdp", "train.world_size": 2,
                                               "model.memory_format": "channels_last"}))  # fmt: skip
    assert "contiguous parameters only" in lever_skip_reason(nhwc, torch.device("cpu"))
