"""LSDO: text-video retrieval with Low-Salient but Discriminative Objects (IEEE TIP 2025)."""

__version__ = "0.1.0"
