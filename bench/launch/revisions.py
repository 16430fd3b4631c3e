"""Code at a git revision, for ``bench.ab``: each revision is checked out into a temporary worktree
(``git worktree add --detach``), and a process runs that revision's code by putting the worktree first
on its import path. ``PYTHONPATH`` alone is not enough: ``python -m`` puts the current folder ahead of
it, and run from a checkout that would import the checkout's code. So :func:`module_command` starts
the module through a one-line bootstrap that inserts the code root at the very front (the current
folder stays next, for the user's own modules). Nothing in the working tree is touched; the worktrees
go when the run ends. No torch import.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from trainer_core.errors import ConfigError

REPO_ROOT = Path(__file__).resolve().parents[2]


def git(repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True)


def resolve(repo: Path, rev: str) -> str | None:
    """The full commit hash ``rev`` names in ``repo``, or None when it names none."""
    if shutil.which("git") is None:
        return None
    out = git(repo, "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}")
    return out.stdout.strip() if out.returncode == 0 and out.stdout.strip() else None


@contextmanager
def worktree(repo: Path, commit: str) -> Iterator[Path]:
    """A detached checkout of ``commit`` in a temporary folder, removed (with git's record of it) after."""
    parent = Path(tempfile.mkdtemp(prefix="trainbench-rev-"))
    path = parent / commit[:12]
    out = git(repo, "worktree", "add", "--detach", "--quiet", str(path), commit)
    if out.returncode != 0:
        shutil.rmtree(parent, ignore_errors=True)
        raise ConfigError(f"git worktree add {commit[:12]}: {out.stderr.strip().splitlines()[-1:]}")
    try:
        yield path
    finally:
        git(repo, "worktree", "remove", "--force", str(path))
        shutil.rmtree(parent, ignore_errors=True)
        git(repo, "worktree", "prune")


# Also drops the finder of trainbench's own editable install: it maps module names to the checkout's
# files, so a module the revision lacks would silently come from the checkout instead of failing.
_PATH = (
    "import sys; sys.path.insert(0, sys.argv[1]); "
    "sys.meta_path[:] = [f for f in sys.meta_path if 'trainbench' not in getattr(f, '__module__', '')]; "
)
_BOOT = _PATH + (
    "import runpy; mod = sys.argv[2]; sys.argv = [mod, *sys.argv[3:]]; "
    "runpy.run_module(mod, run_name='__main__', alter_sys=True)"
)
_PROBE = _PATH + "import bench, trainer_core; print(bench.__file__); print(trainer_core.__file__)"


def module_command(code_root: Path, module: str, *args: str) -> list[str]:
    """``python -m MODULE ARGS`` with the code under ``code_root`` first on the import path."""
    return [sys.executable, "-c", _BOOT, str(code_root), module, *args]


def code_env(code_root: Path) -> dict[str, str]:
    """The environment of a process that must run the code under ``code_root`` (also on PYTHONPATH,
    for any process it starts in turn)."""
    paths = [str(code_root), os.environ.get("PYTHONPATH")]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in paths if p)}


def check_code_root(code_root: Path) -> None:
    """Refuse to measure unless a child process really imports ``bench`` and ``trainer_core`` from
    ``code_root`` (an install that shadowed it would compare the working tree with itself)."""
    cmd = [sys.executable, "-c", _PROBE, str(code_root)]
    out = subprocess.run(cmd, capture_output=True, text=True, env=code_env(code_root))
    files = [Path(line).resolve() for line in out.stdout.split()]
    root = code_root.resolve()
    if out.returncode != 0 or len(files) != 2 or not all(root in f.parents for f in files):
        why = out.stderr.strip().splitlines()[-1] if out.returncode else f"imported from {[str(f) for f in files]}"
        raise ConfigError(f"{code_root}: a process cannot run the code there ({why})")
