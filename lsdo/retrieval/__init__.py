"""Retrieval metrics and evaluation helpers."""

from lsdo.retrieval.metrics import t2v_metrics, v2t_metrics

__all__ = ["t2v_metrics", "v2t_metrics"]
