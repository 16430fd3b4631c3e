"""bench.train / bench.evaluate end to end, bad input, and resume across processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bench import evaluate as evaluate_cli
from bench import train as train_cli
from conftest import REPO
from trainer_core import checkpoint as ck

TABULAR = str(REPO / "configs" / "tabular_mlp.yaml")
FAST = ["--set", "data.n_samples=400", "--set", "train.epochs=3", "--set", "logging.progress_bar=off"]


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _subprocess(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", *args], cwd=REPO, capture_output=True, text=True, env=env, timeout=300)


def test_train_writes_every_output(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "run"
    assert train_cli.cli(["--config", TABULAR, "--out", str(out), *FAST]) == 0
    printed = capsys.readouterr().out.strip().splitlines()
    assert printed[-1] == f"run dir: {out}"
    for name in ("config.yaml", "metrics.json", "learning_curves.png", "log.jsonl",
                 "checkpoints/best_model.pt", "checkpoints/last_model.pt"):
        assert (out / name).is_file(), name
    assert list((out / "tensorboard").glob("events.out.tfevents.*"))
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("final_train_loss", "final_val_loss", "best_val_accuracy", "best_epoch", "total_epochs",
                "training_time_seconds", "test_accuracy", "samples_per_second"):
        assert metrics[key] is not None, key
    assert metrics["test_accuracy"] >= 0.95
    assert (out / "learning_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    kinds = {r["kind"] for r in records}
    assert {"start", "train", "epoch", "end"} <= kinds
    assert all("loss" in r and "lr" in r for r in records if r["kind"] == "train")


def test_tabular_reaches_95_percent(tmp_path: Path) -> None:
    assert train_cli.cli(["--config", TABULAR, "--out", str(tmp_path / "r"), "--set", "logging.progress_bar=off"]) == 0
    metrics = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert metrics["best_val_accuracy"] >= 0.95 and metrics["test_accuracy"] >= 0.95


def test_evaluate_from_checkpoint_alone(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "run"
    train_cli.cli(["--config", TABULAR, "--out", str(out), *FAST])
    ckpt = out / "checkpoints" / "best_model.pt"
    assert evaluate_cli.cli(["--checkpoint", str(ckpt)]) == 0
    result = json.loads((ckpt.parent / "eval.json").read_text())
    cm = torch.tensor(result["confusion_matrix"])
    assert cm.shape == (2, 2) and int(cm.sum()) == result["samples"] == 1000
    assert result["test_accuracy"] == pytest.approx(float(cm.diag().sum()) / 1000)
    assert len(result["per_class_accuracy"]) == 2
    assert "confusion matrix" in capsys.readouterr().out


@pytest.mark.parametrize(("argv", "expected"), [
    (["--config", TABULAR, "--set", "optim.lrr=1"], "tabular_mlp.yaml: optim.lrr (from --set): unknown key"),
    (["--config", TABULAR, "--set", "data.batch_size=abc"], "data.batch_size (from --set): Input should be a valid integer"),
    (["--config", "no/such.yaml"], "no/such.yaml: config file not found"),
    (["--config", TABULAR, "--set", "model.name=NoSuchNet"], "model.name: unknown model 'NoSuchNet'"),
    (["--config", TABULAR, "--set", "data.name=mnist", "--set", "data.root=/nonexistent"], "IDX files not found"),
])
def test_bad_input_is_one_line_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture, argv: list[str], expected: str) -> None:
    assert train_cli.cli([*argv, "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and expected in err and "Traceback" not in err
    assert not (tmp_path / "x").exists()


def test_unreadable_checkpoint_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"\x00" * 100)
    assert evaluate_cli.cli(["--checkpoint", str(bad)]) == 2
    assert train_cli.cli(["--config", TABULAR, "--resume", str(bad), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all("bad.pt: unreadable checkpoint" in line for line in err)


def test_failed_start_leaves_existing_run_dir_untouched(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "run"
    assert train_cli.cli(["--config", TABULAR, "--out", str(out), *FAST]) == 0
    before = _files(out)
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"junk")
    attempts = [
        ["--config", TABULAR, "--out", str(out), *FAST],  # no --resume: refuses to overwrite
        ["--config", TABULAR, "--out", str(out), "--resume", "auto", "--set", "optim.lr=-1"],
        ["--config", TABULAR, "--out", str(out), "--resume", str(bad)],
        ["--config", TABULAR, "--out", str(out), "--resume", "auto", "--set", "model.kwargs.hidden_dims=[3]"],
    ]
    for argv in attempts:
        assert train_cli.cli(argv) == 2, argv
    assert "already holds checkpoints" in capsys.readouterr().err
    assert _files(out) == before


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    from trainer_core.errors import ConfigError

    with pytest.raises(ConfigError):
        train_cli.cli(["--config", TABULAR, "--set", "optim.lrr=1", "--debug", "--out", str(tmp_path / "x")])


def test_real_process_exit_code_and_stderr() -> None:
    proc = _subprocess("bench.train", "--config", TABULAR, "--set", "precision=fp8")
    assert proc.returncode == 2
    assert proc.stderr.strip() == ("bench.train: error: " + TABULAR
                                   + ": precision (from --set): unknown precision 'fp8'; expected one of fp32, fp16, bf16, bf16-true")


def test_resume_across_processes_mid_epoch_with_workers_is_bit_identical(tmp_path: Path) -> None:
    common = ["--config", TABULAR, "--set", "data.num_workers=2", "--set", "optim.scheduler=cosine",
              "--set", "train.epochs=3", "--set", "train.early_stopping.patience=null", "--set", "data.n_samples=600"]
    straight, split = tmp_path / "straight", tmp_path / "split"
    p = _subprocess("bench.train", *common, "--out", str(straight))
    assert p.returncode == 0, p.stderr
    # 600 samples, 20% validation -> 480 train, batch 64 -> 8 steps per epoch; stop inside epoch 2.
    p = _subprocess("bench.train", *common, "--out", str(split), "--stop-after-steps", "11")
    assert p.returncode == 0, p.stderr
    assert "stopped after step 11" in p.stdout
    assert not (split / "metrics.json").exists()
    p = _subprocess("bench.train", *common, "--out", str(split), "--resume", "auto")
    assert p.returncode == 0, p.stderr
    a = ck.load_checkpoint_file(straight / "checkpoints" / ck.LAST_NAME)
    b = ck.load_checkpoint_file(split / "checkpoints" / ck.LAST_NAME)
    assert a[ck.KEY_GLOBAL_STEP] == b[ck.KEY_GLOBAL_STEP] == 24
    assert a[ck.KEY_LOSS_HISTORY] == b[ck.KEY_LOSS_HISTORY]
    for k, v in a[ck.KEY_MODEL].items():
        assert torch.equal(v, b[ck.KEY_MODEL][k]), k
    for k in ("final_train_loss", "final_val_loss", "test_accuracy"):
        assert json.loads((straight / "metrics.json").read_text())[k] == json.loads((split / "metrics.json").read_text())[k]


def test_train_profile_leaves_a_trace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    from bench.trace import breakdown, load_trace

    monkeypatch.chdir(tmp_path)  # traces go to ./profiles/<run-dir-name>/train/
    assert train_cli.cli(["--config", TABULAR, "--out", str(tmp_path / "run"), "--profile", *FAST]) == 0
    (trace,) = list((tmp_path / "profiles" / "run" / "train").iterdir())
    assert breakdown(load_trace(trace))["steps"] == 3
    assert "trace: profiles/run/train" in capsys.readouterr().out
