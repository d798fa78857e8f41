"""The one command-line grammar (lsdo.options, lsdo.cli.common) and every console script's ``--help``."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest

from lsdo.errors import LSDOUserError
from lsdo.options import Help, option, parse, usage

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]


@dataclass
class Demo:
    index: str = option("an index")
    queries: list[str] = option("texts", [], positional=True)
    topk: int = option("results", 10, minimum=1)
    prefilter_k: int | None = option("prefilter", None, minimum=1)
    mode: str = option("scoring", "xpool", choices=("xpool", "regions"))
    verify: bool = option("check", True)
    ext: list[str] = option("extensions", [".mp4"])
    scale: float = option("a number", 1.0)


def test_key_value_and_gnu_spellings_are_one_grammar() -> None:
    opts, rest = parse(Demo, ["index=a", "q one", "--topk", "3", "--prefilter-k=7", "q two", "--no-verify"])
    assert (opts.index, opts.topk, opts.prefilter_k, opts.verify) == ("a", 3, 7, False)
    assert opts.queries == ["q one", "q two"] and rest == []
    assert opts.mode == "xpool" and opts.ext == [".mp4"] and opts.scale == 1.0  # the dataclass's defaults
    opts, _ = parse(Demo, ["index=a", "topk=4", "--", "topk=5"])
    assert opts.topk == 4 and opts.queries == ["topk=5"]  # after --: positional
    opts, _ = parse(Demo, ["index=a", "ext=.avi,mkv", "--ext", ".ts", "prefilter_k=null", "--verify", "mode=REGIONS"])
    assert opts.ext == [".avi", "mkv", ".ts"] and opts.prefilter_k is None and opts.verify and opts.mode == "regions"
    opts, _ = parse(Demo, ["index=a", "a query with key=value inside"])
    assert opts.queries == ["a query with key=value inside"]  # spaces: a text, not a key


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["index=a", "topK=5"], "unknown argument 'topK' (did you mean topk?); keys: index, topk, prefilter_k"),
        (["index=a", "--topk"], "--topk needs a value"),
        (["index=a", "topk=three"], "topk: expected an integer, got 'three'"),
        (["index=a", "scale=x"], "scale: expected a number, got 'x'"),
        (["index=a", "verify=maybe"], "verify: expected true or false, got 'maybe'"),
        (["topk=3"], "missing required argument(s): index=..."),
        (["index=a", "topk=0"], "topk: expected an integer >= 1, got 0"),
        (["index=a", "mode=best"], "mode: expected one of xpool | regions, got 'best'"),
    ],
)
def test_user_mistakes_are_one_line_naming_the_key(argv: list[str], message: str) -> None:
    with pytest.raises(LSDOUserError) as err:
        parse(Demo, argv)
    assert str(err.value).startswith(message)


def test_help_and_passthrough() -> None:
    with pytest.raises(Help):
        parse(Demo, ["index=a", "--help"])
    text = usage("demo", Demo, "What it does.")
    assert text.startswith("usage: demo index=... [QUERIES ...] [topk=...]") and "What it does." in text
    assert "  topk         results (an integer; default 10)" in text
    assert "  index        an index (text; required)" in text
    assert "mode         scoring (xpool | regions; default xpool)" in text
    opts, rest = parse(Demo, ["index=a", "dataset=msrvtt", "+trainer.x=1", "topk=2"], passthrough=True)
    assert opts.topk == 2 and rest == ["dataset=msrvtt", "+trainer.x=1"]


def test_every_console_script_points_at_the_cli_package() -> None:
    assert len(SCRIPTS) == 11
    for name, target in SCRIPTS.items():
        module = target.split(":")[0]
        assert module == "lsdo.cli" or module.startswith("lsdo.cli."), (name, target)


def _script(name: str) -> list[str]:
    """The installed console script, else its function through the interpreter (an uninstalled checkout)."""
    exe = Path(sys.executable).parent / name
    if exe.exists():
        return [str(exe)]
    module, func = SCRIPTS[name].split(":")
    return [sys.executable, "-c", f"import sys; from {module} import {func}; sys.exit({func}())"]


HELP_ARGS = {
    "lsdo-index": ["build", "--help"],
    "lsdo-prepare": ["compress", "--help"],
    "lsdo-viz": ["inverse-attention", "--help"],
}


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_every_console_script_has_help(name: str) -> None:
    """Each installed script runs and ``--help`` lists its keys (Hydra's help for the Hydra mains); exit 0."""
    args = HELP_ARGS.get(name, ["--help"])
    done = subprocess.run([*_script(name), *args], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    if name in ("lsdo-train", "lsdo-eval", "lsdo-zeroshot"):
        assert "== Config ==" in done.stdout or "Powered by Hydra" in done.stdout, done.stdout[:500]
    else:
        assert done.stdout.startswith("usage: "), done.stdout[:500]
        assert "required" in done.stdout or "default" in done.stdout


@pytest.mark.parametrize("name", ["lsdo-index", "lsdo-search", "lsdo-synth", "lsdo-premise", "lsdo-build-bank"])
def test_a_misspelt_key_is_one_line_and_exit_2(name: str) -> None:
    args = {
        "lsdo-index": ["build", "num_frame=3"],
        "lsdo-build-bank": ["out=x", "dataset.num_frame=3"],  # config overrides pass through to the composer
    }.get(name, ["num_frame=3"])
    done = subprocess.run([*_script(name), *args], capture_output=True, text=True, timeout=120, cwd=ROOT)
    errors = [line for line in done.stderr.splitlines() if line.startswith("error")]
    assert done.returncode != 0 and "Traceback" not in done.stderr, done.stderr[-2000:]
    assert len(errors) == 1 and "num_frame" in errors[0], done.stderr[-2000:]
