"""``key=value`` command-line arguments for the inverse-attention tools (the style of the Hydra entry points)."""

from __future__ import annotations

from lsdo.errors import LSDOUserError


def parse_kv(argv: list[str], allowed: dict[str, str], required: tuple[str, ...] = ()) -> dict[str, str]:
    """Parse ``key=value`` tokens (a leading ``--`` is tolerated) into a dict; unknown or missing keys raise."""
    out: dict[str, str] = {}
    for token in argv:
        key, sep, value = token.lstrip("-").partition("=")
        if not sep:
            raise LSDOUserError(f"expected key=value, got {token!r}; keys: {', '.join(allowed)}")
        if key not in allowed:
            raise LSDOUserError(f"unknown argument {key!r}; keys: {', '.join(allowed)}")
        out[key] = value
    missing = [k for k in required if not out.get(k)]
    if missing:
        raise LSDOUserError(f"missing required argument(s): {', '.join(f'{k}=...' for k in missing)}")
    return out


def usage(prog: str, allowed: dict[str, str]) -> str:
    """A help text listing every key with its description."""
    width = max(len(k) for k in allowed)
    lines = [f"usage: {prog} " + " ".join(f"{k}=..." for k in allowed), ""]
    lines += [f"  {k.ljust(width)}  {v}" for k, v in allowed.items()]
    return "\n".join(lines)


def as_int(args: dict[str, str], key: str, default: int) -> int:
    try:
        return int(args[key]) if key in args else default
    except ValueError:
        raise LSDOUserError(f"{key}: expected an integer, got {args[key]!r}") from None


def as_float(args: dict[str, str], key: str, default: float) -> float:
    try:
        return float(args[key]) if key in args else default
    except ValueError:
        raise LSDOUserError(f"{key}: expected a number, got {args[key]!r}") from None
