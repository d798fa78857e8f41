"""Query-bank normalisation (QB-Norm) with the dynamic inverted softmax.

Bogolin et al., "Cross Modal Retrieval with Querybank Normalisation", CVPR 2022 (the form DiCoSA's
evaluation uses, after the authors' ``dynamic_inverted_softmax.py``). Given the test scores
``S`` [T, V] (texts x gallery videos) and a query bank ``B`` [Q, V] (the scores of Q bank queries
against the same gallery):

* the activation set ``A = { v : v in top-k_v B[q, :] for some bank query q }`` (``k = 1`` in the paper);
* a test query ``t`` whose top-1 video ``argmax_v S[t, v]`` is in ``A`` is renormalised by the
  inverted softmax over the bank, every other query keeps its scores::

      S'[t, v] = exp(beta * S[t, v]) / sum_q exp(beta * B[q, v])     if argmax_v S[t, v] in A
      S'[t, v] = S[t, v]                                              otherwise

(``beta = 20`` by default, as in the paper). The ratio is computed as
``exp(beta * S[t, v] - logsumexp_q(beta * B[q, v]))``: the same number, without overflow.

With the test queries themselves as the bank (``bank="test"``, ``B = S``) a query's scores depend
on the other test queries: transductive, labelled "QB-Norm (transductive)" in every output, as DSL.
With that bank every query's top-1 video is in the activation set (the query is in the bank, and
k >= 1), so every row with a finite score is renormalised: the dynamic part selects only with a
separate bank (the paper's training captions; not supported here: ``qb_norm_bank=test`` only).
-inf entries (pairs a prefilter dropped) stay -inf and never enter the activation set or the sums.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from lsdo.errors import ConfigError

BANKS = ("test",)  # where the query bank comes from: the test queries themselves (transductive)
LABEL = "QB-Norm (transductive)"


def activation_set(bank: torch.Tensor, k: int = 1) -> torch.Tensor:
    """[V] bool: the videos that are among the top-k (finite) scores of at least one bank query."""
    if bank.ndim != 2:
        raise ValueError(f"bank must be [Q, V], got {tuple(bank.shape)}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    active = torch.zeros(bank.shape[1], dtype=torch.bool, device=bank.device)
    if bank.shape[0] == 0 or bank.shape[1] == 0:
        return active
    values, idx = bank.topk(min(k, bank.shape[1]), dim=1)  # [Q, k]
    active[idx[torch.isfinite(values)]] = True
    return active


def qb_norm(sims: torch.Tensor, bank: torch.Tensor, beta: float = 20.0, k: int = 1) -> torch.Tensor:
    """QB-Norm, dynamic inverted softmax, of ``sims`` [T, V] with the query bank ``bank`` [Q, V].

    ``out[t] = exp(beta * sims[t] - logsumexp_q(beta * bank[q]))`` (elementwise per video) for the
    queries whose top-1 video is in :func:`activation_set` (``bank``, ``k``); ``out[t] = sims[t]``
    for the others. -inf entries of ``sims`` stay -inf.
    """
    if sims.ndim != 2:
        raise ValueError(f"sims must be [T, V], got {tuple(sims.shape)}")
    if bank.ndim != 2 or bank.shape[1] != sims.shape[1]:
        raise ValueError(f"bank must be [Q, {sims.shape[1]}], got {tuple(bank.shape)}")
    if not beta > 0:
        raise ValueError(f"beta must be > 0, got {beta}")
    if sims.shape[0] == 0 or sims.shape[1] == 0:
        return sims.clone()
    active = activation_set(bank, k)  # [V]
    top1 = sims.argmax(dim=1)  # [T]
    renorm = active[top1] & torch.isfinite(sims.gather(1, top1[:, None]).squeeze(1))  # [T]
    log_norm = torch.logsumexp(beta * bank, dim=0)  # [V]: log sum_q exp(beta B[q, v])
    inverted = torch.exp(beta * sims - log_norm[None, :])
    finite = torch.isfinite(sims)
    inverted = torch.where(finite, inverted, torch.full_like(sims, float("-inf")))
    return torch.where(renorm[:, None], inverted, sims)


def check_options(inference: Mapping[str, Any] | Any) -> None:
    """One-line ConfigError for QB-Norm settings that cannot run (qb_norm with dsl, unknown bank, ...)."""
    if not bool(inference.get("qb_norm", False)):
        return
    if bool(inference.get("dsl", False)):
        raise ConfigError(
            "inference.qb_norm=true and inference.dsl=true: choose one post-processing (QB-Norm or dual softmax)"
        )
    bank = str(inference.get("qb_norm_bank", "test"))
    if bank not in BANKS:
        raise ConfigError(f"inference.qb_norm_bank: expected {' | '.join(BANKS)}, got '{bank}'")
    beta, k = inference.get("qb_norm_beta", 20), inference.get("qb_norm_k", 1)
    if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not beta > 0:
        raise ConfigError(f"inference.qb_norm_beta: expected a number > 0, got {beta!r}")
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ConfigError(f"inference.qb_norm_k: expected an integer >= 1, got {k!r}")
