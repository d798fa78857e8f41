"""The config's types and keys: one dataclass per section, which the YAML files fill.

The values live in ``configs/`` (each default exactly once); these dataclasses say which keys a
section may hold and of what type, so that a key the project does not know (``+model.alpah=0.5``,
``+dataset.num_frame=8``) or a value of the wrong type is a one-line :class:`~lsdo.errors.ConfigError`
naming the key (with the nearest known key), instead of a setting that is silently ignored.
Fields carry no defaults (``MISSING``): a section need not hold every key (``dataset=msrvtt`` has
no ``clip_len``), but every key it holds must be declared here. ``trainer.*`` is Lightning's
(checked against ``lightning.Trainer`` by ``lsdo.train.trainer_options``); ``logger.*`` is the
logger's own; ``model.clip_cfg`` is open_clip's model config.

A new config key is added in two places: its value in the YAML, its type here
(``tests/test_config_schema.py`` checks that every YAML key is declared and every declared key
is in some YAML).
"""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass
from typing import Any

from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, ValidationError

from lsdo.errors import ConfigError


@dataclass
class Checkpoint:
    every_n_steps: int = MISSING
    export: Any = MISSING  # a path or null
    monitor_window: int = MISSING


@dataclass
class Lard:
    mask_threshold: float = MISSING
    window_threshold: float = MISSING
    kernel: int = MISSING
    stride: int = MISSING
    unit: str = MISSING
    binarize: bool = MISSING


@dataclass
class Dataset:
    # every dataset
    name: str = MISSING
    root: Any = MISSING
    num_frames: int = MISSING
    batch_size: int = MISSING
    lr: Any = MISSING  # a number, or null for an evaluation-only dataset
    num_workers: int = MISSING
    val_videos: int = MISSING
    train_sampling: str = MISSING
    on_missing: str = MISSING
    on_empty_caption: str = MISSING
    # video datasets (configs/dataset/common/video.yaml)
    train_split: str = MISSING
    ann_dir: Any = MISSING
    video_dir: Any = MISSING
    files: Any = MISSING
    train_unit: str = MISSING
    augment: bool = MISSING
    flip: str = MISSING  # none | plain | caption_aware (lsdo.data.transforms.decide_flip)
    crop_scale: Any = MISSING  # [min, max]: the random crop's area, a fraction of the frame's
    crop_ratio: Any = MISSING  # [min, max]: the random crop's aspect ratio (w / h)
    crop_max_cut: Any = MISSING  # null or a fraction in [0, 0.5): the most the crop cuts from any side
    on_corrupt: str = MISSING
    probe_videos: bool = MISSING
    decode_backend: str = MISSING
    frame_cache: Any = MISSING  # a folder made by lsdo-prepare frames, or null
    frame_cache_decode: str = MISSING
    # the synthetic benchmark
    seed: int = MISSING
    clip_len: int = MISSING
    image_size: Any = MISSING
    train_videos_per_combo: int = MISSING
    fresh_renders: bool = MISSING
    hard_negative_group: int = MISSING
    val_combos: int = MISSING
    test_combos: int = MISSING
    small_caption_prob: float = MISSING
    spatial_captions: bool = MISSING
    small_visible_frac: float = MISSING
    small_radius: float = MISSING
    distractors: int = MISSING
    # coco (zero-shot)
    split: str = MISSING
    karpathy_json: Any = MISSING
    captions_json: Any = MISSING
    image_dir: Any = MISSING
    captions_per_image: Any = MISSING
    max_images: Any = MISSING
    denseset: Any = MISSING


@dataclass
class Model:
    name: str = MISSING
    base_arch: Any = MISSING
    arch: Any = MISSING
    pretrained: Any = MISSING
    clip_cfg: Any = MISSING  # open_clip's model config (or null: the named architecture's)
    init_from: Any = MISSING
    use_frame_features: bool = MISSING
    use_video_lsdo: bool = MISSING
    use_frame_lsdo: bool = MISSING
    use_text_lsdo: bool = MISSING
    frame_proj: str = MISSING
    alpha: float = MISSING
    gamma: float = MISSING
    num_prototypes: int = MISSING
    dropout: float = MISSING
    grad_checkpointing: bool = MISSING


@dataclass
class Variant:
    name: str = MISSING
    frame_attention: str = MISSING
    # shared
    m: int = MISSING
    init: str = MISSING
    bank_path: Any = MISSING
    # single
    theta: float = MISSING
    learnable_threshold: bool = MISSING
    ste_temperature: float = MISSING
    select_frame: int = MISSING
    num_segments: int = MISSING
    # regions
    k: int = MISSING
    heatmap: str = MISSING
    project: bool = MISSING
    grad_through_crops: bool = MISSING
    seed: int = MISSING
    interpolation: str = MISSING
    lard: Lard = MISSING


@dataclass
class Optim:
    clip_lr: float = MISSING
    lr: Any = MISSING  # ${dataset.lr}
    weight_decay: float = MISSING
    exclude_1d_from_decay: bool = MISSING
    warmup_ratio: float = MISSING
    warmup_from_zero: bool = MISSING
    eps: float = MISSING


@dataclass
class Inference:
    mode: str = MISSING
    prefilter_k: int = MISSING
    method: str = MISSING
    chunk_size: int = MISSING
    dsl: bool = MISSING
    dsl_temperature: float = MISSING
    qb_norm: bool = MISSING
    qb_norm_beta: float = MISSING
    qb_norm_k: int = MISSING
    qb_norm_bank: str = MISSING


@dataclass
class ZeroShotInference:
    region_encoder: str = MISSING
    region_k: int = MISSING
    grid: int = MISSING
    heatmap: str = MISSING
    lard: Lard = MISSING
    larc_seed: int = MISSING
    batch_size: int = MISSING
    text_batch_size: int = MISSING
    chunk_size: int = MISSING
    device: str = MISSING


@dataclass
class Paths:
    root_dir: str = MISSING
    log_dir: str = MISSING


# section -> schema (sections not listed are checked elsewhere or belong to another library)
SECTIONS: dict[str, type] = {
    "checkpoint": Checkpoint,
    "dataset": Dataset,
    "model": Model,
    "variant": Variant,
    "optim": Optim,
    "inference": Inference,
    "paths": Paths,
}
TOP_KEYS = {  # the keys outside any section, of train.yaml / eval.yaml / zeroshot.yaml
    "task_name", "seed", "impl", "train", "test", "ckpt_path", "ckpt", "select_on_test",
    "checkpoint", "dataset", "model", "variant", "optim", "inference", "paths", "trainer", "logger",
    "paper",  # experiment=<dataset>_<variant>: the paper's figures for that row (carried, not read)
    "ablation",  # ablation=<table>_<row>: which row of Tables VI-XI a run is, with the paper's figures (lsdo-report)
}  # fmt: skip


def _known(schema: type) -> list[str]:
    return [f.name for f in dataclasses.fields(schema)]


def _schema_at(schema: type, path: list[str]) -> type:
    """The dataclass of a nested section (``variant.lard`` -> :class:`Lard`); ``schema`` where there is none."""
    for part in path:
        hints = {f.name: f.type for f in dataclasses.fields(schema)}
        nested = globals().get(str(hints.get(part)))
        if not (isinstance(nested, type) and dataclasses.is_dataclass(nested)):
            return schema
        schema = nested
    return schema


def _unknown(key: str, known: list[str]) -> str:
    parent, _, leaf = key.rpartition(".")
    close = difflib.get_close_matches(leaf, known, n=1)
    return f"{key}: not a config key" + (
        f" (did you mean {parent + '.' if parent else ''}{close[0]}?)" if close else ""
    )


KINDS = {"int": "an integer", "float": "a number", "bool": "true or false", "str": "text"}


def check(cfg: DictConfig | dict, sections: dict[str, type] | None = None) -> None:
    """Raise a one-line ``ConfigError`` for the first key ``cfg`` holds that its section does not declare,
    or whose value has the wrong type. ``sections``: section -> schema (default :data:`SECTIONS`)."""
    cfg = cfg if isinstance(cfg, DictConfig) else OmegaConf.create(cfg)
    for key in cfg:
        if key not in TOP_KEYS and key != "hydra":
            raise ConfigError(_unknown(str(key), sorted(TOP_KEYS)))
    for section, schema in (sections or SECTIONS).items():
        node = cfg.get(section) if section in cfg else None
        if node is None or not isinstance(node, DictConfig):
            continue
        try:
            OmegaConf.merge(OmegaConf.structured(schema), node)
        except ConfigKeyError as exc:
            key = str(exc.full_key or exc.key)
            key = key if key.startswith(section + ".") else f"{section}.{key}"
            parts = key.split(".")[1:-1]
            raise ConfigError(_unknown(key, _known(_schema_at(schema, parts)))) from None
        except ValidationError as exc:
            key = str(exc.full_key or exc.key)
            key = key if key.startswith(section + ".") else f"{section}.{key}"
            parts = key.split(".")[1:]
            field = {f.name: f.type for f in dataclasses.fields(_schema_at(schema, parts[:-1]))}.get(parts[-1])
            value = OmegaConf.select(node, ".".join(parts), throw_on_resolution_failure=False)
            raise ConfigError(f"{key}={value}: expected {KINDS.get(str(field), field)}") from None
