"""Config composition outside the command line: ``compose(overrides) -> DictConfig``.

``compose`` gives exactly the config ``python train.py <overrides>`` would run with (the
``configs/train.yaml`` tree), for notebooks, tests and tools.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

CONFIG_DIR = Path(os.environ.get("LSDO_CONFIG_DIR", Path(__file__).resolve().parents[1] / "configs"))


def _pick(key: str, *choices: str) -> float | str:
    """``${lsdo_pick:${dataset.train_split},9k=3e-5,7k=1e-5}`` -> the value listed for ``key``."""
    table = dict(c.split("=", 1) for c in choices)
    if str(key) not in table:
        raise ValueError(f"'{key}' is not one of {sorted(table)}")
    value = table[str(key)]
    try:
        return float(value)
    except ValueError:
        return value


# A token drawn once per process: run directories named by the second alone collided when two
# runs started in the same second; with the token, two processes never share one.
RUN_TOKEN = secrets.token_hex(3)


def register_resolvers() -> None:
    """Register the project's OmegaConf resolvers (idempotent): ``lsdo_pick``, ``lsdo_run_token``."""
    if not OmegaConf.has_resolver("lsdo_pick"):
        OmegaConf.register_new_resolver("lsdo_pick", _pick)
    if not OmegaConf.has_resolver("lsdo_run_token"):
        OmegaConf.register_new_resolver("lsdo_run_token", lambda: RUN_TOKEN)


register_resolvers()


def compose(overrides: list[str] | None = None, config_name: str = "train") -> DictConfig:
    """Compose ``configs/<config_name>.yaml`` with Hydra command-line style ``overrides``."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    if not CONFIG_DIR.is_dir():
        raise FileNotFoundError(f"config directory not found: {CONFIG_DIR} (set LSDO_CONFIG_DIR)")
    if GlobalHydra.instance().is_initialized():
        GlobalHydra.instance().clear()
    from hydra.errors import HydraException

    from lsdo.errors import ConfigError

    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        try:
            return hydra_compose(config_name=config_name, overrides=list(overrides or []))
        except HydraException as exc:  # a misspelt key or group, a malformed override: Hydra's own message
            raise ConfigError(" ".join(str(exc).split("\n")[:2]).strip()) from None


# ---------------------------------------------------------------------------------------------
# Configs saved before a key existed
# ---------------------------------------------------------------------------------------------

# Keys added after the first release (2026-11-23 12:23), with the value that reproduces how a config
# saved before the key existed behaved: what its absence meant, which is not always today's default
# (the YAML holds those). ``upgrade`` fills them in every saved config (``lsdo.checkpoint.saved_config``)
# and in configs given to ``build_model``; the code then reads every key directly.
# key -> (value, the dataset names it applies to; None: every config with that section)
VIDEO_DATASETS = ("msrvtt", "msvd", "lsmdc", "didemo")
LEGACY: dict[str, tuple[object, tuple[str, ...] | None]] = {
    "variant.frame_attention": ("rescaled", None),  # the form until 2026-12-02 (bounded is the default since)
    "dataset.train_sampling": ("rand", None),  # added 2026-12-02; rand was the only sampling before
    "dataset.small_radius": (0.07, ("synthetic",)),  # added 2026-11-23 13:46 (YAML 0.1 since)
    "dataset.fresh_renders": (False, ("synthetic",)),
    "dataset.hard_negative_group": (0, ("synthetic",)),
    "dataset.small_caption_prob": (1.0, ("synthetic",)),  # added 2026-12-02; every caption named both objects
    "dataset.spatial_captions": (False, ("synthetic",)),  # added 2026-12-02 (issue 17): no side in any caption
    "dataset.frame_cache": (None, VIDEO_DATASETS),  # added 2026-12-02 with lsdo-prepare frames; before: videos only
    "dataset.frame_cache_decode": ("cpu", VIDEO_DATASETS),
    "dataset.flip": ("plain", VIDEO_DATASETS),  # added 2026-12-02 (issue 17); the authors' flip before
    "dataset.crop_scale": ([0.5, 1.0], VIDEO_DATASETS),  # the authors' crop before
    "dataset.crop_ratio": ([0.75, 4 / 3], VIDEO_DATASETS),
    "dataset.crop_max_cut": (None, VIDEO_DATASETS),
    "model.grad_checkpointing": (False, None),  # added 2026-12-02; a training-memory switch, same results
    "inference.mode": ("full", None),  # the inference keys arrived 2026-11-23 15:06; before: full, exact
    "inference.method": ("gram", None),
    "inference.prefilter_k": (100, None),
    "inference.dsl": (False, None),
    "inference.dsl_temperature": (0.01, None),
    "inference.qb_norm": (False, None),  # added 2026-12-02 (issue 16); off before
    "inference.qb_norm_beta": (20, None),
    "inference.qb_norm_k": (1, None),
    "inference.qb_norm_bank": ("test", None),
}


def upgrade(cfg: DictConfig | dict) -> DictConfig | dict:
    """``cfg`` with every :data:`LEGACY` key it lacks filled in (where its section exists); same type back."""
    node = cfg if isinstance(cfg, DictConfig) else OmegaConf.create(cfg)
    missing = "__lsdo_missing__"
    changed = False
    for key, (value, datasets) in LEGACY.items():
        section = key.split(".", 1)[0]
        if section not in node or not isinstance(node[section], DictConfig):
            continue
        if datasets is not None and OmegaConf.select(node, "dataset.name", default=None) not in datasets:
            continue
        if OmegaConf.select(node, key, default=missing, throw_on_resolution_failure=False) == missing:
            if not changed and not isinstance(cfg, DictConfig):
                node = OmegaConf.create(cfg)  # a copy: the caller's dict stays as it was
            changed = True
            OmegaConf.update(node, key, value, force_add=True)
    if isinstance(cfg, DictConfig) or not changed:
        return node if isinstance(cfg, DictConfig) else cfg
    return OmegaConf.to_container(node)  # type: ignore[return-value]


# ---------------------------------------------------------------------------------------------
# Validation of the values users type: one line naming the key, before any work starts.
# ---------------------------------------------------------------------------------------------

# key -> (kind, minimum, null allowed); kind: "int" | "number". Keys a config lacks are skipped.
_CHECKS: dict[str, tuple[str, float, bool]] = {
    "seed": ("int", -(2**63), False),
    "trainer.max_epochs": ("int", -1, True),
    "trainer.log_every_n_steps": ("int", 1, True),
    "trainer.check_val_every_n_epoch": ("int", 1, True),
    "trainer.gradient_clip_val": ("number", 0, True),
    "trainer.val_check_interval": ("number", 0, True),
    "trainer.limit_train_batches": ("number", 0, True),
    "trainer.limit_val_batches": ("number", 0, True),
    "trainer.limit_test_batches": ("number", 0, True),
    "dataset.batch_size": ("int", 1, True),
    "dataset.num_frames": ("int", 1, True),
    "dataset.num_workers": ("int", 0, True),
    "dataset.clip_len": ("int", 1, True),
    "dataset.val_videos": ("int", 0, True),
    "dataset.lr": ("number", 0, True),
    "dataset.small_caption_prob": ("number", 0, True),
    "optim.clip_lr": ("number", 0, True),
    "optim.lr": ("number", 0, True),
    "optim.weight_decay": ("number", 0, True),
    "optim.warmup_ratio": ("number", 0, True),
    "optim.eps": ("number", 0, False),
    "inference.prefilter_k": ("int", 1, True),
    "inference.chunk_size": ("int", 1, True),
    "inference.dsl_temperature": ("number", 0, True),
    "checkpoint.every_n_steps": ("int", 0, True),
    "checkpoint.monitor_window": ("int", 1, False),
}


# keys that are fractions (their lower bound 0 is in _CHECKS): key -> what the value is
_FRACTIONS = {
    "optim.warmup_ratio": "a fraction of the training steps",
    "dataset.small_caption_prob": "a probability",
}


def _bad_value(key: str, value: object, kind: str, minimum: float) -> str | None:
    """Why ``value`` is not acceptable for ``key`` (None when it is)."""
    is_int = isinstance(value, int) and not isinstance(value, bool)
    is_number = is_int or (isinstance(value, float) and value == value)  # not NaN
    if kind == "int" and not is_int:
        return f"expected an integer, got {value!r}"
    if kind == "number" and not is_number:
        return f"expected a number, got {value!r}"
    if value < minimum or (key == "trainer.max_epochs" and value == 0):  # type: ignore[operator]
        if key == "trainer.max_epochs":
            return "expected an integer >= 1 (or -1: no limit)"
        return f"expected {'an integer' if kind == 'int' else 'a number'} >= {minimum:g}"
    return None


def validate(cfg: DictConfig) -> None:
    """Check that every key is known and of its type (:mod:`lsdo.schema`), and the ranges of the keys users
    set most; raise a one-line ``ConfigError``.

    Resolves each checked key (so an interpolation error names its key too). Keys a config does
    not have (e.g. ``dataset.clip_len`` of a video dataset) are skipped.
    """
    from omegaconf.errors import OmegaConfBaseException

    from lsdo.errors import ConfigError
    from lsdo.schema import check

    check(cfg)  # every key declared (lsdo/schema.py), every value of its type
    ablation = cfg.get("ablation")
    variant = OmegaConf.select(cfg, "variant.name")
    if ablation is not None and ablation.get("variant") != variant:
        row, table, wanted = ablation.get("name"), ablation.get("table"), ablation.get("variant")
        raise ConfigError(
            f"ablation={row} is a row of Table {table} (LSDO-{wanted}), not of variant={variant}: "
            f"use an experiment=<dataset>_{wanted} preset"
        )
    for key, (kind, minimum, nullable) in _CHECKS.items():
        try:
            value = OmegaConf.select(cfg, key, throw_on_missing=True)
        except OmegaConfBaseException as exc:
            raise ConfigError(f"{key}: {str(exc).splitlines()[0]}") from None
        if value is None:
            if nullable or OmegaConf.select(cfg, key, default="__absent__") == "__absent__":
                continue
            raise ConfigError(f"{key}: a value is required (got null)")
        problem = _bad_value(key, value, kind, minimum)
        if problem:
            raise ConfigError(f"{key}={value}: {problem}")
    for key, what in _FRACTIONS.items():
        value = OmegaConf.select(cfg, key)
        if isinstance(value, int | float) and value > 1:
            raise ConfigError(f"{key}={value}: expected {what} in [0, 1]")
