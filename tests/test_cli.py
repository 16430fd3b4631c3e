"""bench.train / bench.evaluate end to end, bad input, and resume across processes."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import REPO

from bench.evaluate import __main__ as evaluate_cli
from bench.train import __main__ as train_cli
from trainer_core import checkpoint as ck

TABULAR = str(REPO / "configs" / "tabular_mlp.yaml")
FAST = ["--set", "data.n_samples=400", "--set", "train.epochs=3", "--set", "logging.progress_bar=off"]


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _subprocess(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", *args], cwd=REPO, capture_output=True, text=True, env=env, timeout=300)


def test_train_writes_every_output_and_reaches_95_percent(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "run"  # the shipped config as it is: the README promises >= 95% in seconds
    assert train_cli.cli(["--config", TABULAR, "--out", str(out), "--set", "logging.progress_bar=off"]) == 0
    printed = capsys.readouterr().out.strip().splitlines()
    assert printed[-1] == f"run dir: {out}"
    for name in (
        "config.yaml",
        "metrics.json",
        "learning_curves.png",
        "log.jsonl",
        "checkpoints/best_model.pt",
        "checkpoints/last_model.pt",
    ):
        assert (out / name).is_file(), name
    assert list((out / "tensorboard").glob("events.out.tfevents.*"))
    metrics = json.loads((out / "metrics.json").read_text())
    for key in (
        "final_train_loss",
        "final_val_loss",
        "best_val_accuracy",
        "best_epoch",
        "total_epochs",
        "training_time_seconds",
        "test_accuracy",
        "samples_per_second",
    ):
        assert metrics[key] is not None, key
    assert metrics["test_accuracy"] >= 0.95 and metrics["best_val_accuracy"] >= 0.95
    assert (out / "learning_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    kinds = {r["kind"] for r in records}
    assert {"start", "train", "epoch", "end"} <= kinds
    assert all("loss" in r and "lr" in r for r in records if r["kind"] == "train")


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


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--config", TABULAR, "--set", "optim.lrr=1"], "tabular_mlp.yaml: optim.lrr (from --set): unknown key"),
        (
            ["--config", TABULAR, "--set", "data.batch_size=abc"],
            "data.batch_size (from --set): Input should be a valid integer",
        ),
        (["--config", "no/such.yaml"], "no/such.yaml: config file not found"),
        (["--config", TABULAR, "--set", "model.name=NoSuchNet"], "model.name: unknown model 'NoSuchNet'"),
        (["--config", TABULAR, "--set", "data.name=mnist", "--set", "data.root=/nonexistent"], "IDX files not found"),
    ],
)
def test_bad_input_is_one_line_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture, argv: list[str], expected: str
) -> None:
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
    assert "already holds a run" in capsys.readouterr().err
    assert _files(out) == before


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    from trainer_core.errors import ConfigError

    with pytest.raises(ConfigError):
        train_cli.cli(["--config", TABULAR, "--set", "optim.lrr=1", "--debug", "--out", str(tmp_path / "x")])


def test_real_process_exit_code_and_stderr() -> None:
    proc = _subprocess("bench.train", "--config", TABULAR, "--set", "precision=fp8")
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        "bench.train: error: "
        + TABULAR
        + ": precision (from --set): unknown precision 'fp8'; expected one of fp32, fp16, bf16, bf16-true"
    )


@pytest.mark.slow
def test_resume_across_processes_mid_epoch_with_workers_is_bit_identical(tmp_path: Path) -> None:
    common = [
        "--config",
        TABULAR,
        "--set",
        "data.num_workers=2",
        "--set",
        "optim.scheduler=cosine",
        "--set",
        "train.epochs=3",
        "--set",
        "train.early_stopping.patience=null",
        "--set",
        "data.n_samples=600",
    ]
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
        assert (
            json.loads((straight / "metrics.json").read_text())[k]
            == json.loads((split / "metrics.json").read_text())[k]
        )


def test_train_profile_leaves_a_trace(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    from bench.trace.analysis import breakdown, load_trace

    monkeypatch.chdir(tmp_path)  # traces go to ./profiles/<run-dir-name>/train/
    assert train_cli.cli(["--config", TABULAR, "--out", str(tmp_path / "run"), "--profile", *FAST]) == 0
    (trace,) = list((tmp_path / "profiles" / "run" / "train").iterdir())
    assert breakdown(load_trace(trace))["steps"] == 3
    assert "trace: profiles/run/train" in capsys.readouterr().out


# ------------------------------------------------------------------------------------- resume paths
ES = ["--config", TABULAR, "--seed", "11", "--set", "logging.progress_bar=off"]  # early-stops after epoch 8


def _assert_nothing_lost(before: dict[str, bytes], out: Path) -> None:
    """Every file written before is still there byte for byte, or appended to (the log), or moved on by
    the run itself (the checkpoints, to a later step), or moved aside (earlier final outputs)."""
    after = _files(out)
    for name, data in before.items():
        if after.get(name) == data:
            continue
        if name == "log.jsonl":
            assert after[name].startswith(data), "log.jsonl was rewritten, not appended to"
        elif name.startswith("checkpoints/"):
            old = torch.load(io.BytesIO(data), weights_only=True)
            assert ck.load_checkpoint_file(out / name)[ck.KEY_GLOBAL_STEP] > old[ck.KEY_GLOBAL_STEP], (
                f"{name} went back"
            )
        elif name in ("metrics.json", "learning_curves.png"):
            step = json.loads(before["metrics.json"])["global_step"]
            stem, suffix = name.rsplit(".", 1)
            assert after.get(f"{stem}.step{step}.{suffix}") == data, (
                f"{name} was replaced without keeping the earlier one"
            )
        else:
            raise AssertionError(f"{name} was changed or removed")


NO_ES = ["--set", "train.early_stopping.patience=null"]


@pytest.mark.parametrize(
    ("first", "again", "why"),
    [
        ([], [], "early-stopped after epoch 8, best epoch"),
        ([], ["--set", "train.epochs=20"], "early-stopped after epoch 8"),  # more epochs allowed, but it early-stopped
        ([*NO_ES, "--set", "train.epochs=3"], [*NO_ES, "--set", "train.epochs=3"], "all 3 epochs done"),
        (
            [*NO_ES, "--set", "train.max_steps=30"],
            [*NO_ES, "--set", "train.max_steps=30"],
            "train.max_steps=30 reached",
        ),
    ],
)
def test_resume_of_a_complete_run_changes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture, first: list[str], again: list[str], why: str
) -> None:
    out = tmp_path / "run"
    assert train_cli.cli([*ES, *first, "--out", str(out)]) == 0
    before = _files(out)
    capsys.readouterr()
    assert train_cli.cli([*ES, *again, "--out", str(out), "--resume", "auto"]) == 0
    printed = capsys.readouterr().out.strip().splitlines()
    assert (
        len(printed) == 1 and "is complete" in printed[0] and why in printed[0] and "nothing was changed" in printed[0]
    )
    assert ("--continue-early-stopped" in printed[0]) == ("early-stopped" in why)
    assert _files(out) == before  # byte for byte


def test_interrupted_and_extended_runs_keep_what_was_written(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "run"
    base = [*ES, *NO_ES, "--set", "train.epochs=3", "--out", str(out)]
    assert train_cli.cli([*base, "--stop-after-steps", "7"]) == 0  # interrupted mid-epoch 2
    before = _files(out)
    assert train_cli.cli([*base, "--resume", "auto"]) == 0
    _assert_nothing_lost(before, out)
    done = json.loads((out / "metrics.json").read_text())
    assert done["end_reason"] == ck.END_EPOCHS and done["total_epochs"] == 3
    before = _files(out)
    capsys.readouterr()
    # Raising train.epochs extends the finished run from its last checkpoint; its earlier finish is kept.
    assert train_cli.cli([*base, "--set", "train.epochs=5", "--resume", "auto"]) == 0
    assert "resumed from" in capsys.readouterr().out
    _assert_nothing_lost(before, out)
    assert json.loads((out / "metrics.json").read_text())["total_epochs"] == 5
    assert (out / "config.yaml").read_bytes() == before["config.yaml"] and (out / "config.resume-1.yaml").is_file()


def test_an_early_stopped_run_continues_only_when_asked(tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert train_cli.cli([*ES, "--out", str(out)]) == 0
    before = _files(out)
    assert (
        train_cli.cli(
            [*ES, "--set", "train.epochs=12", "--out", str(out), "--resume", "auto", "--continue-early-stopped"]
        )
        == 0
    )
    _assert_nothing_lost(before, out)
    state = ck.load_checkpoint_file(out / "checkpoints" / ck.LAST_NAME)
    assert state[ck.KEY_EPOCH] > 8 and state[ck.KEY_END_REASON] in (ck.END_EARLY_STOPPED, ck.END_EPOCHS)


@pytest.mark.parametrize("case", ["no last checkpoint", "schedule sized for fewer steps", "another run's checkpoint"])
def test_resume_that_would_overwrite_a_run_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture, case: str) -> None:
    out = tmp_path / "run"
    common = [*ES, *NO_ES, "--set", "train.epochs=2", "--out", str(out)]
    if case == "no last checkpoint":
        first, again, expected = (
            ["--set", "checkpoint.save_last=false"],
            ["--resume", "auto"],
            "no checkpoints/last_model.pt to resume from",
        )
    elif case == "schedule sized for fewer steps":
        first, again, expected = (
            ["--set", "optim.scheduler=cosine"],
            ["--set", "optim.scheduler=cosine", "--set", "train.epochs=4", "--resume", "auto"],
            "a schedule cannot be stretched mid-run",
        )
    else:
        other = tmp_path / "other"
        assert train_cli.cli([*ES, "--out", str(other)]) == 0
        first, again, expected = [], ["--resume", str(other / "checkpoints" / ck.LAST_NAME)], "holds another run"
    assert train_cli.cli([*common, *first]) == 0
    before = _files(out)
    capsys.readouterr()
    assert train_cli.cli([*common, *again]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and expected in err
    assert _files(out) == before


def test_a_run_killed_before_its_final_outputs_gets_them_without_training(tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert train_cli.cli([*ES, "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    (out / "metrics.json").unlink()  # as if killed after the last checkpoint, before metrics.json
    last = (out / "checkpoints" / ck.LAST_NAME).read_bytes()
    assert train_cli.cli([*ES, "--out", str(out), "--resume", "auto"]) == 0
    again = json.loads((out / "metrics.json").read_text())
    assert (out / "checkpoints" / ck.LAST_NAME).read_bytes() == last  # no step was taken
    assert {k: again[k] for k in ("global_step", "test_accuracy", "total_epochs", "early_stopped")} == {
        k: metrics[k] for k in ("global_step", "test_accuracy", "total_epochs", "early_stopped")
    }


def test_emulated_fp16_is_flagged_on_stderr_in_the_log_and_in_metrics(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    import trainer_core.precision as precision

    monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset({"avx512f"}))  # a CPU without AVX512-FP16/AMX-FP16
    out = tmp_path / "run"
    assert train_cli.cli(["--config", TABULAR, "--out", str(out), *FAST, "--set", "precision=fp16"]) == 0
    assert "note: fp16 on this CPU is emulated" in capsys.readouterr().err
    start = next(json.loads(line) for line in (out / "log.jsonl").read_text().splitlines() if '"kind": "start"' in line)
    metrics = json.loads((out / "metrics.json").read_text())
    for where in (start["precision"], metrics["precision"]):
        assert where["emulated"] is True and where["grad_scaler"] is True
        assert any("fp16 on this CPU is emulated" in n for n in where["notes"])
