"""Plain-text tables of retrieval metrics."""

from __future__ import annotations

COLUMNS = ("R1", "R5", "R10", "R50", "MdR", "MnR")


def format_metrics_table(metrics: dict[str, float], title: str = "metrics") -> str:
    """A Markdown table with t2v and v2t rows from ``{"t2v/R1": ..., "v2t/R1": ...}``."""
    lines = [f"### {title}", "", "| direction | " + " | ".join(COLUMNS) + " |", "|---" * (len(COLUMNS) + 1) + "|"]
    for d in ("t2v", "v2t"):
        if f"{d}/R1" in metrics:
            lines.append(f"| {d} | " + " | ".join(f"{metrics[f'{d}/{c}']:.1f}" for c in COLUMNS) + " |")
    if "num_texts" in metrics:
        lines.append(f"\n{int(metrics['num_texts'])} texts, {int(metrics['num_videos'])} videos")
    return "\n".join(lines)
