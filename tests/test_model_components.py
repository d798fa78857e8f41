"""Unit tests of the LSDO model components (paper Section III, Eq. 1-23, and impl=official).

Every numerical check compares the model with an independent reference written here from the
equation (explicit LayerNorms, matmuls and loops over texts/videos/frames), not with a second
call of the code under test. The head parameters are perturbed away from their identity
initialisation before the reference comparisons, so swapped projections (q <-> k, LN1 <-> LN2,
...) cannot hide behind identity matrices.

Specification: ../shared/papers/lsdo-tip2025.txt and ../shared/notes/official-implementation.md.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from tolerances import XPOOL_NAIVE_TOL, reduction_tol
from torch import nn

from lsdo.config import compose
from lsdo.errors import ConfigError, LSDOUserError
from lsdo.model import LSDOModel, TextFeatures, build_model
from lsdo.model.frame_lsdo import FrameObjectAttention
from lsdo.model.frame_proj import build_frame_proj
from lsdo.model.layers import sparsemax
from lsdo.model.text_lsdo import TextPrototypes
from lsdo.model.video_lsdo import AverageLSDO, SharedLSDO, SingleLSDO

D = 512  # embed_dim of model=tiny (the paper's d)
SOT, EOT = 49406, 49407  # CLIP BPE start / end-of-text ids
B, N = 3, 4  # videos, frames per video in the fast tests
ALPHA, GAMMA = 0.8, 0.8  # Eq. 15 and Eq. 14 defaults (paper IV-B.1)
CAPTIONS = ["a man is singing on a stage", "a red car drives fast down the road at night", "", "dog"]
AUTHORS_BANK = Path(__file__).resolve().parents[2] / "shared" / "data" / "msrvtt" / "lsdo_shared_bank_vitb32.json"
# A component against its hand-written reference computes the same float32 reductions over d in another order.
# TOL: one reduction's bound (tests/tolerances.py), relative to each value (rtol) and, for values near zero,
# at scale 1 (atol); every site using it measured at most 1/10 of it. Longer chains use chain_tol.
TOL = {"rtol": reduction_tol(torch.float32, D), "atol": reduction_tol(torch.float32, D)}
# Reductions in sequence from the frame features f_v to the paper's f_p / f_m: frame_proj, the video LSDO's FC
# and Norm, the frame attention's LayerNorms, q / k, logits, pooling, W'_o and Norm.
PAPER_VIDEO_STAGES = 9
# From the frames through the tiny CLIP ViT (patch embedding, two blocks of eight, LayerNorms, projection)
CLIP_STAGES = 20
FRAMES = torch.randn(B, N, 3, 64, 64, generator=torch.Generator().manual_seed(1))  # CLIP-normalised frames
F_V = torch.randn(B, N, D, generator=torch.Generator().manual_seed(2))  # synthetic f_v for the head-only tests
_CLIP_CACHE: dict = {}  # CLIP outputs, keyed by a fingerprint of the CLIP weights (every seed-0 model shares them)


# ----------------------------------------------------------------------------- helpers
def chain_tol(expected: torch.Tensor, stages: int) -> dict[str, float]:
    """assert_close's tolerances for ``stages`` float32 reductions over d in sequence, in another order than
    the reference's, at the magnitude of ``expected`` (tests/tolerances.py)."""
    return {"rtol": 0.0, "atol": reduction_tol(torch.float32, D, scale=expected.abs().max().item(), stages=stages)}


def make(*overrides: str, seed: int = 0) -> LSDOModel:
    """A fresh tiny model (random CLIP, seeded) for ``compose(["model=tiny", *overrides])``."""
    torch.manual_seed(seed)
    return build_model(compose(["model=tiny", *overrides]))


@torch.no_grad()
def perturb_heads(model: nn.Module, scale: float = 0.05, seed: int = 123) -> nn.Module:
    """Move every non-CLIP parameter away from its (identity / LayerNorm) initialisation."""
    g = torch.Generator().manual_seed(seed)
    for name, p in model.named_parameters():
        if not name.startswith("encoder."):
            p.add_(scale * torch.randn(p.shape, generator=g))
    return model


def write_bank(path: Path, m: int, dim: int = D, seed: int = 7, n_videos: int | None = None) -> Path:
    g = torch.Generator().manual_seed(seed)
    feats = torch.randn(m, dim, generator=g)
    videos = [f"video{i}" for i in range(m if n_videos is None else n_videos)]
    path.write_text(json.dumps({"videos": videos, "features": feats.tolist()}))
    return path


def bank_override(path: Path) -> str:
    return f"variant.bank_path='{path}'"


def layer_norm(x: torch.Tensor, mod: nn.LayerNorm) -> torch.Tensor:
    mean = x.mean(dim=-1, keepdim=True)
    var = ((x - mean) ** 2).mean(dim=-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + mod.eps) * mod.weight + mod.bias


def linear(x: torch.Tensor, mod: nn.Linear) -> torch.Tensor:
    return x @ mod.weight.T + mod.bias


def gelu(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * x * (1.0 + torch.erf(x / math.sqrt(2.0)))


def softmax(x: torch.Tensor, dim: int) -> torch.Tensor:
    e = torch.exp(x - x.amax(dim=dim, keepdim=True))
    return e / e.sum(dim=dim, keepdim=True)


def cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a * b).sum(-1) / (a.norm(dim=-1) * b.norm(dim=-1))


def ref_sparsemax(z: torch.Tensor) -> torch.Tensor:
    """Sparsemax of a 1-D vector (Martins & Astudillo 2016, Alg. 1), in float64 with a Python loop."""
    z = z.double()
    zs = sorted(z.tolist(), reverse=True)
    cum, k_max, cum_max = 0.0, 0, 0.0
    for k, value in enumerate(zs, start=1):
        cum += value
        if 1 + k * value > cum:
            k_max, cum_max = k, cum
    tau = (cum_max - 1) / k_max
    return torch.clamp(z - tau, min=0)


def ref_frames(model: LSDOModel, frames: torch.Tensor) -> torch.Tensor:
    """Eq. 1 with open_clip directly: [B, n, 3, H, W] -> f_v [B, n, d]."""
    b, n = frames.shape[:2]
    return model.encoder.clip.encode_image(frames.reshape(b * n, *frames.shape[2:])).reshape(b, n, -1)


def ref_text(model: LSDOModel, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Eq. 3 with open_clip directly: f_t (its own encode_text), f_w (every position), word mask."""
    clip = model.encoder.clip
    seen = {}
    hook = clip.ln_final.register_forward_hook(lambda mod, inp, out: seen.setdefault("x", out))
    try:
        f_t = clip.encode_text(tokens)
    finally:
        hook.remove()
    f_w = seen["x"] @ clip.text_projection
    mask = torch.zeros(tokens.shape, dtype=torch.bool)
    for t, row in enumerate(tokens.tolist()):
        end = row.index(EOT)
        mask[t, 1:end] = True  # words: after [SOT], before [EOT]
    return f_t, f_w, mask


def _clip_cache(model: LSDOModel) -> dict:
    key = tuple(tuple(p.detach().flatten()[:8].tolist()) for p in model.encoder.clip.parameters())
    return _CLIP_CACHE.setdefault(key, {})


def clip_video(model: LSDOModel) -> torch.Tensor:
    """ref_frames(model, FRAMES), computed once per set of CLIP weights."""
    cache = _clip_cache(model)
    if "f_v" not in cache:
        with torch.no_grad():
            cache["f_v"] = ref_frames(model, FRAMES)
    return cache["f_v"]


def clip_text(model: LSDOModel) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(tokens, *ref_text(model, tokens)) for CAPTIONS, computed once per set of CLIP weights."""
    cache = _clip_cache(model)
    if "text" not in cache:
        tokens = model.tokenize(CAPTIONS)
        with torch.no_grad():
            cache["text"] = (tokens, *ref_text(model, tokens))
    return cache["text"]


def ref_prototype_weights(tp: nn.Module, f_w: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """W_p [T, K, L]: sparsemax over the word positions of FC2(GELU(FC1(f_w)))."""
    logits = linear(gelu(linear(f_w, tp.fc1)), tp.fc2)  # [T, L, K]
    t_count, length, k_count = logits.shape
    w = torch.zeros(t_count, k_count, length, dtype=f_w.dtype)
    for t in range(t_count):
        idx = mask[t].nonzero().flatten()
        for k in range(k_count):
            if len(idx):
                w[t, k, idx] = ref_sparsemax(logits[t, idx, k]).to(f_w.dtype)
    return w


def ref_text_features(model: LSDOModel, gamma: float = GAMMA) -> torch.Tensor:
    """Eq. 13-14 for CAPTIONS: f_r = gamma f_t + (1 - gamma) max_K(W_p f_w)."""
    tokens, f_t, f_w, mask = clip_text(model)
    w_p = ref_prototype_weights(model.text_lsdo, f_w, mask)
    f_o = torch.stack([w_p[t] @ f_w[t] for t in range(len(tokens))])  # [T, K, d]
    return gamma * f_t + (1 - gamma) * f_o.max(dim=1).values


def ref_video_lsdo(model: LSDOModel, f_v: torch.Tensor) -> torch.Tensor:
    """Eq. 4-7 (impl=paper): f_s [B|1, r, d]."""
    vl = model.video_lsdo
    if model.variant == "shared":
        return vl.bank[None]
    avg_mod = vl if model.variant == "average" else vl.average
    per_frame = layer_norm(linear(f_v, avg_mod.fc), avg_mod.norm)  # Norm(FC(f_v^i))
    f_avg = per_frame.mean(dim=1, keepdim=True)  # Eq. 5
    if model.variant == "average":
        return f_avg
    n = f_v.shape[1]
    k = math.ceil(n * vl.select_frame / vl.num_segments) - 1  # the 6/12 point: 6th of 12, 32nd of 64 (0-based)
    f_sub = per_frame[:, k : k + 1] - f_avg  # Eq. 6
    return torch.where(f_sub <= vl.theta, f_sub, torch.zeros_like(f_sub))  # Eq. 7


def ref_frame_attention(fa: nn.Module, f_vp: torch.Tensor, f_s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. 8-12 as documented in lsdo/model/frame_lsdo.py, in the block's form (``fa.mode``).

    bounded: c_i = Norm(softmax_keys(l_i) v W'_o), w = mean_r softmax_frames(l), f_p[i] = (w_i / max w) c_i;
    rescaled: softmax over frames, f_p = (n/r) a Norm(v W'_o).
    """
    b_count, n, _ = f_vp.shape
    r = f_s.shape[1]
    f_p = torch.zeros_like(f_vp)
    weights = torch.zeros(b_count, n)
    for b in range(b_count):
        s = f_s[b if f_s.shape[0] > 1 else 0]  # [r, d]
        q = linear(layer_norm(f_vp[b], fa.norm_frames), fa.q)  # [n, d]   Eq. 8
        k = linear(layer_norm(s, fa.norm_lsdo), fa.k)  # [r, d]   Eq. 9
        v = linear(layer_norm(s, fa.norm_lsdo), fa.v)  # [r, d]   Eq. 10
        logits = q @ k.T / math.sqrt(q.shape[-1])  # [n, r]
        a = softmax(logits, dim=0)  # [n, r]   softmax over frames (Fig. 8's weights)
        if fa.mode == "bounded":
            content = layer_norm(linear(softmax(logits, dim=1) @ v, fa.out), fa.norm_out)  # [n, d] Eq. 11-12
            weights[b] = a.mean(dim=1)
            f_p[b] = (weights[b] / weights[b].max())[:, None] * content
            continue
        value = layer_norm(linear(v, fa.out), fa.norm_out)  # [r, d]
        for i in range(n):
            for j in range(r):
                f_p[b, i] += (n / r) * a[i, j] * value[j]
        weights[b] = a.mean(dim=1)
    return f_p, weights


def ref_xpool(xp: nn.Module, query: torch.Tensor, target: torch.Tensor, f_m: torch.Tensor):
    """Eq. 16-20 and the cosine, one (text, video) pair at a time: -> pooled [T, B, d], sims [T, B]."""
    t_count, b_count = query.shape[0], f_m.shape[0]
    pooled = torch.zeros(t_count, b_count, query.shape[1])
    sims = torch.zeros(t_count, b_count)
    keys = [linear(layer_norm(f_m[b], xp.norm_in), xp.k) for b in range(b_count)]  # Eq. 17, [n, d_a] each
    values = [linear(layer_norm(f_m[b], xp.norm_in), xp.v) for b in range(b_count)]  # Eq. 18
    for t in range(t_count):
        q = linear(layer_norm(query[t], xp.norm_in), xp.q)  # Eq. 16
        for b in range(b_count):
            k, v = keys[b], values[b]
            att = softmax(k @ q / math.sqrt(q.shape[0]), dim=0)  # Eq. 19, [n]
            pooled[t, b] = layer_norm(linear(att @ v, xp.out), xp.norm_out)  # Eq. 20
            sims[t, b] = cosine(target[t], pooled[t, b])
    return pooled, sims


def ref_paper_video(model: LSDOModel, f_v: torch.Tensor, alpha: float = ALPHA) -> dict[str, torch.Tensor]:
    """The impl=paper video branch from f_v (frame_proj=fc): Eq. 2, 4-12, 15."""
    f_vp = linear(f_v, model.frame_proj)  # Eq. 2
    f_s = ref_video_lsdo(model, f_v)
    f_p, weights = ref_frame_attention(model.frame_lsdo, f_vp, f_s)
    return {"f_vp": f_vp, "f_s": f_s, "f_p": f_p, "weights": weights, "f_m": alpha * f_vp + (1 - alpha) * f_p}


def ref_official(model: LSDOModel, vf: torch.Tensor, t_raw: torch.Tensor) -> dict[str, torch.Tensor]:
    """The released code's forward pass, from ../shared/notes/official-implementation.md.

    vf: the raw CLIP image embeddings [B, n, d] (no FC); t_raw: the raw CLIP [EOS] features [T, d].
    """
    b_count, n, d = vf.shape
    sc = model.scene
    if model.variant == "average":
        s = vf.mean(dim=1, keepdim=True)  # [B, 1, d]
    else:
        s = model.video_lsdo.bank[None]  # [1, m, d]
    p = torch.zeros_like(vf)
    for b in range(b_count):
        sb = s[b if s.shape[0] > 1 else 0]
        q = linear(layer_norm(vf[b], sc.norm_frames), sc.q)  # [n, d]
        k = linear(layer_norm(sb, sc.norm_s), sc.k)  # [r, d]
        v = linear(layer_norm(sb, sc.norm_s), sc.v)
        a = softmax(q @ k.T / math.sqrt(d), dim=0)  # over the frame axis
        o = a @ v  # [n, d]
        p[b] = o + linear(o, sc.out)  # no final LayerNorm; dropout off in eval
    w = softmax(model.official_fusion.logits, dim=0)
    fused = w[0] * p + w[1] * vf
    xp = model.xpool
    sims = torch.zeros(len(t_raw), b_count)
    keys = [linear(layer_norm(fused[b], xp.norm1), xp.k) for b in range(b_count)]  # LN1 shared with the text
    values = [linear(layer_norm(fused[b], xp.norm1), xp.v) for b in range(b_count)]
    for t in range(len(t_raw)):
        q = linear(layer_norm(t_raw[t], xp.norm1), xp.q)
        for b in range(b_count):
            att = softmax(keys[b] @ q / math.sqrt(d), dim=0)  # over the n frames
            a = layer_norm(linear(att @ values[b], xp.out), xp.norm2)
            out = layer_norm(a + linear(a, xp.linear_proj), xp.norm3)
            sims[t, b] = cosine(t_raw[t], out)
    return {"vf": vf, "s": s, "p": p, "fused": fused, "t_raw": t_raw, "sims": sims}


def info_nce(model: LSDOModel, sims: torch.Tensor) -> torch.Tensor:
    """Symmetric cross entropy of Eq. 21-23 on sims * lambda, lambda = exp(logit_scale)."""
    logits = sims * model.logit_scale.exp()
    labels = torch.arange(sims.shape[0])
    return F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)


# ----------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def bank_file(tmp_path_factory) -> Path:
    return write_bank(tmp_path_factory.mktemp("bank") / "bank.json", m=20)


@pytest.fixture(scope="module")
def models():
    """A factory of eval-mode models shared by the read-only tests of this module."""
    cache: dict = {}

    def get(*overrides: str, perturbed: bool = False) -> LSDOModel:
        if not any(o.startswith("impl=") for o in overrides):
            overrides = (*overrides, "impl=paper")
        key = (tuple(sorted(overrides)), perturbed)  # the overrides set distinct keys
        if key not in cache:
            model = make(*overrides)
            if perturbed:
                perturb_heads(model)
            cache[key] = model.eval()
        return cache[key]

    yield get
    cache.clear()


def config_overrides(variant: str, impl: str, bank: Path) -> tuple[str, ...]:
    extra = ("variant.init=file", bank_override(bank)) if variant == "shared" else ()
    return (f"variant={variant}", f"impl={impl}", *extra)


VARIANTS = [
    ("baseline", "paper"),
    ("shared", "paper"),
    ("average", "paper"),
    ("single", "paper"),
    ("average", "official"),
    ("shared", "official"),
]


# ----------------------------------------------------------------------------- 1. public API
@pytest.mark.parametrize(("variant", "impl"), VARIANTS)
def test_public_api_shapes_ranges_and_chunking(models, bank_file, variant, impl):
    model = models(*config_overrides(variant, impl, bank_file))
    tokens = model.tokenize(CAPTIONS)
    assert tokens.dtype == torch.long and tokens.shape == (len(CAPTIONS), 32)
    with torch.no_grad():
        text = model.encode_text(tokens)
        video, det = model.encode_video(FRAMES, return_details=True)
        sims = model.similarity(text, video)
        assert isinstance(text, TextFeatures) and len(text) == len(CAPTIONS)
        for field in (text.query, text.target, text.eos):
            assert field.shape == (len(CAPTIONS), D)
        assert video.shape == (B, N, D) and det["f_v"].shape == (B, N, D)
        assert sims.shape == (len(CAPTIONS), B)
        assert torch.isfinite(sims).all()
        assert sims.abs().max() <= 1 + 1e-6
        # chunked X-Pool == unchunked, for an even and an uneven chunking (other batch shapes: another order)
        close = {"rtol": 0.0, "atol": XPOOL_NAIVE_TOL}
        torch.testing.assert_close(model.similarity(text, video, chunk_size=1), sims, **close)
        torch.testing.assert_close(model.similarity(text, video, chunk_size=3), sims, **close)
        # encode_video takes no text and is per video: a sub-batch gives the same features, and a
        # (text, video) score does not depend on the other texts and videos of the batch
        sub = model.video_from_features(det["f_v"][1:])
        torch.testing.assert_close(sub, video[1:], **chain_tol(video[1:], PAPER_VIDEO_STAGES))
        torch.testing.assert_close(model.similarity(text[1:2], video[2:]), sims[1:2, 2:], **close)
        # text.eos is always the raw CLIP [EOS] feature
        torch.testing.assert_close(text.eos, clip_text(model)[1], **TOL)
        # TextFeatures can be split and re-assembled (chunked encoding of a caption set)
        joined = TextFeatures.cat([text[:1], text[1:]])
        for a, b in ((joined.query, text.query), (joined.target, text.target), (joined.eos, text.eos)):
            assert torch.equal(a, b)


def test_tokenize_truncates_long_captions_keeping_eos(models):
    model = models("variant=average")
    tokens = model.tokenize([" ".join(["word"] * 100), "a cat"])
    assert tokens.shape == (2, 32)
    assert tokens[0, 0] == SOT and tokens[0, -1] == EOT  # truncated, [EOS] kept as the last token
    assert tokens[1, 0] == SOT and tokens[1, 3] == EOT and tokens[1, 4:].eq(0).all()
    with torch.no_grad():
        _, _, mask = model.encoder.encode_text(tokens)
    assert mask[0].sum() == 30 and not mask[0, 0] and not mask[0, -1]
    assert mask[1].tolist()[:5] == [False, True, True, False, False]


# ----------------------------------------------------------------------------- 2. identity init
def _square_linears(model: nn.Module) -> dict[str, nn.Linear]:
    return {
        name: mod
        for name, mod in model.named_modules()
        if not name.startswith("encoder") and isinstance(mod, nn.Linear) and mod.in_features == mod.out_features
    }


XPOOL = {"xpool.q", "xpool.k", "xpool.v", "xpool.out"}
PAPER_HEADS = XPOOL | {"frame_lsdo.q", "frame_lsdo.k", "frame_lsdo.v", "frame_lsdo.out", "frame_proj", "text_lsdo.fc1"}
OFFICIAL_HEADS = XPOOL | {"scene.q", "scene.k", "scene.v", "scene.out", "xpool.linear_proj"}


@pytest.mark.parametrize(
    ("variant", "impl", "expected"),
    [
        ("average", "paper", PAPER_HEADS | {"video_lsdo.fc"}),
        ("single", "paper", PAPER_HEADS | {"video_lsdo.average.fc"}),
        ("shared", "paper", PAPER_HEADS),
        ("baseline", "paper", XPOOL | {"frame_proj"}),
        ("average", "official", OFFICIAL_HEADS),
        ("shared", "official", OFFICIAL_HEADS),
    ],
)
def test_square_linear_layers_start_as_identity(models, bank_file, variant, impl, expected):
    model = models(*config_overrides(variant, impl, bank_file))
    layers = _square_linears(model)
    assert set(layers) == expected
    for name, layer in layers.items():
        assert torch.equal(layer.weight, torch.eye(D)), name
        assert layer.bias is not None and torch.equal(layer.bias, torch.zeros(D)), name
    others = [n for n, m in model.named_modules() if not n.startswith("encoder") and isinstance(m, nn.Linear)]
    non_square = sorted(set(others) - set(layers))
    assert non_square == (["text_lsdo.fc2"] if model.text_lsdo is not None else [])
    if model.text_lsdo is not None:
        assert model.text_lsdo.fc2.weight.shape == (20, D)  # d -> K = 20 prototype scores


@pytest.mark.parametrize("kind", ["fc", "bottleneck", "inverted_bottleneck"])
def test_frame_proj_variants_output_their_input_at_init(models, kind):
    torch.manual_seed(0)
    proj = build_frame_proj(kind, D)
    for mode in (True, False):  # BatchNorm of the bottleneck in train and eval mode
        proj.train(mode)
        with torch.no_grad():
            torch.testing.assert_close(proj(F_V), F_V, rtol=0, atol=1e-6)
    model = models(*(("variant=average",) if kind == "fc" else ("variant=average", f"model.frame_proj={kind}")))
    with torch.no_grad():
        torch.testing.assert_close(model.frame_proj(F_V), F_V, rtol=0, atol=1e-6)
        f_m, det = model.video_from_features(F_V, return_details=True)
    # f'_v = f_v at init, so Eq. 15 reads f_m = alpha f_v + (1 - alpha) f_p
    torch.testing.assert_close(f_m, ALPHA * F_V + (1 - ALPHA) * det["f_p"], **TOL)


def test_unknown_frame_proj_raises_config_error():
    with pytest.raises(ConfigError, match=r"model\.frame_proj"):
        build_frame_proj("mlp", D)


# ----------------------------------------------------------------------------- 3. video-level LSDO
def test_average_lsdo_eq5_and_eq1(models):
    model = models("variant=average", perturbed=True)
    with torch.no_grad():
        f_m, det = model.encode_video(FRAMES, return_details=True)
    f_v = clip_video(model)
    torch.testing.assert_close(det["f_v"], f_v, **TOL)  # Eq. 1: open_clip's image embeddings
    vl = model.video_lsdo
    expected = layer_norm(linear(f_v, vl.fc), vl.norm).mean(dim=1, keepdim=True)  # Eq. 5
    assert det["f_s"].shape == (B, 1, D)
    torch.testing.assert_close(det["f_s"], expected, **TOL)
    with torch.no_grad():
        torch.testing.assert_close(vl(F_V), layer_norm(linear(F_V, vl.fc), vl.norm).mean(1, keepdim=True), **TOL)
    ref_f_m = ref_paper_video(model, f_v)["f_m"]
    torch.testing.assert_close(f_m, ref_f_m, **chain_tol(ref_f_m, PAPER_VIDEO_STAGES))


@pytest.mark.parametrize(("learnable", "train"), [(True, False), (True, True), (False, True)])
def test_single_lsdo_hard_threshold_is_exact(learnable, train):
    """Eq. 6-7: f_sub entries > theta are exactly 0 and entries <= theta are kept bit for bit."""
    torch.manual_seed(0)
    vl = perturb_heads(SingleLSDO(D, theta=0.9, learnable_threshold=learnable)).train(train)
    k = vl.frame_index(N)
    # Eq. 6 reference (independent LayerNorm/FC), then the model's own f_sub for the bitwise check
    per_ref = layer_norm(linear(F_V, vl.average.fc), vl.average.norm)
    f_sub_ref = per_ref[:, k : k + 1] - per_ref.mean(dim=1, keepdim=True)
    with torch.no_grad():
        per = vl.average.per_frame(F_V)
        f_sub = per[:, k : k + 1] - per.mean(dim=1, keepdim=True)
        vl.theta.fill_(f_sub.median())  # half of the entries on each side, one exactly at theta
    torch.testing.assert_close(f_sub, f_sub_ref, **TOL)
    out = vl(F_V)
    assert out.shape == (B, 1, D)
    theta = vl.theta.detach()
    above = f_sub > theta
    assert above.sum() > 100 and (~above).sum() > 100
    assert torch.equal(out[above], torch.zeros(int(above.sum())))  # exactly 0 above theta
    assert (out[f_sub == theta] == theta).all()  # the boundary entry is kept (<= theta)
    kept_equal = out[~above] == f_sub[~above]
    assert kept_equal.all(), (
        f"{int((~kept_equal).sum())} of {int((~above).sum())} entries <= theta are not kept exactly "
        f"(max abs error {(out[~above] - f_sub[~above]).abs().max():.3g})"
    )


def test_single_theta_is_learnable_parameter_or_buffer(models):
    theta = models("variant=single").video_lsdo.theta
    assert isinstance(theta, nn.Parameter) and theta.requires_grad
    assert float(theta) == pytest.approx(0.9)
    vl = SingleLSDO(D, theta=0.0, learnable_threshold=True).train()  # F_V gives |f_sub| ~ 1
    vl(F_V).sum().backward()
    assert vl.theta.grad is not None and vl.theta.grad.abs() > 0

    frozen = make("variant=single", "variant.learnable_threshold=false", "variant.theta=0.5").train()
    assert "video_lsdo.theta" not in dict(frozen.named_parameters())
    buffers = dict(frozen.named_buffers())
    assert "video_lsdo.theta" in buffers and not buffers["video_lsdo.theta"].requires_grad
    assert float(buffers["video_lsdo.theta"]) == pytest.approx(0.5)
    assert "video_lsdo.theta" in frozen.state_dict()


def test_single_frame_index(models):
    vl = models("variant=single").video_lsdo
    assert (vl.select_frame, vl.num_segments) == (6, 12)
    assert vl.frame_index(12) == 5  # the 6th of 12 segment-sampled frames
    assert vl.frame_index(4) == 1  # the 2nd of 4 (6/12 of the video)
    assert vl.frame_index(64) == 31  # DiDeMo: the 32nd of 64 segments (paper IV-B.1)
    assert SingleLSDO(D, select_frame=12, num_segments=12).frame_index(12) == 11
    assert SingleLSDO(D, select_frame=1, num_segments=12).frame_index(12) == 0
    with pytest.raises(ConfigError, match=r"variant\.select_frame"):
        SingleLSDO(D, select_frame=13, num_segments=12)


# ----------------------------------------------------------------------------- 4. shared bank
@pytest.mark.parametrize("init", ["zero", "unique", "file"])
def test_shared_bank_init(tmp_path, init):
    m = 5
    path = write_bank(tmp_path / "bank.json", m=m)
    lsdo = SharedLSDO(D, m=m, init=init, bank_path=str(path) if init == "file" else None)
    expected = {
        "zero": torch.zeros(m, D),
        "unique": torch.eye(m, D),
        "file": torch.tensor(json.loads(path.read_text())["features"]),
    }[init]
    assert isinstance(lsdo.bank, nn.Parameter) and lsdo.bank.requires_grad  # learnable in impl=paper
    assert torch.equal(lsdo.bank.detach(), expected)
    assert bool(lsdo.initialised)
    f_s = lsdo(F_V)
    assert f_s.shape == (1, m, D)
    torch.testing.assert_close(f_s[0], expected)


def test_shared_bank_from_config(models, bank_file):
    model = models(*config_overrides("shared", "paper", bank_file))
    bank = model.video_lsdo.bank
    assert isinstance(bank, nn.Parameter) and bank.requires_grad
    assert torch.equal(bank.detach(), torch.tensor(json.loads(bank_file.read_text())["features"]))
    assert not model.needs_bank_init()
    with torch.no_grad():
        _, det = model.video_from_features(F_V, return_details=True)
    torch.testing.assert_close(det["f_s"], bank.detach()[None])


def test_shared_bank_file_errors(tmp_path):
    missing = tmp_path / "nope" / "bank.json"
    with pytest.raises(LSDOUserError, match=re.escape(str(missing))):  # through the config
        make("variant=shared", "variant.init=file", bank_override(missing))
    wrong_dim = write_bank(tmp_path / "wrong_dim.json", m=20, dim=256)
    wrong_m = write_bank(tmp_path / "wrong_m.json", m=7)
    wrong_ids = write_bank(tmp_path / "wrong_ids.json", m=20, n_videos=3)
    garbage = tmp_path / "garbage.json"
    garbage.write_text("{not json")
    no_features = tmp_path / "no_features.json"
    no_features.write_text(json.dumps({"videos": ["a"]}))
    for bad in (wrong_dim, wrong_m, wrong_ids, garbage, no_features):
        with pytest.raises(LSDOUserError, match=re.escape(str(bad))):
            SharedLSDO(D, m=20, init="file", bank_path=str(bad))
    with pytest.raises(ConfigError, match=r"variant\.bank_path"):
        SharedLSDO(D, m=20, init="file", bank_path=None)
    with pytest.raises(ConfigError, match=r"variant\.init"):
        SharedLSDO(D, m=20, init="random")


def test_shared_bank_feature_init():
    m = 3
    model = make("variant=shared", f"variant.m={m}", "variant.init=feature").eval()
    assert model.needs_bank_init()
    bank_videos = torch.randn(m, 2, 3, 64, 64, generator=torch.Generator().manual_seed(5))
    model.init_shared_bank(bank_videos)
    assert not model.needs_bank_init()
    with torch.no_grad():
        expected = ref_frames(model, bank_videos).mean(dim=1)  # mean over each video's frames
    torch.testing.assert_close(model.video_lsdo.bank.detach(), expected, **TOL)
    # the "initialised" flag travels with the checkpoint: a resumed run never re-initialises
    fresh = SharedLSDO(D, m=m, init="feature")
    assert not bool(fresh.initialised)
    fresh.load_state_dict(model.video_lsdo.state_dict())
    assert bool(fresh.initialised)
    torch.testing.assert_close(fresh.bank.detach(), expected, **TOL)


def test_needs_bank_init_is_false_without_a_feature_bank(models):
    assert not models("variant=average").needs_bank_init()
    assert not models("variant=baseline").needs_bank_init()


@pytest.mark.skipif(not AUTHORS_BANK.is_file(), reason="../shared data not available")
def test_authors_shared_bank_file_loads():
    bank = SharedLSDO(D, m=20, init="file", bank_path=str(AUTHORS_BANK)).bank.detach()
    data = json.loads(AUTHORS_BANK.read_text())
    assert len(data["videos"]) == 20
    assert bank.shape == (20, D)
    assert torch.equal(bank, torch.tensor(data["features"], dtype=torch.float32))


# ----------------------------------------------------------------------------- 5. frame-level attention
@pytest.mark.parametrize("variant", ["average", "shared", "single"])
def test_frame_attention_eq8_12_against_reference(models, bank_file, variant):
    model = models(*config_overrides(variant, "paper", bank_file), perturbed=True)
    with torch.no_grad():
        _, det = model.video_from_features(F_V, return_details=True)
        ref = ref_paper_video(model, F_V)
    torch.testing.assert_close(det["f_s"], ref["f_s"], **TOL)
    torch.testing.assert_close(det["frame_weights"], ref["weights"], **TOL)
    torch.testing.assert_close(det["f_p"], ref["f_p"], **chain_tol(ref["f_p"], PAPER_VIDEO_STAGES))


def test_frame_weights_sum_to_one_and_scale_f_p(models, bank_file):
    model = models("variant=average", perturbed=True)  # r = 1
    with torch.no_grad():
        _, det = model.video_from_features(F_V, return_details=True)
    w, f_p = det["frame_weights"], det["f_p"]
    assert w.shape == (B, N) and (w > 0).all()
    torch.testing.assert_close(w.sum(dim=1), torch.ones(B))
    assert (w.amax(dim=1) - w.amin(dim=1) > 1e-3).all(), "frames should get different weights"
    # f_p[i] is proportional to frame i's weight: f_p[i] / w[i] is the same vector for every frame
    ratio = f_p / w[..., None]  # [B, n, d]
    torch.testing.assert_close(ratio, ratio[:, :1].expand_as(ratio), rtol=1e-4, atol=1e-4)
    for b in range(B):
        i, j = int(w[b].argmax()), int(w[b].argmin())
        assert not torch.allclose(f_p[b, i], f_p[b, j], atol=1e-3)

    shared = models(*config_overrides("shared", "paper", bank_file), perturbed=True)  # r = m = 20
    with torch.no_grad():
        att = shared.frame_lsdo.attention(shared.frame_proj(F_V), shared.video_lsdo(F_V))
        _, det = shared.video_from_features(F_V, return_details=True)
    assert att.shape == (B, N, 20)
    torch.testing.assert_close(att.sum(dim=1), torch.ones(B, 20))  # softmax over the frame axis
    assert det["frame_weights"].shape == (B, N)
    torch.testing.assert_close(det["frame_weights"].sum(dim=1), torch.ones(B))


# ----------------------------------------------------------------------------- 6. text prototypes
def test_text_encoder_eq3_matches_open_clip(models):
    model = models("variant=average")
    tokens, r_t, r_w, r_mask = clip_text(model)
    with torch.no_grad():
        f_t, f_w, mask = model.encoder.encode_text(tokens)
    torch.testing.assert_close(f_t, r_t, **TOL)
    torch.testing.assert_close(f_w, r_w, **TOL)
    assert torch.equal(mask, r_mask)
    assert mask[2].sum() == 0  # the empty caption has no word token


def test_prototype_weights_are_sparse_simplex_on_words(models):
    torch.manual_seed(0)
    tp = TextPrototypes(D, num_prototypes=20, gamma=GAMMA)
    with torch.no_grad():  # spread the logits so that sparsemax must cut words off
        tp.fc2.weight.copy_(torch.randn(tp.fc2.weight.shape, generator=torch.Generator().manual_seed(3)) * 0.5)
    _, _, f_w, mask = clip_text(models("variant=average"))
    with torch.no_grad():
        w_p = tp.weights(f_w, mask)
    ref = ref_prototype_weights(tp, f_w, mask)
    assert w_p.shape == (len(CAPTIONS), 20, 32)
    assert (w_p >= 0).all()
    words = mask[:, None, :].expand_as(w_p)
    assert torch.equal(w_p[~words], torch.zeros(int((~words).sum())))  # padding, [SOT], [EOT]: exactly 0
    sums = w_p.sum(dim=-1)  # [T, K]
    has_words = mask.any(dim=1)
    torch.testing.assert_close(sums[has_words], torch.ones(int(has_words.sum()), 20))
    assert torch.equal(sums[~has_words], torch.zeros(int((~has_words).sum()), 20))
    assert (w_p[words] == 0).any(), "sparsemax should give some words exactly 0"
    torch.testing.assert_close(w_p, ref, **chain_tol(ref, 3))  # fc1, fc2 and sparsemax's cumulative sum


def test_text_prototypes_eq13_14_against_reference(models):
    model = models("variant=average", perturbed=True)
    tokens, f_t, _, _ = clip_text(model)
    with torch.no_grad():
        text = model.encode_text(tokens)
    f_r = ref_text_features(model)
    torch.testing.assert_close(text.query, f_r, **TOL)
    torch.testing.assert_close(text.target, f_r, **TOL)
    torch.testing.assert_close(text.eos, f_t, **TOL)
    assert not torch.allclose(text.query[:2], text.eos[:2])


def test_gamma_and_alpha_overrides():
    model = perturb_heads(make("variant=average", "model.gamma=0.6", "model.alpha=0.5")).eval()
    tokens = clip_text(model)[0]
    with torch.no_grad():
        torch.testing.assert_close(model.encode_text(tokens).query, ref_text_features(model, gamma=0.6), **TOL)
        f_m, det = model.video_from_features(F_V, return_details=True)
    torch.testing.assert_close(f_m, 0.5 * linear(F_V, model.frame_proj) + 0.5 * det["f_p"], **TOL)


def test_empty_caption_gives_gamma_f_t(models):
    model = models("variant=average", perturbed=True)
    tokens = model.tokenize([""])
    with torch.no_grad():
        text = model.encode_text(tokens)
        f_t = model.encoder.clip.encode_text(tokens)
    assert torch.isfinite(text.query).all()
    torch.testing.assert_close(text.query, GAMMA * f_t, **TOL)


def test_sparsemax_matches_reference_and_kkt():
    g = torch.Generator().manual_seed(11)
    logits = torch.randn(6, 9, generator=g) * torch.tensor([0.1, 1.0, 3.0, 10.0, 1.0, 1.0])[:, None]
    logits[4] = torch.tensor([2.0, 2.0, 2.0, -1.0, 0.5, 2.0, 2.0, 0.0, 1.0])  # ties
    mask = torch.rand(6, 9, generator=g) > 0.3
    mask[0] = True
    mask[5] = False  # nothing allowed -> all zeros, no NaN
    mask[3] = False
    mask[3, 2] = True  # one allowed position -> weight 1
    logits.requires_grad_(True)
    out = sparsemax(logits, mask, dim=-1)
    assert torch.isfinite(out).all() and (out >= 0).all()
    assert torch.equal(out[~mask], torch.zeros(int((~mask).sum())))
    assert torch.equal(out[5], torch.zeros(9))
    assert out[3, 2] == 1
    for row in (0, 1, 2, 4):
        idx = mask[row].nonzero().flatten()
        ref = ref_sparsemax(logits[row, idx].detach())
        torch.testing.assert_close(out[row, idx].double(), ref, rtol=1e-5, atol=1e-6)
        # KKT: out = max(z - tau, 0) with one tau for the row, and sum(out) = 1
        z, p = logits[row, idx].detach().double(), out[row, idx].detach().double()
        support = p > 0
        tau = (z[support] - p[support]).mean()
        torch.testing.assert_close(p, torch.clamp(z - tau, min=0), rtol=0, atol=1e-5)
        assert p.sum().item() == pytest.approx(1.0, abs=1e-5)
    assert (out[2][mask[2]] == 0).any()  # spread logits -> exact zeros
    torch.testing.assert_close(sparsemax(logits.T, mask.T, dim=0), out.T)  # along another dim
    (out * torch.randn(out.shape, generator=g)).sum().backward()
    assert torch.isfinite(logits.grad).all()


# ----------------------------------------------------------------------------- 7. X-Pool and fusion
def test_xpool_eq16_20_and_fusion_eq15(models):
    model = models("variant=average", perturbed=True)
    f_r = ref_text_features(model)
    with torch.no_grad():
        f_m, det = model.video_from_features(F_V, return_details=True)
        pooled = model.xpool(f_r, f_m)
        sims = model.similarity(TextFeatures(f_r, f_r, f_r), f_m)
    ref_pooled, ref_sims = ref_xpool(model.xpool, f_r, f_r, f_m)
    assert pooled.shape == (len(CAPTIONS), B, D)
    # LayerNorm, q / k, logits, pooling, W_out, LayerNorm; the cosine adds its norm and dot product
    torch.testing.assert_close(pooled, ref_pooled, **chain_tol(ref_pooled, 6))
    torch.testing.assert_close(sims, ref_sims, rtol=0, atol=XPOOL_NAIVE_TOL)
    f_vp = linear(F_V, model.frame_proj)
    torch.testing.assert_close(f_m, ALPHA * f_vp + (1 - ALPHA) * det["f_p"], **TOL)  # Eq. 15


@pytest.mark.parametrize("variant", ["average", "shared", "single"])
def test_paper_full_similarity_against_reference(models, bank_file, variant):
    model = models(*config_overrides(variant, "paper", bank_file), perturbed=True)
    tokens = clip_text(model)[0]
    with torch.no_grad():
        sims = model.similarity(model.encode_text(tokens), model.encode_video(FRAMES))
    f_r = ref_text_features(model)
    f_m = ref_paper_video(model, clip_video(model))["f_m"]
    _, ref_sims = ref_xpool(model.xpool, f_r, f_r, f_m)
    # cosines (scale 1) from the frames and tokens: CLIP, the video heads, the text prototypes' few, X-Pool's 8
    stages = CLIP_STAGES + PAPER_VIDEO_STAGES + 4 + 8
    torch.testing.assert_close(sims, ref_sims, rtol=0, atol=reduction_tol(torch.float32, D, stages=stages))


# ----------------------------------------------------------------------------- 8. gradients
def _head_loss(model: LSDOModel) -> torch.Tensor:
    """The loss from cached CLIP features, so that only the heads are differentiated."""
    tokens, f_t, f_w, mask = clip_text(model)
    idx = [0, 1, 3]  # B captions with words
    if model.text_lsdo is None:
        text = TextFeatures(f_t[idx], f_t[idx], f_t[idx])
    else:
        f_r = model.text_lsdo(f_t[idx], f_w[idx], mask[idx])
        text = TextFeatures(f_r, f_r, f_t[idx])
    return info_nce(model, model.similarity(text, model.video_from_features(F_V)))


def _backward(model: LSDOModel) -> dict[str, torch.Tensor | None]:
    """Gradients of the loss (train mode) for every parameter; the model is left as found."""
    model.train()
    try:
        _head_loss(model).backward()
        return {name: p.grad for name, p in model.named_parameters()}
    finally:
        model.eval()
        model.zero_grad(set_to_none=True)


def test_logit_scale_is_clips_and_is_clamped():
    model = make("variant=baseline")
    assert model.logit_scale is model.encoder.clip.logit_scale and model.logit_scale.requires_grad
    assert float(model.logit_scale) == pytest.approx(math.log(1 / 0.07), rel=1e-6)  # CLIP's initial lambda
    with torch.no_grad():
        model.logit_scale.fill_(6.0)
    model.clamp_logit_scale()
    assert float(model.logit_scale) == pytest.approx(math.log(100.0))  # lambda <= 100
    with torch.no_grad():
        model.logit_scale.fill_(1.0)
    model.clamp_logit_scale()
    assert float(model.logit_scale) == 1.0


def test_gradients_reach_lsdo_parameters(models, bank_file):
    single = models("variant=single", perturbed=True)
    theta = float(single.video_lsdo.theta)
    with torch.no_grad():
        single.video_lsdo.theta.fill_(0.0)  # inside the range of f_sub for F_V
    try:
        grads = _backward(single)
    finally:
        with torch.no_grad():
            single.video_lsdo.theta.fill_(theta)
    for name in (
        "video_lsdo.theta",
        "encoder.clip.logit_scale",
        "text_lsdo.fc1.weight",
        "text_lsdo.fc2.weight",
        "frame_lsdo.q.weight",
        "frame_lsdo.k.weight",
        "frame_lsdo.out.weight",
        "xpool.k.weight",
        "xpool.q.weight",
        "frame_proj.weight",
        "video_lsdo.average.fc.weight",
    ):
        assert grads[name] is not None and grads[name].abs().sum() > 0, name

    shared = models(*config_overrides("shared", "paper", bank_file), perturbed=True)
    grads = _backward(shared)
    for name in ("video_lsdo.bank", "encoder.clip.logit_scale", "text_lsdo.fc2.weight", "frame_lsdo.k.weight"):
        assert grads[name] is not None and grads[name].abs().sum() > 0, name

    official = models(*config_overrides("shared", "official", bank_file), perturbed=True)
    grads = _backward(official)
    for name in ("official_fusion.logits", "scene.q.weight", "xpool.linear_proj.weight", "encoder.clip.logit_scale"):
        assert grads[name] is not None and grads[name].abs().sum() > 0, name  # fusion weights are learnable
    assert "video_lsdo.bank" not in grads and not official.video_lsdo.bank.requires_grad


# ----------------------------------------------------------------------------- 9. ablation switches
def test_ablation_without_text_lsdo():
    model = perturb_heads(make("variant=average", "model.use_text_lsdo=false")).eval()
    assert model.text_lsdo is None
    assert not any(isinstance(m, TextPrototypes) for m in model.modules())
    tokens, f_t, _, _ = clip_text(model)
    with torch.no_grad():
        text = model.encode_text(tokens)
    torch.testing.assert_close(text.query, f_t, **TOL)
    torch.testing.assert_close(text.target, f_t, **TOL)
    torch.testing.assert_close(text.eos, f_t, **TOL)


def test_ablation_without_frame_lsdo():
    model = perturb_heads(make("variant=average", "model.use_frame_lsdo=false")).eval()
    assert model.frame_lsdo is None
    assert not any(isinstance(m, FrameObjectAttention) for m in model.modules())
    with torch.no_grad():
        f_m, det = model.video_from_features(F_V, return_details=True)
    f_s = layer_norm(linear(F_V, model.video_lsdo.fc), model.video_lsdo.norm).mean(dim=1, keepdim=True)
    f_p = det["f_p"]
    assert det["frame_weights"] is None
    assert torch.equal(f_p, f_p[:, :1].expand_as(f_p))  # the same LSDO term for every frame: one row expanded
    torch.testing.assert_close(f_p[:, 0], layer_norm(f_s, model.video_norm)[:, 0], **TOL)
    torch.testing.assert_close(f_m, ALPHA * linear(F_V, model.frame_proj) + (1 - ALPHA) * f_p, **TOL)


def test_ablation_without_frame_features():
    model = perturb_heads(make("variant=average", "model.use_frame_features=false")).eval()
    with torch.no_grad():
        f_m, det = model.video_from_features(F_V, return_details=True)
    assert torch.equal(f_m, det["f_p"])  # the same tensor returned twice
    ref_f_p = ref_paper_video(model, F_V)["f_p"]
    torch.testing.assert_close(f_m, ref_f_p, **chain_tol(ref_f_p, PAPER_VIDEO_STAGES))


def test_baseline_variant(models):
    model = models("variant=baseline", perturbed=True)
    assert model.video_lsdo is None and model.frame_lsdo is None and model.text_lsdo is None
    lsdo_modules = (SharedLSDO, AverageLSDO, SingleLSDO, FrameObjectAttention, TextPrototypes, nn.LayerNorm)
    heads = [m for name, m in model.named_modules() if name and not name.startswith(("encoder", "xpool"))]
    assert not any(isinstance(m, lsdo_modules) for m in heads), heads  # only frame_proj besides X-Pool
    tokens, f_t, _, _ = clip_text(model)
    with torch.no_grad():
        f_m, det = model.video_from_features(F_V, return_details=True)
        text = model.encode_text(tokens)
        sims = model.similarity(text, f_m)
    f_vp = linear(F_V, model.frame_proj)
    torch.testing.assert_close(f_m, f_vp, **TOL)
    assert det["f_s"] is None and det["f_p"] is None and det["frame_weights"] is None
    torch.testing.assert_close(text.query, f_t, **TOL)
    torch.testing.assert_close(sims, ref_xpool(model.xpool, f_t, f_t, f_vp)[1], rtol=0, atol=XPOOL_NAIVE_TOL)


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        (("model.use_frame_lsdo=true", "model.use_video_lsdo=false"), "model.use_video_lsdo"),
        (
            ("model.use_frame_lsdo=false", "model.use_video_lsdo=false", "model.use_frame_features=false"),
            "model.use_frame_features",
        ),
        (("impl=other",), "impl"),
        (("variant.name=fancy",), "variant.name"),
    ],
)
def test_invalid_combinations_raise_config_error(overrides, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        make("variant=average", *overrides)


# ----------------------------------------------------------------------------- 10. impl=official
@pytest.mark.parametrize("variant", ["average", "shared"])
def test_official_structure(models, bank_file, variant):
    model = models(*config_overrides(variant, "official", bank_file))
    assert model.impl == "official"
    assert getattr(model, "frame_proj", None) is None or isinstance(model.frame_proj, nn.Identity)  # no Eq. 2 FC
    assert model.text_lsdo is None and getattr(model, "frame_lsdo", None) is None  # no text prototypes
    assert not any(isinstance(m, (TextPrototypes, FrameObjectAttention)) for m in model.modules())
    logits = model.official_fusion.logits
    assert isinstance(logits, nn.Parameter) and logits.requires_grad
    assert logits.detach().tolist() == pytest.approx([0.3, 0.7])
    assert logits.softmax(0).tolist() == pytest.approx([0.4013, 0.5987], abs=1e-4)
    assert model.scene.dropout.p == pytest.approx(0.3) and model.xpool.dropout.p == pytest.approx(0.3)
    assert sum(isinstance(m, nn.LayerNorm) for m in model.scene.modules()) == 2  # no final LayerNorm
    assert sum(isinstance(m, nn.LayerNorm) for m in model.xpool.modules()) == 3
    with torch.no_grad():
        _, det = model.encode_video(FRAMES, return_details=True)
    vf = clip_video(model)
    torch.testing.assert_close(det["f_v"], vf, **TOL)
    if variant == "average":
        torch.testing.assert_close(det["f_s"], vf.mean(dim=1, keepdim=True), **TOL)  # plain mean, no Norm(FC)
    else:
        bank = model.video_lsdo.bank
        assert "video_lsdo.bank" in dict(model.named_buffers())
        assert "video_lsdo.bank" not in dict(model.named_parameters())
        assert not bank.requires_grad
        assert torch.equal(bank, torch.tensor(json.loads(bank_file.read_text())["features"]))
        assert not model.needs_bank_init()
        torch.testing.assert_close(det["f_s"], bank[None])


@pytest.mark.parametrize("variant", ["average", "shared"])
def test_official_forward_matches_reference(models, bank_file, variant):
    model = models(*config_overrides(variant, "official", bank_file), perturbed=True)
    tokens, t_raw, _, _ = clip_text(model)
    with torch.no_grad():
        text = model.encode_text(tokens)
        f_m, det = model.encode_video(FRAMES, return_details=True)
        sims = model.similarity(text, f_m)
        sims_fv = model.similarity(TextFeatures(t_raw, t_raw, t_raw), model.video_from_features(F_V))
    ref = ref_official(model, clip_video(model), t_raw)
    torch.testing.assert_close(text.query, t_raw, **TOL)
    torch.testing.assert_close(text.target, t_raw, **TOL)
    torch.testing.assert_close(det["f_s"], ref["s"], **TOL)
    # from the frames: CLIP, then the Scene attention's LayerNorm, q / k, logits, pooling and W_out. Its logits
    # are large (each frame is close to its mean, the key: terms adding to ~37): the softmax turns their absolute
    # rounding into relative rounding of the frame weights, so the logits count at their own scale too
    scene = CLIP_STAGES + 6
    sc = model.scene
    logit_scale = max(
        (linear(layer_norm(ref["vf"][b], sc.norm_frames), sc.q).abs()
         @ linear(layer_norm(ref["s"][b if ref["s"].shape[0] > 1 else 0], sc.norm_s), sc.k).abs().T).max().item()
        for b in range(B)
    ) / math.sqrt(D)  # fmt: skip
    relative = reduction_tol(torch.float32, D, stages=scene) + reduction_tol(torch.float32, D, scale=logit_scale)
    for got, want in ((det["f_p"], ref["p"]), (f_m, ref["fused"])):
        torch.testing.assert_close(got, want, rtol=0, atol=relative * want.abs().max().item())
    # cosines (scale 1): X-Pool's LayerNorm, q / k, logits, pooling, W_out, LN2, linear_proj, LN3, the cosine
    xpool = 10
    torch.testing.assert_close(sims, ref["sims"], rtol=0, atol=reduction_tol(torch.float32, D, stages=scene + xpool))
    # and on synthetic frame features, whose frames differ much more than this random CLIP's
    atol = reduction_tol(torch.float32, D, stages=6 + xpool)
    torch.testing.assert_close(sims_fv, ref_official(model, F_V, t_raw)["sims"], rtol=0, atol=atol)


def test_official_dropout_is_active_in_train_mode_only(models, bank_file):
    model = models(*config_overrides("average", "official", bank_file))
    t_raw = clip_text(model)[1]
    text = TextFeatures(t_raw, t_raw, t_raw)
    try:
        with torch.no_grad():
            assert torch.equal(
                model.similarity(text, model.video_from_features(F_V)),
                model.similarity(text, model.video_from_features(F_V)),
            )
            model.train()
            torch.manual_seed(0)
            first = model.similarity(text, model.video_from_features(F_V))
            second = model.similarity(text, model.video_from_features(F_V))
    finally:
        model.eval()
    assert not torch.allclose(first, second)


def test_official_single_variant_raises():
    with pytest.raises(ConfigError, match="variant"):
        make("variant=single", "impl=official")


def test_official_shared_bank_comes_from_a_file():
    """impl=official uses the authors' frozen bank ("read from a JSON file", the note); it must not
    fall back to impl=paper's default variant.init=feature (a zero bank later overwritten with
    mean CLIP features of training videos)."""
    with pytest.raises(ConfigError, match=r"variant\.init=file and variant\.bank_path="):
        make("variant=shared", "impl=official")  # refused, naming the keys to set
