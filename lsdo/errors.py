"""User-facing errors: reported as one line, without a traceback, by the entry points."""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any


class LSDOUserError(Exception):
    """A mistake in the user's input (config, path, data) with a message that says how to fix it."""


class ConfigError(LSDOUserError):
    """An invalid combination of config values; the message names the offending key."""


class DataNotFoundError(LSDOUserError):
    """A dataset path that does not exist; the message names it and says how to get the data."""


def run_plain(fn: Callable[[], int]) -> int:
    """For the non-Hydra tools (lsdo-synth, lsdo-build-bank, ...): user errors as one line, exit code 2."""
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="[%(name)s] %(message)s")
    try:
        return int(fn() or 0)
    except LSDOUserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # the output went to a pager or `head` that closed early: not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error when Python flushes
        return 0


def read_json_file(path: str | Path, key: str) -> Any:
    """The JSON document at ``path``, a file the user named with ``key``; a missing file or invalid JSON is a
    one-line :class:`LSDOUserError` naming the key and the file."""
    p = Path(path)
    if not p.is_file():
        raise LSDOUserError(f"{key}: file not found: {p}")
    try:
        return json.loads(p.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise LSDOUserError(f"{key}: {p} is not valid JSON ({exc})") from None
