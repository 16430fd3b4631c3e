from __future__ import annotations

import pytest
import torch
from conftest import tiny_overrides

from bench.cells.contract import MeasureConfig
from bench.measure.timing import StepTimer, flops_per_step, matmul_peak_flops, measure, peak_rss_bytes
from trainer_core.factory import build_run
from trainer_core.loading import load_config
from trainer_core.trainer import PHASES

CPU = torch.device("cpu")


def test_step_timer_times_every_phase_and_the_whole_step() -> None:
    timer = StepTimer(CPU)
    run = build_run(load_config(None, tiny_overrides()), hooks=[timer])
    timer.start()
    run.trainer.fit(run.data.train_loader, None, stop_after_steps=4)
    recs = timer.stop()
    assert len(recs) == 4
    for r in recs:
        assert {f"{p}_s" for p in PHASES} <= set(r)
        assert sum(r[f"{p}_s"] for p in PHASES) <= r["step_s"] + 1e-9
        assert r["samples"] == 32
    timer.stop()
    run.trainer.fit(run.data.train_loader, None, stop_after_steps=2)
    assert timer.records == []  # disabled timer records nothing


def test_measure_warms_up_then_repeats() -> None:
    timer = StepTimer(CPU)
    run = build_run(load_config(None, tiny_overrides(**{"data.n_samples": 512, "train.epochs": 1000})), hooks=[timer])
    cfg = MeasureConfig(
        warmup_steps=2, settle_window=2, min_steps=4, min_time_s=0.0, repeats=3, unstable_spread_pct=None
    )
    raw = measure(run.trainer, run.data.train_loader, timer, cfg)
    assert raw["warmup_steps"] >= 4
    assert len(raw["steps"]) == 3 * raw["steps_per_repeat"] == len(raw["repeat_of_step"])
    assert sorted(set(raw["repeat_of_step"])) == [0, 1, 2]


def test_steps_per_repeat_respects_time_bounds() -> None:
    cfg = MeasureConfig(min_steps=10, min_time_s=1.0, max_time_s=5.0, max_steps_per_repeat=500)
    assert cfg.steps_per_repeat(0.01) == 100  # min_time_s / step
    assert cfg.steps_per_repeat(0.5) == 10  # min_steps
    assert cfg.steps_per_repeat(2.0) == 3  # max_time_s caps slow cells, never below 3
    assert cfg.steps_per_repeat(0.0001) == 500


def test_flops_of_a_linear_model_step() -> None:
    run = build_run(
        load_config(None, tiny_overrides(**{"model.kwargs": {"input_dim": 2, "hidden_dims": [16], "output_dim": 2}}))
    )
    x, y = next(iter(run.data.train_loader))
    forward = 2 * 32 * (2 * 16 + 16 * 2)  # two matmuls, 2 FLOPs per multiply-add
    flops = flops_per_step(run.trainer, x, y)
    assert 2 * forward <= flops <= 3 * forward  # + weight grads + the one input grad that is needed
    assert run.trainer.global_step == 1


def test_matmul_peak_and_memory_figures_are_real() -> None:
    peak = matmul_peak_flops(CPU, torch.float32, min_time_s=0.05)
    assert peak["flops_per_s"] > 1e8 and peak["n"] >= 64
    assert peak_rss_bytes() > 50 * 2**20


def test_a_run_that_ends_early_is_an_error_not_a_short_measurement() -> None:
    from bench.measure.timing import run_steps

    run = build_run(load_config(None, tiny_overrides(**{"train.max_steps": 3})))
    with pytest.raises(RuntimeError, match="asked for 5 steps, the run ended after 3"):
        run_steps(run.trainer, run.data.train_loader, 5)


def _disturbed(monkeypatch: pytest.MonkeyPatch, slow_repeats: set[int]) -> dict:
    """measure() with the named timed repeats (counted from 0 after warm-up) 3x slower than the others, as
    a busy neighbour would make them (the step times are set, so the machine's own noise plays no part)."""
    import bench.measure.timing as m

    timer = StepTimer(CPU)
    run = build_run(load_config(None, tiny_overrides(**{"data.n_samples": 512, "train.epochs": 1000})), hooks=[timer])
    real, calls = m.timed_repeats, {"n": 0}

    def timed(trainer, loader, t, n, repeats):  # noqa: ANN001, ANN202
        out = real(trainer, loader, t, n, repeats)
        for rep in out:
            for s in rep:
                s["step_s"] = 0.03 if calls["n"] in slow_repeats else 0.01
            calls["n"] += 1
        return out

    monkeypatch.setattr(m, "timed_repeats", timed)
    cfg = MeasureConfig(warmup_steps=2, settle_window=2, min_steps=4, min_time_s=0.0, repeats=2)
    return measure(run.trainer, run.data.train_loader, timer, cfg)


def test_disagreeing_repeats_are_timed_again_and_a_calm_second_set_replaces_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    raw = _disturbed(monkeypatch, slow_repeats={1})
    assert raw["remeasured"] and not raw["unstable"] and len(set(raw["repeat_of_step"])) == 2


def test_repeats_that_keep_disagreeing_mark_the_cell_unstable(monkeypatch: pytest.MonkeyPatch) -> None:
    raw = _disturbed(monkeypatch, slow_repeats={1, 3})
    assert raw["remeasured"] and raw["unstable"] and len(set(raw["repeat_of_step"])) == 4


def test_flops_count_the_attention_of_a_language_model_on_cpu() -> None:
    from torch.utils.flop_counter import FlopCounterMode

    from bench.measure.timing import _missing_flop_formulas
    from trainer_core.gpt import GPT

    model = GPT(vocab_size=65, n_layer=1, n_head=2, n_embd=32, block_size=16)
    x = torch.randint(0, 65, (4, 16))
    with FlopCounterMode(display=False, custom_mapping=_missing_flop_formulas()) as counter:
        torch.nn.functional.cross_entropy(model(x).flatten(0, 1), x.flatten()).backward()
    attention = {str(op): n for op, n in counter.get_flop_counts()["Global"].items() if "attention" in str(op)}
    bmm = 2 * 4 * 2 * 16 * 16 * 16  # one [T x d] @ [d x T] per batch element and head: 2 * b * heads * T * T * d
    # forward: q @ k^T and scores @ v; backward: the scores again, then the gradients of scores, q, k and v
    assert attention == {
        "aten._scaled_dot_product_flash_attention_for_cpu": 2 * bmm,
        "aten._scaled_dot_product_flash_attention_for_cpu_backward": 5 * bmm,
    }
