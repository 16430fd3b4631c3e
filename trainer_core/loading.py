"""A run's config from its YAML and overrides, validated: precedence CLI ``--set`` > YAML > defaults, every
error one line naming the file and the dotted key. The registries' names (datasets) are checked here, above
both the config schema (:mod:`trainer_core.config`) and the registries, which import the schema."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import ValidationError

from trainer_core import datasets
from trainer_core.config import RunConfig, apply_overrides, format_validation_error, parse_override, read_yaml
from trainer_core.errors import ConfigError


def validate_config(raw: dict[str, Any], source: str = "<config>", overridden: set[str] | None = None) -> RunConfig:
    """Validate a raw mapping into a :class:`RunConfig`; errors name ``source`` and the dotted key."""
    try:
        return RunConfig.model_validate(raw, context={"datasets": tuple(datasets.DATASETS)})
    except ValidationError as e:
        raise ConfigError(format_validation_error(e, source, overridden or set())) from None


def load_config(path: str | Path | None, overrides: list[str] | dict[str, Any] | None = None) -> RunConfig:
    """Load ``path`` (or defaults when None) and apply overrides, with precedence CLI > YAML > defaults.

    ``overrides`` is a list of ``key=value`` strings (as given to ``--set``) or a dict of dotted keys.
    """
    raw = read_yaml(path) if path is not None else {}
    if isinstance(overrides, dict):
        parsed = dict(overrides)
    else:
        parsed = dict(parse_override(item) for item in (overrides or []))
    merged = apply_overrides(raw, parsed)
    return validate_config(merged, str(path) if path is not None else "<defaults>", set(parsed))
