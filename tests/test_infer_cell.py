"""Inference cells: each runtime times real calls with parity as the guard; a runtime whose outputs drift is
measured, shown and never usable; runtimes this machine or cell cannot run are skipped with the reason; the
matrix's variants cross models with their own data."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from conftest import tiny_overrides

from bench.cells.contract import CellSpec, MeasureConfig
from bench.cells.inference import PARITY_GUARD
from bench.export.formats import FORMATS
from bench.infer.cell import inference_cell
from bench.matrix import expand, load_matrix, static_skip_reason
from trainer_core.config import apply_overrides
from trainer_core.loading import load_config

MEASURE = MeasureConfig(mode="inference", warmup_steps=2, max_warmup_s=2, min_steps=3, min_time_s=0.05,
                        max_time_s=0.5, repeats=2, cell_timeout_s=120)  # fmt: skip
CNN = {"model.name": "SimpleCNN", "model.kwargs": {}, "data.name": "synthetic_images", "data.n_samples": 64,
       "data.n_test_samples": 16, "data.val_fraction": 0.0, "data.batch_size": 8}  # fmt: skip


def spec(runtime: str, **over: Any) -> CellSpec:
    config = load_config(None, tiny_overrides(**{**CNN, "infer.runtime": runtime, **over}))
    return CellSpec(cell_id=f"i-{runtime}", axes={"infer.runtime": runtime}, config=config.to_dict(), threads=1,
                    measure=MEASURE)  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("runtime", ["eager", "torchscript", "exported-program", "onnxruntime"])
def test_each_runtime_times_real_calls_with_parity_as_the_guard(runtime: str) -> None:
    rec = inference_cell(spec(runtime))
    inf = rec.inference
    assert rec.status == "ok" and rec.usable and inf is not None and inf.runtime == runtime
    assert rec.guards[PARITY_GUARD].status == "pass" and inf.parity is not None and inf.parity.batch == 8
    assert inf.calls_timed == len(rec.step_s) == 2 * rec.steps_per_repeat >= 6
    assert 0 < inf.latency_ms_p50 <= inf.latency_ms_p90 <= inf.latency_ms_p99
    assert inf.items_per_s == pytest.approx(8 / (inf.latency_ms_p50 / 1e3)) and rec.throughput == inf.items_per_s
    assert (inf.export_s is None) == (runtime == "eager") and rec.peak_mem_mb and rec.peak_mem_mb > 0


@pytest.mark.slow
def test_a_language_model_counts_tokens_and_a_drifting_runtime_is_never_usable() -> None:
    gpt = {"model.name": "GPT", "data.name": "text", "data.n_samples": 64, "data.n_test_samples": 16,
           "data.val_fraction": 0.1, "data.batch_size": 4,
           "model.kwargs": {"n_layer": 1, "n_head": 2, "n_embd": 16, "block_size": 8, "dropout": 0.0}}  # fmt: skip
    from trainer_core.text import write_sample_text

    path = write_sample_text(Path(__import__("tempfile").mkdtemp()) / "t.txt", words=3000)
    rec = inference_cell(spec("exported-program", **gpt, **{"data.path": str(path)}))
    assert rec.usable and rec.inference.items_per_call == 4 * 8 and rec.unit == "tokens/s"
    # A branch on the batch size is right at the batch a static export was traced at (the cell's) ...
    planted = {"model.name": "bench.guards.planted:branch_on_batch", "data.batch_size": 1}
    assert inference_cell(spec("torchscript", **planted)).usable
    # ... but a runtime whose captured graph computes something else is measured, shown, never usable.
    for runtime in ("torchscript", "exported-program"):
        drift = inference_cell(spec(runtime, **{"model.name": "bench.guards.planted:drifts_when_exported"}))
        assert drift.status == "ok" and drift.inference is not None and drift.inference.items_per_s > 0
        assert not drift.usable and drift.guards[PARITY_GUARD].status == "fail"
        assert "against fp64 >" in drift.guards[PARITY_GUARD].detail
    assert inference_cell(spec("eager", **{"model.name": "bench.guards.planted:drifts_when_exported"})).usable


def test_runtimes_that_cannot_run_here_are_skipped_with_the_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    base = load_config(None, tiny_overrides(**CNN)).to_dict()

    def reason(**over: Any) -> str | None:
        return static_skip_reason(load_config(None, tiny_overrides(**CNN, **over)))

    assert reason(**{"infer.runtime": "onnxruntime"}) is None and base["infer"]["runtime"] == "eager"
    assert reason(**{"infer.runtime": "onnxruntime", "precision": "bf16"}) == (
        "infer.runtime onnxruntime runs the fp32 export; precision bf16 is for eager and compile"
    )
    monkeypatch.setattr(type(FORMATS["onnx"]), "needs", ("no_such_module_for_the_test",))
    assert reason(**{"infer.runtime": "onnxruntime"}) == (
        "infer.runtime onnxruntime needs no_such_module_for_the_test (pip install -e '.[export]')"
    )
    assert apply_overrides(base, {"infer.runtime": "eager"}) == base


def test_variants_cross_models_with_their_own_data(tmp_path: Path) -> None:
    import yaml

    doc = {
        "name": "v", "base": {"device": "cpu", "data": {"val_fraction": 0.0}},
        "measure": {"mode": "inference"},
        "variants": {"mlp": {"model.name": "SimpleMLP", "data.name": "synthetic_blobs"},
                     "cnn": {"model.name": "SimpleCNN", "data.name": "synthetic_images"}},
        "axes": {"infer.runtime": ["eager", "torchscript"], "data.batch_size": [1, 8]},
        "exclude": [{"variant": "cnn", "data.batch_size": 1}],
    }  # fmt: skip
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    cells = expand(load_matrix(path), source=str(path))
    assert [c.cell_id for c in cells] == ["mlp-eager-bs1", "mlp-eager-bs8", "mlp-torchscript-bs1",
                                          "mlp-torchscript-bs8", "cnn-eager-bs8", "cnn-torchscript-bs8"]  # fmt: skip
    assert {c.config.model.name for c in cells if c.axes["variant"] == "cnn"} == {"SimpleCNN"}
    assert cells[0].config.data.name == "synthetic_blobs" and cells[-1].config.infer.runtime == "torchscript"
    doc["include"] = [{"variant": "rnn"}]
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    with pytest.raises(Exception, match="include\\[0\\].variant: no variant 'rnn'"):
        expand(load_matrix(path), source=str(path))


def _shipped_cells() -> list[Any]:
    from conftest import REPO

    path = REPO / "configs" / "inference_matrix.yaml"
    cells = [c for c in expand(load_matrix(path), source=str(path)) if c.skip_reason is None]
    # The suite runs each runnable cell at batch 1 with every runtime but torch.compile, which it runs on
    # SimpleCNN alone (inductor builds C++ kernels: tens of seconds a model); the whole matrix: docs/measurements.md.
    return [c for c in cells if c.config.data.batch_size == 1 and (c.config.infer.runtime != "compile"
            or c.cell_id == "simplecnn-compile-fp32-bs1")]  # fmt: skip


SHIPPED = _shipped_cells()


@pytest.mark.slow
@pytest.mark.parametrize("cell", SHIPPED, ids=[c.cell_id for c in SHIPPED])
def test_the_shipped_inference_matrix_passes_parity_in_every_runtime(cell: Any, tmp_path: Path) -> None:
    from trainer_core.text import write_sample_text

    over: dict[str, Any] = {"data.n_samples": 64, "data.n_test_samples": 16}
    if cell.config.data.image_shape is not None:  # same model, 32 px a side: cheap
        over["data.image_shape"] = [cell.config.data.image_shape[0], 32, 32]
    if cell.config.data.name == "text":  # a generated text stands in for the corpus
        over["data.path"] = str(write_sample_text(tmp_path / "sample.txt", words=3000))
    if cell.config.data.name == "fashion_mnist":
        over["data.limit_train_samples"] = 256
    config = load_config(None, {**cell.config.to_dict(), **over})
    rec = inference_cell(CellSpec(cell_id=cell.cell_id, axes=cell.axes, config=config.to_dict(), threads=1,
                                  measure=MEASURE))  # fmt: skip
    assert rec.status == "ok" and rec.inference is not None and rec.inference.runtime == cell.config.infer.runtime
    assert rec.usable, rec.guards[PARITY_GUARD].detail


@pytest.mark.slow
def test_an_inference_matrix_runs_end_to_end_and_opens_with_the_answer(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    import json

    import yaml

    from bench.run import __main__ as run_cli

    doc = {
        "name": "inf", "base": {"device": "cpu", "model": {"name": "SimpleMLP", "kwargs": {"input_dim": 2,
        "hidden_dims": [16], "output_dim": 2}}, "data": {"name": "synthetic_blobs", "n_samples": 64,
        "n_test_samples": 16, "val_fraction": 0.0}},
        "variants": {"mlp": {}, "drifts": {"model.name": "bench.guards.planted:drifts_when_exported",
                                           "model.kwargs": {}}},
        "axes": {"infer.runtime": ["eager", "exported-program"], "data.batch_size": [4], "precision": ["fp32", "bf16"]},
        "measure": {"mode": "inference", "warmup_steps": 2, "min_steps": 3, "min_time_s": 0.05, "max_time_s": 0.5,
                    "repeats": 2},
    }  # fmt: skip
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    argv = ["--matrix", str(path), "--out", str(tmp_path / "out"), "--profiles", str(tmp_path / "p")]
    assert run_cli.cli([*argv, "--executor", "forked"]) == 0
    out = capsys.readouterr().out
    (run_dir,) = (tmp_path / "out").glob("inf-*")
    records = {r["cell_id"]: r for r in map(json.loads, (run_dir / "cells.jsonl").read_text().splitlines())}
    assert records["mlp-exported_program-bs4-bf16"]["status"] == "skipped"
    assert records["drifts-exported_program-bs4-fp32"]["guards"]["parity"]["status"] == "fail"
    summary = (run_dir / "summary.md").read_text()
    assert summary.index("## Fastest runtime per model and batch") < summary.index("| model | batch | runtime |")
    assert "- **drifts, batch 4**: eager" in summary and "exported-program fp32: outputs drift" in summary
    assert "2 cells skipped: infer.runtime exported-program runs the fp32 export" in summary
    assert "## Fastest runtime per model and batch" in out and (run_dir / "report.html").is_file()
