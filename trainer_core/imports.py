"""Things named by import path in a config (``package.module:attribute``): models, datasets, losses,
workloads. One place, so every such key fails the same way: one line naming the key."""

from __future__ import annotations

import importlib
from typing import Any

from trainer_core.errors import ConfigError


def import_callable(path: str, key: str, error: type[Exception] = ConfigError) -> Any:
    """The callable ``path`` names; ``error`` (naming ``key``) when its module or attribute is missing."""
    module_name, _, attr = path.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise error(f"{key}: cannot import module {module_name!r} ({e})") from None
    obj = getattr(module, attr, None)
    if obj is None or not callable(obj):
        raise error(f"{key}: {module_name!r} has no callable {attr!r}")
    return obj
