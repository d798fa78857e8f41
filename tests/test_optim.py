"""Optimiser recipe switches: weight-decay exclusion of 1-D parameters, the initial logit scale of model=tiny."""

from __future__ import annotations

import math

import pytest
import torch
from omegaconf import open_dict

from lsdo.lightning_module import LSDOLitModule


def _optimizer(cfg):
    lit = LSDOLitModule(cfg)

    class _Trainer:  # configure_optimizers reads only the number of steps
        estimated_stepping_batches = 10

    lit._trainer = _Trainer()  # type: ignore[assignment]
    return lit, lit.configure_optimizers()["optimizer"]


@pytest.mark.parametrize("exclude", [False, True])
def test_weight_decay_groups(cfg_tiny, exclude: bool) -> None:
    with open_dict(cfg_tiny):
        cfg_tiny.optim.exclude_1d_from_decay = exclude
        cfg_tiny.optim.weight_decay = 0.2
    lit, opt = _optimizer(cfg_tiny)
    wd_of = {id(p): g["weight_decay"] for g in opt.param_groups for p in g["params"]}
    lr_of = {id(p): g["lr"] for g in opt.param_groups for p in g["params"]}
    params = dict(lit.model.named_parameters())
    assert set(wd_of) == {id(p) for p in params.values() if p.requires_grad}  # every parameter exactly once
    assert sum(len(g["params"]) for g in opt.param_groups) == len(wd_of)
    for name, p in params.items():
        expected_wd = 0.0 if exclude and p.ndim < 2 else 0.2
        assert wd_of[id(p)] == expected_wd, name
        expected_lr = float(cfg_tiny.optim.clip_lr) if name.startswith("encoder.") else float(cfg_tiny.optim.lr)
        assert lr_of[id(p)] == pytest.approx(expected_lr), name
    assert wd_of[id(lit.model.logit_scale)] == (0.0 if exclude else 0.2)


def test_init_logit_scale_of_inline_clip(cfg_tiny) -> None:
    from lsdo.model import build_model

    with open_dict(cfg_tiny):
        cfg_tiny.model.clip_cfg.init_logit_scale = math.log(50.0)
    model = build_model(cfg_tiny)
    assert model.logit_scale.exp().item() == pytest.approx(50.0, rel=1e-5)
    with open_dict(cfg_tiny):
        del cfg_tiny.model.clip_cfg["init_logit_scale"]
    assert build_model(cfg_tiny).logit_scale.exp().item() == pytest.approx(1 / 0.07, rel=1e-5)  # open_clip default
    assert isinstance(model.logit_scale, torch.nn.Parameter)
