"""Exceptions that carry a one-line, user-facing message.

The CLIs catch :class:`TrainbenchError` and print ``str(err)`` on one line with exit code 2;
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class TrainbenchError(Exception):
    """Base class for errors caused by bad input (config, data, checkpoint), not by a bug."""


class ConfigError(TrainbenchError):
    """A config file or override is missing, malformed, or fails validation."""


class DataError(TrainbenchError):
    """A dataset cannot be found or read."""


class ModelError(TrainbenchError):
    """A model name or import path cannot be resolved, or its arguments are wrong."""


class CheckpointError(TrainbenchError):
    """A checkpoint is unreadable, truncated, not a trainbench checkpoint, or does not fit."""


class PrecisionError(TrainbenchError):
    """A precision is not supported on the requested device."""


class DeviceError(TrainbenchError):
    """The requested device does not exist on this machine."""
