"""bench.history bisect: the binary search, the commit range, and a real bisection over commits of a
clone in which one commit makes the model slower."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from conftest import REPO

from bench.history import __main__ as history_cli
from bench.history import db as history_db
from bench.history.bisect import bisect_slowdown, commits_between
from bench.launch.revisions import resolve
from trainer_core.errors import ConfigError

SLOW_MLP = """

_fast_forward = SimpleMLP.forward


def _slow_forward(self, x):  # planted by the bisect test: a hundred more forwards' worth of work per step
    with torch.no_grad():
        for _ in range(100):
            _fast_forward(self, x)
    return _fast_forward(self, x)


SimpleMLP.forward = _slow_forward
"""


@pytest.mark.parametrize("first", [0, 1, 6, 9, None])
def test_the_search_finds_the_first_slower_commit_in_few_probes(first: int | None) -> None:
    commits = [f"c{i}" for i in range(10)]
    probed: list[str] = []

    def slower(c: str) -> bool:
        probed.append(c)
        return first is not None and int(c[1:]) >= first

    assert bisect_slowdown(commits, slower) == (None if first is None else commits[first])
    assert len(probed) <= 5 and probed[0] == "c9"


def _commit(repo: Path, message: str) -> str:
    subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qam", message],
                   check=True)  # fmt: skip
    sha = resolve(repo, "HEAD")
    assert sha is not None
    return sha


def test_the_commit_range_is_checked(repo_clone: Path) -> None:
    clone = repo_clone
    head = resolve(clone, "HEAD")
    (clone / "README.md").write_text("changed\n")
    later = _commit(clone, "later")
    assert commits_between(clone, str(head), "HEAD") == (head, [later])
    with pytest.raises(ConfigError, match="not a git revision"):
        commits_between(clone, "no-such-rev", "HEAD")
    with pytest.raises(ConfigError, match="not a descendant"):
        commits_between(clone, "HEAD", str(head))


@pytest.mark.slow
def test_bisect_finds_the_commit_that_slowed_the_model(repo_clone: Path, tmp_path: Path, capsys) -> None:
    # An exact answer needs a large plant whose size does not depend on the machine's load: extra work
    # (the step several times slower), not extra time (a fixed 5 ms read as 11% on a loaded machine). Five
    # rounds: the trimmed mean then drops a round a burst of other load hit, and Student's t has 4 degrees of
    # freedom instead of 2. One thread: with two, each parallel region waits for both threads, and on cores
    # that other processes keep busy that wait swamped a step this small.
    clone = repo_clone
    good = resolve(clone, "HEAD")
    with open(clone / "trainer_core" / "models.py", "a") as f:
        f.write(SLOW_MLP)
    culprit = _commit(clone, "slow down SimpleMLP")
    (clone / "README.md").write_text("an unrelated change\n")
    _commit(clone, "unrelated")
    db = tmp_path / "h.sqlite"
    rc = history_cli.cli(["--history", str(db), "bisect", str(good), "HEAD", "--config",
                          str(REPO / "configs" / "tabular_mlp.yaml"), "--repo", str(clone), "--min-rounds", "5",
                          "--budget-s", "1", "--reading-s", "0.1", "--threads", "1",
                          "--out", str(tmp_path / "out")])  # fmt: skip
    out = capsys.readouterr().out
    assert rc == 0, out
    assert f"first slower commit: {culprit}" in out
    conn = history_db.connect(db)
    assert [v["verdict"] for v in history_db.verdicts(conn)] == ["slower", "slower"]  # HEAD, then the culprit
    conn.close()
