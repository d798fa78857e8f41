"""The one command-line grammar (lsdo.options, lsdo.cli.common) and every console script's ``--help``."""

from __future__ import annotations

import re
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
    assert len(SCRIPTS) == 12
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


# ------------------------------------------------------------------ every documented command parses as written


def _tools() -> dict[str, dict[str | None, type]]:
    """Console script -> {subcommand (None: none) -> its typed options}."""
    from lsdo.cli import index, prepare, viz
    from lsdo.cli.build_bank import BuildBankArgs
    from lsdo.cli.premise import PremiseArgs
    from lsdo.cli.search import SearchArgs
    from lsdo.data.synth_export import SynthOptions
    from lsdo.inverse_attention.denseset import DensesetOptions
    from lsdo.sweep_report import ReportOptions

    def table(module) -> dict[str | None, type]:  # a subcommand tool's own table (lsdo.cli.common.Subcommand)
        return {name: c.options for name, c in module.COMMANDS.items()}

    return {
        "lsdo-index": table(index),
        "lsdo-search": {None: SearchArgs},
        "lsdo-synth": {None: SynthOptions},
        "lsdo-prepare": table(prepare),
        "lsdo-build-bank": {None: BuildBankArgs},
        "lsdo-build-denseset": {None: DensesetOptions},
        "lsdo-viz": table(viz),
        "lsdo-premise": {None: PremiseArgs},
        "lsdo-report": {None: ReportOptions},
    }


HYDRA = {"train.py": "train", "eval.py": "eval", "zeroshot.py": "zeroshot", "lsdo-train": "train", "lsdo-eval": "eval"}
COMMAND = re.compile(r"(?:^|`)((?:lsdo-[a-z-]+|python (?:train|eval|zeroshot)\.py)(?: [^`#\n]*)?)")


def documented_commands() -> list[tuple[str, str]]:
    """(file:line, command) of every command line written in README.md and docs/*.md (code blocks and `spans`)."""
    out = []
    for path in [ROOT / "README.md", ROOT / "data" / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for i, line in enumerate(path.read_text().splitlines(), start=1):
            if "->" in line:  # an example of a mistake and the error it gets (docs/configuration.md)
                continue
            for m in COMMAND.finditer(line.strip()):
                out.append((f"{path.name}:{i}", m.group(1).strip()))
    return out


def _words(command: str) -> list[str]:
    """The command's arguments, without the optional / alternative / placeholder notation of the docs."""
    import shlex

    command = re.sub(r"\[([^\]]*)\]", lambda m: m.group(1).split(" | ")[0], command)  # [a | b] -> a
    try:
        words = shlex.split(command)
    except ValueError:
        words = command.split()
    return [w for w in words if w not in ("|", "-m") and "..." not in w and not w.startswith(("<", "["))]


def _first_of_sweep(override: str) -> str:
    """``key=a,b`` -> ``key=a``; ``group=glob(x_*)`` -> the group's first option matching ``x_*``."""
    import fnmatch

    key, value = override.split("=", 1)
    if value.startswith("glob(") and value.endswith(")"):
        names = sorted(p.stem for p in (ROOT / "configs" / key.lstrip("+")).glob("*.yaml"))
        matches = [n for n in names if fnmatch.fnmatch(n, value[5:-1])]
        return f"{key}={matches[0] if matches else value}"
    return f"{key}={value.split(',')[0]}"


def test_every_documented_command_names_real_keys() -> None:
    """Each command in README/docs runs as written: its script exists and every key it sets is one the tool or
    the config knows (the values are placeholders here; the real invocations are the tests of each tool)."""
    from lsdo.config import compose, validate
    from lsdo.schema import SECTIONS, ZeroShotInference, check

    tools = _tools()
    commands = documented_commands()
    assert len(commands) > 40  # the extraction found the docs' commands
    checked, problems = set(), []
    for where, command in commands:
        words = _words(command)
        name, args = (words[1], words[2:]) if words[0] == "python" else (words[0], words[1:])
        try:
            if name in HYDRA:
                overrides = [a for a in args if "=" in a and not a.startswith("ckpt")]
                overrides = [_first_of_sweep(o) for o in overrides]  # -m: one job of the sweep
                cfg = compose([*overrides, *(["ckpt=x"] if HYDRA[name] == "eval" else [])], config_name=HYDRA[name])
                if HYDRA[name] == "train":
                    validate(cfg)  # every key declared and of its type (lsdo.schema)
                elif HYDRA[name] == "zeroshot":
                    check(cfg, {**SECTIONS, "inference": ZeroShotInference})
                checked.add(name)
                continue
            if name not in SCRIPTS:
                raise LSDOUserError(f"{name} is not a console script")
            table = tools.get(name)
            if table is None or not args:
                continue  # a Hydra console script, or the bare name in a list of tools
            if None in table:
                schema, rest = table[None], args
            elif args[0] in table:
                schema, rest = table[args[0]], args[1:]
            else:
                raise LSDOUserError(f"{name} has no command {args[0]!r}")
            try:
                parse(schema, rest, passthrough=name == "lsdo-build-bank")
            except LSDOUserError as exc:
                if not str(exc).startswith("missing required"):
                    raise
            checked.add(name)
        except LSDOUserError as exc:
            problems.append(f"{where}: {command}: {exc}")
    assert not problems, "\n".join(problems)
    assert {"train.py", "eval.py", "zeroshot.py", "lsdo-index", "lsdo-search", "lsdo-viz", "lsdo-premise"} <= checked


def test_every_documented_make_target_exists() -> None:
    """``make X`` written in README.md, data/README.md or docs/*.md names a target of the Makefile."""
    targets = set(re.findall(r"^([a-z][\w-]*):", (ROOT / "Makefile").read_text(), flags=re.M))
    wanted = []
    for path in [ROOT / "README.md", ROOT / "data" / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for i, line in enumerate(path.read_text().splitlines(), start=1):
            wanted += [(f"{path.name}:{i}", t) for t in re.findall(r"(?:^|`)make ([a-z][\w-]*)", line.strip())]
    assert len(wanted) > 5 and {"demo", "test", "test-latest", "lock"} <= targets
    assert not [f"{w}: make {t}" for w, t in wanted if t not in targets]


# ------------------------------------------------------------------ real invocations the other test files lack


def test_lsdo_synth_then_lsdo_premise_for_real(tmp_path: Path, capsys) -> None:
    """``lsdo-synth`` writes a loadable benchmark in the new grammar; ``lsdo-premise`` measures a checkpoint of it."""
    import json

    import torch
    from omegaconf import OmegaConf

    from lsdo.cli.premise import premise_main
    from lsdo.cli.synth import synth_main
    from lsdo.config import compose
    from lsdo.lightning_module import LSDOLitModule

    out = tmp_path / "synth"
    args = ["size=16", "clip_len=2", "train_videos_per_combo=1", "val_combos=2", "test_combos=2", "workers=1"]
    assert synth_main([f"out={out}", *args]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith(f"wrote {out}: train 176, val 2, test 2 videos (180 encoded, 0 already there)")
    assert len(list((out / "videos").glob("*.mp4"))) == 180 and (out / "MSRVTT_data.json").is_file()
    old = [
        "--size",
        "16",
        "--clip-len",
        "2",
        "--train-videos-per-combo",
        "1",
        "--val-combos",
        "2",
        "--test-combos",
        "2",
    ]
    assert synth_main(["--out", str(out), *old, "--workers", "1"]) == 0  # the earlier spelling: the same benchmark
    assert "(0 encoded, 180 already there)" in capsys.readouterr().out

    cfg = OmegaConf.to_container(
        compose(["experiment=demo", "model=tiny", "model.clip_cfg.vision_cfg.image_size=32", "dataset.clip_len=2"]),
        resolve=True,
    )
    ckpt = tmp_path / "tiny.ckpt"
    torch.manual_seed(0)
    torch.save({"state_dict": LSDOLitModule(cfg).state_dict(), "hyper_parameters": {"cfg": cfg}}, ckpt)
    report = tmp_path / "premise.json"
    assert premise_main([f"ckpt={ckpt}", "renders=1", f"out={report}"]) == 0
    text = capsys.readouterr().out
    r = json.loads(report.read_text())
    assert r["frames"]["train"] > 0 and 0 <= r["encoder"]["probe_small"] <= 100, r
    assert "small" in text and "large" in text
