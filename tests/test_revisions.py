"""Code at a git revision: revisions resolve to commits, a worktree holds that commit's code and goes
away afterwards, and a child process really imports the worktree's code (not the editable install)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from bench.launch.revisions import check_code_root, resolve, worktree
from trainer_core.errors import ConfigError


@pytest.fixture
def repo(repo_clone: Path) -> Path:
    return repo_clone


def test_revisions_resolve_to_commits(repo: Path) -> None:
    head = resolve(repo, "HEAD")
    assert head is not None and len(head) == 40
    assert resolve(repo, head[:10]) == head
    assert resolve(repo, "no-such-branch-xyz") is None


def test_a_worktree_runs_its_own_code_and_is_removed(repo: Path) -> None:
    head = resolve(repo, "HEAD")
    assert head is not None
    with worktree(repo, head) as tree:
        assert (tree / "bench" / "cell" / "__main__.py").is_file()  # the commit's own files
        check_code_root(tree)  # a child process imports bench and trainer_core from the worktree
        listed = subprocess.run(["git", "-C", str(repo), "worktree", "list"], capture_output=True, text=True).stdout
        assert str(tree) in listed
    assert not tree.exists()
    listed = subprocess.run(["git", "-C", str(repo), "worktree", "list"], capture_output=True, text=True).stdout
    assert str(tree) not in listed


def test_a_folder_without_the_code_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot run the code there"):
        check_code_root(tmp_path)
