"""Typed options for the tools: one ``key=value`` grammar, read against a dataclass, one ``--help``.

A tool's options are a dataclass whose fields are its keys; :func:`option` writes each key's
meaning, default (none: required) and checks once, there. :func:`parse` reads ``key=value``
tokens (the grammar of the Hydra entry points) and assigns each value through OmegaConf's
structured config, so

* an unknown or misspelt key is an error naming it (and the nearest key);
* a value of the wrong type is an error naming its key; so is a missing required key, a value
  below an option's minimum or outside its choices;
* ``-h`` / ``--help`` raises :class:`Help`; :func:`usage` prints every key with its type,
  default and meaning.

Tools that had GNU-style options keep them as spellings of the same grammar: ``--key value`` and
``--key=value`` are ``key=value`` (``-`` inside a key reads as ``_``); ``--flag`` of a true/false
key is ``flag=true`` and ``--no-flag`` is ``flag=false``. Positional arguments (a tool's folders,
``lsdo-search``'s queries) are fields marked ``positional``; everything after ``--`` is positional.
A key given twice keeps its last value, except a list key, which gathers them all (and splits
each at commas).
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import typing
from collections.abc import Sequence
from typing import Any, TypeVar

from omegaconf import MISSING, OmegaConf
from omegaconf.errors import ValidationError

from lsdo.errors import LSDOUserError

T = TypeVar("T")
KEY = re.compile(r"[A-Za-z_][\w.]*")


def option(
    help: str,
    default: Any = MISSING,
    *,
    minimum: float | None = None,
    choices: Sequence[str] | None = None,
    positional: bool = False,
) -> Any:
    """A tool's key: its meaning, default (none: required), and the checks :func:`parse` applies."""
    meta = {"help": help, "minimum": minimum, "choices": tuple(choices) if choices else None, "positional": positional}
    if isinstance(default, list):
        return dataclasses.field(default_factory=lambda: list(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


class Help(Exception):
    """``-h`` / ``--help`` was given."""


def _fields(schema: type) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(schema)}


def _type(schema: type, name: str) -> tuple[Any, bool]:
    """(the field's type without Optional, whether None is allowed)."""
    hint = typing.get_type_hints(schema)[name]
    args = typing.get_args(hint)
    if type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return rest[0], True
    return hint, False


def _is_list(schema: type, name: str) -> bool:
    return typing.get_origin(_type(schema, name)[0]) is list


def _type_name(schema: type, name: str) -> str:
    kind, nullable = _type(schema, name)
    label = {int: "an integer", float: "a number", bool: "true or false", str: "text"}.get(kind, "values")
    if typing.get_origin(kind) is list:
        label = "comma-separated list"
    return label + (" or null" if nullable else "")


def _unknown(key: str, known: Sequence[str]) -> LSDOUserError:
    close = difflib.get_close_matches(key, known, n=1)
    hint = f" (did you mean {close[0]}?)" if close else ""
    return LSDOUserError(f"unknown argument {key!r}{hint}; keys: {', '.join(known)}")


def parse(schema: type[T], argv: Sequence[str], passthrough: bool = False) -> tuple[T, list[str]]:
    """``argv`` -> (the typed options, the ``key=value`` tokens of unknown keys when ``passthrough``).

    Raises :class:`Help` for ``-h`` / ``--help`` and :class:`LSDOUserError` (one line naming the
    key) for everything a user can get wrong.
    """
    fields = _fields(schema)
    names = [n for n in fields if not fields[n].metadata.get("positional")]
    values: dict[str, list[str]] = {}
    free: list[str] = []
    rest: list[str] = []

    def add(key: str, value: str, token: str) -> None:
        if key in fields and not fields[key].metadata.get("positional"):
            values.setdefault(key, []).append(value)
        elif passthrough:
            rest.append(token)
        else:
            raise _unknown(key, names)

    args, i = list(argv), 0
    while i < len(args):
        tok = args[i]
        i += 1
        if tok == "--":
            free += args[i:]
            break
        if tok in ("-h", "--help"):
            raise Help
        if tok.startswith("--") and len(tok) > 2:
            key, eq, value = tok[2:].partition("=")
            key = key.replace("-", "_")
            if not eq:
                flag = key in fields and _type(schema, key)[0] is bool
                negated = key.startswith("no_") and key[3:] in fields and _type(schema, key[3:])[0] is bool
                if flag:
                    value = "true"
                elif negated:
                    key, value = key[3:], "false"
                elif i < len(args):
                    value, i = args[i], i + 1
                else:
                    raise LSDOUserError(f"--{key.replace('_', '-')} needs a value")
            add(key, value, f"{key}={value}")
            continue
        key, eq, value = tok.partition("=")
        if eq and key in fields:
            add(key, value, tok)
        elif eq and KEY.fullmatch(key.lstrip("+~")) and " " not in tok:
            add(key, value, tok)  # an unknown key (a typo) unless the tool passes them through
        else:
            free.append(tok)

    positional = [n for n in fields if fields[n].metadata.get("positional")]
    for name in positional:
        if not free:
            break
        if _is_list(schema, name):
            values[name], free = list(free), []
        else:
            values[name] = [free.pop(0)]
    if free:
        raise LSDOUserError(f"unexpected argument {free[0]!r}; keys: {', '.join(names)}")

    cfg = OmegaConf.structured(schema)
    for key, given in values.items():
        kind, nullable = _type(schema, key)
        try:
            if fields[key].metadata.get("positional"):
                cfg[key] = given if typing.get_origin(kind) is list else given[-1]
            elif typing.get_origin(kind) is list:  # key=a,b and repeated keys: every value, in order
                cfg[key] = [x.strip() for v in given for x in v.split(",") if x.strip()]
            elif nullable and given[-1].strip().lower() in ("", "none", "null"):
                cfg[key] = None
            else:
                cfg[key] = given[-1]
        except ValidationError:
            raise LSDOUserError(f"{key}: expected {_type_name(schema, key)}, got {given[-1]!r}") from None
    missing = [k for k in fields if OmegaConf.is_missing(cfg, k)]
    if missing:
        raise LSDOUserError(
            "missing required argument(s): " + ", ".join(k.upper() if k in positional else f"{k}=..." for k in missing)
        )
    out = OmegaConf.to_object(cfg)
    for key, f in fields.items():
        value = getattr(out, key)
        if value is None:
            continue
        if f.metadata.get("choices"):
            value = str(value).strip().lower()
            if value not in f.metadata["choices"]:
                raise LSDOUserError(
                    f"{key}: expected one of {' | '.join(f.metadata['choices'])}, got {getattr(out, key)!r}"
                )
            setattr(out, key, value)
        if f.metadata.get("minimum") is not None and value < f.metadata["minimum"]:
            kind = "an integer" if isinstance(value, int) else "a number"
            raise LSDOUserError(f"{key}: expected {kind} >= {f.metadata['minimum']:g}, got {value}")
    return out, rest  # type: ignore[return-value]


def usage(prog: str, schema: type, about: str = "") -> str:
    """The ``--help`` text: a usage line, ``about``, then every key with its type, default and meaning."""
    fields = _fields(schema)
    parts = []
    for name, f in fields.items():
        if f.metadata.get("positional"):
            token = name.upper() + (" ..." if _is_list(schema, name) else "")
        else:
            token = f"{name}=..."
        required = f.default is MISSING and f.default_factory is dataclasses.MISSING  # type: ignore[misc]
        parts.append(token if required else f"[{token}]")
    lines = [f"usage: {prog} " + " ".join(parts)]
    if about:
        lines += ["", about.strip()]
    lines.append("")
    width = max(len(n) for n in fields)
    for name, f in fields.items():
        if f.default is not MISSING and f.default is not dataclasses.MISSING:
            default = (
                "null" if f.default is None else str(f.default).lower() if isinstance(f.default, bool) else f.default
            )
            when = f"default {default}"
        elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
            when = "default " + ",".join(map(str, f.default_factory())) if f.default_factory() else "optional"  # type: ignore[misc]
        else:
            when = "required"
        kind = " | ".join(f.metadata["choices"]) if f.metadata.get("choices") else _type_name(schema, name)
        lines.append(f"  {name.ljust(width)}  {f.metadata['help']} ({kind}; {when})")
    return "\n".join(lines)
