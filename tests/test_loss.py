"""Symmetric InfoNCE (lsdo.loss, paper Eq. 21-23) against a hand-written reference."""

from __future__ import annotations

import math

import pytest
import torch

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
