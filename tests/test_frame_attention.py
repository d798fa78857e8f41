"""Frame-level object attention (lsdo/model/frame_lsdo.py): the properties of ``bounded`` and the
degeneracies of ``rescaled`` (issue 13), and ``rescaled`` reproducing the earlier code bit for bit."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from conftest import TINY_OVERRIDES
from omegaconf import OmegaConf
from tolerances import reduction_tol

from lsdo.config import compose
from lsdo.errors import ConfigError
from lsdo.model import build_model
from lsdo.model.frame_lsdo import FrameObjectAttention

D, B, N = 512, 6, 8


def previous_forward(block: FrameObjectAttention, f_v, f_s, key_mask=None):
    """The forward pass of this block before 2026-12-02 (commit 5031b17), verbatim."""
    a = block.attention(f_v, f_s)  # [B, n, r]
    n, r = a.shape[1], a.shape[2]
    value = block.norm_out(block.out(block.v(block.norm_lsdo(f_s))))  # [B|1, r, d]: Eq. 10 then Norm(. W'_o)
    value = value.expand(a.shape[0], -1, -1)  # [B, r, d]
    if key_mask is None:
        f_p = torch.einsum("bnr,brd->bnd", a * (n / r), value)  # [B, n, d]
        return f_p, a.mean(dim=-1)
    valid = key_mask.to(torch.bool).expand(a.shape[0], -1)  # [B, r]
    a = torch.where(valid.unsqueeze(1), a, torch.zeros((), dtype=a.dtype, device=a.device))  # [B, n, r]
    value = torch.where(valid.unsqueeze(-1), value, torch.zeros((), dtype=value.dtype, device=value.device))
    count = valid.sum(dim=-1).clamp_min(1).to(a.dtype)  # [B]: r_b, the valid keys per video
    f_p = torch.einsum("bnr,brd->bnd", a * (n / count)[:, None, None], value)  # [B, n, d]
    return f_p, a.sum(dim=-1) / count[:, None]


def _model(variant: str, mode: str, seed: int = 0):
    torch.manual_seed(seed)
    extra = ["variant.init=unique"] if variant == "shared" else []
    model = build_model(compose([*TINY_OVERRIDES, f"variant={variant}", f"variant.frame_attention={mode}", *extra]))
    if variant == "shared":
        with torch.no_grad():
            model.video_lsdo.bank.copy_(torch.randn_like(model.video_lsdo.bank))  # 20 distinct bank rows
    return model.train()  # train mode, as in the measurements of the issue


def _frames(seed: int = 1) -> torch.Tensor:
    return 0.55 * torch.randn(B, N, D, generator=torch.Generator().manual_seed(seed))  # |f_v| ~ 12, as CLIP's


@pytest.mark.parametrize("keys", [1, 5])
@pytest.mark.parametrize("masked", [False, True])
def test_rescaled_is_the_previous_code_bit_for_bit(keys: int, masked: bool) -> None:
    torch.manual_seed(3)
    block = FrameObjectAttention(D, "rescaled")
    f_v, f_s = torch.randn(B, N, D), torch.randn(B, keys, D)
    mask = (torch.rand(B, keys) > 0.3) if masked else None
    got, want = block(f_v, f_s, mask), previous_forward(block, f_v, f_s, mask)
    # bitwise: the rescaled branch runs the same operations in the same order as the code copied above
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])


@pytest.mark.parametrize("variant", ["single", "average", "shared"])
def test_bounded_per_frame_magnitude_is_at_most_a_layernorm_output(variant: str) -> None:
    _, det = _model(variant, "bounded").video_from_features(_frames(), return_details=True)
    norms = det["f_p"].norm(dim=-1)  # [B, n]
    assert norms.max() <= math.sqrt(D) * (1 + 1e-4)  # a unit-gain LayerNorm output has norm sqrt(d)
    top = det["frame_weights"].argmax(dim=1)
    assert torch.allclose(norms.gather(1, top[:, None]), torch.full((B, 1), math.sqrt(D)), rtol=1e-3)


def test_rescaled_single_exceeds_the_bound_at_its_selected_frame() -> None:
    """The degeneracy the bounded form removes: n x a LayerNorm output at one frame."""
    _, det = _model("single", "rescaled").video_from_features(_frames(), return_details=True)
    assert det["f_p"].norm(dim=-1).max() > 4 * math.sqrt(D)


def test_single_selected_frame_is_not_overwritten() -> None:
    def agreement(mode: str) -> torch.Tensor:
        model = _model("single", mode)
        f_v = _frames()
        f_m, det = model.video_from_features(f_v, return_details=True)
        f_vp = model.frame_proj(f_v)
        cos = F.cosine_similarity(F.layer_norm(f_m, (D,)), F.layer_norm(f_vp, (D,)), dim=-1)  # [B, n]
        top = det["frame_weights"].argmax(dim=1)
        assert (top == model.video_lsdo.frame_index(N)).float().mean() > 0.5  # the selected frame draws the peak
        return cos.gather(1, top[:, None])

    bounded, rescaled = agreement("bounded"), agreement("rescaled")
    assert bounded.min() > 0.95  # X-Pool still sees the frame at the selected frame
    assert rescaled.max() < bounded.min()


def test_shared_frame_features_depend_on_the_video() -> None:
    sums = {}
    for mode in ("bounded", "rescaled"):
        _, det = _model("shared", mode).video_from_features(_frames(), return_details=True)
        s = det["f_p"].sum(dim=1)  # [B, d]
        sums[mode] = ((s - s.mean(0)).norm(dim=-1).max() / s.norm(dim=-1).mean()).item()
    assert sums["rescaled"] < 1e-5  # the same vector for every video, only spread over the frames
    assert sums["bounded"] > 0.1


@pytest.mark.parametrize("keys", [1, 4])
def test_bounded_frames_choose_among_the_keys_and_weights_sum_to_one(keys: int) -> None:
    torch.manual_seed(4)
    block = FrameObjectAttention(D, "bounded")
    with torch.no_grad():  # non-identity projections, so frames disagree about the keys
        for lin in (block.q, block.k):
            lin.weight.add_(0.5 * torch.randn_like(lin.weight))
    f_v, f_s = torch.randn(B, N, D), torch.randn(B, keys, D)
    f_p, w = block(f_v, f_s)
    assert f_p.shape == (B, N, D) and w.shape == (B, N)
    assert torch.all(w >= 0) and torch.allclose(w.sum(dim=1), torch.ones(B))
    top = w.argmax(dim=1)  # [B]
    ref = F.normalize(f_p[torch.arange(B), top], dim=-1)  # [B, d]: the direction of the top frame
    cos = (F.normalize(f_p, dim=-1) * ref[:, None]).sum(-1)  # [B, n]
    present = f_p.norm(dim=-1) > 1e-2  # frames that receive a visible amount
    if keys == 1:  # one key: every frame gets the same direction, in its own amount
        assert torch.allclose(cos[present], torch.ones_like(cos[present]), atol=1e-4)
        assert (f_p.norm(dim=-1).std(dim=1) > 0.1).all()
    else:  # several keys: frames mix them differently
        assert cos[present].min() < 0.99


def test_bounded_with_a_key_mask_equals_the_call_without_the_masked_keys() -> None:
    torch.manual_seed(5)
    block = FrameObjectAttention(D, "bounded")
    f_v, f_s = torch.randn(2, N, D), torch.randn(2, 6, D)
    mask = torch.tensor([[True, False, True, True, False, True], [False] * 6])
    f_s_bad = f_s.clone()
    f_s_bad[0, 1] = float("nan")  # a masked key's value is ignored, even when not finite
    f_p, w = block(f_v, f_s_bad, mask)
    ref_p, ref_w = block(f_v[:1], f_s[:1, mask[0]])
    # softmaxes and pooling over 6 keys (the masked ones exact zeros) against over 4: another order through the
    # block's six float32 stages (LayerNorms, q / k, logits, softmax pooling, W'_o, Norm), at the outputs' scale
    for got, want in ((f_p[:1], ref_p), (w[:1], ref_w)):
        atol = reduction_tol(torch.float32, D, scale=want.abs().max().item(), stages=6)
        torch.testing.assert_close(got, want, rtol=0, atol=atol)
    assert torch.equal(f_p[1], torch.zeros(N, D)) and torch.equal(w[1], torch.zeros(N))  # no valid key
    f_s_grad = f_s.clone().requires_grad_()
    block(f_v, f_s_grad, mask)[0].sum().backward()
    assert torch.isfinite(f_s_grad.grad).all()


def test_frame_attention_key_and_the_legacy_default() -> None:
    cfg = compose([*TINY_OVERRIDES, "variant=average"])
    assert cfg.variant.frame_attention == "bounded" and build_model(cfg).frame_lsdo.mode == "bounded"
    saved = OmegaConf.to_container(cfg)
    del saved["variant"]["frame_attention"]  # a checkpoint saved before the key existed
    assert build_model(saved).frame_lsdo.mode == "rescaled"
    with pytest.raises(ConfigError, match=r"^variant\.frame_attention: expected bounded \| rescaled, got 'wide'"):
        build_model(compose([*TINY_OVERRIDES, "variant.frame_attention=wide"]))
