"""The GPU path, checked on the CPU: bf16 autocast, the fused attention (SDPA) and activation checkpointing.

* **bf16 autocast** (what ``configs/trainer/gpu.yaml``'s ``precision: bf16-mixed`` does: Lightning runs each
  training / validation / test step under ``torch.autocast(dtype=torch.bfloat16)``, parameters and optimiser
  state stay float32). A training step of every variant and both impls runs under CPU autocast, with a finite
  loss and finite gradients close to float32's. Tolerances (bf16 keeps 8 significant bits, unit roundoff
  2^-8 = 3.9e-3): loss within 5e-3 relative (measured <= 8.2e-4), all gradients as one vector within 0.25
  relative and cosine >= 0.98 of float32's (measured <= 0.099 and >= 0.996: a random tiny model at
  initialisation, where InfoNCE's gradient is a small difference of near-uniform softmax weights).
  Evaluation: features encoded under autocast (bf16) and scored outside it, as Lightning's epoch-end hooks do.
* **SDPA**: X-Pool's pooling through ``F.scaled_dot_product_attention`` equals the einsum form it replaced, to
  the rounding of the reductions the two forms order differently (``tests/tolerances.py``).
* **Activation checkpointing** (``model.grad_checkpointing``): the blocks are recomputed, the gradients equal.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import TINY_OVERRIDES, run_cli
from omegaconf import OmegaConf
from tolerances import XPOOL_NAIVE_TOL, reduction_tol

from lsdo.config import compose
from lsdo.loss import symmetric_infonce
from lsdo.model import LSDOModel, build_model
from lsdo.model.layers import sparsemax
from lsdo.model.xpool import pool_frames
from lsdo.retrieval import similarity_matrix
from lsdo.retrieval.xpool_fast import XPoolScorer

pytestmark = pytest.mark.timeout(300)

D = 512
CASES = [("paper", v) for v in ("baseline", "shared", "average", "single", "regions")] + [
    ("official", v) for v in ("average", "shared")
]
LOSS_RTOL = 5e-3
GRAD_RTOL = 0.25
GRAD_MIN_COS = 0.98


@pytest.fixture(scope="module")
def bank(tmp_path_factory: pytest.TempPathFactory) -> Path:
    gen = torch.Generator().manual_seed(7)
    path = tmp_path_factory.mktemp("bank") / "bank.json"
    feats = torch.randn(20, D, generator=gen)
    path.write_text(json.dumps({"videos": [f"v{i}" for i in range(20)], "features": feats.tolist()}))
    return path


def _model(impl: str, variant: str, bank: Path, *extra: str) -> LSDOModel:
    shared = ["variant.init=file", f"variant.bank_path='{bank}'"] if variant == "shared" else []
    cfg = compose([*TINY_OVERRIDES, f"variant={variant}", f"impl={impl}", "model.dropout=0", *shared, *extra])
    torch.manual_seed(0)
    return build_model(cfg)


def _batch(model: LSDOModel, b: int = 8, n: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    size = model.image_size
    frames = torch.randn(b, n, 3, size, size, generator=torch.Generator().manual_seed(1))  # [B, n, 3, S, S]
    tokens = model.tokenize([f"a red circle number {i} beside a small cyan ring" for i in range(b)])  # [B, L]
    return frames, tokens


def _step(model: LSDOModel, frames: torch.Tensor, tokens: torch.Tensor, bf16: bool) -> tuple[float, dict]:
    """One forward + backward (the Lightning training step's loss); the loss and every parameter's gradient."""
    model.zero_grad(set_to_none=True)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        sims = model.similarity(model.encode_text(tokens), model.encode_video(frames))  # [B, B]
        loss = symmetric_infonce(sims.float(), model.logit_scale.float(), average=model.loss_averages_directions)
    loss.backward()
    return loss.item(), {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize(("impl", "variant"), CASES, ids=[f"{i}-{v}" for i, v in CASES])
def test_bf16_autocast_training_step_is_close_to_float32(impl: str, variant: str, bank: Path) -> None:
    model = _model(impl, variant, bank).train()
    frames, tokens = _batch(model)
    loss32, grads32 = _step(model, frames, tokens, bf16=False)
    loss16, grads16 = _step(model, frames, tokens, bf16=True)
    assert math.isfinite(loss16) and abs(loss16 - loss32) <= LOSS_RTOL * abs(loss32), (loss16, loss32)
    assert grads16.keys() == grads32.keys()
    assert all(g.dtype == torch.float32 and torch.isfinite(g).all() for g in grads16.values())  # fp32 master grads
    g16 = torch.cat([g.flatten() for g in grads16.values()])
    g32 = torch.cat([g.flatten() for g in grads32.values()])
    rel = ((g16 - g32).norm() / g32.norm()).item()
    cos = F.cosine_similarity(g16, g32, dim=0).item()
    assert rel <= GRAD_RTOL and cos >= GRAD_MIN_COS, (rel, cos)


@pytest.mark.parametrize("impl", ["paper", "official"])
def test_bf16_features_score_like_float32_outside_autocast(impl: str, bank: Path) -> None:
    """Validation steps under bf16 autocast store bf16 features; the epoch's end scores them without autocast."""
    model = _model(impl, "average", bank).eval()
    frames, tokens = _batch(model, b=6)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        text, video = model.encode_text(tokens), model.encode_video(frames)
    assert video.dtype == torch.bfloat16  # what the epoch-end hook receives
    gram = similarity_matrix(model, text, video, method="gram")  # [T, V]
    naive = similarity_matrix(model, text.to(torch.float32), video.float(), method="naive")
    assert gram.dtype == torch.float32 and torch.isfinite(gram).all()
    # the float32 scores of the bf16-rounded features, by the Gram scorer and the naive path: two orders
    torch.testing.assert_close(gram, naive, rtol=0, atol=XPOOL_NAIVE_TOL)
    with torch.no_grad():
        assert torch.isfinite(model.similarity(text, video)).all()  # the naive path takes bf16 features too
    with torch.autocast("cpu", dtype=torch.bfloat16):  # called inside autocast: still the float32 scorer
        inside = XPoolScorer(model.xpool, video).score(text)
    assert torch.equal(inside, gram)  # bitwise: the scorer turns autocast off, so the same ops on the same inputs


def test_bf16_mixed_training_run_validates_and_tests(tmp_path: Path) -> None:
    """``trainer.precision=bf16-mixed`` end to end: the validation and test epochs score bf16 features.

    Before 2026-12-02 the first validation epoch's end failed (``mat1 and mat2 must have the same dtype``):
    Lightning autocasts the steps, not the epoch-end hooks that score the stored features.
    """
    proc = run_cli("train.py", *TINY_OVERRIDES, "trainer.precision=bf16-mixed", f"paths.log_dir={tmp_path}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "test metrics" in proc.stdout


def test_cosine_scores_are_float32_under_autocast(bank: Path) -> None:
    model = _model("paper", "baseline", bank).eval()
    frames, tokens = _batch(model, b=4)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        sims = model.similarity(model.encode_text(tokens), model.encode_video(frames))
    assert sims.dtype == torch.float32


def _pool_reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> torch.Tensor:
    """The einsum form X-Pool used before SDPA: softmax over the frames, then the weighted sum -> [T, B, d]."""
    att = (torch.einsum("td,bnd->tbn", q, k) * scale).softmax(dim=-1)  # [T, B, n]
    return torch.einsum("tbn,bnd->tbd", att, v)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_sdpa_pooling_equals_the_einsum_form(dtype: torch.dtype) -> None:
    gen = torch.Generator().manual_seed(0)
    q = torch.randn(5, D, generator=gen, dtype=dtype, requires_grad=True)  # [T, d]
    k, v = (torch.randn(7, 12, D, generator=gen, dtype=dtype, requires_grad=True) for _ in range(2))  # [B, n, d]
    out, ref = pool_frames(q, k, v, D**-0.5), _pool_reference(q, k, v, D**-0.5)
    assert out.shape == (5, 7, D)
    # two reductions in another order (the logits over d, the weighted sum over the frames), at the output's
    # magnitude; measured: 3.6e-7 (float32), 8.9e-16 (float64)
    atol = reduction_tol(dtype, D, scale=ref.abs().max().item(), stages=2)
    torch.testing.assert_close(out, ref, rtol=0, atol=atol)
    grads = torch.autograd.grad(out.square().sum(), (q, k, v))
    for a, b in zip(grads, torch.autograd.grad(ref.square().sum(), (q, k, v)), strict=True):
        # the backward adds two more (the softmax's sum over the frames, the contraction over d or the texts)
        torch.testing.assert_close(a, b, rtol=0, atol=reduction_tol(dtype, D, scale=b.abs().max().item(), stages=4))


@pytest.mark.parametrize("impl", ["paper", "official"])
def test_xpool_heads_equal_their_einsum_form(impl: str, bank: Path) -> None:
    """Both heads through SDPA against the same heads written with the einsum pooling (float32)."""
    head = _model(impl, "average", bank).xpool.eval()
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in head.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=gen))
    text, frames = torch.randn(4, D, generator=gen), torch.randn(6, 8, D, generator=gen)
    lay = head.layout()
    q, f = lay.q(lay.norm_in(text)), lay.norm_in(frames)
    z = lay.out(_pool_reference(q, lay.k(f), lay.v(f), lay.scale))  # [T, B, d]
    stages = 4  # the pooling's two reductions in another order (logits over d, sum over frames), then W_out, LN
    if lay.residual is not None:
        norm2, proj = lay.residual
        z = norm2(z)
        z = z + proj(z)
        stages += 2  # the residual stage's LayerNorm and projection carry the difference on
    want = lay.norm_out(z)
    # q, k and v are the same calls on both sides; from the pooling on, each float32 reduction over d adds its
    # rounding at the output's magnitude
    atol = reduction_tol(torch.float32, D, scale=want.abs().max().item(), stages=stages)
    torch.testing.assert_close(head(text, frames), want, rtol=0, atol=atol)


def test_sparsemax_runs_in_float32_for_bf16_logits() -> None:
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 20, 16, generator=gen).bfloat16()  # [T, K, L]
    mask = torch.ones(3, 20, 16, dtype=torch.bool)
    mask[:, :, 12:] = False  # padding
    out = sparsemax(logits, mask)
    assert out.dtype == torch.bfloat16
    ref = sparsemax(logits.float(), mask)  # the same projection of the same (bf16) logits in float32
    assert torch.equal(out, ref.bfloat16())  # bitwise: sparsemax upcasts to float32 itself, the same ops
    # the cumulative sum behind tau and this sum, each of at most 16 float32 terms of scale 1
    atol = reduction_tol(torch.float32, 16, stages=2)
    torch.testing.assert_close(ref.sum(dim=-1), torch.ones(3, 20), rtol=0, atol=atol)
    assert not out[..., 12:].any()


def test_grad_checkpointing_key(bank: Path) -> None:
    cfg = compose([*TINY_OVERRIDES, "variant=average"])
    assert cfg.model.grad_checkpointing is False and not build_model(cfg).encoder.grad_checkpointing
    model = _model("paper", "average", bank, "model.grad_checkpointing=true")
    clip = model.encoder.clip
    assert model.encoder.grad_checkpointing and clip.transformer.grad_checkpointing
    assert clip.visual.transformer.grad_checkpointing
    saved = OmegaConf.to_container(cfg)
    del saved["model"]["grad_checkpointing"]  # a config saved before the key existed: trained without it
    assert not build_model(saved).encoder.grad_checkpointing


@pytest.mark.parametrize(("impl", "variant"), [("paper", "average"), ("paper", "regions"), ("official", "shared")])
def test_grad_checkpointing_recomputes_and_gives_the_same_gradients(impl: str, variant: str, bank: Path) -> None:
    results = {}
    for on in (False, True):
        model = _model(impl, variant, bank, f"model.grad_checkpointing={str(on).lower()}").train()
        frames, tokens = _batch(model, b=4)
        calls: list[int] = []  # a pre-hook: the recomputation stops after the last saved tensor, before post-hooks
        model.encoder.clip.visual.transformer.resblocks[0].register_forward_pre_hook(lambda *_, c=calls: c.append(1))
        model.encoder.clip.transformer.resblocks[0].register_forward_pre_hook(lambda *_, c=calls: c.append(2))
        frames_calls = 2 if variant == "regions" else 1  # regions: the frames' pass and the crops' pass
        loss, grads = _step(model, frames, tokens, bf16=False)
        assert calls.count(1) == frames_calls * (2 if on else 1) and calls.count(2) == (2 if on else 1)
        results[on] = (loss, grads)
    assert results[True][0] == results[False][0]  # bitwise: checkpointing runs the same forward ops
    assert results[True][1].keys() == results[False][1].keys()
    for name, g in results[False][1].items():
        # the recomputed blocks are the same ops on the same inputs; what may change is the order in which a
        # parameter's few gradient contributions (at most 8 uses: text and frame passes, the crops' pass) are
        # accumulated, at that parameter's own gradient magnitude (some are ~1e-11: no absolute floor)
        atol = reduction_tol(torch.float32, 8, scale=g.abs().max().item())
        torch.testing.assert_close(results[True][1][name], g, rtol=0, atol=atol, msg=name)
