"""Bad input to every command: exit code 2, one line on stderr naming the offending key, flag or file,
and nothing written (the folder it would write into stays empty)."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest
from conftest import REPO

TABULAR = str(REPO / "configs" / "tabular_mlp.yaml")
SMOKE = str(REPO / "configs" / "smoke_matrix.yaml")

# command -> (arguments, with OUT for the folder it would write into; text the one line must contain)
CASES: dict[str, tuple[list[str], str]] = {
    "run": (["--matrix", SMOKE, "--out", "OUT", "--filter", "precision=fp8"], "matches no cell"),
    "tune": (["--config", TABULAR, "--axes", "precision=fp8", "--out", "OUT"], "--axes precision=fp8"),
    "tune-target": (["--config", TABULAR, "--objective", "time_to_target", "--out", "OUT"], "--target: needed"),
    "compare": (["OUT/a", "OUT/b"], "OUT/a: no cells.jsonl"),
    "trace": (["OUT/none.json"], "OUT/none.json"),
    "train": (["--config", "OUT/missing.yaml", "--out", "OUT/run"], "OUT/missing.yaml"),
    "evaluate": (["--checkpoint", "OUT/missing.pt"], "OUT/missing.pt"),
    "export": (["--checkpoint", "OUT/missing.pt", "--format", "onnx"], "OUT/missing.pt: checkpoint not found"),
    "fit": (["--config", "OUT/missing.yaml"], "OUT/missing.yaml"),
    "fit-cap": (["--config", TABULAR, "--max-memory-mb", "-5", "--out", "OUT"], "--max-memory-mb: -5"),
    "recipe_race": (["--baseline", TABULAR, "--candidate", TABULAR, "--target", "91", "--out", "OUT"], "--target 91"),
    "overhead": (["--rounds", "0", "--out", "OUT"], "--rounds"),
    "overhead-text": (["--workload", "lm", "--text", "OUT/corpus.txt", "--out", "OUT"], "--text OUT/corpus.txt"),
    "guard_audit": (["--seeds", "0", "--json", "OUT/v.json"], "--seeds 0"),
    "ab": (["--a", "no-such-thing", "--b", TABULAR, "--out", "OUT"], "--a no-such-thing"),
    "ab-threads": (["--a", TABULAR, "--b", TABULAR, "--threads", "0", "--out", "OUT"], "--threads: 0: must be"),
    "ab-executor-opt": (["--a", TABULAR, "--b", TABULAR, "--executor-opt", "x=1", "--out", "OUT"], "needs --executor"),
    "history": (["--history", "OUT/h.sqlite", "check"], "OUT/h.sqlite: no history database"),
    "history-ingest": (["--history", "OUT/h.sqlite", "ingest", "OUT/none"], "OUT/none: no cells.jsonl"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_is_exit_2_one_line_and_writes_nothing(
    case: str, tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    argv, message = CASES[case]
    out = tmp_path / "out"
    out.mkdir()
    monkeypatch.chdir(tmp_path)  # a command that writes by default writes here: it must not
    module = importlib.import_module(f"bench.{case.split('-')[0]}.__main__")
    rc = module.cli([a.replace("OUT", str(out)) for a in argv])
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    assert len(err.splitlines()) == 1 and message.replace("OUT", str(out)) in err, err
    assert list(out.iterdir()) == [] and sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_every_command_is_in_the_table() -> None:
    from test_architecture import CLI_MODULES

    internal = {"bench.cell", "bench.cell_server", "bench.prepare_text"}  # run by the harness, or fetches the corpus
    assert {f"bench.{c.split('-')[0]}.__main__" for c in CASES} == CLI_MODULES - {f"{m}.__main__" for m in internal}
