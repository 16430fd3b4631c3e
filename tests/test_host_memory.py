"""trainer_core.host_memory: the malloc policy is checked before use and applied through mallopt."""

from __future__ import annotations

import pytest
from conftest import tiny_overrides

from bench.matrix import static_skip_reason
from trainer_core import host_memory
from trainer_core.errors import ConfigError
from trainer_core.factory import build_run
from trainer_core.loading import load_config


def test_retain_is_supported_on_this_linux_glibc_machine() -> None:
    assert host_memory.malloc_unsupported_reason("retain") is None
    assert host_memory.malloc_unsupported_reason("default") is None


def test_unknown_policy_is_refused_by_name() -> None:
    assert "unknown malloc policy 'jemalloc'" in host_memory.malloc_unsupported_reason("jemalloc")
    with pytest.raises(RuntimeError, match="unknown malloc policy"):
        host_memory.apply_malloc_policy("jemalloc")
    with pytest.raises(ConfigError, match="train.malloc"):
        load_config(None, {"train.malloc": "jemalloc"})


def test_without_glibc_retain_is_a_config_error_and_a_skipped_cell(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(host_memory, "_glibc", lambda: None)
    reason = host_memory.malloc_unsupported_reason("retain")
    assert reason and reason.startswith("train.malloc=retain needs glibc's malloc")
    config = load_config(None, tiny_overrides(**{"train.malloc": "retain"}))
    with pytest.raises(ConfigError, match="train.malloc=retain needs glibc"):
        build_run(config)
    assert static_skip_reason(config) == reason
    # "default" asks for nothing, so it works everywhere
    build_run(load_config(None, tiny_overrides()))


def test_refused_mallopt_is_an_error_not_silence(monkeypatch: pytest.MonkeyPatch) -> None:
    class Refusing:
        def mallopt(self, param: int, value: int) -> int:
            return 0  # what glibc returns for a value it rejects

    monkeypatch.setattr(host_memory, "_glibc", lambda: Refusing())
    with pytest.raises(RuntimeError, match="mallopt refused"):
        host_memory.apply_malloc_policy("retain")
