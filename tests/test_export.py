"""bench.export: every built-in workload exports to every format with parity passing (tiny models, from a real
checkpoint and the run's test split); planted export faults are caught by the parity check; failures are
named with their own exit codes; bad input is a one-line exit 2 and nothing half-written."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import tiny_overrides

from bench.export import __main__ as export_cli
from bench.export.exporting import EXIT_EXPORT, EXIT_NUMERICS, export_checkpoint
from bench.export.formats import FORMATS
from bench.export.parity import compare
from trainer_core.factory import build_run
from trainer_core.loading import load_config
from trainer_core.text import write_sample_text


def checkpoint(tmp_path: Path, **over: Any) -> Path:
    """A tiny run trained one epoch, its last_model.pt."""
    config = load_config(None, tiny_overrides(**{"train.epochs": 1, **over}))
    run = build_run(config, checkpoint_dir=tmp_path / "run" / "checkpoints")
    run.trainer.fit(run.data.train_loader, run.data.val_loader)
    return run.trainer.save_checkpoint(tmp_path / "run" / "checkpoints" / "last_model.pt")


WORKLOADS = {
    "SimpleMLP": {},
    "SimpleCNN": {"model.name": "SimpleCNN", "model.kwargs": {}, "data.name": "synthetic_images",
                  "data.n_samples": 64, "data.n_test_samples": 16, "data.val_fraction": 0.0},
    "ResNet18": {"model.name": "ResNet18", "model.kwargs": {}, "data.name": "synthetic_images",
                 "data.image_shape": [3, 16, 16], "data.n_samples": 32, "data.n_test_samples": 16,
                 "data.val_fraction": 0.0, "data.batch_size": 8},
    "torchvision": {"model.name": "torchvision:squeezenet1_1", "model.kwargs": {}, "data.name": "synthetic_images",
                    "data.image_shape": [3, 32, 32], "data.n_samples": 32, "data.n_test_samples": 16,
                    "data.val_fraction": 0.0, "data.batch_size": 8},
    "user": {"model.name": "user_models:make_tiny", "model.kwargs": {}},
}  # fmt: skip


@pytest.fixture(scope="module")
def text(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_sample_text(tmp_path_factory.mktemp("text") / "sample.txt", words=3000)


@pytest.mark.slow
@pytest.mark.parametrize("fmt", list(FORMATS))
@pytest.mark.parametrize("workload", [*WORKLOADS, "GPT"])
def test_every_workload_exports_to_every_format_with_parity(
    tmp_path: Path, text: Path, workload: str, fmt: str
) -> None:
    if FORMATS[fmt].missing():
        pytest.skip(f"{fmt} needs {', '.join(FORMATS[fmt].missing())}: pip install -e '.[export]'")
    over = WORKLOADS.get(workload) or {
        "data.name": "text", "data.path": str(text), "data.n_samples": 64, "data.n_test_samples": 16,
        "data.batch_size": 4, "data.val_fraction": 0.1, "model.name": "GPT",
        "model.kwargs": {"n_layer": 1, "n_head": 2, "n_embd": 16, "block_size": 8, "dropout": 0.0}}  # fmt: skip
    ckpt = checkpoint(tmp_path, **over)
    out, info = export_checkpoint(ckpt, fmt, dynamic_batch=True)
    assert out == tmp_path / "run" / "export" / fmt and (out / info["file"]).is_file()
    assert [p["batch"] for p in info["parity"]] == [1, info["parity"][1]["batch"]] and info["parity"][1]["batch"] > 2
    assert all(p["passed"] and p["top1_agreement"] == 1.0 for p in info["parity"])
    saved = json.loads((out / "manifest.json").read_text())
    assert saved["source"]["checkpoint"] == str(ckpt.resolve()) and saved["input"]["shape"][0] == "batch"
    assert len(saved["sha256"]) == 64 and saved["source"]["epoch"] == 1
    if fmt == "onnx":
        assert isinstance(saved["opset"], int) and saved["opset"] >= 18


@pytest.mark.slow
def test_a_branch_a_trace_froze_is_caught_by_parity_and_torch_export_refuses_it(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    ckpt = checkpoint(tmp_path, **{"model.name": "bench.guards.planted:branch_on_batch", "model.kwargs": {}})
    argv = ["--checkpoint", str(ckpt), "--dynamic-batch", "--format"]
    assert export_cli.cli([*argv, "torchscript"]) == EXIT_NUMERICS
    err = capsys.readouterr().err
    assert "numerics: torchscript at batch 1: error" in err and "| 1 | NO |" in err
    # torch.export either refuses the branch on a dynamic dim or (torch 2.14) keeps the example's branch: the
    # parity check catches that as it does the trace.
    code = export_cli.cli([*argv, "exported-program"])
    err = capsys.readouterr().err.splitlines()[0]
    assert (code == EXIT_NUMERICS and err.startswith("bench.export: numerics: exported-program at batch 1")) or (
        code == EXIT_EXPORT and "formats that export it: torchscript" in err
    ), err
    assert not (tmp_path / "run" / "export").exists() or not any((tmp_path / "run" / "export").iterdir())


@pytest.mark.slow
def test_a_batch_frozen_into_the_graph_is_caught_at_another_batch(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    ckpt = checkpoint(tmp_path, **{"model.name": "bench.guards.planted:frozen_batch", "model.kwargs": {}})
    code = export_cli.cli(["--checkpoint", str(ckpt), "--dynamic-batch", "--format", "torchscript"])
    assert code == EXIT_NUMERICS and "output shape (2, 2), eager gives (1, 2)" in capsys.readouterr().err
    # Static, at the batch it is served with, the same model passes.
    assert export_cli.cli(["--checkpoint", str(ckpt), "--batch", "8", "--format", "torchscript"]) == 0


def test_the_parity_rule_is_k_times_the_eager_error_plus_a_tolerance() -> None:
    ref = torch.tensor([[1.0, 2.0, 3.0], [3.0, 1.0, 0.0]], dtype=torch.float64)
    eager = ref + 1e-3
    ok = compare(ref, eager, ref + 2e-3, "fp32")
    assert ok.passed and ok.exported_error == pytest.approx(2e-3) and ok.eager_error == pytest.approx(1e-3)
    bad = compare(ref, eager, ref + 2.5e-3, "fp32")
    assert not bad.passed and "> 2 x eager's 0.001" in bad.reason
    assert compare(ref, eager, ref + 2.5e-3, "bf16").passed  # k = 3 for bf16
    swapped = compare(ref, ref, ref.flip(1), "fp32")
    assert not swapped.passed and swapped.top1_agreement == 0.0 and swapped.max_abs == pytest.approx(3.0)
    assert not compare(ref, ref, torch.full_like(ref, float("nan")), "fp32").passed


def test_bad_input_is_one_line_exit_2_and_nothing_is_written(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert export_cli.cli(["--checkpoint", str(tmp_path / "none.pt"), "--format", "onnx"]) == 2
    assert "none.pt: checkpoint not found" in capsys.readouterr().err
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.ones(1)}, foreign)
    assert export_cli.cli(["--checkpoint", str(foreign), "--format", "onnx"]) == 2
    assert "not a trainbench checkpoint" in capsys.readouterr().err
    ckpt = checkpoint(tmp_path)
    (tmp_path / "a_file").write_text("")  # a folder nobody can create, root included
    code = export_cli.cli(
        ["--checkpoint", str(ckpt), "--format", "torchscript", "--out", str(tmp_path / "a_file" / "x")]
    )
    assert code == 2 and "a_file is not a writable folder" in capsys.readouterr().err
    assert export_cli.cli(["--checkpoint", str(ckpt), "--format", "torchscript"]) == 0
    before = (tmp_path / "run" / "export" / "torchscript" / "manifest.json").read_text()
    assert export_cli.cli(["--checkpoint", str(ckpt), "--format", "torchscript"]) == 2  # a finished export is kept
    assert "already exists" in capsys.readouterr().err
    assert (tmp_path / "run" / "export" / "torchscript" / "manifest.json").read_text() == before
    assert [p.name for p in (tmp_path / "run" / "export").iterdir()] == ["torchscript"]  # no staging left
