"""Workloads: loss, items and metrics per workload, the analytic FLOPs against FlopCounterMode, resolution
by name and import path; and every workload through the Trainer (resume bit-exact mid-epoch)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from conftest import tiny_overrides

from bench.cells.contract import CellSpec, GuardsConfig, MeasureConfig
from bench.measure.entry import run_cell
from bench.measure.timing import flops_per_step
from bench.train import __main__ as train_cli
from trainer_core.config import apply_overrides
from trainer_core.errors import ConfigError
from trainer_core.factory import build_run
from trainer_core.images import write_synthetic_jpegs
from trainer_core.loading import load_config
from trainer_core.text import write_sample_text
from trainer_core.workloads import WORKLOADS, CausalLM, Classification, build_workload


def lm_overrides(text: Path, **extra: Any) -> dict[str, Any]:
    """A tiny GPT on a small generated text."""
    return tiny_overrides(
        **{
            "data.name": "text",
            "data.path": str(text),
            "data.n_samples": 256,
            "data.n_test_samples": 32,
            "data.batch_size": 8,
            "data.val_fraction": 0.1,
            "model.name": "GPT",
            "optim.lr": 0.003,
            "model.kwargs": {"n_layer": 1, "n_head": 2, "n_embd": 32, "block_size": 16, "dropout": 0.1},
            **extra,
        }
    )


@pytest.fixture(scope="module")
def text(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_sample_text(tmp_path_factory.mktemp("text") / "sample.txt", words=6000)


def test_classification_and_causal_lm_losses_items_and_metrics() -> None:
    cls, lm = Classification(), CausalLM()
    logits, y = torch.tensor([[2.0, 0.0], [0.0, 2.0], [2.0, 0.0]]), torch.tensor([0, 1, 1])
    assert cls.items(y) == 3 and int(cls.correct(logits, y)) == 2 and cls.unit == "samples"
    tokens = torch.randint(0, 5, (2, 3))
    out = torch.nn.functional.one_hot(tokens, 5).float() * 10  # confident and right everywhere
    assert lm.items(tokens) == 6 and int(lm.correct(out, tokens)) == 6 and lm.unit == "tokens"
    assert lm.loss(out, tokens).item() < 1e-3
    assert lm.summary(math.log(4.0), 3, 6) == pytest.approx({"loss": math.log(4.0), "accuracy": 0.5, "perplexity": 4.0})


def test_workloads_resolve_by_name_auto_and_import_path() -> None:
    assert set(WORKLOADS) >= {"classification", "causal_lm"}
    assert isinstance(build_workload("auto", "text"), CausalLM)
    assert isinstance(build_workload("auto", "image"), Classification)
    custom = build_workload("user_models:HalfLossWorkload", "tabular")
    assert custom.name == "user_models:HalfLossWorkload"
    assert custom.loss(torch.zeros(2, 2), torch.tensor([0, 1])).item() == pytest.approx(0.5 * math.log(2.0))
    with pytest.raises(ConfigError, match="workload: unknown workload 'regression'"):
        build_workload("regression", "tabular")
    with pytest.raises(ConfigError, match="model.loss: 'user_models' has no callable 'nope'"):
        build_workload("classification", "tabular", "user_models:nope")


@pytest.mark.parametrize("kind", ["gpt", "cnn"])
def test_analytic_flops_agree_with_the_counted_ones(kind: str, text: Path) -> None:
    if kind == "gpt":
        over = lm_overrides(text)
    else:
        over = tiny_overrides(
            **{
                "data.name": "synthetic_images",
                "data.image_shape": [3, 32, 32],
                "data.n_samples": 64,
                "model.name": "torchvision:resnet18",
                "model.kwargs": {},
            }
        )
    run = build_run(load_config(None, over))
    x, y = next(iter(run.data.train_loader))
    analytic = run.trainer.workload.flops_per_step(run.trainer.model, x)
    counted = flops_per_step(run.trainer, x, y)
    assert analytic is not None and abs(analytic / counted - 1) < 0.10, (analytic, counted)


def workload_overrides(workload: str, text: Path, root: Path) -> dict[str, Any]:
    """Tiny configs, one per workload: a GPT on text, torchvision models on synthetic images and on a
    generated JPEG folder (decoded by two loader workers), and a user's dataset, model and loss."""
    if workload == "image folder":
        jpegs = write_synthetic_jpegs(root / "jpegs", 48, 16, (40, 40), num_classes=3)
        return tiny_overrides(
            **{
                "data.name": "image_folder",
                "data.root": str(jpegs),
                "data.image_shape": [3, 28, 28],
                "data.pipeline": "v2",
                "data.num_workers": 2,
                "data.batch_size": 8,
                "model.name": "SimpleCNN",
                "model.kwargs": {},
            }
        )
    return {
        "lm": lm_overrides(text, **{"train.epochs": 2, "optim.scheduler": "cosine"}),
        "torchvision": tiny_overrides(
            **{
                "data.name": "synthetic_images",
                "data.image_shape": [3, 16, 16],
                "data.n_samples": 96,
                "data.batch_size": 16,
                "train.epochs": 2,
                "model.name": "torchvision:mobilenet_v3_small",
                "model.kwargs": {},
                # Adam's usual lr: at the blobs' 0.01 the overfit guard's 60 steps on 8 images diverged on one
                # CPU (AMD EPYC) and converged on another, a config too close to the edge to test plumbing with
                "optim.lr": 0.001,
            }
        ),
        "user dataset and loss": tiny_overrides(
            **{
                "data.name": "user_models:xor_datasets",
                "data.kwargs": {"n": 256},
                "data.pipeline": "classic",
                "model.name": "user_models:make_tiny",
                "model.kwargs": {},
                "model.loss": "user_models:smoothed_ce",
                "train.epochs": 2,
            }
        ),
    }[workload]


WORKLOADS_UNDER_TEST = ["lm", "torchvision", "image folder", "user dataset and loss"]


@pytest.mark.parametrize("workload", WORKLOADS_UNDER_TEST)
@pytest.mark.slow
def test_every_workload_resumes_bit_exact_mid_epoch(workload: str, text: Path, tmp_path: Path) -> None:
    over = workload_overrides(workload, text, tmp_path)
    straight = build_run(load_config(None, over), checkpoint_dir=tmp_path / "a")
    straight.trainer.fit(straight.data.train_loader, straight.data.val_loader)
    first = build_run(load_config(None, over), checkpoint_dir=tmp_path / "b")
    n = len(first.data.train_loader)
    first.trainer.fit(first.data.train_loader, first.data.val_loader, stop_after_steps=n + n // 2)
    resumed = build_run(load_config(None, over), checkpoint_dir=tmp_path / "b")
    resumed.trainer.load_checkpoint(tmp_path / "b" / "last_model.pt")
    resumed.trainer.fit(resumed.data.train_loader, resumed.data.val_loader)
    assert resumed.trainer.loss_history == straight.trainer.loss_history
    for k, v in straight.model.state_dict().items():
        assert torch.equal(v, resumed.model.state_dict()[k]), k
    assert straight.trainer.history[-1]["val_loss"] < straight.trainer.history[0]["train_loss"]  # it learns


@pytest.mark.parametrize("workload", WORKLOADS_UNDER_TEST)
@pytest.mark.slow
def test_every_workload_trains_is_measured_and_passes_all_four_guards(
    workload: str, text: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """Through bench.train (a few steps) and as a matrix cell with the four guards, like a built-in."""
    config = apply_overrides({}, workload_overrides(workload, text, tmp_path))
    if workload == "lm":  # 1 layer, 32 wide: at lr 3e-3 with dropout it gets 90% of 8 windows right in 60 steps
        config = apply_overrides(config, {"optim.lr": 0.01, "model.kwargs.dropout": 0.0})
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    assert train_cli.cli(["--config", str(path), "--set", "train.max_steps=6", "--out", str(tmp_path / "run")]) == 0
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert math.isfinite(metrics["test_loss"]) and metrics["global_step"] == 6
    lm = workload == "lm"
    assert ("perplexity" in capsys.readouterr().out) == lm
    record = run_cell(
        CellSpec(
            cell_id=workload.replace(" ", "_"),
            threads=torch.get_num_threads(),
            config=config,
            measure=MeasureConfig(warmup_steps=2, settle_window=2, max_warmup_steps=6, min_steps=3, min_time_s=0.0),
            guards=GuardsConfig(overfit_samples=8, overfit_steps=60, short_run_steps=2),
        )
    )
    assert record.status == "ok" and record.throughput_unit == ("tokens/s" if lm else "samples/s")
    assert sorted(record.guards) == ["determinism", "finite", "overfit", "resume"]
    assert record.guards_ok, {k: g.detail for k, g in record.guards.items()}
