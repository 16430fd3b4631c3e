from __future__ import annotations

import pytest
import torch

from bench.guards import FAIL, NONDETERMINISTIC, PASS, FiniteWatch, guards_ok, run_guards
from bench.matrix import GuardsConfig
from conftest import tiny_overrides
from trainer_core.config import load_config
from trainer_core.factory import build_run

CPU = torch.device("cpu")
GUARDS = GuardsConfig(overfit_steps=150, overfit_samples=8, short_run_steps=3)


def _guards(model: str | None = None, **extra) -> dict[str, str]:
    over = tiny_overrides(**extra, **{"logging.track_grad_norm": True, "optim.lr": 0.02,
                                      "model.kwargs": {"input_dim": 2, "hidden_dims": [32], "output_dim": 2, "dropout": 0.0}})
    if model is not None:
        over.update({"model.name": f"faulty_models:{model}", "model.kwargs": {}})
    config = load_config(None, over)
    watch = FiniteWatch()
    run = build_run(config, hooks=[watch])
    run.trainer.fit(run.data.train_loader, None, stop_after_steps=5)
    results = run_guards(config, GUARDS, CPU, run.trainer, watch)
    return {r.name: r.status for r in results} | {"_ok": guards_ok(results)}


def test_a_healthy_model_passes_every_guard() -> None:
    assert _guards() == {"overfit": PASS, "finite": PASS, "determinism": PASS, "resume": PASS, "_ok": True}


@pytest.mark.parametrize("precision", ["bf16", "bf16-true", "fp16"])
def test_healthy_model_passes_in_reduced_precision(precision: str) -> None:
    assert _guards(precision=precision)["_ok"]


@pytest.mark.parametrize(("model", "guard"), [
    ("never_learns", "overfit"),
    ("emits_nan", "finite"),
    ("nondeterministic", "determinism"),
    ("hidden_state", "resume"),
])
def test_planted_fault_fails_its_guard(model: str, guard: str) -> None:
    statuses = _guards(model)
    assert statuses[guard] == FAIL, statuses
    assert statuses["_ok"] is False


def test_hidden_state_passes_determinism_but_not_resume() -> None:
    statuses = _guards("hidden_state")
    assert statuses["determinism"] == PASS and statuses["resume"] == FAIL


def test_gpu_without_deterministic_algorithms_is_reported_honestly() -> None:
    from bench.guards import guard_determinism

    config = load_config(None, tiny_overrides(**{"train.deterministic": False}))
    result = guard_determinism(config, GUARDS, torch.device("cuda"))  # decided before touching the GPU
    assert result.status == NONDETERMINISTIC and "deterministic algorithms are off" in result.detail
    assert guards_ok([result])
