"""Symmetric InfoNCE (paper Eq. 21-23).

    logits = lambda * s(t_i, v_j)            [B, B], lambda = exp(logit_scale) <= 100
    L_t2v  = CE over videos for each text,   L_v2t = CE over texts for each video
    L      = L_t2v + L_v2t                   (Eq. 23, impl=paper)
    L      = (L_t2v + L_v2t) / 2             (the released code, impl=official)

(Eq. 21-22 print lambda in the numerator only; the usual temperature-scaled softmax, which the
released code implements, is used.)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def symmetric_infonce(sims: torch.Tensor, logit_scale: torch.Tensor, average: bool = False) -> torch.Tensor:
    """sims [B, B] (texts x videos, matching pairs on the diagonal) -> scalar loss."""
    logits = sims * logit_scale.exp()
    labels = torch.arange(sims.shape[0], device=sims.device)
    loss = F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)
    return loss / 2 if average else loss
