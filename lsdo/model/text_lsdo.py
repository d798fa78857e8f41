"""Text-level LSDO prototypes (paper Section III-D, Eq. 13-14, Fig. 4).

    W_p = sparsemax_L(FC_2(GELU(FC_1(f_w))))^T     [T, K, L]   two FC layers over the words
    f_o = W_p f_w                                   [T, K, d]   (Eq. 13)
    f_r = gamma f_t + (1 - gamma) MaxPool_K(f_o)    [T, d]      (Eq. 14)

Sparsity rule: each prototype's weights over the words of a sentence are the *sparsemax* of its
logits (the Euclidean projection onto the probability simplex, Martins & Astudillo 2016). They
sum to 1, and words scoring below a data-dependent cut-off get exactly 0, so each prototype
aggregates a few words. Padding, the start token and the end token are removed before the
projection and therefore always weigh exactly 0. A text with no word tokens (an empty caption)
gets all-zero prototypes, i.e. f_r = gamma f_t. MaxPool is the element-wise max over the K
prototypes. FC_1 (d x d) starts as the identity; FC_2 (d x K) keeps PyTorch's default init,
since an identity cannot map d features onto K prototype scores.
"""

from __future__ import annotations

import torch
from torch import nn

from lsdo.model.layers import identity_linear, sparsemax


class TextPrototypes(nn.Module):
    """Eq. 13-14: K sparse word prototypes fused into the [EOS] text feature."""

    def __init__(self, dim: int, num_prototypes: int = 20, gamma: float = 0.8) -> None:
        super().__init__()
        self.fc1 = identity_linear(dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(dim, num_prototypes)
        self.gamma = gamma

    def weights(self, f_w: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """W_p: word features [T, L, d], mask [T, L] -> sparse weights [T, K, L]."""
        logits = self.fc2(self.act(self.fc1(f_w))).transpose(1, 2)  # [T, L, K] -> [T, K, L]
        return sparsemax(logits, mask[:, None, :].expand_as(logits), dim=-1)

    def forward(self, f_t: torch.Tensor, f_w: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """f_t [T, d], f_w [T, L, d], mask [T, L] -> f_r [T, d]."""
        w_p = self.weights(f_w, mask)  # [T, K, L]
        f_o = torch.einsum("tkl,tld->tkd", w_p, f_w)  # [T, K, d]  (Eq. 13)
        pooled = f_o.amax(dim=1)  # [T, d]
        return self.gamma * f_t + (1 - self.gamma) * pooled  # Eq. 14
