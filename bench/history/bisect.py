"""``bench.history bisect GOOD BAD``: the first commit between GOOD and BAD at which a cell got slower.

A binary search over ``git rev-list --ancestry-path GOOD..BAD``; each probe is an interleaved A/B
(:func:`bench.ab_setup.measure_ab`) of GOOD against the probed commit, recorded in the history like any
``bench.ab`` run. BAD is probed first: when it does not read slower than GOOD there is nothing to find.
A probe that cannot decide (its interval straddles the minimum effect) counts as not slower, so give
each step enough ``--budget-s`` for the slowdown you are chasing. No torch import.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from bench.launch.revisions import git, resolve
from bench.paired.engine import ReadingError, RoundsPlan
from trainer_core.errors import ConfigError

if TYPE_CHECKING:
    from bench.ab.setup import AbWhat


def commits_between(repo: Path, good: str, bad: str) -> tuple[str, list[str]]:
    """(GOOD's commit, the commits after it up to BAD, oldest first)."""
    shas = {}
    for flag, rev in (("GOOD", good), ("BAD", bad)):
        shas[flag] = resolve(repo, rev)
        if shas[flag] is None:
            raise ConfigError(f"bisect {flag} {rev}: not a git revision of {repo}")
    out = git(repo, "rev-list", "--ancestry-path", "--reverse", f"{shas['GOOD']}..{shas['BAD']}")
    commits = out.stdout.split()
    if out.returncode != 0 or not commits:
        raise ConfigError(f"bisect {good} {bad}: {bad} is not a descendant of {good} in {repo}")
    return str(shas["GOOD"]), commits


def bisect_slowdown(commits: list[str], slower: Callable[[str], bool]) -> str | None:
    """The first commit for which ``slower(commit)`` holds, assuming once slower, slower after; None
    when the last one is not slower. ``slower`` is called about log2(len(commits)) + 1 times."""
    if not slower(commits[-1]):
        return None
    lo, hi = -1, len(commits) - 1  # commits[hi] is slower; everything at or before lo is not
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if slower(commits[mid]):
            hi = mid
        else:
            lo = mid
    return commits[hi]


def run_bisect(
    good: str, bad: str, what: AbWhat, plan: Callable[[], RoundsPlan], out: Path, history: Path
) -> str | None:
    """Probe commits with interleaved A/B against GOOD (each run recorded in ``history``), printing a
    line per probe; the first slower commit, or None. A probe that fails or breaks a guard stops it."""
    from bench.ab.report import verdict_line
    from bench.ab.setup import measure_ab
    from bench.history.db import record_in_history

    good_sha, commits = commits_between(what.repo, good, bad)
    print(f"bisect: {len(commits)} commits after {good_sha[:12]} up to {bad}", flush=True)

    def slower(commit: str) -> bool:
        done = measure_ab(good_sha, commit, what, plan(), out)
        record_in_history(history, done.run_dir, "ab")
        if done.report is None:
            raise ReadingError(f"{commit[:12]}: {done.error} ({done.run_dir})")
        said = "; ".join(verdict_line(k, v, done.report.min_effect_pct) for k, v in done.report.results.items())
        print(f"bisect: {commit[:12]}: {said} ({done.run_dir})", flush=True)
        return done.report.slower()

    return bisect_slowdown(commits, slower)
