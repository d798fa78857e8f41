"""Evaluation entry point logic (``python eval.py ckpt=PATH`` / ``lsdo-eval``).

The model is rebuilt from the checkpoint alone (its saved config). On the command line:

* ``dataset=NAME [dataset.key=...]`` evaluates on another dataset (the preset replaces the saved
  dataset config); without it the checkpoint's own dataset settings are used;
* ``inference.mode=full|fast``, ``inference.prefilter_k=K``, ``inference.dsl=true``,
  ``inference.qb_norm=true``, ... override the saved protocol (keys left null keep the checkpoint's);
* ``variant=...``, ``model=...`` or ``impl=...`` must agree with the checkpoint (a checkpoint
  rebuilds its own model): a mismatch is a one-line error.

Writes into the run directory: ``metrics.json`` (metrics + the protocol used), ``metrics.md``,
``recall_at_k.png`` and ``rank_histogram.png``, and the merged ``config.yaml``.

Several devices: ``trainer.devices=4 trainer.strategy=ddp`` (any ``trainer.*`` key goes to
``lightning.Trainer``, as in training): each rank encodes a contiguous block of the test videos, the
features are gathered and scored once, and the metrics equal one device's (docs/distributed.md).
"""

from __future__ import annotations

import json
import logging
import shutil
from typing import Any

import lightning as L
import torch
from omegaconf import DictConfig, OmegaConf

from lsdo.checkpoint import check_state_fits, load_checkpoint, without_pretrained
from lsdo.config import validate
from lsdo.data import build_datamodule
from lsdo.errors import LSDOUserError
from lsdo.lightning_module import LSDOLitModule, compile_model
from lsdo.model.encoder import image_size_of
from lsdo.reporting import format_metrics_table
from lsdo.retrieval import canonical_mode
from lsdo.retrieval.qbnorm import LABEL as QB_NORM_LABEL
from lsdo.retrieval.qbnorm import check_options as check_qb_norm
from lsdo.runtime import check_accelerator, owned_process_group
from lsdo.train import compile_requested, query_ranks, run_directory, trainer_options

log = logging.getLogger(__name__)


def rebuild(cfg: dict[str, Any], state_dict: dict[str, torch.Tensor], path: str = "ckpt") -> LSDOLitModule:
    """An LSDOLitModule with the checkpoint's weights (no pretrained download)."""
    lit = LSDOLitModule(without_pretrained(cfg))
    check_state_fits(lit, state_dict, path, "ckpt")
    lit.load_state_dict(state_dict)
    return lit


def command_line_keys() -> set[str] | None:
    """The keys set on the command line (``dataset.root``, ``model``, ...); None outside Hydra."""
    try:
        from hydra.core.hydra_config import HydraConfig

        overrides = list(HydraConfig.get().overrides.task)
    except (ImportError, ValueError):
        return None
    return {o.split("=", 1)[0].lstrip("+~") for o in overrides}


def _plain(value: Any) -> Any:
    return OmegaConf.to_container(OmegaConf.create({"v": value}), resolve=True)["v"]


def _leaf_keys(tree: Any, prefix: str = "") -> list[str]:
    if not isinstance(tree, dict):
        return [prefix]
    return [leaf for k, v in tree.items() for leaf in _leaf_keys(v, f"{prefix}.{k}" if prefix else str(k))]


def check_compatible(saved: DictConfig, cfg: DictConfig, given: set[str] | None = None) -> None:
    """Refuse command-line model settings that differ from the checkpoint's.

    ``variant=NAME`` / ``model=NAME`` must name the checkpoint's own preset; keys typed on the
    command line (``model.alpha=0.5``; all of a group's keys when ``given`` is None) must equal
    the saved values. A preset's other values are not compared: the checkpoint rebuilds its own
    model, whatever the preset file says today.
    """
    impl = cfg.get("impl")
    if impl is not None and str(impl) != str(saved["impl"]):
        raise LSDOUserError(f"impl={impl} given, but the checkpoint was trained with impl={saved.get('impl', 'paper')}")
    for group in ("variant", "model"):
        chosen = cfg.get(group)
        if not chosen:
            continue
        name, old_name = chosen.get("name"), OmegaConf.select(saved, f"{group}.name")
        if name is not None and old_name is not None and str(name) != str(old_name):
            raise LSDOUserError(
                f"{group}={name} given, but the checkpoint was trained with {group}={old_name}; "
                f"a checkpoint rebuilds its own model (leave {group}= out)"
            )
        if given is not None:
            keys = sorted(k for k in given if k.startswith(f"{group}."))
        else:
            keys = [f"{group}.{k}" for k in _leaf_keys(OmegaConf.to_container(chosen)) if k != "name"]
        for key in keys:
            v, old = OmegaConf.select(cfg, key), OmegaConf.select(saved, key)
            if v is not None and old is not None and _plain(v) != _plain(old):
                raise LSDOUserError(
                    f"{key}={v} given, but the checkpoint was trained with {key}={old}; "
                    f"a checkpoint rebuilds its own model (leave {key} out)"
                )


# Data settings that stay the checkpoint's (as trained) when another dataset preset is chosen.
STICKY_DATA_KEYS = ("num_frames",)


def merge_dataset(saved: DictConfig, chosen: DictConfig | None, given: set[str] | None) -> list[str]:
    """Apply the command line's dataset settings to the checkpoint's (``saved.dataset``, in place).

    * ``dataset.KEY=VALUE`` alone (e.g. ``dataset.root=/new/place``): that key changes, every other
      data setting stays as trained;
    * ``dataset=NAME`` of the checkpoint's own dataset: as above, the preset's values are ignored;
    * ``dataset=NAME`` of another dataset: its preset replaces the data settings, except the
      number of frames the model was trained with (unless given).

    Returns one line per changed setting (old -> new), for the log.
    """
    if not chosen:
        return []
    chosen_plain = {k: v for k, v in OmegaConf.to_container(chosen, resolve=True).items()}
    old = OmegaConf.to_container(saved.dataset, resolve=True)
    typed = (
        {k.split(".", 1)[1] for k in given if k.startswith("dataset.")}
        if given is not None
        else {k for k, v in chosen_plain.items() if v is not None and k != "name"}
    )
    new_name = chosen_plain.get("name")
    if new_name is not None and str(new_name) != str(old.get("name")):
        new = {k: v for k, v in chosen_plain.items() if v is not None}
        for k in STICKY_DATA_KEYS:
            if k in old and k not in typed:
                new[k] = old[k]
        label = f"the {new_name} preset"
    else:
        for k in sorted(typed):
            if k.split(".")[0] not in old:
                raise LSDOUserError(
                    f"dataset.{k}: the checkpoint's dataset ({old.get('name')}) has no such setting; "
                    f"its settings: {', '.join(sorted(old))}"
                )
        new = {**old}
        for top in {k.split(".")[0] for k in typed}:
            value = chosen_plain.get(top)
            new[top] = {**old[top], **value} if isinstance(old[top], dict) and isinstance(value, dict) else value
        label = "command line"
    changes = [
        f"dataset.{k}: {old.get(k)!r} -> {new.get(k)!r} ({label})"
        for k in sorted(set(old) | set(new))
        if _plain(old.get(k)) != _plain(new.get(k))
    ]
    saved.dataset = new
    return changes


def merge_eval_config(saved: dict[str, Any], cfg: DictConfig, given: set[str] | None = None) -> DictConfig:
    """The checkpoint's config with the command line's dataset / inference settings (changes logged)."""
    base = OmegaConf.create(saved)
    check_compatible(base, cfg, given)
    for line in merge_dataset(base, cfg.get("dataset"), given):
        log.info("eval: %s", line)
    inference = {k: v for k, v in (OmegaConf.to_container(cfg.get("inference") or {}) or {}).items() if v is not None}
    return OmegaConf.merge(base, {"inference": inference})


def protocol_label(inference: Any) -> str:
    mode = canonical_mode(str(inference["mode"]))
    label = "full protocol" if mode == "full" else f"fast (prefilter k={inference.get('prefilter_k', 100)})"
    if inference.get("dsl"):
        label += ", DSL post-processing (transductive)"
    check_qb_norm(inference)  # qb_norm with dsl, an unknown bank: one line
    if inference.get("qb_norm"):
        beta, k = inference.get("qb_norm_beta"), inference.get("qb_norm_k")
        label += f", {QB_NORM_LABEL} post-processing (test-query bank, beta={beta}, k={k})"
    return label


def run(cfg: DictConfig) -> dict[str, Any]:
    """Evaluate ``cfg.ckpt`` as configured; returns the metrics. Under DDP the process group the trainer
    made is destroyed at the end (:func:`lsdo.runtime.owned_process_group`)."""
    with owned_process_group():
        return _run(cfg)


def _run(cfg: DictConfig) -> dict[str, Any]:
    from lsdo.plots import plot_retrieval

    if OmegaConf.is_missing(cfg, "ckpt") or not cfg.get("ckpt"):
        raise LSDOUserError("ckpt: give the checkpoint to evaluate: python eval.py ckpt=PATH (a .ckpt file of a run)")
    saved, state_dict = load_checkpoint(str(cfg.ckpt))
    merged = merge_eval_config(saved, cfg, command_line_keys())
    validate(merged)
    protocol_label(merged.inference)  # refuses qb_norm with dsl (one line) before the model is built
    options = trainer_options(cfg)  # trainer.devices, trainer.strategy, ...: every key goes to Lightning
    out, writer, scratch = run_directory(cfg)  # rank 0 writes; other ranks only compute
    out.mkdir(parents=True, exist_ok=True)
    dm = build_datamodule(merged, image_size_of(merged.model), report_dir=out if writer else None)
    lit = rebuild(OmegaConf.to_container(merged, resolve=True), state_dict, str(cfg.ckpt))
    if writer:
        (out / "config.yaml").write_text(OmegaConf.to_yaml(merged, resolve=True))
    check_accelerator(str(cfg.trainer.accelerator))
    if compile_requested(cfg):
        compile_model(lit.model)
    trainer = L.Trainer(
        logger=False,
        enable_model_summary=False,
        default_root_dir=str(out),
        use_distributed_sampler=False,  # the data module shards the test split (ShardSampler), no repeats
        **options,
    )
    trainer.test(lit, datamodule=dm, verbose=False)
    metrics = lit.results.get("test", {})
    if not trainer.is_global_zero:  # the same metrics on every rank (broadcast); rank 0 writes the files
        if scratch:
            shutil.rmtree(out, ignore_errors=True)
        return metrics
    label = protocol_label(merged.inference)
    table = format_metrics_table(metrics, title=f"test metrics of {cfg.ckpt} ({merged.dataset.name}; {label})")
    print(table)
    (out / "metrics.md").write_text(table + "\n")
    inference = OmegaConf.to_container(merged.inference, resolve=True)
    (out / "metrics.json").write_text(
        json.dumps(
            {
                "ckpt": str(cfg.ckpt),
                "dataset": str(merged.dataset.name),
                "protocol": label,
                "inference": inference,
                "test": metrics,
            },
            indent=2,
        )
    )
    ranks = query_ranks(lit)
    if ranks is not None:
        plot_retrieval(ranks, out, title=f"recall at K ({label})")
    log.info("wrote %s", out)
    return metrics
