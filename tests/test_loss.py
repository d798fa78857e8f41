"""Symmetric InfoNCE (lsdo.loss, paper Eq. 21-23) against a hand-written reference, and the loss the
Lightning module's ``training_step`` actually returns against the same formula on the model's own similarities."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from conftest import TINY_OVERRIDES, randomise_xpool
from omegaconf import OmegaConf

from lsdo.config import compose
from lsdo.lightning_module import LSDOLitModule
from lsdo.loss import symmetric_infonce


def _log_softmax_at(row: list[float], i: int) -> float:
    m = max(row)
    return row[i] - (m + math.log(sum(math.exp(x - m) for x in row)))


def ref_loss(sims: torch.Tensor, logit_scale: float) -> tuple[float, float]:
    """(L_t2v, L_v2t) from the formula with plain Python: texts are rows, videos columns."""
    lam = math.exp(logit_scale)
    s = sims.double().tolist()
    b = len(s)
    l_t2v = -sum(_log_softmax_at([lam * s[i][j] for j in range(b)], i) for i in range(b)) / b
    l_v2t = -sum(_log_softmax_at([lam * s[j][i] for j in range(b)], i) for i in range(b)) / b
    return l_t2v, l_v2t


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("scale", [0.0, math.log(10.0), math.log(100.0)])
def test_matches_formula(seed: int, scale: float) -> None:
    gen = torch.Generator().manual_seed(seed)
    b = 3 + seed * 3
    sims = torch.rand(b, b, generator=gen) * 2 - 1  # cosine-like, not symmetric: L_t2v != L_v2t
    l_t2v, l_v2t = ref_loss(sims, scale)
    got = symmetric_infonce(sims, torch.tensor(scale))
    assert got.ndim == 0
    assert got.item() == pytest.approx(l_t2v + l_v2t, rel=1e-5, abs=1e-6)
    assert symmetric_infonce(sims, torch.tensor(scale), average=True).item() == pytest.approx(
        (l_t2v + l_v2t) / 2, rel=1e-5, abs=1e-6
    )


def test_uses_both_directions() -> None:
    """A matrix whose rows and columns differ: the loss must not be 2 x one direction."""
    sims = torch.tensor([[1.0, 0.9, 0.9], [-1.0, 1.0, -1.0], [-1.0, -1.0, 1.0]])
    l_t2v, l_v2t = ref_loss(sims, 0.0)
    assert abs(l_t2v - l_v2t) > 0.05  # the check below can tell them apart
    got = symmetric_infonce(sims, torch.tensor(0.0)).item()
    assert got == pytest.approx(l_t2v + l_v2t, rel=1e-6)
    assert got != pytest.approx(2 * l_t2v, rel=1e-3)
    assert got != pytest.approx(2 * l_v2t, rel=1e-3)


def test_average_halves() -> None:
    gen = torch.Generator().manual_seed(3)
    sims = torch.randn(8, 8, generator=gen)
    scale = torch.tensor(2.5)
    full = symmetric_infonce(sims, scale)
    avg = symmetric_infonce(sims, scale, average=True)
    assert avg.item() == pytest.approx(full.item() / 2, rel=1e-6)


def test_uniform_sims_give_twice_log_b() -> None:
    b = 16
    loss = symmetric_infonce(torch.full((b, b), 0.2), torch.tensor(math.log(100.0)))
    assert loss.item() == pytest.approx(2 * math.log(b), rel=1e-5)


def test_gradient_wrt_logit_scale_is_nonzero_and_correct() -> None:
    gen = torch.Generator().manual_seed(0)
    sims = torch.rand(6, 6, generator=gen, dtype=torch.float64) * 2 - 1
    scale = torch.tensor(1.3, dtype=torch.float64, requires_grad=True)
    symmetric_infonce(sims, scale).backward()
    assert scale.grad is not None
    assert scale.grad.abs().item() > 1e-4
    eps = 1e-5
    fd = (sum(ref_loss(sims, 1.3 + eps)) - sum(ref_loss(sims, 1.3 - eps))) / (2 * eps)
    assert scale.grad.item() == pytest.approx(fd, rel=1e-4, abs=1e-7)


def test_gradient_flows_to_sims() -> None:
    sims = torch.randn(5, 5, requires_grad=True)
    symmetric_infonce(sims, torch.tensor(0.5)).backward()
    assert sims.grad is not None and sims.grad.abs().sum() > 0
    # Raising a matching pair's similarity lowers the loss: negative gradient on the diagonal.
    assert (torch.diagonal(sims.grad) < 0).all()


def test_perfect_diagonal_large_scale_is_near_zero() -> None:
    b = 8
    sims = torch.eye(b) * 2 - 1  # cosine 1 on the diagonal, -1 elsewhere
    loss = symmetric_infonce(sims, torch.tensor(math.log(100.0)))
    assert 0 <= loss.item() < 1e-6
    # The wrong pairing (anti-diagonal targets) is heavily penalised.
    assert symmetric_infonce(sims.flip(1), torch.tensor(math.log(100.0))).item() > 100


# ---------------------------------------------------------------------------------------------------
# What the Lightning module trains on. The tests above check symmetric_infonce alone; a wiring bug in
# training_step (lambda left out or detached, lambda exponentiated twice, a direction dropped, the
# directions summed where the config averages them, the wrong similarities) would leave them green.
# Here the loss training_step returns, and its gradients (the stored log(lambda)'s and every other
# parameter's), are compared with the formula written out on the similarities the model gives for the
# same batch, at two values of lambda.

CAPTION_COLOURS = ("red", "blue", "green", "yellow", "purple", "orange")


def _training_batch(b: int, n: int, side: int, seed: int) -> dict[str, Any]:
    """``b`` distinct captions and random CLIP-normalised-like frames [b, n, 3, side, side]."""
    gen = torch.Generator().manual_seed(seed)
    captions = [f"a {CAPTION_COLOURS[i]} circle beside a small {CAPTION_COLOURS[-1 - i]} star" for i in range(b)]
    return {"captions": captions, "frames": torch.randn(b, n, 3, side, side, generator=gen)}


def spread_video_features(model: torch.nn.Module, seed: int) -> None:
    """Noise on the image tower's weights: a random-init ViT maps every frame to nearly the same feature
    (cosine ~0.99), so the similarities hardly vary along a row and the videos' side of the loss would barely
    depend on lambda or on which column is the match. Perturbed, each direction, the scale and the diagonal
    move the loss far beyond the float32 tolerance (checked in the test)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.encoder.clip.visual.parameters():
            p.add_(2 * torch.randn(p.shape, generator=gen) * (p.std() if p.numel() > 1 else 0.1))


def paper_infonce(sims: torch.Tensor, log_lambda: torch.Tensor, average: bool) -> tuple[torch.Tensor, ...]:
    """(L, L_t2v, L_v2t) of Eq. 21-23 written out: lambda = exp(log_lambda), logits lambda * s(t_i, v_j),
    each direction -mean_i log softmax at the matching pair i (texts are rows, videos columns)."""
    logits = log_lambda.exp() * sims
    b = sims.shape[0]
    l_t2v = -torch.stack([logits[i, i] - torch.logsumexp(logits[i, :], 0) for i in range(b)]).mean()
    l_v2t = -torch.stack([logits[i, i] - torch.logsumexp(logits[:, i], 0) for i in range(b)]).mean()
    total = l_t2v + l_v2t
    return (total / 2 if average else total), l_t2v, l_v2t


@pytest.mark.parametrize("impl", ["paper", "official"])
def test_training_step_returns_the_papers_loss_on_the_models_scaled_similarities(impl: str) -> None:
    cfg = compose([*TINY_OVERRIDES, f"impl={impl}"])
    average = str(cfg.impl) == "official"  # Eq. 23 sums the two directions; the released code averages them
    torch.manual_seed(0)
    lit = LSDOLitModule(OmegaConf.to_container(cfg, resolve=True))
    lit.eval()  # dropout off: the similarities computed here are exactly those of the step
    spread_video_features(lit.model, seed=5)
    randomise_xpool(lit.model, seed=1)  # identity-like X-Pool init could hide a bug
    batch = _training_batch(6, int(cfg.dataset.num_frames), int(cfg.model.clip_cfg.vision_cfg.image_size), seed=2)
    model = lit.model

    def reference_step() -> tuple[torch.Tensor, ...]:
        """The formula on the model's similarities for the batch, in float64, differentiable to every parameter."""
        text = model.encode_text(model.tokenize(batch["captions"]))
        sims = model.similarity(text, model.encode_video(batch["frames"]))
        assert sims.shape == (6, 6)  # [texts, videos]
        return (*paper_infonce(sims.double(), model.logit_scale.double(), average), sims.detach().double())

    def gradients() -> dict[str, torch.Tensor]:
        return {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}

    losses = {}
    for lam in (30.0, 95.0):  # both below the clamp at 100
        with torch.no_grad():
            model.logit_scale.fill_(math.log(lam))
        model.zero_grad(set_to_none=True)
        loss = lit.training_step(batch, 0)
        loss.backward()
        got = gradients()
        model.zero_grad(set_to_none=True)
        ref, l_t2v, l_v2t, sims = reference_step()
        ref.backward()
        want = gradients()

        # The batch can tell the bug classes apart (margins >= 100x the tolerance below): the directions
        # differ, and the loss moves when lambda is dropped or the matches are taken off the diagonal.
        log_lambda = model.logit_scale.detach().double()
        unscaled = paper_infonce(sims, torch.zeros((), dtype=torch.float64), average)[0]
        off_diagonal = paper_infonce(sims.roll(1, 1), log_lambda, average)[0]
        assert abs(l_t2v.item() - l_v2t.item()) > 0.01, "one direction alone would pass"
        assert abs(unscaled.item() - ref.item()) > 0.01 and abs(off_diagonal.item() - ref.item()) > 0.01

        # Tolerance: the step computes the loss in float32 (relative error ~1e-7 per op on an O(1) loss over a
        # 6 x 6 matrix), the reference in float64 from the same float32 similarities: 1e-5 relative is ample.
        assert loss.ndim == 0
        assert loss.item() == pytest.approx(ref.item(), rel=1e-5), lam
        scale = next(name for name, p in model.named_parameters() if p is model.logit_scale)
        assert got.get(scale) is not None, "lambda gets no gradient from the training loss"
        assert abs(want[scale].item()) > 1e-2  # lambda matters at this point: a zero gradient would be a bug
        # Gradients: float32 backward through the model on both sides; they differ only by the loss's float32
        # rounding (measured: <= 2e-6 relative). Some are zero in exact arithmetic (a key bias under softmax) and
        # hold rounding noise alone: the absolute tolerance is relative to the largest gradient entry overall.
        assert got.keys() == want.keys(), "the step's loss and the formula reach different parameters"
        atol = 1e-6 * max(g.abs().max().item() for g in want.values())
        for name, g in want.items():
            torch.testing.assert_close(got[name], g, rtol=1e-4, atol=atol, msg=lambda m, name=name: f"{name}: {m}")
        losses[lam] = loss.item()
    assert abs(losses[30.0] - losses[95.0]) > 0.05  # the loss follows lambda (each value matched the reference)
