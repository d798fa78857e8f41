"""Attention heatmap A of the visual encoder (paper §3, the input of LARD).

"For a given sampled frame, the visual encoder outputs both the global embedding and an attention heatmap,
highlighting the regions that most influenced the embedding."

``visual_forward_with_heatmap(visual, images [B, 3, S, S])`` -> (global features [B, d], heatmap [B, gh, gw])
``attention_heatmap(visual, images [B, 3, S, S])``          -> heatmap [B, gh, gw]  (each map sums to 1)
``upsample(heatmap [B, gh, gw] or [gh, gw], (H, W))``     -> [B, H, W] or [H, W]   (bilinear)

One forward pass gives both outputs: forward pre-hooks capture the *inputs* of the attention layers and their
attention probabilities are recomputed from public module parameters (LayerNorm, q/k projections), so nothing
depends on private attributes or on ``need_weights`` being exposed by the tower.

Supported towers (``images`` are already resized and normalised for the tower):

* open_clip ``VisionTransformer`` (OpenAI CLIP, LAION ViTs). The embedding is read out of the last block's output by
  ``pool_type``: ``'tok'`` (class token; the paper's CLIP case) -> the last block's class-token attention to the
  patch tokens, averaged over heads; ``'avg'`` -> the mean over patch queries of their attention to the patches.
  With an attention-pool head (``attn_pool``, CoCa-style) the head's query attention to the patches is used.
* open_clip ``ModifiedResNet`` (OpenAI CLIP ``RN50`` ... and small from-scratch ResNet towers): the embedding is the
  output of its ``attnpool`` head for the query token (the mean of the final feature map's positions); heatmap = that
  query's attention to the final feature map's positions (grid = image / 32), averaged over heads. Attention
  rollout needs a transformer trunk and is refused for this tower.
* open_clip ``TimmModel`` whose timm ViT trunk pools with a latent-query attention head (``global_pool='map'``,
  timm ``AttentionPoolLatent``): the SigLIP towers of open_clip (``ViT-B-16-SigLIP`` ...). Heatmap = that head's
  query attention to the patch tokens, averaged over heads (and queries).

``method="rollout"``: attention rollout (Abnar & Zuidema, 2020). Each layer's head-averaged attention gets the
residual identity, ``0.5 A + 0.5 I`` (rows still sum to 1), the layers are multiplied from the input up, and the
read-out row (class token, mean of patch queries, or the pool head's attention) is taken from the product.

The class-token / prefix columns are dropped and the patch part renormalised, so every map sums to 1 over patches.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
import torch.nn.functional as F
from open_clip.modified_resnet import AttentionPool2d, ModifiedResNet
from open_clip.transformer import AttentionalPooler, VisionTransformer
from torch import nn

HeatmapMethod = Literal["attention", "rollout"]
HEATMAP_METHODS: tuple[str, ...] = ("attention", "rollout")


# ------------------------------------------------------------------ per-layer attention probabilities
def _split_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """[B, L, E] -> [B, heads, L, E / heads]."""
    b, n, e = x.shape
    return x.reshape(b, n, heads, e // heads).transpose(1, 2)


def _mha_probs(mha: nn.MultiheadAttention, q_in: torch.Tensor, k_in: torch.Tensor) -> torch.Tensor:
    """softmax(q k^T / sqrt(dh)) of a batch-first MultiheadAttention: [B, Lq, *], [B, Lk, *] -> [B, h, Lq, Lk]."""
    e, h = mha.embed_dim, mha.num_heads
    if mha.in_proj_weight is not None:  # packed q/k/v projection (self-attention blocks)
        w_q, w_k = mha.in_proj_weight[:e], mha.in_proj_weight[e : 2 * e]
    else:  # separate projections (kdim != embed_dim, e.g. open_clip's AttentionalPooler)
        w_q, w_k = mha.q_proj_weight, mha.k_proj_weight
    bias = mha.in_proj_bias
    b_q, b_k = (bias[:e], bias[e : 2 * e]) if bias is not None else (None, None)
    q = _split_heads(F.linear(q_in, w_q, b_q), h).float()
    k = _split_heads(F.linear(k_in, w_k, b_k), h).float()
    return torch.softmax(q @ k.transpose(-1, -2) * (e // h) ** -0.5, dim=-1)


def _open_clip_block_probs(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Self-attention probabilities [B, h, L, L] of an open_clip (Custom)ResidualAttentionBlock for input x."""
    attn = block.attn
    if isinstance(attn, nn.MultiheadAttention):
        if not attn.batch_first:
            x = x.transpose(0, 1)
        y = block.ln_1(x)
        return _mha_probs(attn, y, y)
    if hasattr(attn, "in_proj_weight") and hasattr(attn, "num_heads"):  # open_clip.transformer.Attention
        y = block.ln_1(x)
        q, k, _ = F.linear(y, attn.in_proj_weight, attn.in_proj_bias).chunk(3, dim=-1)
        q, k = _split_heads(q, attn.num_heads), _split_heads(k, attn.num_heads)
        if getattr(attn, "logit_scale", None) is not None:  # scaled cosine attention
            scale = torch.clamp(attn.logit_scale, max=attn.logit_scale_max).exp().float()
            logits = F.normalize(q.float(), dim=-1) @ F.normalize(k.float(), dim=-1).transpose(-1, -2) * scale
        else:
            q, k = attn.ln_q(q).float(), attn.ln_k(k).float()
            logits = q @ k.transpose(-1, -2) * attn.head_dim**-0.5
        return torch.softmax(logits, dim=-1)
    raise TypeError(f"inverse-attention heatmap: unsupported attention module {type(attn).__name__} in open_clip block")


def _timm_block_probs(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Self-attention probabilities [B, h, L, L] of a timm ViT ``Block`` (norm1 + Attention with fused qkv)."""
    attn = block.attn
    if not (hasattr(block, "norm1") and hasattr(attn, "qkv")):
        raise TypeError(f"inverse-attention heatmap: unsupported timm block {type(block).__name__} for rollout")
    b, n, _ = x.shape
    qkv = attn.qkv(block.norm1(x)).reshape(b, n, 3, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4)
    q, k = attn.q_norm(qkv[0]).float(), attn.k_norm(qkv[1]).float()
    return torch.softmax(q @ k.transpose(-1, -2) * attn.scale, dim=-1)


def _open_clip_pool_probs(pool: AttentionalPooler, x: torch.Tensor) -> torch.Tensor:
    """open_clip AttentionalPooler: queries' attention [B, h, nq, L] to its input tokens x [B, L, C]."""
    k_in = pool.ln_k(x)
    q_in = pool.ln_q(pool.query).unsqueeze(0).expand(x.shape[0], -1, -1)
    return _mha_probs(pool.attn, q_in, k_in)


def _timm_pool_probs(pool: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """timm AttentionPoolLatent (SigLIP 'map' head): latent queries' attention [B, h, nq, N] to its input x."""
    b, n, _ = x.shape
    if getattr(pool, "pos_embed", None) is not None:
        x = x + pool.pos_embed.unsqueeze(0).to(x.dtype)
    q = pool.q(pool.latent.expand(b, -1, -1))
    q = q.reshape(b, pool.latent_len, pool.num_heads, pool.head_dim).transpose(1, 2)
    k = pool.kv(x).reshape(b, n, 2, pool.num_heads, pool.head_dim).permute(2, 0, 3, 1, 4)[0]
    q, k = pool.q_norm(q).float(), pool.k_norm(k).float()
    return torch.softmax(q @ k.transpose(-1, -2) * pool.scale, dim=-1)


def _resnet_pool_probs(pool: AttentionPool2d, x: torch.Tensor) -> torch.Tensor:
    """open_clip AttentionPool2d for its input x [B, C, H, W]: the query token's attention [B, h, 1 + H*W].

    Recomputes the head's own steps: positions flattened, their mean prepended as the query token, positional
    embedding added, then softmax(q k^T / sqrt(dh)) of that token against all 1 + H*W tokens.
    """
    b, c, h, w = x.shape
    t = x.reshape(b, c, h * w).transpose(1, 2)  # [B, C, H, W] -> [B, HW, C]
    t = torch.cat([t.mean(dim=1, keepdim=True), t], dim=1) + pool.positional_embedding.to(t.dtype)  # [B, 1+HW, C]
    q = _split_heads(pool.q_proj(t[:, :1]), pool.num_heads).float()  # [B, h, 1, dh]
    k = _split_heads(pool.k_proj(t), pool.num_heads).float()  # [B, h, 1+HW, dh]
    return torch.softmax(q @ k.transpose(-1, -2) * (c // pool.num_heads) ** -0.5, dim=-1)[:, :, 0]


def _resnet_forward_with_heatmap(
    visual: ModifiedResNet, images: torch.Tensor, method: HeatmapMethod
) -> tuple[torch.Tensor, torch.Tensor]:
    """ModifiedResNet: features [B, d] and the attnpool query's head-averaged attention [B, H/32, W/32]."""
    if method != "attention":
        raise ValueError(
            f"inverse-attention heatmap: method={method!r} needs a transformer trunk; a ModifiedResNet (CLIP RN) "
            "tower has one attention layer, its attnpool head: use method='attention'"
        )
    capture = _InputCapture([visual.attnpool])
    try:
        features = visual(images)
    finally:
        capture.remove()
    x = capture.inputs[0]
    if x is None:
        raise RuntimeError("inverse-attention heatmap: the ResNet's attnpool did not run during the forward pass")
    with torch.no_grad():
        heat = _resnet_pool_probs(visual.attnpool, x).mean(dim=1)[:, 1:]  # heads averaged, query column dropped
        heat = heat / heat.sum(dim=-1, keepdim=True).clamp_min(1e-12)
    return features, heat.reshape(-1, x.shape[-2], x.shape[-1])  # [B, HW] -> [B, H, W]


# ------------------------------------------------------------------ tower description
@dataclass
class _Tower:
    """What the heatmap needs from one tower: its attention layers and how the embedding reads them out."""

    blocks: list[nn.Module]  # transformer blocks, input first
    block_probs: Callable[[nn.Module, torch.Tensor], torch.Tensor]
    num_prefix: int  # class / register tokens before the patches in the trunk sequence
    patch_size: tuple[int, int]
    readout: str  # 'tok' | 'avg' | 'pool'
    pools: list[tuple[nn.Module, Callable[[Any, torch.Tensor], torch.Tensor]]]  # applied in order (cascade)
    pool_sees_prefix: bool = True
    pool_queries: slice = field(
        default_factory=lambda: slice(None)
    )  # which queries of the last pool make the embedding


def _pair(v: Any) -> tuple[int, int]:
    return (int(v[0]), int(v[1])) if isinstance(v, (tuple, list)) else (int(v), int(v))


def _describe(visual: nn.Module) -> _Tower:
    if isinstance(visual, VisionTransformer):
        blocks = list(visual.transformer.resblocks)
        patch = _pair(visual.patch_size)
        if visual.attn_pool is not None:
            pools: list[tuple[nn.Module, Callable]] = [(visual.attn_pool, _open_clip_pool_probs)]
            pool_kind = getattr(visual, "attn_pool_type", "")
            if visual.attn_pool_contrastive is not None:
                # 'parallel': the contrastive pooler reads the trunk tokens; 'cascade': it reads attn_pool's outputs
                contrastive = (visual.attn_pool_contrastive, _open_clip_pool_probs)
                pools = [contrastive] if pool_kind == "parallel" else [pools[0], contrastive]
            # plain attn_pool (open_clip CoCa): the embedding is _global_pool of the pool's outputs
            queries = {"tok": slice(0, 1), "avg": slice(1, None)}.get(visual.pool_type, slice(None))
            if visual.attn_pool_contrastive is not None:
                queries = slice(None)
            return _Tower(blocks, _open_clip_block_probs, 1, patch, "pool", pools, pool_queries=queries)
        if visual.pool_type not in ("tok", "avg"):
            raise TypeError(f"inverse-attention heatmap: VisionTransformer with pool_type={visual.pool_type!r}")
        return _Tower(blocks, _open_clip_block_probs, 1, patch, visual.pool_type, [])
    trunk = getattr(visual, "trunk", None)
    if trunk is not None and type(visual).__name__ == "TimmModel":
        pool = getattr(trunk, "attn_pool", None)
        if pool is not None and type(pool).__name__ == "AttentionPoolLatent" and hasattr(trunk, "blocks"):
            num_prefix = int(getattr(trunk, "num_prefix_tokens", 0))
            sees_prefix = bool(getattr(trunk, "pool_include_prefix", False))
            patch = _pair(trunk.patch_embed.patch_size)
            return _Tower(
                list(trunk.blocks),
                _timm_block_probs,
                num_prefix,
                patch,
                "pool",
                [(pool, _timm_pool_probs)],
                sees_prefix,
            )
        raise TypeError(
            f"inverse-attention heatmap: unsupported visual tower TimmModel({type(trunk).__name__}); only timm ViTs "
            "with an attention-pool head (global_pool='map', SigLIP) are supported"
        )
    raise TypeError(
        f"inverse-attention heatmap: unsupported visual tower {type(visual).__name__}; supported: open_clip "
        "VisionTransformer (class token / avg / attention pool), ModifiedResNet (CLIP RN, attnpool) and "
        "open_clip TimmModel with a timm 'map' "
        "attention-pool ViT (SigLIP)"
    )


# ------------------------------------------------------------------ public API
class _InputCapture:
    """Forward pre-hooks storing the first input tensor of each watched module."""

    def __init__(self, modules: list[nn.Module]) -> None:
        self.inputs: list[torch.Tensor | None] = [None] * len(modules)
        self._handles = [m.register_forward_pre_hook(self._hook(i), with_kwargs=True) for i, m in enumerate(modules)]

    def _hook(self, i: int) -> Callable:
        def hook(_module: nn.Module, args: tuple, kwargs: dict) -> None:
            x = args[0] if args else kwargs.get("q_x", kwargs.get("x"))
            self.inputs[i] = x.detach()

        return hook

    def remove(self) -> None:
        for h in self._handles:
            h.remove()


def _is_seq_first(block: nn.Module) -> bool:
    """True for an open_clip block whose MultiheadAttention is not batch-first (inputs [L, B, D])."""
    attn = getattr(block, "attn", None)
    return isinstance(attn, nn.MultiheadAttention) and not attn.batch_first


def _pool_readout(tower: _Tower, pool_inputs: list[torch.Tensor]) -> torch.Tensor:
    """The pool head(s)' attention [B, T] over the tokens entering the first pool (head- and query-averaged)."""
    weights: torch.Tensor | None = None  # [B, nq_prev, T]: current queries' attention over the first pool input
    for (pool, probs_fn), x in zip(tower.pools, pool_inputs, strict=True):
        p = probs_fn(pool, x).mean(dim=1)  # [B, nq, T_in]
        weights = p if weights is None else p @ weights
    assert weights is not None
    return weights[:, tower.pool_queries].mean(dim=1)  # average over the embedding's queries -> [B, T]


def visual_forward_with_heatmap(
    visual: nn.Module, images: torch.Tensor, method: HeatmapMethod = "attention"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Global features ``visual(images)`` [B, d] and the attention heatmap [B, gh, gw] from one forward pass.

    ``images``: [B, 3, S, S] preprocessed for ``visual``. Run the tower in eval mode (patch dropout off).
    """
    if method not in HEATMAP_METHODS:
        raise ValueError(f"heatmap method must be one of {HEATMAP_METHODS}, got {method!r}")
    if isinstance(visual, ModifiedResNet):
        return _resnet_forward_with_heatmap(visual, images, method)
    tower = _describe(visual)
    watched = list(tower.blocks) if method == "rollout" else [] if tower.readout == "pool" else [tower.blocks[-1]]
    pool_modules = [p for p, _ in tower.pools]
    capture = _InputCapture(watched + pool_modules)
    try:
        out = visual(images)
    finally:
        capture.remove()
    features = out[0] if isinstance(out, (tuple, list)) else out
    inputs = capture.inputs
    if any(x is None for x in inputs):
        raise RuntimeError("inverse-attention heatmap: a watched attention layer did not run during the forward pass")
    block_inputs, pool_inputs = inputs[: len(watched)], inputs[len(watched) :]
    gh, gw = images.shape[-2] // tower.patch_size[0], images.shape[-1] // tower.patch_size[1]
    n_tok = tower.num_prefix + gh * gw
    lens = [x.shape[0] if _is_seq_first(m) else x.shape[1] for x, m in zip(block_inputs, watched, strict=True)]
    expected = [n_tok] * len(lens)
    if pool_inputs:
        lens.append(pool_inputs[0].shape[1])
        expected.append(n_tok if tower.pool_sees_prefix else gh * gw)
    if lens != expected:
        raise RuntimeError(
            f"inverse-attention heatmap: token counts {lens} do not match the {gh}x{gw} patch grid of a "
            f"{images.shape[-2]}x{images.shape[-1]} input (+{tower.num_prefix} prefix tokens; patch dropout "
            "active? call visual.eval())"
        )
    with torch.no_grad():
        if tower.readout == "pool":
            r = _pool_readout(tower, pool_inputs)  # [B, T] over the pool's input tokens
            if not tower.pool_sees_prefix and tower.num_prefix:
                r = F.pad(r, (tower.num_prefix, 0))  # pool input excludes prefix tokens: back to trunk positions
        else:
            r = torch.zeros(images.shape[0], n_tok, device=images.device)
            if tower.readout == "tok":
                r[:, 0] = 1.0
            else:  # 'avg': the embedding is the mean of the patch tokens
                r[:, tower.num_prefix :] = 1.0 / (n_tok - tower.num_prefix)
        if method == "rollout":
            rollout: torch.Tensor | None = None
            for blk, x in zip(tower.blocks, block_inputs, strict=True):
                a = tower.block_probs(blk, x).mean(dim=1)  # [B, L, L]
                a = 0.5 * a + 0.5 * torch.eye(a.shape[-1], device=a.device, dtype=a.dtype)
                a = a / a.sum(dim=-1, keepdim=True)
                rollout = a if rollout is None else a @ rollout
            assert rollout is not None
            heat = (r.unsqueeze(1).to(rollout.dtype) @ rollout).squeeze(1)  # [B, L]
        elif tower.readout == "pool":
            heat = r  # the pool head is the last attention the embedding goes through
        else:
            a = tower.block_probs(tower.blocks[-1], block_inputs[-1]).mean(dim=1)  # [B, L, L]
            heat = (r.unsqueeze(1).to(a.dtype) @ a).squeeze(1)
        heat = heat[:, tower.num_prefix :].float()
        heat = heat / heat.sum(dim=-1, keepdim=True).clamp_min(1e-12)
    return features, heat.reshape(-1, gh, gw)


def attention_heatmap(visual: nn.Module, images: torch.Tensor, method: HeatmapMethod = "attention") -> torch.Tensor:
    """Heatmap [B, gh, gw] (sums to 1 over patches) of ``visual`` for preprocessed ``images`` [B, 3, S, S]."""
    return visual_forward_with_heatmap(visual, images, method)[1]


def upsample(heatmap: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of a patch-resolution heatmap to frame size: [B, gh, gw] -> [B, H, W] (or [gh, gw] -> [H, W])."""
    squeeze = heatmap.ndim == 2
    x = heatmap[None] if squeeze else heatmap
    y = F.interpolate(x[:, None].float(), size=(int(size[0]), int(size[1])), mode="bilinear", align_corners=False)
    return y[0, 0] if squeeze else y[:, 0]
