"""The paper's presets ``experiment=<dataset>_<variant>`` (Tables I-V): they compose, hold the settings of
paper IV-B.1, carry the published figures, and run (one fast_dev_run step, tiny model, CPU)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from conftest import ROOT
from omegaconf import OmegaConf

from lsdo.config import compose, validate
from lsdo.train import run

PAPER = ROOT.parent / "shared" / "papers" / "lsdo-tip2025.txt"
VARIANTS = ("shared", "average", "single")

# Paper IV-B.1 "Implementation Details" (lsdo-tip2025.txt, lines 221-223):
#   "For the MSVD, MSRVT, and LSMDC datasets ... a batch size of 32, sampling 12 frames per video. In contrast,
#    for the DiDeMo dataset, we set the batch size to 6, with a higher frame sampling rate of 64 frames per video."
#   "a learning rate of 1e-6 for CLIP-initialized weights. For additional parameters ... 3e-5, 1e-5, 1e-5, 3e-5
#    and 1e-5 for MV-9K, MV-7K, MSVD, LSMDC and DiDeMo"
# name -> (dataset.name, train_split, num_frames, batch_size, lr of the new parameters)
SETTINGS = {
    "msrvtt9k": ("msrvtt", "9k", 12, 32, 3e-5),
    "msrvtt7k": ("msrvtt", "7k", 12, 32, 1e-5),
    "msvd": ("msvd", None, 12, 32, 1e-5),
    "lsmdc": ("lsmdc", None, 12, 32, 3e-5),
    "didemo": ("didemo", None, 64, 6, 1e-5),
}
# Every dataset (same lines): CLIP ViT-B/32, lambda from pretrained CLIP; AdamW weight decay 0.2; theta 0.9;
# m = 20; K = 20; alpha = gamma = 0.8; single: a frame of the 6th of 12 segments (DiDeMo: the 32nd of 64).
COMMON = {
    "model.name": "clip_b32",
    "model.pretrained": "openai",
    "optim.clip_lr": 1e-6,
    "optim.weight_decay": 0.2,
    "model.num_prototypes": 20,
    "model.alpha": 0.8,
    "model.gamma": 0.8,
}
VARIANT_SETTINGS = {
    "shared": {"variant.m": 20, "variant.init": "feature"},  # one training video per category, encoded
    "average": {},
    "single": {"variant.theta": 0.9},
}
SINGLE_FRAME = {"didemo": (32, 64)}  # (select_frame, num_segments); the others: 6 of 12

# Tables I-V (lsdo-tip2025.txt lines 237-350), the LSDO rows, t2v: R@1, R@5, R@10, MdR, MnR. No v2t given.
TABLES = {
    "msrvtt9k": ("I", {"shared": (49.1, 75.2, 84.2, 2.0, 12.0), "average": (48.8, 74.7, 84.0, 2.0, 12.9),
                       "single": (48.1, 73.3, 82.9, 2.0, 13.8)}),
    "msrvtt7k": ("II", {"shared": (44.7, 72.5, 81.2, 2.0, 14.5), "average": (46.2, 74.0, 83.5, 2.0, 13.5),
                        "single": (45.3, 72.9, 82.6, 2.0, 14.1)}),
    "msvd": ("III", {"shared": (44.6, 75.4, 84.8, 2.0, 10.3), "average": (47.6, 77.7, 86.3, 2.0, 9.0),
                     "single": (48.0, 78.1, 86.7, 2.0, 8.8)}),
    "lsmdc": ("IV", {"shared": (23.8, 42.4, 52.4, 9.0, 55.1), "average": (26.4, 44.8, 55.1, 8.0, 52.1),
                     "single": (25.3, 43.8, 54.2, 8.0, 53.5)}),
    "didemo": ("V", {"shared": (44.7, 71.1, 81.8, 2.0, 14.5), "average": (46.3, 73.9, 84.5, 2.0, 13.4),
                     "single": (46.8, 74.4, 83.8, 2.0, 13.1)}),
}  # fmt: skip
METRICS = ("R1", "R5", "R10", "MdR", "MnR")
PRESETS = [f"{d}_{v}" for d in SETTINGS for v in VARIANTS]


def test_the_presets_are_the_files() -> None:
    files = {p.stem for p in (ROOT / "configs" / "experiment").glob("*_*.yaml")}
    assert set(PRESETS) <= files


@pytest.mark.parametrize("name", PRESETS)
def test_preset_composes_with_the_paper_settings_and_figures(name: str) -> None:
    dataset, variant = name.rsplit("_", 1)
    cfg = compose([f"experiment={name}"])
    validate(cfg)
    ds_name, split, frames, batch, lr = SETTINGS[dataset]
    assert cfg.dataset.name == ds_name
    if split is not None:
        assert cfg.dataset.train_split == split
    assert (cfg.dataset.num_frames, cfg.dataset.batch_size) == (frames, batch)
    assert cfg.dataset.lr == pytest.approx(lr) and cfg.optim.lr == pytest.approx(lr)
    assert cfg.variant.name == variant
    expected = {**COMMON, **VARIANT_SETTINGS[variant]}
    if variant == "single":
        select, segments = SINGLE_FRAME.get(dataset, (6, 12))
        expected |= {"variant.select_frame": select, "variant.num_segments": segments}
    for key, value in expected.items():
        got = OmegaConf.select(cfg, key)
        assert got == (pytest.approx(value) if isinstance(value, float) else value), key
    table, rows = TABLES[dataset]
    assert cfg.paper.table == table and cfg.paper.row == f"LSDO-{variant}"
    assert {k: cfg.paper.t2v[k] for k in METRICS} == dict(zip(METRICS, rows[variant], strict=True))
    assert "v2t" not in cfg.paper  # Tables I-V give t2v only


def test_transcribed_figures_match_the_paper_text() -> None:
    """The dict above against the paper's own rows (``<i>LSDO-shared</i>\\t49.1\\t...``), table by table."""
    if not PAPER.is_file():
        pytest.skip("../shared/papers/lsdo-tip2025.txt is not present")
    text = PAPER.read_text()
    for dataset, (table, rows) in TABLES.items():
        start = text.index(f"\nTABLE {table}\n")
        block = text[start : text.index("\nTABLE ", start + 1)]
        for variant in VARIANTS:
            found = re.search(rf"<i>LSDO-{variant}</i>\t(.+)", block)
            assert found, (table, variant)
            assert tuple(float(x) for x in found.group(1).split("\t")) == rows[variant], (dataset, variant)


def _fast_overrides(name: str, tmp_path: Path) -> list[str]:
    """The preset on what runs here: the synthetic benchmark at the preset's frames, batch and rate, the tiny
    CLIP at 32 px, CPU, one batch of train / val / test. Everything else is the preset's."""
    preset = compose([f"experiment={name}"])
    frames, batch, lr = preset.dataset.num_frames, preset.dataset.batch_size, preset.dataset.lr
    return [
        f"experiment={name}",
        "dataset=synthetic",
        f"dataset.num_frames={frames}",
        f"dataset.clip_len={frames}",
        f"dataset.batch_size={batch}",
        f"dataset.lr={lr}",
        "dataset.train_videos_per_combo=1",
        "dataset.val_combos=9",
        "dataset.test_combos=18",
        "model=tiny",
        "model.clip_cfg.vision_cfg.image_size=32",
        "model.clip_cfg.vision_cfg.patch_size=8",
        "trainer=cpu",
        "logger=none",
        "debug=fast_dev_run",
        f"paths.log_dir={tmp_path}",
    ]


@pytest.mark.parametrize("name", PRESETS)
def test_preset_runs_one_step(name: str, tmp_path: Path) -> None:
    cfg = compose(_fast_overrides(name, tmp_path))
    validate(cfg)
    preset = compose([f"experiment={name}"])
    assert cfg.variant == preset.variant and cfg.optim == preset.optim and cfg.paper == preset.paper
    results = run(cfg)
    assert 0.0 <= results["test"]["t2v/R1"] <= 100.0
    saved = (Path(results["run_dir"]) / "config.yaml").read_text()
    assert f"row: LSDO-{name.rsplit('_', 1)[1]}" in saved  # the paper's figures travel with the run
