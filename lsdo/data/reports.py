"""Pre-flight report files (missing / corrupt inputs), shared by the video and image data modules."""

from __future__ import annotations

from pathlib import Path


def write_report(out_dir: Path | None, name: str, lines: list[str]) -> str:
    """Write ``lines`` to ``out_dir/name``; returns "; full list in <file>" for a message ("" without a dir)."""
    if out_dir is None:
        return ""
    out_dir.mkdir(parents=True, exist_ok=True)
    f = out_dir / name
    f.write_text("\n".join(lines) + "\n")
    return f"; full list in {f}"
