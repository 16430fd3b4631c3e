"""The executors by name: the built-in ones (``local``, ``forked``, ``submitit``: one file each) and any a
user's module registers, given as ``--executor package.module:name`` (the module is imported, and its
``@register_executor(name)`` adds it), like a user's model or dataset factory. No torch import."""

from __future__ import annotations

import importlib
from pathlib import Path

from bench.launch import forked, local, submitit_jobs  # noqa: F401  (each registers its executor)
from bench.launch.executor import EXECUTOR_OPTIONS, EXECUTORS, Executor
from trainer_core.errors import ConfigError

# The --executor help text every command shows.
EXECUTOR_HELP = (
    "where cells run: local (a new interpreter each, one after another), forked (children of a server that "
    "imported torch once), submitit (one job per cell: Slurm when present, else submitit's local executor), "
    "or package.module:name for one a module registers"
)


def parse_options(items: list[str]) -> dict[str, str]:
    """``--executor-opt key=value`` (repeatable) -> {key: value}."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--executor-opt {item!r}: expected key=value")
        out[key.strip()] = value.strip()
    return out


def executor_name(given: str) -> str:
    """The registered name ``given`` refers to, importing ``package.module`` first for ``package.module:name``."""
    module, sep, name = given.rpartition(":")
    if not sep:
        return given
    try:
        importlib.import_module(module)
    except ImportError as e:
        raise ConfigError(f"--executor {given}: cannot import {module} ({e})") from None
    return name


def check_options(given: str, options: dict[str, str]) -> None:
    """Refuse an unknown executor or option before anything is written."""
    name = executor_name(given)
    if name not in EXECUTORS:
        raise ConfigError(f"--executor {given!r}: unknown executor; expected one of {', '.join(EXECUTORS)}")
    allowed = EXECUTOR_OPTIONS.get(name, {})
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        expected = f"expected one of {', '.join(allowed)}" if allowed else f"the {name} executor takes none"
        raise ConfigError(f"--executor-opt {unknown[0]}: unknown; {expected}")


def checked_options(given: str | None, items: list[str]) -> dict[str, str]:
    """``--executor-opt`` items parsed and checked against ``--executor`` before anything is written."""
    options = parse_options(items)
    if given is None:
        if options:
            raise ConfigError(f"--executor-opt {items[0]}: needs --executor")
        return options
    check_options(given, options)
    return options


def build_executor(given: str, options: dict[str, str], run_dir: Path) -> Executor:
    check_options(given, options)
    return EXECUTORS[executor_name(given)](options, run_dir)
