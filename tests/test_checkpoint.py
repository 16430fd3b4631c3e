from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import tiny_overrides

from trainer_core import checkpoint as ck
from trainer_core.errors import CheckpointError
from trainer_core.factory import build_run
from trainer_core.loading import load_config


def _run(tmp_path: Path | None = None, **extra: Any):
    return build_run(load_config(None, tiny_overrides(**extra)), checkpoint_dir=tmp_path)


def _assert_same_tensors(a: Any, b: Any) -> None:
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b)
    elif isinstance(a, dict):
        assert a.keys() == b.keys()
        for k in a:
            _assert_same_tensors(a[k], b[k])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            _assert_same_tensors(x, y)
    else:
        assert a == b or (a != a and b != b)  # NaN == NaN for this purpose


def test_round_trip_restores_every_key(tmp_path: Path) -> None:
    extra = {"precision": "fp16", "optim.scheduler": "cosine"}
    run = _run(**extra)
    run.trainer.fit(run.data.train_loader, run.data.val_loader, stop_after_steps=4)
    path = run.trainer.save_checkpoint(tmp_path / "c.pt")
    saved = ck.load_checkpoint_file(path)
    assert set(ck.REQUIRED_KEYS) <= set(saved)
    fresh = _run(**extra)
    fresh.trainer.load_checkpoint(path)
    again = fresh.trainer.state_dict()
    for key in ck.REQUIRED_KEYS:
        if key in (ck.KEY_TIMESTAMP, ck.KEY_RNG):
            continue
        _assert_same_tensors(saved[key], again[key])
    assert torch.equal(torch.get_rng_state(), saved[ck.KEY_RNG]["torch"])
    assert fresh.trainer.global_step == 4 and fresh.trainer.batch_in_epoch == 4


def test_save_is_atomic_when_interrupted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = _run()
    path = run.trainer.save_checkpoint(tmp_path / ck.LAST_NAME)
    good = path.read_bytes()

    def broken_save(obj: Any, f: Any, *a: Any, **k: Any) -> None:
        f.write(b"PK\x03\x04 half a zip")
        raise KeyboardInterrupt  # the process is killed in the middle of writing

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(KeyboardInterrupt):
        run.trainer.save_checkpoint(path)
    assert path.read_bytes() == good
    assert os.listdir(tmp_path) == [ck.LAST_NAME]  # no temp file left behind
    monkeypatch.undo()
    ck.load_checkpoint_file(path)


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (b"", "checkpoint is empty"),
        (b"not a checkpoint at all", "unreadable checkpoint"),
    ],
)
def test_garbage_files_are_clear_errors(tmp_path: Path, content: bytes, match: str) -> None:
    p = tmp_path / "x.pt"
    p.write_bytes(content)
    with pytest.raises(CheckpointError, match=match):
        ck.load_checkpoint_file(p)


def test_truncated_checkpoint_is_a_clear_error(tmp_path: Path) -> None:
    p = _run().trainer.save_checkpoint(tmp_path / "c.pt")
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])
    with pytest.raises(CheckpointError, match=r"c\.pt: unreadable checkpoint"):
        ck.load_checkpoint_file(p)
    with pytest.raises(CheckpointError, match="not found"):
        ck.load_checkpoint_file(tmp_path / "missing.pt")


def test_foreign_and_incomplete_dicts_are_rejected(tmp_path: Path) -> None:
    p = tmp_path / "foreign.pt"
    torch.save({"model_state_dict": {}}, p)
    with pytest.raises(CheckpointError, match="not a trainbench checkpoint"):
        ck.load_checkpoint_file(p)
    torch.save({ck.KEY_FORMAT: ck.FORMAT_VERSION, ck.KEY_MODEL: {}}, p)
    with pytest.raises(CheckpointError, match="missing keys: optimizer"):
        ck.load_checkpoint_file(p)


class Payload:
    """Stands in for code smuggled into a pickle; weights_only loading must refuse it."""


def test_checkpoint_holding_code_is_refused(tmp_path: Path) -> None:
    p = tmp_path / "evil.pt"
    torch.save({ck.KEY_FORMAT: ck.FORMAT_VERSION, "x": Payload()}, p)
    with pytest.raises(CheckpointError, match="Unsupported global"):
        ck.load_checkpoint_file(p)


def test_mismatched_model_is_a_clear_error(tmp_path: Path) -> None:
    p = _run().trainer.save_checkpoint(tmp_path / "c.pt")
    other = _run(**{"model.kwargs": {"input_dim": 2, "hidden_dims": [8], "output_dim": 2}})
    with pytest.raises(CheckpointError, match="model weights do not fit: size mismatch"):
        other.trainer.load_checkpoint(p)
    cnn = build_run(load_config(None, tiny_overrides(**{"model.name": "user_models:make_tiny", "model.kwargs": {}})))
    with pytest.raises(CheckpointError, match="holds model 'SimpleMLP', config asks for 'user_models:make_tiny'"):
        cnn.trainer.load_checkpoint(p)


def test_resume_mid_epoch_with_workers_is_bit_identical(tmp_path: Path) -> None:
    # Shuffling, dropout, 2 workers, a one-cycle schedule: every piece of state that could drift.
    extra = {"data.num_workers": 2, "optim.scheduler": "onecycle", "train.epochs": 3, "seed": 11}
    straight = _run(tmp_path / "a", **extra)
    straight.trainer.fit(straight.data.train_loader, straight.data.val_loader)

    first = _run(tmp_path / "b", **extra)
    steps_per_epoch = len(first.data.train_loader)
    res = first.trainer.fit(first.data.train_loader, first.data.val_loader, stop_after_steps=steps_per_epoch + 2)
    assert res.interrupted and first.trainer.batch_in_epoch == 2
    resumed = _run(tmp_path / "b", **extra)
    resumed.trainer.load_checkpoint(tmp_path / "b" / ck.LAST_NAME)
    resumed.trainer.fit(resumed.data.train_loader, resumed.data.val_loader)

    assert resumed.trainer.loss_history == straight.trainer.loss_history
    for k, v in straight.model.state_dict().items():
        assert torch.equal(v, resumed.model.state_dict()[k]), k
    assert [h["val_loss"] for h in resumed.trainer.history] == [h["val_loss"] for h in straight.trainer.history]


def _expected_best(history: list[dict], n: int) -> list[str]:
    """best-epochE.pt files that should remain: of the epochs that improved on every earlier one, the n lowest."""
    improved, best = [], float("inf")
    for h in history:
        if h["val_loss"] < best:
            best = h["val_loss"]
            improved.append(h)
    assert len(improved) > n, "the run must improve more than n times for the test to mean anything"
    return sorted(f"best-epoch{h['epoch']}.pt" for h in sorted(improved, key=lambda h: h["val_loss"])[:n])


def test_keep_best_n_keeps_only_the_best(tmp_path: Path) -> None:
    extra = {"checkpoint.keep_best_n": 2, "train.epochs": 6, "optim.lr": 0.003}
    run = _run(tmp_path / "a", **extra)
    run.trainer.fit(run.data.train_loader, run.data.val_loader)
    kept = sorted(p.name for p in (tmp_path / "a").glob("best-epoch*.pt"))
    assert kept == _expected_best(run.trainer.history, 2)
    for name in kept:  # each file holds its own epoch
        assert ck.load_checkpoint_file(tmp_path / "a" / name)[ck.KEY_EPOCH] == int(name[len("best-epoch") : -3])
    # Across a resume: the resumed run knows which files it kept before, and still keeps only 2.
    first = _run(tmp_path / "b", **extra)
    first.trainer.fit(first.data.train_loader, first.data.val_loader, stop_after_steps=3 * len(first.data.train_loader))
    resumed = _run(tmp_path / "b", **extra)
    resumed.trainer.load_checkpoint(tmp_path / "b" / ck.LAST_NAME)
    resumed.trainer.fit(resumed.data.train_loader, resumed.data.val_loader)
    assert sorted(p.name for p in (tmp_path / "b").glob("best-epoch*.pt")) == kept


# A training process that checkpoints after every step, each checkpoint written in 1 MiB chunks with a
# short pause between them and "writing" said after the first, so a test can kill it mid-write on purpose
# (a real SIGKILL: no Python cleanup runs, the temp file stays) as well as at random moments.
_SAVER = r"""
import io, sys, time
import torch
sys.path.insert(0, sys.argv[2])
real_save = torch.save
def chunked_save(obj, f, *args, **kwargs):
    buf = io.BytesIO()
    real_save(obj, buf, *args, **kwargs)
    data = buf.getvalue()
    for i in range(0, len(data), 1 << 20):
        f.write(data[i:i + (1 << 20)])
        f.flush()
        if i == 0:
            print("writing", flush=True)
        time.sleep(0.02)
torch.save = chunked_save
from conftest import tiny_overrides
from trainer_core.loading import load_config
from trainer_core.factory import build_run
from trainer_core import checkpoint as ck
run = build_run(load_config(None, tiny_overrides(**{"train.epochs": 100000,
    "model.kwargs": {"input_dim": 2, "hidden_dims": [1024, 1024], "output_dim": 2}})), checkpoint_dir=sys.argv[1])
last = run.trainer.checkpoint_dir / ck.LAST_NAME
if last.exists():
    run.trainer.load_checkpoint(last)
while True:
    run.trainer.fit(run.data.train_loader, None, stop_after_steps=1)  # saves last_model.pt at the exact position
    print(run.trainer.global_step, flush=True)
"""


def _next_step(proc) -> int:  # noqa: ANN001
    while (line := proc.stdout.readline().strip()) == "writing":
        pass
    return int(line)


@pytest.mark.slow
def test_sigkill_during_saves_never_loses_the_previous_checkpoint(tmp_path: Path) -> None:
    import random
    import signal
    import subprocess
    import sys
    import time

    tests = str(Path(__file__).parent)
    rng = random.Random(0)
    saved, stale_seen = 0, 0
    for i in range(6):
        proc = subprocess.Popen([sys.executable, "-c", _SAVER, str(tmp_path), tests], stdout=subprocess.PIPE, text=True)
        first = _next_step(proc)  # one complete save in this process, then the kill
        assert first == saved + 1, "a restart did not continue from the last complete checkpoint"
        if i % 2 == 0:  # mid-write: the next save has written its first chunk
            while proc.stdout.readline().strip() != "writing":
                pass
            time.sleep(rng.uniform(0.0, 0.05))
        else:  # anywhere: between saves, during a step or a write
            time.sleep(rng.uniform(0.0, 0.4))
        proc.send_signal(signal.SIGKILL)
        printed = [first, *(int(x) for x in proc.stdout.read().split() if x != "writing")]
        proc.wait()
        state = ck.load_checkpoint_file(tmp_path / ck.LAST_NAME)  # always a complete checkpoint
        # the newest reported save, or the one after it if the kill came between its rename and the print
        assert state[ck.KEY_GLOBAL_STEP] in (printed[-1], printed[-1] + 1)
        saved = state[ck.KEY_GLOBAL_STEP]
        stale = list(tmp_path.glob(".last_model.pt.*.tmp"))  # the temp file of a kill mid-write
        if i % 2 == 0:  # a save writes its chunks for >= 0.2 s after "writing": this kill landed inside it
            assert stale, f"kill {i + 1} was aimed mid-write but left no temp file"
        stale_seen += len(stale)
    assert stale_seen >= 3
    # Stale temp files of killed saves do not get in the way of the next save or of a resume, and the first
    # completed save after them clears them away.
    run = _run(
        tmp_path,
        **{"train.epochs": 100000, "model.kwargs": {"input_dim": 2, "hidden_dims": [1024, 1024], "output_dim": 2}},
    )
    run.trainer.load_checkpoint(tmp_path / ck.LAST_NAME)
    run.trainer.fit(run.data.train_loader, None, stop_after_steps=1)
    assert ck.load_checkpoint_file(tmp_path / ck.LAST_NAME)[ck.KEY_GLOBAL_STEP] == saved + 1
    assert not list(tmp_path.glob(".last_model.pt.*.tmp"))
