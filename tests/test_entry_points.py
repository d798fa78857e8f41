"""Every console script declared in pyproject.toml resolves to a callable (a typo would only show on install)."""

from __future__ import annotations

import importlib
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_console_script_resolves(name: str) -> None:
    module, func = SCRIPTS[name].split(":")
    assert callable(getattr(importlib.import_module(module), func)), SCRIPTS[name]


def test_issue_contract_scripts_are_declared() -> None:
    expected = {"lsdo-train", "lsdo-eval", "lsdo-prepare", "lsdo-synth", "lsdo-build-bank", "lsdo-index", "lsdo-search"}
    expected |= {"lsdo-build-denseset", "lsdo-viz"}
    assert expected <= set(SCRIPTS)
