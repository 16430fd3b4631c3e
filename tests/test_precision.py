from __future__ import annotations

import pytest
import torch
from torch import nn

from trainer_core.errors import DeviceError, PrecisionError
from trainer_core.precision import check_support, resolve_device, resolve_precision

CPU = torch.device("cpu")


@pytest.mark.parametrize(
    ("precision", "dtype", "has_scaler"),
    [("fp32", torch.float32, False), ("bf16", torch.bfloat16, False), ("fp16", torch.float16, True)],
)
def test_autocast_dtype_and_scaler_per_precision(precision: str, dtype: torch.dtype, has_scaler: bool) -> None:
    policy = resolve_precision(precision, CPU)
    assert (policy.scaler is not None) == has_scaler
    lin = nn.Linear(8, 4)
    with policy.autocast():
        out = lin(torch.randn(2, 8))
    assert out.dtype == dtype


def test_bf16_loss_close_to_fp32_on_same_batch() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 10))
    x, y = torch.randn(64, 32), torch.randint(0, 10, (64,))
    losses = {}
    for p in ("fp32", "bf16"):
        with resolve_precision(p, CPU).autocast():
            losses[p] = nn.functional.cross_entropy(model(x), y).item()
    assert losses["bf16"] == pytest.approx(losses["fp32"], rel=2e-2)
    assert losses["bf16"] != losses["fp32"]  # it really ran in reduced precision


def test_bf16_true_casts_model_and_float_inputs_without_autocast() -> None:
    policy = resolve_precision("bf16-true", CPU)
    assert policy.autocast_dtype is None and policy.scaler is None and policy.param_dtype == torch.bfloat16
    assert "no fp32 master weights" in policy.notes[-1]
    model = policy.cast_model(nn.Linear(8, 4))
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    assert policy.cast_input(torch.randn(2, 8)).dtype == torch.bfloat16
    assert policy.cast_input(torch.arange(3)).dtype == torch.int64  # indices stay integers
    assert (
        policy.metadata()["param_dtype"] == "bfloat16"
        and resolve_precision("bf16", CPU).metadata()["param_dtype"] == "float32"
    )


def test_bf16_true_trainer_keeps_bf16_weights_and_optimizer_state_and_an_fp32_loss() -> None:
    from conftest import tiny_overrides

    from trainer_core.loading import load_config
    from trainer_core.trainer import Trainer

    trainer = Trainer(load_config(None, tiny_overrides(precision="bf16-true")), nn.Linear(8, 4), "cpu")
    result = trainer.train_step(torch.randn(16, 8), torch.arange(16) % 4)
    assert result.loss.dtype == torch.float32
    assert {p.dtype for p in trainer.model.parameters()} == {torch.bfloat16}
    state = trainer.optimizer.state[next(trainer.model.parameters())]
    assert all(v.dtype == torch.bfloat16 for k, v in state.items() if k != "step")


@pytest.mark.parametrize(
    ("flags", "emulated"),
    [({"avx512f", "avx512_fp16"}, False), ({"amx_fp16"}, False), ({"avx512f", "avx512_bf16"}, True), (set(), True)],
)
def test_fp16_on_cpu_is_flagged_when_emulated(monkeypatch: pytest.MonkeyPatch, flags: set[str], emulated: bool) -> None:
    import trainer_core.precision as precision

    monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset(flags))
    policy = resolve_precision("fp16", CPU)
    assert policy.emulated is emulated and policy.metadata()["emulated"] is emulated
    assert any("fp16 on this CPU is emulated" in n for n in policy.notes) is emulated
    assert policy.scaler is not None  # loss scaling either way


@pytest.mark.parametrize(("flags", "emulated"), [({"avx512_bf16"}, False), ({"amx_bf16"}, False), ({"avx512f"}, True)])
def test_bf16_on_cpu_is_flagged_without_native_instructions(
    monkeypatch: pytest.MonkeyPatch, flags: set[str], emulated: bool
) -> None:
    import trainer_core.precision as precision

    monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset(flags))
    for name in ("bf16", "bf16-true"):
        policy = resolve_precision(name, CPU)
        assert policy.emulated is emulated and any("no native instructions" in n for n in policy.notes) is emulated


def test_metadata_records_tf32_switches() -> None:
    meta = resolve_precision("fp32", CPU).metadata()
    for key in ("cuda_matmul_allow_tf32", "cudnn_allow_tf32", "float32_matmul_precision"):
        assert key in meta


def test_unknown_precision_is_rejected() -> None:
    with pytest.raises(PrecisionError, match="unknown precision 'fp8'"):
        check_support("fp8", CPU)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without CUDA")
def test_cuda_device_without_cuda_is_a_clear_error() -> None:
    with pytest.raises(DeviceError, match="CUDA is not available"):
        resolve_device("cuda")
    assert resolve_device("auto") == CPU


@pytest.mark.gpu
def test_cuda_precisions_resolve_on_gpu() -> None:
    dev = torch.device("cuda")
    assert resolve_precision("fp16", dev).scaler is not None
    supported, _, notes = check_support("bf16", dev)
    assert supported == torch.cuda.is_bf16_supported(including_emulation=False)
    if not supported:
        assert "bf16 not supported on this GPU" in notes[0]
