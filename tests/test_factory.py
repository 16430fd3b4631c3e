from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import RUN_CONFIGS, make_fake_mnist

from trainer_core.factory import build_run
from trainer_core.loading import load_config
from trainer_core.text import write_sample_text


@pytest.mark.parametrize("path", RUN_CONFIGS, ids=[p.name for p in RUN_CONFIGS])
@pytest.mark.slow
def test_every_shipped_config_builds_and_trains(path: Path, tmp_path: Path) -> None:
    # Real-data configs read small generated IDX files (text configs a generated text) here, so every config
    # is exercised on any machine.
    make_fake_mnist(tmp_path, n_train=96, n_test=32)
    text = write_sample_text(tmp_path / "sample.txt", words=3000)
    cfg = load_config(
        path,
        {
            "data.root": str(tmp_path),
            "data.path": str(text),
            "data.limit_train_samples": 64,
            "data.n_samples": 96,
            "train.max_steps": 2,
            "device": "cpu",
            "logging.progress_bar": "off",
        },
    )
    run = build_run(cfg)
    result = run.trainer.fit(run.data.train_loader, run.data.val_loader)
    assert result.global_step == 2
    assert all(torch.isfinite(torch.tensor(run.trainer.loss_history)))
    assert run.trainer.policy.name == cfg.precision
