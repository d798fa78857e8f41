"""User-facing errors: reported as one line, without a traceback, by the entry points."""

from __future__ import annotations


class LSDOUserError(Exception):
    """A mistake in the user's input (config, path, data) with a message that says how to fix it."""


class ConfigError(LSDOUserError):
    """An invalid combination of config values; the message names the offending key."""


class DataNotFoundError(LSDOUserError):
    """A dataset path that does not exist; the message names it and says how to get the data."""
