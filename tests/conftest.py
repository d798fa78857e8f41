"""Shared fixtures: the config composed once with tiny CPU overrides (lightning-hydra-template style)."""

from __future__ import annotations

import faulthandler
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import DictConfig, open_dict

from lsdo.config import compose
from lsdo.processes import run_in_group

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"

# Tiny, fast, CPU-only: 32-pixel frames, 4 frames per video, a few dozen videos.
TINY_OVERRIDES = [
    "experiment=demo",
    "model=tiny",  # tests use the tiny ViT (fast; a patch grid for heatmaps); the demo ResNet has its own test
    "logger=none",
    "trainer.max_epochs=1",
    "model.clip_cfg.vision_cfg.image_size=32",
    "model.clip_cfg.vision_cfg.patch_size=8",  # a 4 x 4 patch grid (the demo's 16-px patches would give 2 x 2)
    "dataset.train_videos_per_combo=1",
    "dataset.val_combos=9",
    "dataset.test_combos=18",
    "dataset.clip_len=6",
    "dataset.num_frames=4",
    "dataset.batch_size=8",
]


LAST_RESORT_S = 120  # after a test's own deadline: time for the signal to end it before the run is ended
_stderr: list[int] = []  # the terminal's stderr, kept when pytest is not capturing: where the last resort writes


def pytest_configure(config: pytest.Config) -> None:
    _stderr.append(os.dup(2))  # a test's fd 2 is pytest's capture file, lost when the process exits


def pytest_timeout_set_timer(item: pytest.Item, settings) -> None:
    """The last resort behind pytest-timeout's signal, armed with the deadline pytest-timeout resolved (marker,
    ``--timeout``, ini): a test stuck where no Python code runs (a C call that ignores signals) cannot be failed
    alone, so the run prints every thread's stack and exits instead of hanging until CI's own limit. Returns
    None, so pytest-timeout's own timer is set as well."""
    if settings.timeout and settings.timeout > 0:
        faulthandler.dump_traceback_later(settings.timeout + LAST_RESORT_S, exit=True, file=_stderr[0])


def pytest_timeout_cancel_timer(item: pytest.Item) -> None:
    faulthandler.cancel_dump_traceback_later()  # the test ended, or pdb was entered


@pytest.fixture(scope="session")
def cfg_tiny_global() -> DictConfig:
    return compose(TINY_OVERRIDES)


@pytest.fixture
def cfg_tiny(cfg_tiny_global: DictConfig, tmp_path: Path) -> DictConfig:
    """A fresh copy of the tiny config writing its runs under ``tmp_path``."""
    cfg = cfg_tiny_global.copy()
    with open_dict(cfg):
        cfg.paths.log_dir = str(tmp_path / "logs")
    return cfg


def _env(extra: dict | None = None) -> dict:
    return {**os.environ, "PYTHONUNBUFFERED": "1", **(extra or {})}


def run_cli(script: str, *overrides: str, timeout: float = 300, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run ``python <script> <overrides>`` from the repository root."""
    return run_in_group([sys.executable, str(ROOT / script), *overrides], timeout, ROOT, _env(env))


def run_module(module: str, *args: str, timeout: float = 300, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run ``python -m <module> <args>`` from the repository root (the console scripts' code path)."""
    return run_in_group([sys.executable, "-m", module, *args], timeout, ROOT, _env(env))


def run_console_script(target: str, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run a console script's function (``"lsdo.cli:build_bank_main"``, as pyproject names it) in a new process."""
    module, func = target.split(":")
    code = f"import sys; from {module} import {func}; sys.exit({func}())"
    return run_in_group([sys.executable, "-c", code, *args], timeout, ROOT, _env())


def randomise_xpool(model, seed: int):
    """Random X-Pool weights, biases and LayerNorm gains (identity init would hide bugs); returns the model."""
    import math

    import torch

    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.xpool.named_parameters():
            noise = torch.randn(p.shape, generator=gen)
            if p.ndim == 2:  # d x d projections: identity-ish plus a random part
                p.copy_(0.6 * torch.eye(*p.shape) + noise / math.sqrt(p.shape[1]))
            elif "norm" in name and name.endswith("weight"):  # LayerNorm gains around 1
                p.copy_(1.0 + 0.5 * noise)
            else:  # biases (linear and LayerNorm)
                p.copy_(0.3 * noise)
    return model


# The index tests' model: the tiny CLIP at 32 px (frame features are given, the encoder barely runs).
INDEX_TINY = ["experiment=demo", "model=tiny", "model.clip_cfg.vision_cfg.image_size=32"]


def random_checkpoint(path: Path, seed: int, *overrides: str, base: tuple[str, ...] = tuple(INDEX_TINY)) -> Path:
    """A random-init training checkpoint (``base`` + ``overrides``, default the tiny ViT at 32 px) written to ``path``,
    read back like any other (``lsdo.checkpoint.load_model``)."""
    from omegaconf import OmegaConf

    from lsdo.lightning_module import LSDOLitModule

    cfg = OmegaConf.to_container(compose([*base, *overrides]), resolve=True)
    torch.manual_seed(seed)
    lit = LSDOLitModule(cfg)
    torch.save({"state_dict": lit.state_dict(), "hyper_parameters": {"cfg": cfg}}, path)
    return path


def random_xpool_model(seed: int, *overrides: str):
    """The tiny LSDO model (``INDEX_TINY`` + ``overrides``) in eval mode with randomised X-Pool weights."""
    from lsdo.model import build_model

    return randomise_xpool(build_model(compose([*INDEX_TINY, *overrides])).eval(), seed=seed)


def bench_module(name: str):
    """``bench/<name>.py`` as a module, as ``python bench/<name>.py`` runs it (bench/ on sys.path for its shared
    ``study_runs``; registered in sys.modules, as its dataclasses need); loaded once per session."""
    import importlib.util

    key = f"_bench_{name}"
    if key not in sys.modules:
        if str(ROOT / "bench") not in sys.path:
            sys.path.insert(0, str(ROOT / "bench"))
        spec = importlib.util.spec_from_file_location(key, ROOT / "bench" / f"{name}.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[key] = module
        spec.loader.exec_module(module)
    return sys.modules[key]


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is not present (a user's fresh clone has no ../shared)")
    return SHARED_DATA


# Skip reasons that mean "the real published data in ../shared is absent" (the ``shared_data``
# fixture above, ``test_model_components.py``'s authors' bank): counted in the terminal summary.
SHARED_DATA_SKIP_MARKERS = ("../shared/data", "../shared data")


def _skip_reason(report: pytest.TestReport | pytest.CollectReport) -> str:
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:  # (path, lineno, "Skipped: reason")
        return str(longrepr[2])
    return str(longrepr or "")


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config):
    """Say how many tests skipped because the real annotation data (../shared/data) is absent.

    An outermost wrapper, so the line comes after the short test summary (``-ra``), by the final counts.
    """
    from collections import Counter

    result = yield
    skipped = [
        r
        for r in terminalreporter.stats.get("skipped", [])
        if any(marker in _skip_reason(r) for marker in SHARED_DATA_SKIP_MARKERS)
    ]
    if not skipped:
        return result
    per_file = Counter(r.nodeid.split("::")[0] for r in skipped)
    where = ", ".join(f"{path}: {count}" for path, count in sorted(per_file.items()))
    noun = "test" if len(skipped) == 1 else "tests"
    terminalreporter.write_line(
        f"{len(skipped)} {noun} skipped: real annotation data (../shared/data) not present; they check the "
        f"loaders against the published counts and the authors' files ({where})",
        yellow=True,
    )
    return result
