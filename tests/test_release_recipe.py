"""Issue 13 point 5: the released code's training loop as configuration, and ``experiment=official_release``.

Training frame sampling (``dataset.train_sampling``), AdamW eps (``optim.eps``), the warm-up from 0
(``optim.warmup_from_zero``), model selection on the mean R@1 of the last k validations
(``checkpoint.monitor_window``), validation 10 times per epoch and fp32 (trainer keys); defaults keep
the project's behaviour.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY_OVERRIDES
from omegaconf import OmegaConf, open_dict

from lsdo.callbacks import BEST_METRIC, WINDOW_METRIC, checkpoint_callbacks, monitored_metric
from lsdo.config import compose, validate
from lsdo.data import build_datamodule
from lsdo.data.datamodule import ClipTrainDataset, FreshRenderTrainDataset
from lsdo.data.sampling import segment_indices
from lsdo.errors import ConfigError
from lsdo.lightning_module import LSDOLitModule, MetricWindow, cosine_with_warmup

SMALL = [*TINY_OVERRIDES, "dataset.image_size=32"]


# ----------------------------------------------------------------------------- training frame sampling
def test_defaults_keep_todays_behaviour() -> None:
    cfg = compose([])
    assert cfg.dataset.train_sampling == "rand"
    assert cfg.optim.eps == pytest.approx(1e-8) and cfg.optim.warmup_from_zero is False
    assert cfg.checkpoint.monitor_window == 1
    assert cfg.trainer.val_check_interval == 1.0 and cfg.trainer.precision == "bf16-mixed"
    for name in ("msrvtt", "msvd", "lsmdc", "didemo", "synthetic"):
        assert compose([f"dataset={name}"]).dataset.train_sampling == "rand", name


def _frames_at(clip: torch.Tensor, idx: np.ndarray) -> torch.Tensor:
    from lsdo.data.transforms import normalize

    return normalize(clip[torch.from_numpy(idx)])


@pytest.mark.parametrize("fresh", [False, True])
def test_synthetic_training_frames_uniform_vs_rand(fresh: bool) -> None:
    over = [*SMALL, "dataset.clip_len=16", "dataset.num_frames=4", f"dataset.fresh_renders={str(fresh).lower()}"]
    uni = build_datamodule(compose([*over, "dataset.train_sampling=uniform"]), 32).train_dataloader().dataset
    rnd = build_datamodule(compose(over), 32).train_dataloader().dataset
    assert isinstance(uni, FreshRenderTrainDataset if fresh else ClipTrainDataset)
    assert (uni.sampling, rnd.sampling) == ("uniform", "rand")
    if fresh:  # the frames themselves are checked on the fixed clips below (same _train_item)
        return
    clip = uni.clips[3]
    middles = _frames_at(clip, segment_indices(16, 4, "uniform"))  # frames 2, 6, 10, 14
    for seed in (1, 2, 3, 4):
        assert torch.equal(uni[(3, seed)]["frames"], middles)  # the middle of each segment, every time
    drawn = [rnd[(3, seed)]["frames"] for seed in range(8)]
    assert any(not torch.equal(d, middles) for d in drawn)  # random frames inside the segments
    for seed in range(8):  # and exactly the ones segment_indices("rand") draws from the item's rng
        want = _frames_at(clip, segment_indices(16, 4, "rand", np.random.default_rng(seed)))
        assert torch.equal(rnd[(3, seed)]["frames"], want)


def test_segment_indices_uniform_and_rand_bounds() -> None:
    assert segment_indices(16, 4, "uniform").tolist() == [2, 6, 10, 14]
    rng = np.random.default_rng(0)
    draws = np.stack([segment_indices(16, 4, "rand", rng) for _ in range(200)])
    for i in range(4):
        assert set(draws[:, i].tolist()) == set(range(4 * i, 4 * i + 4))  # every frame of segment i, no other


def test_video_training_items_use_train_sampling(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from lsdo.data import video_datamodule as vdm

    modes: list[str] = []

    def fake_sample_frames(path, num_frames, mode="uniform", rng=None, backend="auto", size=None):
        modes.append(mode)
        return torch.zeros(num_frames, 3, 40, 40, dtype=torch.uint8)

    monkeypatch.setattr(vdm, "sample_frames", fake_sample_frames)
    split = vdm.VideoSplit(["v0", "v1"], [["a cat"], ["a dog"]], [tmp_path / "v0.mp4", tmp_path / "v1.mp4"])
    for setting, expected in ((None, "rand"), ("uniform", "uniform"), ("rand", "rand")):
        over = ["dataset=msrvtt", f"dataset.root={tmp_path}", "dataset.num_workers=0", "dataset.num_frames=4"]
        cfg = compose(over + ([f"dataset.train_sampling={setting}"] if setting else []))
        dm = vdm.VideoDataModule(cfg.dataset, 32)
        dm.splits["train"] = split
        ds = dm.train_dataloader().dataset
        modes.clear()
        item = ds[(1, 7)]
        assert modes == [expected] and item["frames"].shape == (4, 3, 32, 32)


def test_bad_train_sampling_is_a_config_error() -> None:
    dm = build_datamodule(compose([*SMALL, "dataset.train_sampling=middle"]), 32)
    with pytest.raises(ConfigError, match=r"dataset\.train_sampling"):
        dm.train_dataloader()


# ----------------------------------------------------------------------------- optimiser and schedule
def _optimizer(overrides: list[str], steps: int = 100):
    lit = LSDOLitModule(compose([*TINY_OVERRIDES, *overrides]))

    class _Trainer:
        estimated_stepping_batches = steps

    lit._trainer = _Trainer()  # type: ignore[assignment]
    return lit.configure_optimizers()


@pytest.mark.parametrize(("overrides", "eps"), [([], 1e-8), (["optim.eps=1e-6"], 1e-6)])
def test_adamw_eps(overrides: list[str], eps: float) -> None:
    opt = _optimizer(overrides)["optimizer"]
    assert isinstance(opt, torch.optim.AdamW)
    assert opt.defaults["eps"] == pytest.approx(eps, rel=1e-12)
    assert all(g["eps"] == pytest.approx(eps, rel=1e-12) for g in opt.param_groups)


def test_warmup_multiplier_at_step_zero() -> None:
    total, warmup = 100, 10
    assert cosine_with_warmup(0, total, warmup) == pytest.approx(0.1)  # today: (step + 1) / warmup
    assert cosine_with_warmup(0, total, warmup, from_zero=True) == 0.0  # the release: step / warmup
    assert cosine_with_warmup(5, total, warmup, from_zero=True) == pytest.approx(0.5)
    assert cosine_with_warmup(9, total, warmup, from_zero=True) == pytest.approx(0.9)
    for s in (warmup, 40, total):  # the cosine part is the same
        assert cosine_with_warmup(s, total, warmup, True) == cosine_with_warmup(s, total, warmup)
    assert cosine_with_warmup(55, total, warmup, True) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.5)))


@pytest.mark.parametrize(("from_zero", "first"), [(False, 0.1), (True, 0.0)])
def test_scheduler_first_step_rate(from_zero: bool, first: float) -> None:
    out = _optimizer([f"optim.warmup_from_zero={str(from_zero).lower()}", "optim.warmup_ratio=0.1"], steps=100)
    opt, sched = out["optimizer"], out["lr_scheduler"]["scheduler"]
    for g in opt.param_groups:  # LambdaLR applies the multiplier of step 0 at construction
        assert g["lr"] == pytest.approx(g["initial_lr"] * first, abs=1e-20)
    opt.step()
    sched.step()
    for g in opt.param_groups:
        assert g["lr"] == pytest.approx(g["initial_lr"] * (0.1 if from_zero else 0.2))


# ----------------------------------------------------------------------------- windowed model selection
def test_metric_window_means_the_last_k() -> None:
    w = MetricWindow(5)
    got = [w.add(v) for v in (10, 20, 30, 40, 50, 60, 0)]
    assert got == pytest.approx([10, 15, 20, 25, 30, 40, 36])  # fewer values at the start, then the last 5
    assert MetricWindow(1).add(7.0) == 7.0
    with pytest.raises(ConfigError, match=r"checkpoint\.monitor_window"):
        MetricWindow(0)


class _FakeTrainer:
    sanity_checking = False


def _lit_with_window(window: int) -> tuple[LSDOLitModule, list[tuple[str, float]], list[float]]:
    lit = LSDOLitModule(compose([*TINY_OVERRIDES, f"checkpoint.monitor_window={window}"]))
    lit._trainer = _FakeTrainer()  # type: ignore[assignment]
    logged: list[tuple[str, float]] = []
    r1s: list[float] = []
    lit.log = lambda name, value, **kw: logged.append((name, float(value)))  # type: ignore[method-assign]

    def fake_eval_end(prefix: str) -> dict[str, float]:
        lit.results[prefix] = {"t2v/R1": r1s.pop(0)}
        return lit.results[prefix]

    lit._eval_end = fake_eval_end  # type: ignore[method-assign]
    return lit, logged, r1s


def test_module_logs_the_window_over_validations() -> None:
    lit, logged, r1s = _lit_with_window(3)
    r1s += [50.0, 10.0, 20.0, 30.0, 40.0, 90.0]
    lit.trainer.sanity_checking = True  # the sanity check's validation does not count
    lit.on_validation_epoch_end()
    lit.trainer.sanity_checking = False
    assert logged == []
    for _ in range(3):
        lit.on_validation_epoch_end()
    assert logged == [(WINDOW_METRIC, 10.0), (WINDOW_METRIC, 15.0), (WINDOW_METRIC, 20.0)]
    assert lit.results["val"]["t2v/R1_window"] == 20.0
    saved: dict = {}
    lit.on_save_checkpoint(saved)  # a resumed run continues the same window
    again, logged2, r1s2 = _lit_with_window(3)
    again.on_load_checkpoint(saved)
    r1s2 += [40.0]
    again.on_validation_epoch_end()
    assert logged2 == [(WINDOW_METRIC, pytest.approx((20 + 30 + 40) / 3))]

    plain, logged1, r1s1 = _lit_with_window(1)  # window 1: nothing new is logged
    r1s1 += [50.0]
    plain.on_validation_epoch_end()
    assert logged1 == [] and "t2v/R1_window" not in plain.results["val"]


def test_checkpoint_callback_monitors_the_window(tmp_path: Path) -> None:
    assert monitored_metric(1) == BEST_METRIC == "val/t2v/R1"
    assert monitored_metric(5) == WINDOW_METRIC == "val/t2v/R1_window"
    assert checkpoint_callbacks(tmp_path)[0].monitor == "val/t2v/R1"
    best = checkpoint_callbacks(tmp_path, monitor_window=5)[0]
    assert best.monitor == "val/t2v/R1_window" and best.mode == "max"


def test_training_run_selects_on_the_window(tmp_path: Path) -> None:
    """A short real run: 4 validations in one epoch, the best checkpoint follows val/t2v/R1_window."""
    from lsdo.train import run

    cfg = compose(
        [
            *(o for o in SMALL if not o.startswith("logger=")),
            "checkpoint.monitor_window=3",
            "trainer.val_check_interval=0.25",
            "trainer.limit_train_batches=4",
            "trainer.limit_val_batches=1",
            "trainer.limit_test_batches=1",
            "trainer.log_every_n_steps=1",
            "logger=csv",
            f"paths.log_dir={tmp_path}",
        ]
    )
    results = run(cfg)
    val = results["val"]
    assert "t2v/R1_window" in val
    ckpt_dir = Path(results["run_dir"]) / "checkpoints"
    best = sorted(ckpt_dir.glob("best-*.ckpt"))
    assert best and results["test_checkpoint"] in {str(p) for p in best}
    state = torch.load(ckpt_dir / "last.ckpt", map_location="cpu", weights_only=False)
    monitors = [v.get("monitor") for v in state["callbacks"].values() if isinstance(v, dict)]
    assert "val/t2v/R1_window" in monitors
    assert len(state["r1_window"]) == 3  # 4 validations, the last 3 kept
    import csv

    rows = list(csv.DictReader(open(next(Path(results["run_dir"]).glob("csv/*/metrics.csv")))))
    r1 = [float(r["val/t2v/R1"]) for r in rows if r.get("val/t2v/R1")]
    window = [float(r["val/t2v/R1_window"]) for r in rows if r.get("val/t2v/R1_window")]
    assert len(r1) == len(window) == 4
    assert window == pytest.approx([np.mean(r1[max(0, i - 2) : i + 1]) for i in range(4)])


# ----------------------------------------------------------------------------- the preset
def test_official_release_preset_composes() -> None:
    cfg = compose(["experiment=official_release"])
    validate(cfg)
    assert cfg.impl == "official"
    assert cfg.dataset.train_sampling == "uniform"
    assert cfg.optim.eps == pytest.approx(1e-6)
    assert cfg.optim.warmup_from_zero is True
    assert cfg.trainer.val_check_interval == pytest.approx(0.1)
    assert cfg.checkpoint.monitor_window == 5
    assert cfg.trainer.precision == "32-true"
    # the rest of the released code's recipe: equal to the project's values, pinned by the preset
    assert (cfg.optim.clip_lr, cfg.optim.weight_decay, cfg.optim.warmup_ratio) == (1e-6, 0.2, 0.1)
    assert (cfg.trainer.max_epochs, cfg.trainer.gradient_clip_val) == (5, 1.0)
    assert (cfg.dataset.num_frames, cfg.dataset.batch_size) == (12, 32)
    assert (cfg.model.name, cfg.model.dropout) == ("clip_b32", 0.3)
    msrvtt = compose(["experiment=official_release", "dataset=msrvtt"])
    assert msrvtt.dataset.train_sampling == "uniform" and msrvtt.optim.lr == pytest.approx(3e-5)  # noclip_lr, 9k
    assert compose(["experiment=official_release", "dataset=msvd"]).optim.lr == pytest.approx(1e-5)


@pytest.mark.parametrize(
    ("key", "value"), [("optim.eps", "-1e-6"), ("checkpoint.monitor_window", "0"), ("checkpoint.monitor_window", "2.5")]
)
def test_new_keys_are_validated(key: str, value: str) -> None:
    cfg = compose([])
    with open_dict(cfg):
        OmegaConf.update(cfg, key, float(value) if "." in value or "e" in value else int(value))
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        validate(cfg)
