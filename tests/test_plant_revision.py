"""scripts/plant_revision_slowdown.py: a throwaway clone with one commit that adds work to SimpleCNN's forward
and changes nothing else (same outputs), for revision A/Bs with a known truth."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import REPO

sys.path.insert(0, str(REPO / "scripts"))
from plant_revision_slowdown import PLANTS, plant  # noqa: E402


@pytest.mark.parametrize(("at", "op"), [("conv1", "tanh"), ("conv2", "scale")])
def test_the_planted_commit_adds_work_and_changes_no_result(tmp_path: Path, at: str, op: str) -> None:
    base, planted = plant(tmp_path / "clone", lines=3, at=at, op=op)
    clone = tmp_path / "clone"
    changed = subprocess.run(["git", "diff", "--name-only", f"{base}..{planted}"], cwd=clone, check=True,
                             capture_output=True, text=True).stdout.split()  # fmt: skip
    assert changed == ["trainer_core/models.py"]
    assert (clone / "trainer_core/models.py").read_text().count(PLANTS[op]) == 3
    spec = importlib.util.spec_from_file_location("planted_models", clone / "trainer_core/models.py")
    assert spec is not None and spec.loader is not None
    planted_models = importlib.util.module_from_spec(spec)
    sys.modules["planted_models"] = planted_models  # its dataclasses look their module up there
    try:
        spec.loader.exec_module(planted_models)
    finally:
        del sys.modules["planted_models"]
    from trainer_core.models import SimpleCNN

    torch.manual_seed(0)
    ours = SimpleCNN().eval()
    theirs = planted_models.SimpleCNN().eval()
    theirs.load_state_dict(ours.state_dict())
    x = torch.randn(4, 1, 28, 28)
    assert torch.equal(ours(x), theirs(x))
    with pytest.raises(SystemExit, match="already exists"):
        plant(clone, lines=1)


def test_no_lines_commits_an_a_a_pair_of_the_same_code(tmp_path: Path) -> None:
    base, head = plant(tmp_path / "aa", lines=0)
    clone = tmp_path / "aa"
    assert base != head
    diff = subprocess.run(["git", "diff", "--name-only", f"{base}..{head}"], cwd=clone, check=True,
                          capture_output=True, text=True).stdout  # fmt: skip
    assert diff == ""
    message = subprocess.run(["git", "log", "-1", "--format=%s"], cwd=clone, check=True, capture_output=True,
                             text=True).stdout.strip()  # fmt: skip
    assert message == "A/A: no change"
