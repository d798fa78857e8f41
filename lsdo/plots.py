"""Training-curve figures (the paper's Fig. 5: lambda and theta over iterations) as PNG."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the file-only Agg backend (no display needed): the one place that picks it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save(fig: Any, out: str | Path) -> Path:
    """Write ``fig`` as a PNG (parent folders created, margins trimmed) and close it."""
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    pyplot().close(fig)
    return path


def series(rows: list[dict[str, str]], key: str) -> tuple[list[int], list[float]]:
    """(steps, values) of one column of a Lightning CSV log, rows without a value skipped."""
    xs, ys = [], []
    for r in rows:
        if r.get(key) not in (None, ""):
            xs.append(int(float(r["step"])))
            ys.append(float(r[key]))
    return xs, ys


def plot_training_curves(metrics_csv: str | Path, out_png: str | Path) -> Path | None:
    """Plot loss, lambda, theta (if logged) and validation R@1 from a Lightning CSV log."""
    plt = pyplot()
    rows = list(csv.DictReader(open(metrics_csv)))
    panels = [
        ("train/loss", "training loss"),
        ("train/lambda", "lambda = exp(logit scale)"),
        ("train/theta", "theta (single variant)"),
        ("val/t2v/R1", "validation t2v R@1 (%)"),
    ]
    panels = [(k, t) for k, t in panels if series(rows, k)[0]]
    if not panels:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.2))
    for ax, (key, title) in zip(axes if len(panels) > 1 else [axes], panels, strict=True):
        xs, ys = series(rows, key)
        ax.plot(xs, ys, marker="o" if key.startswith("val") else None, lw=1.2)
        ax.set_title(title)
        ax.set_xlabel("training step")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    out = Path(out_png)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def plot_retrieval(ranks: dict[str, Any], out_dir: str | Path, title: str = "") -> list[Path]:
    """Recall@K curves and rank histograms of {"t2v": ranks [Q], "v2t": ranks [V]} (1-based) as PNGs.

    Writes ``recall_at_k.png`` (R@K in percent against K, log axis) and ``rank_histogram.png``.
    """
    import numpy as np

    plt = pyplot()

    out_dir = Path(out_dir)
    arrays = {k: np.asarray(v, dtype=np.int64) for k, v in ranks.items() if v is not None and len(v)}
    written = []
    fig, ax = plt.subplots(figsize=(5, 3.6))
    for name, r in arrays.items():
        ks = np.unique(np.concatenate([np.arange(1, 11), np.geomspace(1, r.max(), 60).astype(np.int64)]))
        ax.plot(ks, [(r <= k).mean() * 100 for k in ks], label=f"{name} (R@1 {(r <= 1).mean() * 100:.1f})")
    ax.set_xscale("log")
    ax.set_xlabel("K")
    ax.set_ylabel("R@K (%)")
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    ax.set_title(title or "recall at K")
    fig.tight_layout()
    written.append(out_dir / "recall_at_k.png")
    fig.savefig(written[-1], dpi=110)
    plt.close(fig)

    fig, axes = plt.subplots(1, len(arrays), figsize=(4.5 * len(arrays), 3.4), squeeze=False)
    for ax, (name, r) in zip(axes[0], arrays.items(), strict=True):
        bins = np.unique(np.geomspace(1, max(r.max(), 2) + 1, 30).astype(np.int64))
        ax.hist(r, bins=bins, color="tab:blue" if name == "t2v" else "tab:orange")
        ax.set_xscale("log")
        ax.set_xlabel("rank of the ground truth (1 = best)")
        ax.set_ylabel("queries")
        ax.set_title(f"{name}: median rank {np.median(r):.0f}, mean {r.mean():.1f}")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    written.append(out_dir / "rank_histogram.png")
    fig.savefig(written[-1], dpi=110)
    plt.close(fig)
    return written
