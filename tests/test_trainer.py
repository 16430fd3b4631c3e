from __future__ import annotations

import contextlib
import math
from typing import Any

import pytest
import torch
from conftest import tiny_overrides
from torch import nn

from trainer_core.errors import ConfigError
from trainer_core.factory import build_run
from trainer_core.loading import load_config
from trainer_core.models import SimpleMLP
from trainer_core.trainer import PHASES, BaseHook, EarlyStopping, Trainer


def _overfit_setup(precision: str) -> tuple[Trainer, torch.Tensor, torch.Tensor]:
    cfg = load_config(None, tiny_overrides(precision=precision, **{"optim.lr": 0.01}))
    torch.manual_seed(0)
    model = SimpleMLP(input_dim=8, hidden_dims=[64], output_dim=4, dropout=0.0)
    x, y = torch.randn(8, 8), torch.arange(8) % 4
    return Trainer(cfg, model, "cpu"), x, y


@pytest.mark.parametrize(("precision", "steps"), [("fp32", 300), ("bf16", 300), ("bf16-true", 300), ("fp16", 150)])
@pytest.mark.slow
def test_overfit_tiny_batch(precision: str, steps: int) -> None:
    trainer, x, y = _overfit_setup(precision)
    losses = trainer.train_on_batch(x, y, num_steps=steps)
    assert len(losses) == steps
    assert losses[-1] < 0.01, losses[-5:]
    assert losses[-1] < 0.01 * losses[0]


def test_gradients_are_finite_after_a_step() -> None:
    trainer, x, y = _overfit_setup("fp32")
    trainer.train_on_batch(x, y, num_steps=1)
    grads = [p.grad for p in trainer.model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


def test_gradcheck_float64_loss() -> None:
    torch.manual_seed(0)
    model = SimpleMLP(input_dim=3, hidden_dims=[4], output_dim=2).double()
    x = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    y = torch.tensor([0, 1, 1, 0, 1])
    assert torch.autograd.gradcheck(lambda inp: nn.functional.cross_entropy(model(inp), y), (x,), eps=1e-6, atol=1e-5)


def test_finite_difference_of_one_parameter() -> None:
    torch.manual_seed(0)
    model = SimpleMLP(input_dim=3, hidden_dims=[4], output_dim=2).double()
    x, y = torch.randn(6, 3, dtype=torch.float64), torch.tensor([0, 1, 0, 1, 1, 0])
    w = model.net[1].weight
    loss = nn.functional.cross_entropy(model(x), y)
    loss.backward()
    analytic = w.grad[1, 2].item()
    eps = 1e-6
    with torch.no_grad():
        w[1, 2] += eps
        plus = nn.functional.cross_entropy(model(x), y).item()
        w[1, 2] -= 2 * eps
        minus = nn.functional.cross_entropy(model(x), y).item()
    assert analytic == pytest.approx((plus - minus) / (2 * eps), rel=1e-5, abs=1e-9)


def _fit(seed: int, **extra: Any) -> tuple[list[float], dict[str, torch.Tensor]]:
    run = build_run(load_config(None, tiny_overrides(seed=seed, **extra)))
    run.trainer.fit(run.data.train_loader, run.data.val_loader)
    return run.trainer.loss_history, {k: v.clone() for k, v in run.model.state_dict().items()}


def test_same_seed_is_bit_identical_different_seed_differs() -> None:
    l1, w1 = _fit(1)
    l2, w2 = _fit(1)
    l3, w3 = _fit(2)
    assert l1 == l2
    assert all(torch.equal(w1[k], w2[k]) for k in w1)
    assert l1 != l3
    assert any(not torch.equal(w1[k], w3[k]) for k in w1)


def test_early_stopping_rule() -> None:
    es = EarlyStopping(patience=2, min_delta=0.1)
    assert [es.update(e, v) for e, v in enumerate([1.0, 0.5, 0.45, 0.44, 0.1], start=1)] == [
        False,
        False,
        False,
        True,
        False,
    ]
    assert es.stopped_epoch == 4


def test_early_stopping_stops_on_a_plateau_at_the_right_epoch() -> None:
    # lr so small that validation loss is flat: epoch 1 sets the best, epochs 2 and 3 do not improve.
    run = build_run(
        load_config(
            None,
            tiny_overrides(
                **{"optim.lr": 1e-12, "train.epochs": 10, "train.early_stopping": {"patience": 2, "min_delta": 1e-4}}
            ),
        )
    )
    result = run.trainer.fit(run.data.train_loader, run.data.val_loader)
    assert result.early_stopped
    assert [h["epoch"] for h in result.history] == [1, 2, 3]
    assert run.trainer.early_stopping.stopped_epoch == 3
    assert run.trainer.best_epoch == 1


class RecordingHook(BaseHook):
    def __init__(self) -> None:
        self.events: list[str] = []
        self.steps: list[int] = []

    def phase(self, name: str):
        @contextlib.contextmanager
        def cm():
            self.events.append(f"+{name}")
            yield
            self.events.append(f"-{name}")

        return cm()

    def on_step_end(self, trainer: Trainer, result: Any) -> None:
        self.steps.append(result.step)


def test_hooks_see_every_phase_of_every_step_in_order() -> None:
    hook = RecordingHook()
    run = build_run(load_config(None, tiny_overrides(**{"train.epochs": 1})), hooks=[hook])
    run.trainer.fit(run.data.train_loader, None)
    n = len(run.data.train_loader)
    assert hook.steps == list(range(1, n + 1))
    one_step = [e for p in PHASES for e in (f"+{p}", f"-{p}")]
    assert hook.events[: len(one_step)] == one_step
    assert hook.events.count("+data") == n + 1  # the last wait finds the epoch's end


def test_grad_clipping_reports_pre_clip_norm_and_clips() -> None:
    trainer, x, y = _overfit_setup("fp32")
    trainer.config.train.grad_clip_norm = 1e-3
    trainer.track_grad_norm = True
    result = trainer.train_step(x, y)
    assert result.grad_norm is not None and result.grad_norm.item() > 1e-3
    clipped = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in trainer.model.parameters()]))
    assert clipped.item() == pytest.approx(1e-3, rel=1e-3)


def test_fp16_overflow_steps_are_skipped_and_counted() -> None:
    trainer, x, y = _overfit_setup("fp16")
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    result = trainer.train_step(x * 1e6, y)  # activations overflow fp16 -> inf/NaN gradients
    assert result.skipped
    assert trainer.counters["skipped_steps"] == 1
    assert all(torch.equal(before[k], v) for k, v in trainer.model.state_dict().items())
    assert not trainer.train_step(x, y).skipped


def _onecycle(t: int, total: int = 12, peak: float = 0.01, pct: float = 0.3) -> float:
    """OneCycleLR's rate after t steps, by its published formula: cosine from peak/25 up to the peak by step
    pct * total - 1, then cosine down to peak / 25 / 1e4 at the last step."""
    start, low, up = peak / 25, peak / 25 / 1e4, pct * total - 1
    a, b, frac = (start, peak, t / up) if t <= up else (peak, low, (t - up) / (total - 1 - up))
    return b + (a - b) / 2 * (math.cos(math.pi * frac) + 1)


# tiny_overrides: 192 training samples at batch 32 = 6 steps an epoch, 2 epochs = 12 steps, lr 0.01.
SCHEDULES = {
    "none": [0.01, 0.01],
    "step": [0.01, 0.001],  # x0.1 every epoch (6 steps)
    "cosine": [0.01 * (1 + math.cos(math.pi * 3 / 12)) / 2, 0.005],  # T_max = 12 steps
    "onecycle": [_onecycle(3), _onecycle(6)],  # 0.0099442, 0.0064738
}


@pytest.mark.parametrize("scheduler", sorted(SCHEDULES))
def test_schedulers_advance_per_step_to_their_formulas(scheduler: str) -> None:
    run = build_run(load_config(None, tiny_overrides(**{"optim.scheduler": scheduler, "train.epochs": 2})))
    lrs = []
    for _ in range(2):  # after step 3, then after step 6
        run.trainer.fit(run.data.train_loader, None, stop_after_steps=3)
        lrs.append(run.trainer.optimizer.param_groups[0]["lr"])
    assert lrs == pytest.approx(SCHEDULES[scheduler], rel=1e-6)


def test_evaluate_restores_train_mode_and_counts_samples() -> None:
    run = build_run(load_config(None, tiny_overrides()))
    run.model.train()
    metrics = run.trainer.evaluate(run.data.test_loader)
    assert run.model.training
    assert metrics["samples"] == 64 and 0.0 <= metrics["accuracy"] <= 1.0


@pytest.mark.parametrize(
    ("scaling", "batch", "lr", "warmup"),
    [("none", 128, 0.01, 8), ("linear", 128, 0.04, 2), ("sqrt", 128, 0.02, 2), ("linear", 16, 0.005, 16)],
)
def test_lr_scaling_moves_lr_and_warmup_with_the_batch(scaling: str, batch: int, lr: float, warmup: int) -> None:
    # Written for batch 32 at lr 0.01 with 8 warm-up steps (256 samples): the warm-up keeps its samples.
    over = {"optim.lr": 0.01, "optim.scheduler": "cosine", "optim.warmup_steps": 8, "data.batch_size": batch,
            "optim.lr_scaling": scaling, "optim.reference_batch_size": 32, "train.max_steps": 40}  # fmt: skip
    config = load_config(None, tiny_overrides(**over))
    scaled = config.scaled_optim()
    assert scaled.lr == pytest.approx(lr) and scaled.warmup_steps == warmup
    run = build_run(config)
    sched = run.trainer.scheduler
    assert run.trainer.optimizer.param_groups[0]["initial_lr"] == pytest.approx(lr)
    assert sched is not None and sched._milestones == [warmup]  # type: ignore[attr-defined]
    expected_how = (
        "none" if scaling == "none" else f"{scaling}: global batch {batch} / reference 32 -> lr x{lr / 0.01:.4g}"
    )
    assert scaled.how == expected_how


def test_lr_scaling_counts_every_rank_and_needs_a_reference() -> None:
    over = {"optim.lr_scaling": "linear", "optim.reference_batch_size": 32, "data.batch_size": 32,
            "train.strategy": "ddp", "train.world_size": 4}  # fmt: skip
    config = load_config(None, tiny_overrides(**over))
    assert config.global_batch_size == 128 and config.scaled_optim().lr == pytest.approx(4 * config.optim.lr)
    with pytest.raises(ConfigError, match=r"optim: .*lr_scaling=sqrt needs reference_batch_size"):
        load_config(None, ["optim.lr_scaling=sqrt"])


def test_a_hook_can_stop_training_mid_epoch_and_checkpoint_writes_are_timed_apart(tmp_path: Any) -> None:
    from trainer_core.hooks import BaseHook

    class StopAtStep(BaseHook):
        def on_step_end(self, trainer: Any, result: Any) -> None:
            if trainer.global_step == 4:
                trainer.should_stop = True

    config = load_config(None, tiny_overrides(**{"train.epochs": 3}))  # 6 steps an epoch
    run = build_run(config, checkpoint_dir=tmp_path, hooks=[StopAtStep()])
    result = run.trainer.fit(run.data.train_loader, run.data.val_loader)
    assert result.global_step == 4 and result.end_reason == "stopped" and not result.interrupted
    assert run.trainer.history == [] and run.trainer.epoch == 0  # no epoch ended: no validation ran
    run2 = build_run(config, checkpoint_dir=tmp_path / "b")
    run2.trainer.fit(run2.data.train_loader, run2.data.val_loader)
    assert run2.trainer.global_step == 18 and run2.trainer.counters["checkpoint_seconds"] > 0  # 3 epoch-end saves
