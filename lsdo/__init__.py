"""LSDO: text-video retrieval with Low-Salient but Discriminative Objects (IEEE TIP 2025)."""

import os

__version__ = "0.1.0"

# OpenMP threads that wait by sleeping rather than spinning. Beside one busy core the CPU demo's
# epochs took 46 s with OpenMP's spinning default and 26 s with PASSIVE, 16 s either way on a quiet
# machine (bench/demo_busy_core.py, 2-core CPU; figures in docs/benchmarks.md).
# Only a default: a value already in the environment wins, and it has no effect if torch was
# imported before lsdo (OpenMP reads it once, when torch loads).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
