"""``variant=regions``: inverse-attention region crops as the video-level LSDO features.

Checks shapes and boxes, the crop path against an independent LACE + encoder reference, the key
mask of the frame-level attention (a masked key changes nothing), the gradient through the crops,
the config errors, and one fast_dev_run training step from the command line.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import ROOT, TINY_OVERRIDES, run_cli
from tolerances import reduction_tol

from lsdo.config import compose
from lsdo.errors import ConfigError
from lsdo.inverse_attention.lace import crop_regions
from lsdo.model import LSDOModel, build_model
from lsdo.model.frame_lsdo import FrameObjectAttention
from lsdo.model.region_lsdo import RegionLSDO

D = 512  # embed_dim of model=tiny
B, N, K, S = 2, 4, 3, 64  # videos, frames, regions per frame, pixels (tiny: patch 8 -> 8x8 grid)
ALPHA = 0.8
# One float32 reduction over d in another order (tests/tolerances.py), relative (rtol) and near zero (atol).
TOL = {"rtol": reduction_tol(torch.float32, D), "atol": reduction_tol(torch.float32, D)}
# The tiny CLIP ViT from pixels to features: patch embedding, two blocks of eight reductions, LayerNorms and
# the projection.
CLIP_STAGES = 20
# The frame attention block: LayerNorms, q / k, logits, softmax pooling, W'_o, Norm.
ATTENTION_STAGES = 6


def chain_tol(expected: torch.Tensor, stages: int) -> dict[str, float]:
    """assert_close's tolerances for ``stages`` float32 reductions over d in sequence, in another order than
    the reference's (other batch shapes, other key counts), at the magnitude of ``expected``."""
    return {"rtol": 0.0, "atol": reduction_tol(torch.float32, D, scale=expected.abs().max().item(), stages=stages)}


FRAMES = torch.randn(B, N, 3, S, S, generator=torch.Generator().manual_seed(11))  # CLIP-normalised frames


def make(*overrides: str, seed: int = 0) -> LSDOModel:
    torch.manual_seed(seed)
    return build_model(compose(["model=tiny", "variant=regions", f"variant.k={K}", *overrides]))


@torch.no_grad()
def perturb_heads(model: LSDOModel, scale: float = 0.05) -> LSDOModel:
    g = torch.Generator().manual_seed(123)
    for name, p in model.named_parameters():
        if not name.startswith("encoder."):
            p.add_(scale * torch.randn(p.shape, generator=g))
    return model


def drop_regions(model: LSDOModel, frames_without: set[tuple[int, int]]) -> None:
    """Make LARD + LARC return no region for the (video, frame) pairs listed."""
    lsdo = model.video_lsdo
    original = lsdo.regions

    def regions(heat: torch.Tensor, size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        boxes, mask = original(heat, size)
        n = heat.shape[0] // B
        for b, i in frames_without:
            boxes[b * n + i], mask[b * n + i] = 0, False
        return boxes, mask

    lsdo.regions = regions


@pytest.fixture(scope="module")
def model() -> LSDOModel:
    return perturb_heads(make()).eval()


# ----------------------------------------------------------------------------- shapes and boxes
def test_shapes_boxes_and_details(model: LSDOModel) -> None:
    assert isinstance(model.video_lsdo, RegionLSDO)
    with torch.no_grad():
        f_m, det = model.encode_video(FRAMES, return_details=True)
    assert f_m.shape == (B, N, D)
    assert det["f_v"].shape == (B, N, D) and det["f_p"].shape == (B, N, D)
    assert det["f_s"].shape == (B, N * K, D)
    mask, boxes = det["region_mask"], det["region_boxes"]
    assert mask.shape == (B, N * K) and mask.dtype == torch.bool and mask.any()
    assert boxes.shape == (B, N, K, 4) and boxes.dtype == torch.long
    valid = boxes[mask.view(B, N, K)]  # [M, 4]
    assert (valid[:, 0] >= 0).all() and (valid[:, 1] >= 0).all()
    assert (valid[:, 2] <= S).all() and (valid[:, 3] <= S).all()
    assert (valid[:, 2] > valid[:, 0]).all() and (valid[:, 3] > valid[:, 1]).all()
    assert (boxes[~mask.view(B, N, K)] == 0).all()
    assert (det["f_s"][~mask] == 0).all()  # masked slots are zero rows
    # the one forward pass that yields the heatmap gives the usual [CLS] features (its attention weights are
    # computed, another kernel than the fused one: the ViT's reductions in another order)
    f_v = model.encode_frames(FRAMES)
    torch.testing.assert_close(det["f_v"], f_v, **chain_tol(f_v, CLIP_STAGES))
    torch.testing.assert_close(det["frame_weights"].sum(dim=1), torch.ones(B), **TOL)


def test_region_features_match_lace_and_encoder_reference(model: LSDOModel) -> None:
    with torch.no_grad():
        _, det = model.encode_video(FRAMES, return_details=True)
        mask = det["region_mask"].view(B, N, K)
        lsdo = model.video_lsdo
        for b in range(B):
            for i in range(N):
                boxes = det["region_boxes"][b, i][mask[b, i]]  # [k', 4]
                if not len(boxes):
                    continue
                crops = crop_regions(FRAMES[b, i], boxes, S)  # [k', 3, S, S]
                emb = model.encoder.clip.encode_image(crops)  # [k', d]
                ref = torch.nn.functional.layer_norm(
                    emb @ lsdo.fc.weight.T + lsdo.fc.bias, (D,), lsdo.norm.weight, lsdo.norm.bias
                )
                got = det["f_s"].view(B, N, K, D)[b, i][mask[b, i]]  # [B, n*k, d] -> [B, n, k, d]
                # the model encodes every crop of the batch at once, the reference one frame's: other batch
                # shapes through CLIP, then FC and LayerNorm
                torch.testing.assert_close(got, ref, **chain_tol(ref, CLIP_STAGES + 2))


def test_regions_are_deterministic_and_leave_torch_rng_alone(model: LSDOModel) -> None:
    state = torch.get_rng_state()
    with torch.no_grad():
        _, a = model.encode_video(FRAMES, return_details=True)
        _, b = model.encode_video(FRAMES, return_details=True)
    assert torch.equal(torch.get_rng_state(), state)
    # bitwise: the same call twice on the same frames
    assert torch.equal(a["region_boxes"], b["region_boxes"]) and torch.equal(a["f_s"], b["f_s"])


def test_train_mode_and_small_grid() -> None:
    model = make("model.clip_cfg.vision_cfg.image_size=32").train()  # 4x4 patch grid
    f_m, det = model.encode_video(FRAMES[..., :32, :32], return_details=True)
    assert f_m.shape == (B, N, D) and torch.isfinite(f_m).all()
    assert det["region_mask"].any()


# ----------------------------------------------------------------------------- key mask
def test_frame_attention_key_mask_equals_dropping_the_keys() -> None:
    torch.manual_seed(0)
    att = perturb_heads_module(FrameObjectAttention(D))
    f_v, f_s = torch.randn(B, N, D), torch.randn(B, 6, D)
    with torch.no_grad():
        ref_p, ref_w = att(f_v, f_s)
        all_p, all_w = att(f_v, f_s, torch.ones(B, 6, dtype=torch.bool))
        # the masked code path (where / masked_fill around the softmaxes) against the plain one: another order
        torch.testing.assert_close(all_p, ref_p, **chain_tol(ref_p, ATTENTION_STAGES))
        torch.testing.assert_close(all_w, ref_w, **chain_tol(ref_w, ATTENTION_STAGES))
        keep = [0, 2, 3]
        mask = torch.zeros(B, 6, dtype=torch.bool)
        mask[:, keep] = True
        garbage = f_s.clone()
        garbage[:, [1, 4, 5]] = 1e6 * torch.randn(B, 3, D)  # masked keys: any content
        got_p, got_w = att(f_v, garbage, mask)
        sub_p, sub_w = att(f_v, f_s[:, keep])
        # softmaxes and pooling over 6 keys (the masked ones exact zeros) against over 3: another order
        torch.testing.assert_close(got_p, sub_p, **chain_tol(sub_p, ATTENTION_STAGES))
        torch.testing.assert_close(got_w, sub_w, **chain_tol(sub_w, ATTENTION_STAGES))
        # per-video counts differ: video 1 keeps only key 0
        mask[1] = False
        mask[1, 0] = True
        got_p, _ = att(f_v, garbage, mask)
        want = att(f_v[1:], f_s[1:, :1])[0][0]
        torch.testing.assert_close(got_p[1], want, **chain_tol(want, ATTENTION_STAGES))
        # no valid key: no LSDO feature, zero weights
        none_p, none_w = att(f_v, f_s, torch.zeros(B, 6, dtype=torch.bool))
        assert torch.equal(none_p, torch.zeros_like(none_p)) and torch.equal(none_w, torch.zeros_like(none_w))


def perturb_heads_module(module: torch.nn.Module) -> torch.nn.Module:
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    return module


def test_frame_without_regions_contributes_nothing(model: LSDOModel) -> None:
    missing = {(0, 1), (1, 3)}
    m = perturb_heads(make()).eval()
    drop_regions(m, missing)
    with torch.no_grad():
        f_m, det = m.encode_video(FRAMES, return_details=True)
        mask = det["region_mask"]
        for b, i in missing:
            assert not mask[b, i * K : (i + 1) * K].any()
            assert (det["region_boxes"][b, i] == 0).all()
        # whatever sits in the masked slots is ignored ...
        f_s = det["f_s"].clone()
        f_s[~mask] = 50.0 * torch.randn(int((~mask).sum()), D)
        torch.testing.assert_close(m.video_from_features(det["f_v"], f_s=f_s, key_mask=mask), f_m, **TOL)
        # ... and the result equals the model without those slots (per video, as r_b differs)
        for b in range(B):
            keep = mask[b]
            sub = m.video_from_features(det["f_v"][b : b + 1], f_s=det["f_s"][b : b + 1, keep])
            # one video and its valid keys against the masked batch: frame_proj, the region FC / Norm and the
            # attention block in another order
            torch.testing.assert_close(sub[0], f_m[b], **chain_tol(f_m[b], ATTENTION_STAGES + 3))


def test_video_without_any_region_gets_no_lsdo_feature() -> None:
    m = perturb_heads(make()).eval()
    drop_regions(m, {(0, i) for i in range(N)})
    with torch.no_grad():
        f_m, det = m.encode_video(FRAMES, return_details=True)
    assert not det["region_mask"][0].any() and det["region_mask"][1].any()
    assert torch.equal(det["f_p"][0], torch.zeros(N, D))
    torch.testing.assert_close(f_m[0], ALPHA * m.frame_proj(det["f_v"][0]), **TOL)
    assert torch.isfinite(f_m).all()


def test_ablation_without_frame_lsdo_uses_masked_mean() -> None:
    m = perturb_heads(make("model.use_frame_lsdo=false")).eval()
    drop_regions(m, {(0, 0), (0, 2)})
    with torch.no_grad():
        _, det = m.encode_video(FRAMES, return_details=True)
    mask = det["region_mask"]
    for b in range(B):
        ref = m.video_norm(det["f_s"][b][mask[b]]).mean(dim=0)  # [d]
        torch.testing.assert_close(det["f_p"][b], ref.expand(N, D), **TOL)


# ----------------------------------------------------------------------------- gradients
@pytest.mark.parametrize("through", [True, False])
def test_gradient_reaches_encoder_through_crops_only_when_enabled(through: bool) -> None:
    m = make(f"variant.grad_through_crops={str(through).lower()}").train()
    _, det = m.encode_video(FRAMES, return_details=True)
    det["f_s"].square().sum().backward()  # f_s depends on the encoder only through the crops
    enc_grad = m.encoder.clip.visual.conv1.weight.grad
    if through:
        assert enc_grad is not None and enc_grad.abs().sum() > 0
    else:
        assert enc_grad is None or torch.equal(enc_grad, torch.zeros_like(enc_grad))
    fc_grad = m.video_lsdo.fc.weight.grad
    assert fc_grad is not None and fc_grad.abs().sum() > 0  # Norm(FC(.)) trains either way


def test_full_loss_backward_is_finite() -> None:
    m = make().train()
    tokens = m.tokenize(["a red circle with a small cyan ring in the corner", "a blue square"])
    sims = m.similarity(m.encode_text(tokens), m.encode_video(FRAMES))  # [2, B]
    sims.sum().backward()
    grads = [p.grad for p in m.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


# ----------------------------------------------------------------------------- config and CLI
def test_video_from_features_needs_f_s(model: LSDOModel) -> None:
    with pytest.raises(ValueError, match="encode_video"):
        model.video_from_features(torch.randn(B, N, D))


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("variant.heatmap=gradcam", "variant.heatmap"),
        ("variant.k=0", "variant.k"),
        ("variant.lard.unit=cells", "variant.lard"),
        ("variant.interpolation=nearest", "variant.interpolation"),
    ],
)
def test_bad_region_config_values(override: str, key: str) -> None:
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        make(override)


def test_official_impl_rejects_regions() -> None:
    with pytest.raises(ConfigError, match="variant=regions"):
        build_model(compose(["model=tiny", "variant=regions", "impl=official"]))


def test_cli_official_regions_is_one_line_config_error(tmp_path: Path) -> None:
    proc = run_cli("train.py", *TINY_OVERRIDES, "variant=regions", "impl=official", f"paths.log_dir={tmp_path}")
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "variant=regions" in proc.stderr and "impl=official" in proc.stderr


def test_fast_dev_run_trains_one_step(tmp_path: Path) -> None:
    cmd = [
        sys.executable,
        str(ROOT / "train.py"),
        "experiment=demo",
        "model=tiny",  # the ViT tower's 4 x 4 patch grid at 32 px (the demo ResNet: test_training.py)
        "variant=regions",
        "debug=fast_dev_run",
        "logger=none",
        "model.clip_cfg.vision_cfg.image_size=32",
        "dataset.clip_len=6",
        "dataset.num_frames=4",
        "dataset.train_videos_per_combo=1",
        "dataset.val_combos=9",
        "dataset.test_combos=18",
        "dataset.batch_size=8",
        f"paths.log_dir={tmp_path}",
    ]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
