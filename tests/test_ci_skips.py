"""The suite's own rule (tests/conftest.py): in CI a skip other than ``gpu`` is a failure naming what is
missing; on a developer's machine it stays a skip with its reason."""

from __future__ import annotations

import pytest
import torch
from conftest import REPO

pytest_plugins = ["pytester"]

DEMO = """
import pytest

def test_needs_chromium():
    pytest.skip("no Chromium here (apt-get install chromium)")

@pytest.mark.gpu
def test_needs_cuda():
    pass

def test_runs():
    assert True
"""


@pytest.mark.parametrize(("ci", "outcome"), [("true", {"failed": 1, "passed": 1}), ("", {"skipped": 1, "passed": 1})])
@pytest.mark.slow
def test_a_skip_fails_in_ci_except_a_gpu_one(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, ci: str, outcome: dict[str, int]
) -> None:
    pytester.makeconftest((REPO / "tests" / "conftest.py").read_text())
    pytester.makepyfile(test_demo=DEMO)
    monkeypatch.setenv("CI", ci)
    monkeypatch.setenv("PYTHONPATH", str(REPO))
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-rA")
    gpu = "passed" if torch.cuda.is_available() else "skipped"  # a gpu test may skip, in CI too
    result.assert_outcomes(**{**outcome, gpu: outcome.get(gpu, 0) + 1})
    if ci:
        result.stdout.fnmatch_lines(["*skipped in CI (CI=true)*no Chromium here (apt-get install chromium)*"])
