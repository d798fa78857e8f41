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


def summarize_runs(root: str) -> str:
    """A Markdown table of every ``metrics.json`` under ``root`` (e.g. a multirun sweep directory)."""
    import json
    from pathlib import Path

    import yaml

    rows = [
        "| run | variant | impl | t2v R@1 | t2v R@5 | t2v MnR | v2t R@1 | v2t R@5 | chance R@1 |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for path in sorted(Path(root).glob("**/metrics.json")):
        test = json.loads(path.read_text()).get("test") or {}
        if "t2v/R1" not in test:
            continue
        cfg = (
            yaml.safe_load((path.parent / "config.yaml").read_text()) if (path.parent / "config.yaml").exists() else {}
        )
        chance = 100.0 / test["num_videos"] if test.get("num_videos") else float("nan")
        rows.append(
            f"| {path.parent.name} | {cfg.get('variant', {}).get('name', '?')} | {cfg.get('impl', '?')} | "
            f"{test['t2v/R1']:.1f} | {test['t2v/R5']:.1f} | {test['t2v/MnR']:.1f} | {test['v2t/R1']:.1f} | "
            f"{test['v2t/R5']:.1f} | {chance:.1f} |"
        )
    return "\n".join(rows)


if __name__ == "__main__":
    import sys

    print(summarize_runs(sys.argv[1] if len(sys.argv) > 1 else "logs"))
