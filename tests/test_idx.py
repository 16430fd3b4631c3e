"""IDX files: reading, caching, and finding them on disk."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_fake_mnist, write_idx

from trainer_core.config import DataConfig
from trainer_core.datasets import build_data
from trainer_core.errors import DataError
from trainer_core.idx import locate_idx_dir, read_idx

CPU = torch.device("cpu")


@pytest.mark.parametrize("gz", [True, False])
def test_idx_round_trip(tmp_path: Path, gz: bool) -> None:
    arr = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    p = tmp_path / ("a.idx.gz" if gz else "a.idx")
    write_idx(p, arr)
    out = read_idx(p)
    assert out.shape == (2, 3, 4) and np.array_equal(out, arr)
    assert out.flags.writeable


def test_idx_reads_are_cached_but_independent_and_follow_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import trainer_core.idx as data_mod

    p = tmp_path / "a.idx.gz"
    write_idx(p, np.arange(12, dtype=np.uint8).reshape(3, 4))
    decodes: list[Path] = []
    real = data_mod._decode_idx
    monkeypatch.setattr(data_mod, "_decode_idx", lambda path: decodes.append(path) or real(path))
    first = read_idx(p)
    first[0, 0] = 99  # a caller's in-place change must not reach the next reader
    second = read_idx(p)
    assert len(decodes) == 1 and second[0, 0] == 0 and second.flags.writeable
    write_idx(p, np.ones((2, 2), dtype=np.uint8))  # rewritten on disk: read again
    assert np.array_equal(read_idx(p), np.ones((2, 2))) and len(decodes) == 2


def test_corrupt_idx_is_a_clear_error(tmp_path: Path) -> None:
    p = tmp_path / "bad"
    p.write_bytes(b"\x01\x02\x03\x04")
    with pytest.raises(DataError, match="bad magic number"):
        read_idx(p)
    arr = np.zeros((4, 5), dtype=np.uint8)
    write_idx(p, arr)
    p.write_bytes(p.read_bytes()[:-3])
    with pytest.raises(DataError, match="truncated or corrupt"):
        read_idx(p)


def test_data_is_found_through_env_var(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_fake_mnist(tmp_path / "MNIST" / "raw")  # torchvision's layout
    monkeypatch.setenv("TRAINBENCH_DATA", str(tmp_path))
    assert locate_idx_dir("mnist", None, download=False) == tmp_path / "MNIST" / "raw"
    bundle = build_data(DataConfig(name="mnist", batch_size=16), seed=0, device=CPU)
    assert bundle.meta["train_samples"] + bundle.meta["val_samples"] == 120
    assert bundle.meta["test_samples"] == 40


def test_missing_data_lists_where_it_looked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRAINBENCH_DATA", str(tmp_path / "env"))
    with pytest.raises(DataError) as info:
        locate_idx_dir("mnist", str(tmp_path / "cfg"), download=False)
    msg = str(info.value)
    assert str(tmp_path / "cfg") in msg and str(tmp_path / "env") in msg and "/usr/share/datasets/mnist" in msg
