"""Training-curve figures (the paper's Fig. 5: lambda and theta over iterations) as PNG."""

from __future__ import annotations

import csv
from pathlib import Path


def _series(rows: list[dict[str, str]], key: str) -> tuple[list[int], list[float]]:
    xs, ys = [], []
    for r in rows:
        if r.get(key) not in (None, ""):
            xs.append(int(float(r["step"])))
            ys.append(float(r[key]))
    return xs, ys


def plot_training_curves(metrics_csv: str | Path, out_png: str | Path) -> Path | None:
    """Plot loss, lambda, theta (if logged) and validation R@1 from a Lightning CSV log."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = list(csv.DictReader(open(metrics_csv)))
    panels = [
        ("train/loss", "training loss"),
        ("train/lambda", "lambda = exp(logit scale)"),
        ("train/theta", "theta (single variant)"),
        ("val/t2v/R1", "validation t2v R@1 (%)"),
    ]
    panels = [(k, t) for k, t in panels if _series(rows, k)[0]]
    if not panels:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.2))
    for ax, (key, title) in zip(axes if len(panels) > 1 else [axes], panels, strict=True):
        xs, ys = _series(rows, key)
        ax.plot(xs, ys, marker="o" if key.startswith("val") else None, lw=1.2)
        ax.set_title(title)
        ax.set_xlabel("training step")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    out = Path(out_png)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
