"""File names of any bytes on one printable line: the form every listing and index id uses.

Bottom layer (no project imports): ``lsdo-index`` (ids, ``skipped.txt``, search output) and
``lsdo-prepare compress`` (clash and failure listings) both print names through it.
"""

from __future__ import annotations

import unicodedata

_NAMED_ESCAPES = {"\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}
_UNSAFE_CATEGORIES = ("Cc", "Cs", "Zl", "Zp")  # control characters, surrogates, line / paragraph separators


def _escape(text: str, backslash: bool) -> str:
    out = []
    for ch in text:
        if ch in _NAMED_ESCAPES and (backslash or ch != "\\"):
            out.append(_NAMED_ESCAPES[ch])
        elif ch == "\\" or unicodedata.category(ch) not in _UNSAFE_CATEGORIES:
            out.append(ch)
        elif 0xDC80 <= ord(ch) <= 0xDCFF:  # os.fsdecode's stand-in for an undecodable byte 0x80-0xff
            out.append(f"\\x{ord(ch) - 0xDC00:02x}")
        elif ord(ch) < 0x80:
            out.append(f"\\x{ord(ch):02x}")
        elif ord(ch) < 0x10000:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(f"\\U{ord(ch):08x}")
    return "".join(out)


def escape_name(name: str) -> str:
    r"""A file name (or relative path) of any bytes -> a printable one-line string, reversibly.

    ``name`` is a ``str`` as ``os.listdir`` / ``os.walk`` / ``os.fsdecode`` give it (bytes that are
    not valid UTF-8 appear as the surrogates U+DC80..U+DCFF). A backslash becomes ``\\``; newline,
    carriage return and tab become ``\n``, ``\r``, ``\t``; an undecodable byte ``\xNN`` (NN >= 80);
    any other control character, surrogate or line / paragraph separator ``\xNN`` (below 0x80),
    ``\uNNNN`` or ``\UNNNNNNNN``. Everything else (``/``, spaces, accents, CJK, emoji) is kept, so
    ordinary names are unchanged. :func:`unescape_name` inverts it. ``lsdo-index build`` stores
    ids and lists skipped files in this form.
    """
    return _escape(name, backslash=True)


def unescape_name(text: str) -> str:
    r"""Inverse of :func:`escape_name`: the ``str`` name (undecodable bytes as surrogates).

    ``os.fsencode(unescape_name(video_id))`` is the file's relative path as bytes, without its
    extension for an index id. ValueError on a malformed escape.
    """
    out, i = [], 0
    while i < len(text):
        ch = text[i]
        if ch != "\\":
            out.append(ch)
            i += 1
            continue
        code = text[i + 1 : i + 2]
        simple = {"\\": "\\", "n": "\n", "r": "\r", "t": "\t"}
        if code in simple:
            out.append(simple[code])
            i += 2
            continue
        width = {"x": 2, "u": 4, "U": 8}.get(code)
        digits = text[i + 2 : i + 2 + width] if width else ""
        if not width or len(digits) != width or any(c not in "0123456789abcdefABCDEF" for c in digits):
            raise ValueError(f"malformed escape at position {i} of {text!r}")
        value = int(digits, 16)
        if code == "x" and value >= 0x80:
            value += 0xDC00  # an undecodable byte
        out.append(chr(value))
        i += 2 + width
    return "".join(out)


def printable(text: str) -> str:
    r"""``text`` on one printable line, for messages and listings (not reversible).

    Like :func:`escape_name` but backslashes are kept as they are: control characters, surrogates
    (undecodable bytes) and line separators become ``\n``, ``\t``, ``\xNN``, ... An id made by
    :func:`escape_name` is returned unchanged.
    """
    return _escape(text, backslash=False)
