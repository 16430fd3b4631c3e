"""Each performance lever changes what it claims, and an unsupported one is skipped with a reason."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_overrides

from bench.cells.contract import CellRecord
from bench.matrix import static_skip_reason
from bench.report.tables import compile_break_even
from trainer_core.errors import ConfigError
from trainer_core.factory import build_run
from trainer_core.loading import load_config

CNN = {"model.name": "SimpleCNN", "model.kwargs": {}, "data.name": "synthetic_images", "data.n_samples": 128}


def test_channels_last_converts_parameters_and_inputs() -> None:
    run = build_run(load_config(None, tiny_overrides(**CNN, **{"model.memory_format": "channels_last"})))
    convs = [p for p in run.model.parameters() if p.dim() == 4]
    assert convs and all(p.is_contiguous(memory_format=torch.channels_last) for p in convs)
    # With one channel both layouts coincide; 3 channels tell them apart.
    rgb = torch.randn(2, 3, 8, 8)
    xd, _ = run.trainer.to_device(rgb, torch.zeros(2, dtype=torch.long))
    assert xd.is_contiguous(memory_format=torch.channels_last) and not xd.is_contiguous()
    x, y = next(iter(run.data.train_loader))
    run.trainer.train_step(x, y)  # and it trains
    eager = build_run(load_config(None, tiny_overrides(**CNN)))
    assert eager.trainer.to_device(rgb, torch.zeros(2, dtype=torch.long))[0].is_contiguous()


@pytest.mark.slow
def test_compiled_module_is_really_used_and_checkpoints_stay_clean() -> None:
    import torch._dynamo

    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    run = build_run(load_config(None, tiny_overrides(**{"train.compile": "default"})))
    assert isinstance(run.trainer.step_model, torch._dynamo.eval_frame.OptimizedModule)
    assert run.trainer.step_model._orig_mod is run.model
    x, y = next(iter(run.data.train_loader))
    run.trainer.train_step(x, y)
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] >= 1  # dynamo captured the forward
    assert not any(k.startswith("_orig_mod") for k in run.trainer.state_dict()["model"])


def test_threads_lever_sets_torch_threads() -> None:
    before = torch.get_num_threads()
    try:
        build_run(load_config(None, tiny_overrides(**{"train.threads": 1})))
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def _optimizer_ops(**extra: object) -> set[str]:
    """Names of the aten operators one optimizer step of a tiny run calls."""
    from torch.profiler import ProfilerActivity, profile

    run = build_run(load_config(None, tiny_overrides(**extra)))
    x, y = next(iter(run.data.train_loader))
    run.trainer.train_step(x, y)  # Adam's state exists from here on
    loss = run.trainer.loss_fn(run.trainer.model(x), y)
    loss.backward()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        run.trainer.optimizer.step()
    return {e.key for e in prof.key_averages()}


@pytest.mark.parametrize(
    ("key", "expect", "absent"),
    [
        ("optim.fused", "aten::_fused_adam_", "aten::_foreach_mul_"),
        ("optim.foreach", "aten::_foreach_mul_", "aten::_fused_adam_"),
    ],
)
def test_optimizer_implementation_levers_run_their_kernel(key: str, expect: str, absent: str) -> None:
    ops = _optimizer_ops(**{key: True})
    assert expect in ops and absent not in ops, sorted(o for o in ops if "adam" in o or "foreach" in o)
    default = _optimizer_ops()  # torch's default on CPU: one tensor at a time
    assert "aten::_fused_adam_" not in default and not any(o.startswith("aten::_foreach") for o in default)
    with pytest.raises(ConfigError, match="foreach and fused cannot both be true"):
        load_config(None, {"optim.foreach": True, "optim.fused": True})


@pytest.mark.parametrize("set_to_none", [True, False])
def test_zero_grad_set_to_none_lever(set_to_none: bool) -> None:
    run = build_run(load_config(None, tiny_overrides(**{"train.zero_grad_set_to_none": set_to_none})))
    x, y = next(iter(run.data.train_loader))
    run.trainer.train_step(x, y)
    p = next(run.model.parameters())
    grad = p.grad
    run.trainer.train_step(x, y)
    assert (p.grad is grad) is (not set_to_none)  # zero-filled in place vs freed and reallocated


def test_persistent_workers_and_prefetch_factor_reach_the_loader() -> None:
    run = build_run(
        load_config(
            None, tiny_overrides(**{"data.num_workers": 1, "data.persistent_workers": True, "data.prefetch_factor": 4})
        )
    )
    loader = run.data.train_loader
    assert loader.persistent_workers and loader.prefetch_factor == 4


def test_unsupported_levers_are_skipped_with_a_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil

    import torch.utils._foreach_utils as fu

    compiled = load_config(None, {"device": "cpu", "train.compile": "default"})
    assert static_skip_reason(compiled) is None
    monkeypatch.setattr(shutil, "which", lambda name: None)
    assert "needs a C++ compiler" in static_skip_reason(compiled)
    monkeypatch.setattr(fu, "_get_fused_kernels_supported_devices", lambda: ["cuda"])
    assert "optim.fused is not supported on cpu" in static_skip_reason(
        load_config(None, {"device": "cpu", "optim.fused": True})
    )


def test_compile_break_even_pairs_with_the_eager_cell() -> None:
    def rec(cid: str, mode: str, ms: float, compile_s: float | None) -> CellRecord:
        return CellRecord(
            cell_id=cid,
            status="ok",
            axes={"train.compile": mode, "precision": "bf16"},
            step_ms_median=ms,
            samples_per_s=64 / (ms / 1e3),
            compile_s=compile_s,
        )

    rows = compile_break_even(
        [rec("eager", "off", 20.0, None), rec("comp", "default", 15.0, 10.0), rec("slow", "max-autotune", 25.0, 30.0)]
    )
    by = {r["cell_id"]: r for r in rows}
    assert by["comp"]["break_even_steps"] == pytest.approx(2000)  # 10 s / 5 ms saved per step
    assert by["slow"]["break_even_steps"] is None


# What glibc's allocator did with a 64 MB tensor (above the 32 MB cap of its dynamic mmap threshold, so
# the default policy always serves it with mmap) after build_run applied the policy: glibc's own
# counters (mallinfo2) of bytes in mmapped blocks and in the heap, before, while alive, after free.
_MALLINFO = r"""
import ctypes, json, sys
sys.path.insert(0, sys.argv[2])
import torch
from conftest import tiny_overrides
from trainer_core.loading import load_config
from trainer_core.factory import build_run


class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                     "fsmblks", "uordblks", "fordblks", "keepcost")]


libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = MallInfo2
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
build_run(load_config(None, tiny_overrides(**{"train.malloc": sys.argv[1]})))
def info():
    m = libc.mallinfo2()
    return {"mmapped": m.hblkhd, "heap": m.arena}
out = {"tensor_before": info()}
x = torch.ones(16 * 2**20)  # 64 MB of float32, through torch's CPU allocator
out["tensor_alive"] = info()
del x
out["tensor_freed"] = info()
# 128 MB straight from malloc (more than the heap holds free now), freed at once: under retain it extends
# the heap at its top, where glibc would trim it when freed
out["top_before"] = info()
block = libc.malloc(128 * 2**20)
out["top_alive"] = info()
libc.free(block)
out["top_freed"] = info()
print(json.dumps(out))
"""
MB = 2**20


@pytest.mark.slow
def test_malloc_retain_serves_large_buffers_from_the_heap_and_keeps_them() -> None:
    # Each policy in its own process: mallopt is process-wide and cannot be undone. The page faults per
    # step that follow from this are a benchmark (scripts/malloc_faults.py, docs/measurements.md), not a
    # test: their count depends on the kernel, huge pages and the heap's history.
    import json
    import platform
    import subprocess
    import sys
    from pathlib import Path

    if platform.libc_ver()[0] != "glibc":
        pytest.skip("train.malloc=retain needs glibc (its refusal elsewhere: test_host_memory.py)")
    tests = str(Path(__file__).parent)

    def counters(policy: str) -> dict[str, dict[str, int]]:
        out = subprocess.run([sys.executable, "-c", _MALLINFO, policy, tests], capture_output=True, text=True,
                             check=True, timeout=300)  # fmt: skip
        return json.loads(out.stdout.splitlines()[-1])

    default, retain = counters("default"), counters("retain")
    # default: a torch tensor of 64 MB is an mmapped block, returned to the kernel when freed (next step:
    # fresh pages), and so is a 128 MB malloc
    assert default["tensor_alive"]["mmapped"] - default["tensor_before"]["mmapped"] >= 64 * MB
    assert default["tensor_freed"]["mmapped"] == default["tensor_before"]["mmapped"]
    assert default["top_alive"]["mmapped"] - default["top_before"]["mmapped"] >= 128 * MB
    # retain (M_MMAP_MAX=0): no mmapped block; the heap grows by the tensor and keeps it after the free
    assert retain["tensor_alive"]["mmapped"] == retain["tensor_before"]["mmapped"]
    assert retain["tensor_alive"]["heap"] - retain["tensor_before"]["heap"] >= 48 * MB  # less what was free
    assert retain["tensor_freed"]["heap"] == retain["tensor_alive"]["heap"]
    # retain (M_TRIM_THRESHOLD): a block freed at the heap's top is kept too, where glibc would trim it
    assert retain["top_alive"]["heap"] - retain["top_before"]["heap"] >= 48 * MB  # less what was free
    assert retain["top_freed"]["heap"] == retain["top_alive"]["heap"]
