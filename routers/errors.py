"""Errors the library raises on bad input. Each names where the problem is so a user can fix it."""

from __future__ import annotations


class RouterError(Exception):
    """Base class of every error this project raises on purpose."""


class DataError(RouterError, ValueError):
    """A data file has a bad line. The message carries the file, the line number and the field."""

    def __init__(self, path: str, line: int | None, message: str, field: str | None = None) -> None:
        self.path = path
        self.line = line
        self.field = field
        where = f"{path}:{line}" if line is not None else path
        what = f"field '{field}': {message}" if field else message
        super().__init__(f"{where}: {what}")


class ConfigError(RouterError, ValueError):
    """A config file or config value is invalid."""


class ArtifactError(RouterError, ValueError):
    """A saved router artifact is missing, corrupt or in an unsafe format."""


class NotFittedError(RouterError, RuntimeError):
    """A router was asked to route before it was fitted or loaded."""


class EngineError(RouterError, RuntimeError):
    """A model engine failed to load or to generate."""
