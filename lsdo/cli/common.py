"""What every entry point shares: the one command-line grammar, one ``--help``, one-line errors.

The Hydra entry points (``train.py``, ``eval.py``, ``zeroshot.py``) take ``key=value`` overrides;
every other tool takes the same ``key=value`` grammar, read against its typed options
(:mod:`lsdo.options`: unknown keys, wrong types and missing keys are one-line errors naming the
key; ``--help`` lists every key with its type, default and meaning). User errors print one line
``error: ...`` and exit with status 2.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from omegaconf import DictConfig
from omegaconf.errors import InterpolationResolutionError, MissingMandatoryValue

from lsdo.errors import LSDOUserError, run_plain
from lsdo.options import Help, option, parse, usage

__all__ = [
    "Help",
    "guarded",
    "hydra_main",
    "one_copy_of_each_log_line",
    "option",
    "parse",
    "run_tool",
    "Subcommand",
    "subcommands",
    "usage",
]

T = TypeVar("T")


def run_tool(
    prog: str,
    schema: type[T],
    fn: Callable[[T], int | None],
    argv: Sequence[str] | None = None,
    about: str = "",
) -> int:
    """Parse ``argv`` (default ``sys.argv[1:]``) against ``schema`` and run ``fn``: exit 0 / ``fn``'s code / 2 on a
    user error (one line, no traceback); ``--help`` prints :func:`usage` and exits 0."""
    args = list(sys.argv[1:] if argv is None else argv)

    def main() -> int:
        try:
            opts, _ = parse(schema, args)
        except Help:
            print(usage(prog, schema, about))
            return 0
        return int(fn(opts) or 0)

    return run_plain(main)


@dataclass(frozen=True)
class Subcommand:
    """One command of a ``prog COMMAND key=value ...`` tool: :func:`run_tool` of ``run`` on ``options``."""

    summary: str  # its line in ``prog --help``
    options: type  # the typed options (lsdo.options) its keys are read against
    run: Callable[[Any], int | None]  # exit code: 0 / run's own / 2 on a user error
    about: str = ""  # the head of ``prog COMMAND --help``


def subcommands(prog: str, commands: dict[str, Subcommand], argv: Sequence[str] | None) -> int:
    """``prog COMMAND key=value ...``: run ``commands[COMMAND]`` on the rest (:func:`run_tool`).

    ``--help`` lists the commands (exit 0); no command lists them on stderr (exit 2); an unknown
    command is a one-line error (exit 2).
    """
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] in commands:
        c = commands[args[0]]
        return run_tool(f"{prog} {args[0]}", c.options, c.run, args[1:], about=c.about)
    if args and args[0] not in ("-h", "--help"):
        print(f"error: unknown command {args[0]!r}; commands: {', '.join(commands)} ({prog} --help)", file=sys.stderr)
        return 2
    width = max(len(c) for c in commands)
    lines = [f"usage: {prog} {{{','.join(commands)}}} key=value ...", ""]
    lines += [f"  {c.ljust(width)}  {sub.summary}" for c, sub in commands.items()]
    lines += ["", f"{prog} COMMAND --help lists a command's keys"]
    print("\n".join(lines), file=sys.stdout if args else sys.stderr)
    return 0 if args else 2


# ---------------------------------------------------------------------------------------------
# The Hydra entry points
# ---------------------------------------------------------------------------------------------


def one_copy_of_each_log_line() -> None:
    """Lightning's loggers print through Hydra's root handler only (they had handlers of their own too)."""
    import lightning  # noqa: F401  (importing it installs the handlers removed below)

    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True


def guarded(fn: Callable[[DictConfig], Any]) -> Callable[[DictConfig], Any]:
    """Report user errors as one line on stderr and exit 2 (no traceback)."""

    def wrapper(cfg: DictConfig) -> Any:
        one_copy_of_each_log_line()
        try:
            return fn(cfg)
        except LSDOUserError as exc:
            print(f"error: {exc}", file=sys.stderr)
            sys.exit(2)
        except (MissingMandatoryValue, InterpolationResolutionError) as exc:
            # A config value the user left out (???) or an interpolation that cannot resolve.
            key = getattr(exc, "full_key", None) or ""
            print(f"error: {key + ': ' if key else ''}{str(exc).splitlines()[0]}", file=sys.stderr)
            sys.exit(2)

    wrapper.__name__ = fn.__name__
    return wrapper


def hydra_main(config_name: str, task: Callable[[DictConfig], Any]) -> None:
    """Run ``task`` (already :func:`guarded`) as a Hydra application on ``configs/<config_name>.yaml``."""
    import hydra

    from lsdo.config import CONFIG_DIR, register_resolvers

    register_resolvers()
    hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name=config_name)(task)()
