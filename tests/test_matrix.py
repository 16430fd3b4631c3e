from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from conftest import MATRIX_CONFIGS, REPO

from bench.matrix import cell_id_for, expand, load_matrix, parse_filter, select, static_skip_reason
from trainer_core.errors import ConfigError
from trainer_core.loading import load_config

BASE = {
    "device": "cpu",
    "model": {"name": "SimpleMLP", "kwargs": {"input_dim": 2, "hidden_dims": [8], "output_dim": 2}},
    "data": {"name": "synthetic_blobs", "n_samples": 64},
}
MATRICES = MATRIX_CONFIGS


def _write(tmp_path: Path, doc: dict) -> Path:
    p = tmp_path / "m.yaml"
    p.write_text(yaml.safe_dump(doc, sort_keys=False))
    return p


def _expand(tmp_path: Path, **doc) -> list:
    p = _write(tmp_path, {"name": "t", "base": BASE, **doc})
    return expand(load_matrix(p), source=str(p))


@pytest.mark.parametrize("path", MATRICES, ids=[p.name for p in MATRICES])
def test_shipped_matrices_expand(path: Path) -> None:
    cells = expand(load_matrix(path), source=str(path))
    assert cells and len({c.cell_id for c in cells}) == len(cells)


def test_amp_matrix_has_the_documented_axes() -> None:
    spec = load_matrix(REPO / "configs" / "amp_matrix.yaml")
    assert spec.axes == {
        "precision": ["fp32", "bf16", "fp16"],
        "data.num_workers": [0, 2],
        "data.pin_memory": [False, True],
        "data.batch_size": [64, 256],
        "device": ["cpu", "cuda"],
    }
    assert len(expand(spec)) == 48


def test_product_exclude_include(tmp_path: Path) -> None:
    cells = _expand(
        tmp_path,
        axes={"precision": ["fp32", "bf16"], "data.batch_size": [8, 16, 32]},
        exclude=[{"precision": "bf16", "data.batch_size": 8}],
        include=[{"precision": "fp16", "data.batch_size": 8}, {"precision": "fp32", "data.batch_size": 8}],
    )
    ids = [c.cell_id for c in cells]
    assert len(cells) == 6  # 2x3 - 1 excluded + 1 new include (the other include is already a cell)
    assert "bf16-bs8" not in ids and "fp16-bs8" in ids
    assert cells[ids.index("fp16-bs8")].config.precision == "fp16"
    assert cells[ids.index("bf16-bs32")].config.data.batch_size == 32


def test_a_named_include_gets_a_short_id(tmp_path: Path) -> None:
    cells = _expand(
        tmp_path,
        axes={"precision": ["fp32", "bf16"]},
        include=[{"name": "wide", "precision": "fp32", "model.kwargs": {"hidden_dims": [64, 64]}}],
    )
    wide = cells[-1]
    assert wide.cell_id == "wide-fp32" and wide.config.model.kwargs["hidden_dims"] == [64, 64]
    assert "name" not in wide.axes and wide.config.name != "wide"  # a label, not the config's name


def test_cell_ids_are_deterministic_and_safe() -> None:
    cid = cell_id_for(
        {"precision": "bf16", "data.num_workers": 2, "data.pin_memory": True, "model.name": "a.b:c", "device": "cuda:1"}
    )
    assert cid == "bf16-nw2-pinT-a_b_c-cuda_1"
    assert cid == cell_id_for(
        {"precision": "bf16", "data.num_workers": 2, "data.pin_memory": True, "model.name": "a.b:c", "device": "cuda:1"}
    )


@pytest.mark.parametrize(
    ("doc", "expected"),
    [
        ({"axes": {"optim.lrr": [1]}}, "axes.optim.lrr: unknown config key 'optim.lrr'"),
        ({"axes": {"bogus.key": [1]}}, "axes.bogus.key: unknown config key 'bogus'"),
        ({"axes": {"precision": ["fp8"]}}, "precision: unknown precision 'fp8'"),
        ({"axes": {"data.batch_size": ["big"]}}, "data.batch_size: Input should be a valid integer"),
        ({"axes": {"precision": []}}, "axes.precision: needs at least one value"),
        ({"axes": {"precision": ["fp32"]}, "exclude": [{"device": "cpu"}]}, "exclude[0].device: not an axis"),
        (
            {"axes": {"precision": ["fp32"]}, "measure": {"repeats": 0}},
            "measure.repeats: Input should be greater than or equal to 1",
        ),
        (
            {"axes": {"precision": ["fp32"]}, "guards": {"enabled": ["speed"]}},
            "guards.enabled: unknown guard 'speed'; expected one of overfit",
        ),
        ({"axes": {"precision": ["fp32"]}, "profiles": {}}, "profiles: unknown key"),
        (
            {"axes": {"precision": ["fp32"]}, "measure": {"mode": "time_to_target"}},
            "measure: mode time_to_target needs target",
        ),
        (
            {
                "axes": {"precision": ["fp32"]},
                "measure": {"mode": "time_to_target", "target": {"metric": "accuracy", "value": 0.9}},
            },
            "measure.target.metric: 'accuracy': expected <val|test>_<metric>",
        ),
        (
            {
                "axes": {"precision": ["fp32"]},
                "measure": {
                    "mode": "time_to_target",
                    "reference": "nope",
                    "target": {"metric": "val_accuracy", "value": 0.9},
                },
            },
            "measure.reference: no cell 'nope' (cells: fp32)",
        ),
        (
            {
                "axes": {"precision": ["fp32"]},
                "base": {**BASE, "train": {"strategy": "ddp", "world_size": 2}},
                "measure": {"mode": "time_to_target", "target": {"metric": "val_accuracy", "value": 0.9}},
            },
            "time_to_target runs each cell in one process; cell fp32 has train.strategy ddp",
        ),
        (
            {"axes": {"precision": ["fp32"]}, "base": {**BASE, "optim": {"lr": -1}}},
            "base: optim.lr: Input should be greater than 0",
        ),
    ],
)
def test_validation_errors_name_file_and_key(tmp_path: Path, doc: dict, expected: str) -> None:
    p = _write(tmp_path, {"name": "t", "base": BASE, **doc})
    with pytest.raises(ConfigError) as info:
        expand(load_matrix(p), source=str(p))
    assert str(p) in str(info.value) and expected in str(info.value)


def test_skip_reasons_are_decided_up_front() -> None:
    import torch

    cpu_pinned = load_config(None, {"device": "cpu", "data.pin_memory": True})
    assert static_skip_reason(cpu_pinned) == "pin_memory has no effect without an accelerator"
    assert static_skip_reason(load_config(None, {"device": "cpu", "precision": "fp16"})) is None
    if not torch.cuda.is_available():
        assert static_skip_reason(load_config(None, {"device": "cuda"})) == "CUDA not available"


def test_filter_and_device_override(tmp_path: Path) -> None:
    p = _write(
        tmp_path, {"name": "t", "base": BASE, "axes": {"precision": ["fp32", "bf16"], "device": ["cpu", "cuda"]}}
    )
    cells = expand(load_matrix(p), source=str(p))
    picked = select(cells, parse_filter(["precision=bf16", "device=cpu"]))
    assert [c.cell_id for c in picked] == ["bf16-cpu"]
    assert select(cells, parse_filter(["data.batch_size=64"])) == cells  # non-axis keys match the resolved config
    overridden = expand(load_matrix(p, device_override="cpu"), source=str(p))
    assert [c.cell_id for c in overridden] == ["fp32", "bf16"] and all(c.config.device == "cpu" for c in overridden)
