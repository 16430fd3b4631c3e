"""``python -m bench.ab`` end to end: two configs with a planted slowdown (verdict, CI exit code, files,
history), a matrix cell at a git revision against the working tree, pytest-benchmark tests, and bad
input refused before anything is written."""

from __future__ import annotations

import json
import subprocess
import tempfile
from pathlib import Path

import pytest
import yaml
from conftest import REPO

from bench.ab import __main__ as ab_cli
from bench.ab.setup import (
    AbWhat,
    cell_spec,
    executor_for,
    interleave_for,
    mentions,
    renew_every,
    variance_defaults,
)
from bench.ab.subjects import FORKED, FRESH, READINGS, STEPS, Side
from bench.cells.store import read_records
from bench.history import db as history_db
from bench.launch.forked import SERVER_ROUNDS
from bench.launch.revisions import resolve
from trainer_core.errors import ConfigError

TABULAR = str(REPO / "configs" / "tabular_mlp.yaml")
SMOKE = str(REPO / "configs" / "smoke_matrix.yaml")
# Five rounds: the pooled ratio drops the most extreme round at each end (a 20% trim) only from five
# rounds up, so one reading that a burst of other load hit (another test on the other core) cannot
# widen the interval past the planted effect; from fewer the interval is wide under load.
# One thread: with two, every parallel region waits for both, and on cores other processes keep busy that
# wait swamps a step this small, so readings of the same code scatter by several times.
QUICK = ["--min-rounds", "5", "--max-rounds", "5", "--reading-s", "0.2", "--threads", "1"]
PLANTED = [
    "--set-b",
    "model.name=bench.guards.planted:extra_time",
    "--set-b",
    "model.kwargs={base: SimpleMLP, extra_share: 2, input_dim: 2, hidden_dims: [32, 32], output_dim: 2, dropout: 0.1}",
]


def assert_readings_paired(ids: list[str], rounds: int, retaken: int) -> None:
    """The timed readings' contract: every round read on both sides (A-r01 and B-r01, ...), a round taken
    again after a stall read on both sides again and named -again1, -again2 (a busy machine may need
    that), as many retakes as the report lists."""
    labels = [i.split("-", 1) for i in ids]
    assert all(side in ("A", "B") for side, _ in labels), ids
    by_label: dict[str, list[str]] = {}
    for side, label in labels:
        by_label.setdefault(label, []).append(side)
    assert all(sorted(sides) == ["A", "B"] for sides in by_label.values()), ids  # paired, each once
    base = sorted({label.split("-again")[0] for label in by_label})
    assert base == [f"r{r:02d}" for r in range(1, rounds + 1)], ids
    again = [label for label in by_label if "-again" in label]
    assert len(again) == retaken and all(label.rsplit("-again", 1)[1].isdigit() for label in again), ids


def _run_dir(out: Path) -> Path:
    (run_dir,) = out.glob("ab-*")
    return run_dir


@pytest.mark.slow
def test_a_planted_slowdown_reads_slower_and_fails_ci(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    rc = ab_cli.cli(["--a", TABULAR, "--b", TABULAR, *PLANTED, *QUICK, "--fail-threshold", "10",
                     "--out", str(tmp_path)])  # fmt: skip
    out = capsys.readouterr().out
    assert rc == 1, out
    assert "B is slower than A by" in out and "FAIL: cell: B is" in out
    run_dir = _run_dir(tmp_path)
    report = json.loads((run_dir / "ab.json").read_text())
    v = report["results"]["cell"]
    assert v["verdict"] == "slower" and v["ci_high"] < 0.9 and len(v["per_round"]) == 5 == report["rounds"]
    assert report["sides"]["B"]["config"] == TABULAR and report["sides"]["A"]["commit"] is None
    ids = [r.cell_id for r in read_records(run_dir / "cells.jsonl")]
    assert ids[:2] == ["A-warmup", "B-warmup"]
    assert_readings_paired(ids[2:], rounds=5, retaken=len(report["retaken"]))
    warm = read_records(run_dir / "cells.jsonl")[1]
    assert warm.guards_ok and set(warm.guards) >= {"overfit", "finite"}  # B is slower, not broken
    assert "| 1 |" in (run_dir / "ab.md").read_text() and (run_dir / "report.html").is_file()
    assert "readings: each a process forked from a server" in (run_dir / "ab.md").read_text()
    assert "both sides ran with train.malloc=retain (you set it on neither side)" in (run_dir / "ab.md").read_text()
    # two configs take their steps in turns by default, each turn's first step untimed
    assert "their timed steps in turns of 100 ms, each turn's first step untimed" in (run_dir / "ab.md").read_text()
    assert f"report: {run_dir / 'report.html'}" in out.splitlines()
    db = history_db.connect(tmp_path / "history.sqlite")
    assert [x["verdict"] for x in history_db.verdicts(db)] == ["slower"]
    assert history_db.runs(db)[0]["kind"] == "ab"
    db.close()


@pytest.mark.slow
def test_an_a_a_run_with_a_fail_threshold_passes(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    # The README's CI gate: the same config on both sides must not fail it. A 5% threshold fails only a
    # slowdown that is significant (interval below 1) and larger than 5%.
    rc = ab_cli.cli(["--a", TABULAR, "--b", TABULAR, "--min-rounds", "3", "--max-rounds", "3", "--reading-s", "0.2",
                     "--fail-threshold", "5", "--out", str(tmp_path)])  # fmt: skip
    out = capsys.readouterr().out
    assert rc == 0, out
    v = json.loads((_run_dir(tmp_path) / "ab.json").read_text())["results"]["cell"]
    assert v["verdict"] in ("no change", "faster", "slower") and not any(
        ln.startswith("FAIL") for ln in out.splitlines()
    )
    assert v["ci_low"] <= v["ratio"] <= v["ci_high"] and len(v["per_round"]) == 3


@pytest.mark.slow
def test_a_matrix_cell_at_a_revision_against_the_working_tree(
    repo_clone: Path, tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    clone = repo_clone
    temp = tmp_path / "temp"  # this test's own temp dir: another test may hold a worktree of the same commit
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    made: list[str] = []
    mkdtemp = tempfile.mkdtemp
    monkeypatch.setattr(tempfile, "mkdtemp", lambda *a, **k: made.append(mkdtemp(*a, **k)) or made[-1])
    cell = ["--cell", "precision=fp32", "--cell", "data.batch_size=32", "--cell", "data.pin_memory=false",
            "--cell", "device=cpu"]  # fmt: skip
    one_round = ["--min-rounds", "1", "--max-rounds", "1", "--reading-s", "0.2"]
    rc = ab_cli.cli(["--a", "HEAD", "--b", "worktree", "--config", SMOKE, *cell, "--repo", str(clone), *one_round,
                     "--out", str(tmp_path / "out")])  # fmt: skip
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "A = HEAD (code at " in out and "B = worktree (code of this checkout" in out
    env = json.loads((_run_dir(tmp_path / "out") / "env.json").read_text())
    assert env["sides"]["A"]["commit"] == resolve(clone, "HEAD") and env["sides"]["B"]["commit"] is None
    assert [Path(m).parent for m in made if "trainbench-rev-" in m] == [temp]
    assert not list(temp.glob("trainbench-rev-*"))  # the revision's worktree is gone from disk, and from git's list
    listed = subprocess.run(["git", "-C", str(clone), "worktree", "list"], capture_output=True, text=True, check=True)
    assert len(listed.stdout.strip().splitlines()) == 1, listed.stdout
    records = read_records(_run_dir(tmp_path / "out") / "cells.jsonl")
    assert all(r.status == "ok" and r.axes["precision"] == "fp32" for r in records)


@pytest.mark.slow
def test_pytest_benchmark_tests_compared_at_two_sides(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    select = "tests/benchmarks/test_bench_training.py -k 'test_train_step and SimpleMLP and fp32'"
    rc = ab_cli.cli(["--a", "worktree", "--b", "worktree", "--pytest", select, "--min-rounds", "1",
                     "--max-rounds", "1", "--out", str(tmp_path)])  # fmt: skip
    out = capsys.readouterr().out
    assert rc == 0, out
    report = json.loads((_run_dir(tmp_path) / "ab.json").read_text())
    (key,) = report["results"]
    assert "test_train_step" in key and "SimpleMLP" in key and report["results"][key]["unit"] == "calls/s"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--a", "no-such-thing", "--b", TABULAR], "--a no-such-thing: neither a file nor a git revision"),
        (["--a", SMOKE, "--b", SMOKE], "pick exactly one"),
        (["--a", TABULAR, "--b", TABULAR, "--cell", "precision=fp32"], "is a training config, not a matrix"),
        (["--a", TABULAR, "--b", TABULAR, "--set", "optim.nope=1"], "optim.nope"),
        (["--a", TABULAR, "--b", "worktree", "--pytest", "x"], "with --pytest, each side is a git revision"),
        (
            ["--a", TABULAR, "--b", TABULAR, "--interleave", "steps", "--executor", "submitit"],
            "--interleave steps: the submitit executor may run the two cells",
        ),
        (
            ["--a", TABULAR, "--b", TABULAR, "--interleave", "steps", "--set-b", "data.num_workers=2"],
            "--interleave steps: a side's loader workers would prepare batches",
        ),
    ],
)
def test_bad_input_is_refused_before_anything_is_written(
    tmp_path: Path, capsys: pytest.CaptureFixture, argv: list[str], message: str
) -> None:
    assert ab_cli.cli([*argv, "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not list(tmp_path.iterdir())


def test_readings_are_forked_only_when_both_sides_code_has_the_server(tmp_path: Path) -> None:
    here, old = Side("A", "worktree", REPO), Side("B", "v0", tmp_path)  # tmp_path: code without the server
    assert executor_for(AbWhat(readings=FORKED), (here, here))[0] == "forked"
    # both sides read alike, or the way they start is the difference
    name, line = executor_for(AbWhat(readings=FORKED), (here, old))
    assert name == "local" and "need Linux and bench.cell_server" in line
    assert executor_for(AbWhat(readings=FRESH), (here, here)) == ("local", "each a new interpreter")
    # --executor wins over --readings; forked asked for where a side cannot fork is refused, not swapped
    assert executor_for(AbWhat(readings=FORKED, executor="local"), (here, here))[0] == "local"
    with pytest.raises(ConfigError, match="--executor forked: a side's code has no bench.cell_server"):
        executor_for(AbWhat(executor="forked"), (here, old))


def test_servers_are_renewed_every_few_rounds_unless_asked_otherwise() -> None:
    here = Side("A", "worktree", REPO)
    assert renew_every(AbWhat()) == SERVER_ROUNDS and renew_every(AbWhat(renew_every=1)) == 1
    assert executor_for(AbWhat(readings=FORKED, renew_every=1), (here, here))[1].endswith("renewed every round")


def test_the_server_is_found_in_both_layouts(tmp_path: Path) -> None:
    from bench.launch.server import CellServer

    old, new, neither = tmp_path / "old", tmp_path / "new", tmp_path / "neither"
    (old / "bench").mkdir(parents=True)
    (old / "bench" / "cell_serving.py").write_text("")  # before bench/ became packages (1544271 and earlier)
    (new / "bench" / "measure").mkdir(parents=True)
    (new / "bench" / "measure" / "serving.py").write_text("")
    (neither / "bench").mkdir(parents=True)
    assert CellServer.available(old) and CellServer.available(new) and CellServer.available(REPO)
    assert not CellServer.available(neither)


@pytest.mark.slow
def test_two_runtimes_of_an_inference_matrix_cell_side_by_side(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    import yaml

    doc = {
        "name": "inf", "base": {"device": "cpu", "model": {"name": "SimpleMLP", "kwargs": {"input_dim": 2,
        "hidden_dims": [64, 64], "output_dim": 2}}, "data": {"name": "synthetic_blobs", "n_samples": 64,
        "n_test_samples": 16, "val_fraction": 0.0, "batch_size": 8}},
        "axes": {"infer.runtime": ["eager", "torchscript"]}, "measure": {"mode": "inference"},
    }  # fmt: skip
    matrix = tmp_path / "inf.yaml"
    matrix.write_text(yaml.safe_dump(doc, sort_keys=False))
    argv = ["--a", str(matrix), "--b", str(matrix), "--cell", "infer.runtime=eager", "--set-b",
            "infer.runtime=torchscript", "--min-rounds", "3", "--max-rounds", "3", "--reading-s", "0.2",
            "--threads", "1", "--out", str(tmp_path / "out")]  # fmt: skip
    assert ab_cli.cli([*argv[:-2], "--interleave", "steps", "--out", str(tmp_path / "refused")]) == 2
    assert "--interleave steps: inference cells have no training steps" in capsys.readouterr().err
    assert ab_cli.cli(argv) == 0
    printed = capsys.readouterr().out
    assert "one side's reading after the other's (inference cells have" in printed
    records = read_records(_run_dir(tmp_path / "out") / "cells.jsonl")
    assert {r.inference.runtime for r in records if r.inference} == {"eager", "torchscript"}
    assert all(r.guards["parity"].status == "pass" for r in records)  # the inference cell's own guard
    report = json.loads((_run_dir(tmp_path / "out") / "ab.json").read_text())
    assert report["rounds"] == 3 and "B/A" in printed


def test_variance_reducing_settings_go_to_both_sides_only_where_the_user_set_them_on_neither(tmp_path: Path) -> None:
    sides = (Side("A", TABULAR, REPO, None, TABULAR), Side("B", TABULAR, REPO, None, TABULAR))

    def applied(sets: dict[str, list[str]]) -> dict:
        what = AbWhat(TABULAR, sets=sets)
        specs = {s.name: cell_spec(s, [], sets[s.name], 1, 0.2) for s in sides}
        return variance_defaults(what, sides, specs)

    assert applied({"A": [], "B": ["optim.lr=0.01"]}) == {"train.malloc": "retain"}
    assert applied({"A": [], "B": ["train.malloc=default"]}) == {}  # an A/B of the setting itself
    raw = yaml.safe_load(Path(TABULAR).read_text())
    raw["train"]["malloc"] = "default"
    named = tmp_path / "named.yaml"
    named.write_text(yaml.safe_dump(raw))
    own = (Side("A", str(named), REPO, None, str(named)), Side("B", TABULAR, REPO, None, TABULAR))
    specs = {s.name: cell_spec(s, [], [], 1, 0.2) for s in own}
    assert variance_defaults(AbWhat(TABULAR), own, specs) == {}  # one side's file names it
    assert mentions({"base": {"train": {"malloc": "default"}}}, "train.malloc")
    assert mentions({"axes": {"train.malloc": ["default", "retain"]}}, "train.malloc")
    assert mentions({"include": [{"precision": "bf16", "train.malloc": "retain"}]}, "train.malloc")
    assert not mentions({"train": {"threads": 1}, "axes": {"train.compile": ["off"]}}, "train.malloc")


@pytest.mark.slow
def test_lockstep_readings_take_both_sides_steps_in_turns(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    # three rounds are enough here: a burst of other load slows both sides of a round alike
    three = ["--min-rounds", "3", "--max-rounds", "3", "--reading-s", "0.2", "--threads", "1"]
    rc = ab_cli.cli(["--a", TABULAR, "--b", TABULAR, *PLANTED, *three, "--interleave", "steps", "--turn-ms", "0",
                     "--out", str(tmp_path)])  # fmt: skip
    out = capsys.readouterr().out
    assert rc == 0, out
    run_dir = _run_dir(tmp_path)
    v = json.loads((run_dir / "ab.json").read_text())["results"]["cell"]
    assert v["verdict"] == "slower" and v["ci_high"] < 0.9
    records = read_records(run_dir / "cells.jsonl")
    assert [r.cell_id for r in records][:2] in (["A-warmup", "B-warmup"], ["B-warmup", "A-warmup"])
    assert all(r.status == "ok" and r.lockstep_partner_silent is False and r.step_s for r in records)
    # the faster side (A: B does three times the work) steps on alone once B is done; those steps are counted
    # and left out of its reading, which keeps only the steps taken in turns
    assert all(r.lockstep_alone_steps is not None for r in records)
    assert any(r.lockstep_alone_steps for r in records if r.cell_id.startswith("A-"))
    assert "their timed steps in turns of one step (lockstep)" in (run_dir / "ab.md").read_text()


def test_steps_in_turns_are_the_default_where_they_can_be_taken(tmp_path: Path) -> None:
    sides = (Side("A", TABULAR, REPO, None, TABULAR), Side("B", TABULAR, REPO, None, TABULAR))
    specs = {s.name: cell_spec(s, [], [], 1, 0.2) for s in sides}
    assert interleave_for(AbWhat(TABULAR), sides, specs, "forked").mode == STEPS  # the same cell on both sides
    assert interleave_for(AbWhat(TABULAR, interleave=READINGS), sides, specs, "forked").mode == READINGS
    other = {**specs, "B": cell_spec(sides[1], [], ["optim.lr=0.0123"], 1, 0.2)}
    assert interleave_for(AbWhat(TABULAR), sides, other, "forked").mode == STEPS  # two configs as well
    on_gpu = {**specs, "B": specs["B"].model_copy(update={"device": "cuda"})}
    got = interleave_for(AbWhat(TABULAR), sides, on_gpu, "forked")
    assert got.mode == READINGS and "default on CPU only" in got.line
    assert interleave_for(AbWhat(TABULAR, interleave=STEPS), sides, on_gpu, "forked").mode == STEPS  # asked for
    old = (sides[0], Side("B", "v0", tmp_path, "0" * 40, TABULAR))  # a revision from before lockstep
    got = interleave_for(AbWhat(TABULAR), old, specs, "forked")
    assert got.mode == READINGS and "B's code (v0) predates lockstep readings" in got.line


def test_longer_turns_are_said_and_refused_where_steps_are_not_taken_in_turns() -> None:
    sides = (Side("A", TABULAR, REPO, None, TABULAR), Side("B", TABULAR, REPO, None, TABULAR))
    specs = {s.name: cell_spec(s, [], [], 1, 0.2) for s in sides}
    got = interleave_for(AbWhat(TABULAR, turn_ms=150), sides, specs, "forked")
    assert got.mode == STEPS and "in turns of 150 ms, each turn's first step untimed" in got.line
    assert got.turn_ms == 150
    with pytest.raises(ConfigError, match=r"--turn-ms 150: only with steps in turns, and here --interleave readings"):
        interleave_for(AbWhat(TABULAR, interleave=READINGS, turn_ms=150), sides, specs, "forked")


def test_a_revision_from_before_longer_turns_takes_turns_of_one_step(tmp_path: Path) -> None:
    sides = (Side("A", TABULAR, REPO, None, TABULAR), Side("B", TABULAR, REPO, None, TABULAR))
    specs = {s.name: cell_spec(s, [], [], 1, 0.2) for s in sides}
    contract = tmp_path / "bench" / "cells" / "contract.py"
    contract.parent.mkdir(parents=True)
    contract.write_text("class LockstepSpec: ...  # first, timeout_s: what lockstep had at first\n")
    (tmp_path / "bench" / "measure").mkdir()
    (tmp_path / "bench" / "measure" / "lockstep.py").write_text("")
    old = (sides[0], Side("B", "v1", tmp_path, "1" * 40, TABULAR))
    got = interleave_for(AbWhat(TABULAR), old, specs, "forked")
    assert got.mode == STEPS and "turns of one step (B's code (v1) predates longer turns)" in got.line
    assert got.turn_ms == 0
    with pytest.raises(ConfigError, match=r"--turn-ms 100: B's code \(v1\) predates turns of several steps"):
        interleave_for(AbWhat(TABULAR, turn_ms=100), old, specs, "forked")


def test_benchmarks_outside_the_group_run_in_the_first_reading_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bench.ab.subjects import PytestSubject
    from bench.cells.contract import OK, CellRecord
    from bench.launch import pytest_bench

    skipped: list[list[str]] = []

    def fake_run(root: Path, args: str, group: str | None, timeout_s: float, skip: list[str]) -> object:
        skipped.append(list(skip))
        rec = CellRecord(status=OK, cell_id="t.py::test_in", step_s=[0.01, 0.011, 0.012], throughput=100.0)
        return pytest_bench.PytestReading([rec], ["t.py::test_out"])

    monkeypatch.setattr(pytest_bench, "run", fake_run)
    sides = {n: Side(n, "HEAD", tmp_path, None, None) for n in "AB"}
    subject = PytestSubject(sides, "t.py", "fast", tmp_path)
    for arm in ("A", "B", "A"):
        assert list(subject.read(arm, "r1", first=False)) == ["t.py::test_in"]
    assert skipped == [[], ["t.py::test_out"], ["t.py::test_out"]]
