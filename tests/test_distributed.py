"""Data parallelism: the sharded sampler, bench.train with train.strategy=ddp or fsdp (ranks started by
the elastic launcher, as torchrun would), equivalence with one process at the global batch, rank-0-only
outputs with whole weights, a failing rank, and a kill -9 of one rank followed by --resume auto
(bit-identical)."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from conftest import REPO, tiny_overrides

from trainer_core.config import apply_overrides
from trainer_core.data import ResumableSampler
from trainer_core.errors import ConfigError
from trainer_core.loading import load_config


def _batches(sampler: ResumableSampler, b: int) -> list[list[int]]:
    idx = list(sampler)
    return [idx[i : i + b] for i in range(0, len(idx), b)]


@pytest.mark.parametrize("n", [64, 70, 65])
def test_ranks_take_the_global_batch_a_single_process_would(n: int) -> None:
    single = ResumableSampler(n, shuffle=True, seed=3)
    single.set_epoch(2)
    want = _batches(single, 16)
    ranks = []
    for r in range(2):
        s = ResumableSampler(n, shuffle=True, seed=3)
        s.shard(r, 2, 8)
        s.set_epoch(2)
        ranks.append(_batches(s, 8))
    assert len(ranks[0]) == len(ranks[1])  # the same number of steps on every rank
    merged = [a + b for a, b in zip(*ranks)]
    full = n // 16
    assert merged[:full] == want[:full]  # each global batch is the single process's batch
    seen = [i for batch in merged for i in batch]
    assert len(seen) == len(set(seen)) and len(seen) >= n - 1  # every sample at most once, at most 1 dropped
    resumed = ResumableSampler(n, shuffle=True, seed=3)
    resumed.shard(1, 2, 8)
    resumed.set_epoch(2, start=8)
    assert list(resumed) == [i for b in ranks[1] for i in b][8:]


def test_a_single_strategy_cannot_ask_for_ranks() -> None:
    with pytest.raises(ConfigError, match="train: .*need train.strategy ddp or fsdp"):
        load_config(None, tiny_overrides(**{"train.world_size": 2}))


def _config(tmp_path: Path, name: str, **extra: Any) -> Path:
    over = tiny_overrides(
        **{
            "model.kwargs": {"input_dim": 2, "hidden_dims": [16], "output_dim": 2, "dropout": 0.0},
            "data.n_samples": 512,
            **extra,
        }
    )
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(apply_overrides({"name": name}, over)))
    return path


def _train(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, "-m", "bench.train", *args], capture_output=True, text=True, env=env, timeout=300
    )
    if check:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return torch.load(run / "checkpoints" / "last_model.pt", weights_only=True)["model"]


@pytest.mark.slow
def test_ddp_and_fsdp_ranks_match_one_process_at_the_global_batch(tmp_path: Path) -> None:
    cfg = _config(tmp_path, "ddp")
    ddp = _train("--config", str(cfg), "--set", "data.batch_size=16", "--set", "train.strategy=ddp",
                 "--set", "train.world_size=2", "--out", str(tmp_path / "ddp"))  # fmt: skip
    _train("--config", str(cfg), "--set", "data.batch_size=32", "--out", str(tmp_path / "one"))
    a, b = _weights(tmp_path / "ddp"), _weights(tmp_path / "one")
    for k in a:  # the same samples per step; only the order of the gradient sum differs
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6)
    # rank 0 alone prints and writes: one line per epoch, one metrics file, global samples/s
    assert ddp.stdout.count("epoch   1 ") == 1
    files = sorted(p.name for p in (tmp_path / "ddp").iterdir())
    assert files == sorted(p.name for p in (tmp_path / "one").iterdir())
    # torchrun's ranks run the same code path (the strategy follows the launch): the same weights, bit for bit
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "-m", "bench.train",
           "--config", str(cfg), "--set", "data.batch_size=16", "--out", str(tmp_path / "torchrun")]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    c = _weights(tmp_path / "torchrun")
    assert all(torch.equal(a[k], c[k]) for k in a)
    # FSDP: the ranks hold shards, the checkpoint whole weights (rank 0 gathers them), and a run stopped
    # mid-epoch resumes from them (the optimizer state gathered, then sharded again) bit for bit
    fsdp = ["--config", str(cfg), "--set", "data.batch_size=16", "--set", "train.strategy=fsdp",
            "--set", "train.world_size=2", "--set", "checkpoint.every_n_steps=3"]  # fmt: skip
    _train(*fsdp, "--out", str(tmp_path / "fsdp"))
    _train(*fsdp, "--out", str(tmp_path / "stopped"), "--stop-after-steps", "5")
    _train(*fsdp, "--out", str(tmp_path / "stopped"), "--resume", "auto")
    d, e = _weights(tmp_path / "fsdp"), _weights(tmp_path / "stopped")
    assert d.keys() == b.keys() and all(d[k].shape == b[k].shape for k in d)
    assert all(torch.equal(d[k], e[k]) for k in d)
    for k in d:
        torch.testing.assert_close(d[k], b[k], rtol=1e-5, atol=1e-6)


@pytest.mark.gpu
def test_fsdp_trains_on_cuda_over_nccl(tmp_path: Path) -> None:
    ranks = min(2, torch.cuda.device_count())  # one GPU per rank; with one GPU, a one-rank NCCL group
    cfg = _config(tmp_path, "cuda", **{"device": "cuda", "checkpoint.every_n_steps": 3})
    fsdp = ["--config", str(cfg), "--set", "train.strategy=fsdp", "--set", f"train.world_size={ranks}"]
    _train(*fsdp, "--out", str(tmp_path / "straight"))
    _train(*fsdp, "--out", str(tmp_path / "stopped"), "--stop-after-steps", "5")
    _train(*fsdp, "--out", str(tmp_path / "stopped"), "--resume", "auto")
    a, b = _weights(tmp_path / "straight"), _weights(tmp_path / "stopped")
    assert a.keys() == b.keys() and all(a[k].device.type == "cpu" for k in a)  # gathered to the host
    for k in a:  # cuBLAS may pick other kernels after a restart: close, not bit-identical
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_a_failing_rank_fails_the_run_with_its_error_and_no_rank_hangs(tmp_path: Path) -> None:
    cfg = _config(tmp_path, "bad", **{"model.name": "bench.guards.planted:raises", "model.kwargs": {}})
    t0 = time.monotonic()
    proc = _train("--config", str(cfg), "--set", "train.strategy=ddp", "--set", "train.world_size=2",
                  "--out", str(tmp_path / "bad"), check=False)  # fmt: skip
    assert proc.returncode == 1 and time.monotonic() - t0 < 120
    line = next(x for x in proc.stderr.splitlines() if x.startswith("bench.train: rank"))
    assert "of 2 failed first (exit code 1); its last lines on stderr:" in line
    assert "RuntimeError: planted failure in forward" in proc.stderr.split(line, 1)[1]  # that rank's own error


@pytest.mark.slow
def test_a_rank_killed_by_a_signal_is_named_with_its_signal_not_the_rank_the_launcher_stopped(tmp_path: Path) -> None:
    cfg = _config(tmp_path, "abort", **{"model.name": "user_models:aborts_on_rank_1", "model.kwargs": {}})
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{REPO / 'tests'}"}
    proc = subprocess.run([sys.executable, "-m", "bench.train", "--config", str(cfg), "--set", "train.strategy=ddp",
                           "--set", "train.world_size=2", "--out", str(tmp_path / "abort")],
                          capture_output=True, text=True, env=env, timeout=300)  # fmt: skip
    assert proc.returncode == 128 + signal.SIGABRT, proc.stderr[-2000:]
    assert "bench.train: rank 1 of 2 failed first (SIGABRT (exit code -6)); its last lines on stderr:" in proc.stderr
    assert "  rank 1 is about to abort (planted)" in proc.stderr


def test_the_first_failure_is_the_earliest_and_not_the_rank_the_launcher_terminated() -> None:
    from types import SimpleNamespace

    from trainer_core.distributed import RanksFailed, first_failure

    def failures(**by_rank: tuple[int, int]) -> SimpleNamespace:
        return SimpleNamespace(failures={int(r[1:]): SimpleNamespace(timestamp=t, exitcode=c, local_rank=int(r[1:]))
                                         for r, (t, c) in by_rank.items()})  # fmt: skip

    # rank 1 aborts, then the launcher SIGTERMs rank 0 within the same second: rank 1 failed first
    assert first_failure(failures(r0=(100, -signal.SIGTERM), r1=(100, -signal.SIGABRT))) == (1, -6, 1)
    assert first_failure(failures(r0=(101, 1), r1=(100, -signal.SIGTERM))) == (1, -15, 1)  # earlier wins
    assert first_failure(failures(r0=(100, 1), r1=(100, 1))) == (0, 1, 0)
    assert first_failure(SimpleNamespace(failures={})) == (-1, 1, -1)
    assert RanksFailed(1, -6, []).describe() == "rank 1 failed first (SIGABRT (exit code -6))"
    assert RanksFailed(0, 3, []).how == "exit code 3"


def _children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    return [int(p) for p in out]


@pytest.mark.slow
def test_kill_9_of_a_rank_then_resume_is_bit_identical(tmp_path: Path) -> None:
    extra = {"data.n_samples": 4096, "data.batch_size": 8, "train.epochs": 3, "checkpoint.every_n_steps": 7}
    cfg = _config(tmp_path, "kill", **extra)
    ddp = ["--config", str(cfg), "--set", "train.strategy=ddp", "--set", "train.world_size=2"]
    _train(*ddp, "--out", str(tmp_path / "straight"))
    run = tmp_path / "killed"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-m", "bench.train", *ddp, "--out", str(run)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)  # fmt: skip
    last = run / "checkpoints" / "last_model.pt"
    # The kill point is an event, not a moment: the first checkpoint (step 7 of 768) is on disk and the run
    # is still going; then a rank (seeded choice) is killed at once.
    while not last.exists() and proc.poll() is None:
        time.sleep(0.01)
    assert proc.poll() is None, f"the run ended before its first checkpoint: {proc.stderr.read()[-2000:]}"
    ranks = _children(proc.pid)  # the launcher's workers: one process per rank
    assert len(ranks) == 2, ranks
    os.kill(random.Random(26).choice(sorted(ranks)), signal.SIGKILL)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGKILL, err[-2000:]  # the killed rank, not the one the launcher stopped
    assert "failed first (SIGKILL (exit code -9))" in err
    _train(*ddp, "--out", str(run), "--resume", "auto")
    a, b = _weights(tmp_path / "straight"), _weights(run)
    assert all(torch.equal(a[k], b[k]) for k in a)
