"""Optimiser recipe switches: weight-decay exclusion of 1-D parameters, the initial logit scale of model=tiny."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import ROOT
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


# ---------------------------------------------------------------------------------------------------
# Parameter groups with DIFFERENT rates (issue 12): the test configs give both groups the same rate,
# so a swap of clip_lr and lr, or every parameter in one group, would otherwise stay green.

CLIP_LR, NEW_LR, WD = 1e-6, 3e-5, 0.1
# The modules LSDO adds on top of CLIP (paper and official forward passes). A parameter outside
# ``encoder.`` and outside these prefixes fails the test: classify a new module here on purpose.
NEW_PREFIXES = (
    "frame_proj.",
    "video_lsdo.",
    "frame_lsdo.",
    "video_norm.",
    "text_lsdo.",
    "xpool.",
    "scene.",
    "official_fusion.",
)
# Members named explicitly, so an empty group or a renamed prefix fails.
CLIP_MEMBERS = (
    "encoder.clip.logit_scale",  # lambda (Eq. 21-22) lives in the CLIP encoder: CLIP rate
    "encoder.clip.visual.conv1.weight",
    "encoder.clip.visual.proj",
    "encoder.clip.token_embedding.weight",
    "encoder.clip.text_projection",
)
PAPER_MEMBERS = (
    "frame_proj.weight",  # Eq. 2
    "frame_lsdo.q.weight",  # Eq. 8-12
    "frame_lsdo.out.weight",
    "text_lsdo.fc1.weight",  # text prototypes, Eq. 13
    "text_lsdo.fc2.weight",
    "xpool.q.weight",  # X-Pool projections, Eq. 16-20
    "xpool.k.weight",
    "xpool.v.weight",
    "xpool.out.weight",
    "xpool.norm_out.weight",
)
OPT_CASES = {  # id: (overrides, new-parameter members named explicitly)
    "average": ([], (*PAPER_MEMBERS, "video_lsdo.fc.weight", "video_lsdo.norm.weight")),
    "shared": (["variant=shared"], (*PAPER_MEMBERS, "video_lsdo.bank")),
    "single": (["variant=single"], (*PAPER_MEMBERS, "video_lsdo.theta", "video_lsdo.average.fc.weight")),
    "official": (
        ["impl=official"],
        ("scene.q.weight", "scene.out.weight", "official_fusion.logits", "xpool.q.weight", "xpool.linear_proj.weight"),
    ),
}


def _optim_setup(overrides: list[str], exclude: bool, steps: int = 10, warmup_ratio: float = 0.1):
    from conftest import TINY_OVERRIDES

    from lsdo.config import compose

    cfg = compose(
        [
            *TINY_OVERRIDES,
            *overrides,
            f"optim.clip_lr={CLIP_LR}",
            f"optim.lr={NEW_LR}",
            f"optim.weight_decay={WD}",
            f"optim.exclude_1d_from_decay={str(exclude).lower()}",
            f"optim.warmup_ratio={warmup_ratio}",
        ]
    )
    lit = LSDOLitModule(cfg)

    class _Trainer:
        estimated_stepping_batches = steps

    lit._trainer = _Trainer()  # type: ignore[assignment]
    return lit, lit.configure_optimizers()


@pytest.mark.parametrize(
    ("case", "exclude"),
    [("average", False), ("average", True), ("shared", False), ("single", True), ("official", False)],
)
def test_param_groups_different_rates(case: str, exclude: bool) -> None:
    overrides, new_members = OPT_CASES[case]
    lit, out = _optim_setup(overrides, exclude)
    opt = out["optimizer"]
    params = {n: p for n, p in lit.model.named_parameters() if p.requires_grad}
    # initial_lr: the base rate (LambdaLR scales "lr" by the warm-up multiplier at construction)
    placed = [(id(p), g["initial_lr"], g["weight_decay"]) for g in opt.param_groups for p in g["params"]]
    ids = [i for i, _, _ in placed]
    assert len(ids) == len(set(ids)) == len(params), "every trainable parameter in exactly one group"
    assert set(ids) == {id(p) for p in params.values()}
    group_of = {i: (lr, wd) for i, lr, wd in placed}

    clip_names = [n for n in params if n.startswith("encoder.")]
    new_names = [n for n in params if not n.startswith("encoder.")]
    unknown = [n for n in new_names if not n.startswith(NEW_PREFIXES)]
    assert not unknown, f"parameters of an unclassified module (add it to NEW_PREFIXES): {unknown}"
    assert set(CLIP_MEMBERS) <= set(clip_names)
    assert set(new_members) <= set(new_names), set(new_members) - set(new_names)
    for names, lr in ((clip_names, CLIP_LR), (new_names, NEW_LR)):
        for n in names:
            p = params[n]
            expected_wd = 0.0 if exclude and p.ndim < 2 else WD
            assert group_of[id(p)] == (pytest.approx(lr, rel=1e-12), expected_wd), (n, group_of[id(p)])

    # lambda is the encoder's logit scale: the CLIP rate, decayed unless 1-D parameters are excluded
    assert group_of[id(lit.model.logit_scale)] == (pytest.approx(CLIP_LR), 0.0 if exclude else WD)
    assert lit.model.logit_scale is params["encoder.clip.logit_scale"]
    # the groups themselves: 2 (one rate each) or 4 (x decay / no decay); none empty, none mixed
    assert len(opt.param_groups) == (4 if exclude else 2)
    for g in opt.param_groups:
        assert g["params"]
        assert len({group_of[id(p)] for p in g["params"]}) == 1
    assert sum(len(g["params"]) for g in opt.param_groups if g["initial_lr"] == CLIP_LR) == len(clip_names)
    assert sum(len(g["params"]) for g in opt.param_groups if g["initial_lr"] == NEW_LR) == len(new_names)


def _reference_multiplier(step: int, total: int, warmup: int) -> float:
    """Linear warm-up to 1 over ``warmup`` steps (1/w, 2/w, ..., 1), then half a cosine down to 0 at ``total``."""
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, (step - warmup) / (total - warmup))))


def test_scheduler_warmup_then_cosine_per_group() -> None:
    total, ratio = 40, 0.25  # warm-up: 10 steps
    warmup = 10
    lit, out = _optim_setup([], exclude=True, steps=total, warmup_ratio=ratio)
    opt, sched_cfg = out["optimizer"], out["lr_scheduler"]
    assert sched_cfg["interval"] == "step"  # stepped per optimiser step, not per epoch
    sched = sched_cfg["scheduler"]
    assert sched.optimizer is opt
    name_of = {id(p): n for n, p in lit.model.named_parameters()}
    bases = [CLIP_LR if name_of[id(g["params"][0])].startswith("encoder.") else NEW_LR for g in opt.param_groups]
    assert [g["initial_lr"] for g in opt.param_groups] == bases  # each group's peak rate is its own
    assert sorted(set(bases)) == [CLIP_LR, NEW_LR]
    seen = []
    for k in range(total + 3):  # a few steps past the end: stays at 0
        mult = _reference_multiplier(k, total, warmup)
        seen.append(mult)
        for g, base in zip(opt.param_groups, bases, strict=True):
            assert g["lr"] == pytest.approx(base * mult, rel=1e-9, abs=1e-20), (k, g["initial_lr"])
        opt.step()  # no gradients: a no-op update, keeps the optimiser-then-scheduler order
        sched.step()
    # the shape itself: 0.1 at the first step, peak 1 at the end of warm-up, 0.5 half-way down, 0 at the end
    assert seen[0] == pytest.approx(0.1)
    assert seen[warmup - 1] == seen[warmup] == pytest.approx(1.0)
    assert seen[warmup + (total - warmup) // 2] == pytest.approx(0.5)
    assert seen[total] == pytest.approx(0.0, abs=1e-12)
    assert seen[:warmup] == sorted(seen[:warmup]) and seen[warmup:] == sorted(seen[warmup:], reverse=True)


@pytest.mark.parametrize("experiment", sorted(p.stem for p in (ROOT / "configs" / "experiment").glob("*.yaml")))
def test_presets_train_random_encoders_at_a_from_scratch_rate(experiment: str) -> None:
    """A preset whose encoder has no pretrained weights must not train it at CLIP's fine-tuning rate (1e-6)."""
    from lsdo.config import compose
    from lsdo.train import FINE_TUNING_CLIP_LR

    cfg = compose([f"experiment={experiment}"])
    if cfg.model.get("pretrained") is None and cfg.model.get("init_from") is None:  # init_from: a trained encoder
        assert float(cfg.optim.clip_lr) >= FINE_TUNING_CLIP_LR, (experiment, cfg.optim.clip_lr)
