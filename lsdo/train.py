"""Training entry point logic (``python train.py`` / ``lsdo-train``)."""

from __future__ import annotations

import difflib
import inspect
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, NamedTuple

import lightning as L
from lightning.pytorch.callbacks import LearningRateMonitor, RichProgressBar
from omegaconf import DictConfig, OmegaConf

from lsdo.callbacks import AtomicCheckpointIO, atomic_write, checkpoint_callbacks
from lsdo.checkpoint import check_state_fits, init_encoder_from, read_checkpoint, saved_config
from lsdo.config import validate
from lsdo.data import build_datamodule
from lsdo.errors import ConfigError, LSDOUserError
from lsdo.lightning_module import LSDOLitModule, compile_model
from lsdo.model.encoder import image_size_of
from lsdo.plots import plot_training_curves
from lsdo.reporting import format_metrics_table
from lsdo.retrieval.metrics import t2v_ranks, v2t_ranks
from lsdo.runtime import check_accelerator, output_dir_of, owned_process_group

log = logging.getLogger(__name__)


# What makes two runs the same configuration for ``ckpt_path=last``.
RUN_IDENTITY = ("impl", "dataset.name", "dataset.train_split", "variant.name", "model.name")


def run_identity(cfg: Any) -> dict[str, str | None]:
    """(impl, dataset, split, variant, model) of a config, as strings (None where absent)."""
    cfg = OmegaConf.create(cfg) if isinstance(cfg, dict) else cfg
    out = {}
    for key in RUN_IDENTITY:
        value = OmegaConf.select(cfg, key, default=None)
        out[key] = None if value is None else str(value)
    if out["impl"] is None:
        out["impl"] = "paper"
    return out


def _identity_label(identity: dict[str, str | None]) -> str:
    """``impl=paper, variant=average, model=tiny, dataset=msrvtt (9k)``."""
    split = identity["dataset.train_split"]
    dataset = f"{identity['dataset.name']}{f' ({split})' if split else ''}"
    return (
        f"impl={identity['impl']}, variant={identity['variant.name']}, model={identity['model.name']}, "
        f"dataset={dataset}"
    )


def _saved_identity(ckpt: Path) -> dict[str, str | None] | None:
    """The identity of the run that wrote ``ckpt`` (its run directory's config.yaml), or None."""
    config = ckpt.parent.parent / "config.yaml"
    if not config.is_file():
        return None
    try:
        return run_identity(OmegaConf.load(config))
    except Exception:  # an unreadable config: not a candidate
        return None


def find_last_checkpoint(cfg: DictConfig) -> Path:
    """The newest ``last.ckpt`` under logs/<task_name>/ of a run with this config's identity.

    Refuses (one line listing what it found) when no run of the same dataset, variant, model and
    impl has one: resuming another configuration's weights would train and overwrite the wrong run.
    """
    root = Path(str(cfg.paths.log_dir)) / str(cfg.task_name)
    found = sorted(root.glob("**/checkpoints/last.ckpt"), key=lambda p: p.stat().st_mtime, reverse=True)
    want = run_identity(cfg)
    others: dict[str, list[str]] = {}
    for ckpt in found:
        identity = _saved_identity(ckpt)
        if identity == want:
            return ckpt
        label = _identity_label(identity) if identity else "no config.yaml"
        others.setdefault(label, []).append(str(ckpt.parent.parent.name))
    if not found:
        raise LSDOUserError(f"ckpt_path=last: no run under {root} has a checkpoints/last.ckpt; start without ckpt_path")
    listing = "; ".join(f"{label} ({len(runs)} run(s), newest {runs[0]})" for label, runs in others.items())
    raise LSDOUserError(
        f"ckpt_path=last: no run of this configuration ({_identity_label(want)}) under {root}; found: {listing}. "
        "Give ckpt_path=<file> to resume one of them explicitly"
    )


def resolve_ckpt_path(cfg: DictConfig) -> str | None:
    """``ckpt_path``: a file, or "last" = the newest last.ckpt of a run of the same configuration."""
    ckpt = cfg.get("ckpt_path")
    if ckpt is None:
        return None
    if str(ckpt) == "last":
        return str(find_last_checkpoint(cfg))
    if not Path(str(ckpt)).is_file():
        raise LSDOUserError(f"ckpt_path: checkpoint file not found: {ckpt}")
    return str(ckpt)


def check_resume_checkpoint(path: str, lit: LSDOLitModule, cfg: DictConfig) -> dict[str, Any]:
    """Read the checkpoint to resume safely (weights only) and check it fits; returns its counters."""
    ckpt = read_checkpoint(path, "ckpt_path")
    saved = saved_config(ckpt, path, "ckpt_path")
    check_state_fits(lit, ckpt["state_dict"], path, "ckpt_path")
    if run_identity(saved) != run_identity(cfg):
        log.warning(
            "ckpt_path=%s was trained as %s; this run is %s", path, _identity_label(run_identity(saved)),
            _identity_label(run_identity(cfg)),
        )  # fmt: skip
    return {"epoch": int(ckpt.get("epoch", 0)), "global_step": int(ckpt.get("global_step", 0))}


FINE_TUNING_CLIP_LR = 1e-4  # below this, an encoder without pretrained weights learns little


def warn_random_init_at_fine_tuning_rate(cfg: DictConfig) -> None:
    """A random-init encoder trained at the paper's fine-tuning rate (1e-6) barely moves: say so."""
    started = cfg.model.get("pretrained") is not None or cfg.model.get("init_from") is not None
    if not started and float(cfg.optim.clip_lr) < FINE_TUNING_CLIP_LR:
        log.warning(
            "model.pretrained=null: the CLIP encoder starts from random weights, but optim.clip_lr=%g is a "
            "fine-tuning rate for pretrained CLIP and a random encoder will learn little at it. Give "
            "model.pretrained=openai (or a weights file), or train from scratch at a higher rate "
            "(e.g. optim.clip_lr=1e-3, as experiment=demo does)",
            float(cfg.optim.clip_lr),
        )


def build_loggers(cfg: DictConfig, out: Path) -> list[Any] | bool:
    name = str(cfg.logger.name)
    if name == "none":
        return False
    if name == "csv":
        from lightning.pytorch.loggers import CSVLogger

        return [CSVLogger(save_dir=str(out), name="csv")]
    if name == "tensorboard":
        from lightning.pytorch.loggers import TensorBoardLogger

        return [TensorBoardLogger(save_dir=str(out), name="tensorboard")]
    if name == "wandb":
        from lightning.pytorch.loggers import WandbLogger

        return [WandbLogger(project=str(cfg.logger.project), save_dir=str(out), offline=bool(cfg.logger.offline))]
    raise ConfigError(f"logger.name: expected wandb | csv | tensorboard | none, got '{name}'")


# ``trainer.*`` keys that lsdo reads itself instead of passing to lightning.Trainer.
LSDO_TRAINER_KEYS = ("compile",)


def trainer_options(cfg: DictConfig) -> dict[str, Any]:
    """Every ``trainer.*`` key, passed through to ``lightning.Trainer`` as it is (null = Lightning's default).

    A key Lightning does not take is an error naming it, with the closest option (``trainer.max_epoch``:
    did you mean ``max_epochs``?), so ``+trainer.accumulate_grad_batches=4`` is applied and a misspelt
    key is never dropped silently. ``trainer.compile`` is lsdo's (:func:`compile_requested`), not passed on.
    """
    accepted = set(inspect.signature(L.Trainer.__init__).parameters) - {"self"}
    given = OmegaConf.to_container(cfg.trainer, resolve=True)
    compile_requested(cfg)  # a bad value fails here, with the others
    for key in LSDO_TRAINER_KEYS:
        given.pop(key, None)
    for key in given:
        if key not in accepted:
            close = difflib.get_close_matches(key, sorted(accepted), n=1)
            hint = f" (did you mean trainer.{close[0]}?)" if close else ""
            raise ConfigError(f"trainer.{key}: not an option of lightning.Trainer{hint}")
    reserved = {"default_root_dir", "callbacks", "plugins", "logger", "use_distributed_sampler", "enable_model_summary"}
    clash = sorted(reserved & set(given))
    if clash:
        raise ConfigError(f"trainer.{clash[0]}: lsdo sets it (run directory, checkpoints, loggers); not a config key")
    return {k: v for k, v in given.items() if v is not None}


def compile_requested(cfg: DictConfig) -> bool:
    """``trainer.compile`` (configs/trainer/*.yaml; absent = false): torch.compile the encoder's towers and heads."""
    value = OmegaConf.select(cfg, "trainer.compile", default=None)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise ConfigError(f"trainer.compile={value}: expected true or false")
    return value


def build_trainer(cfg: DictConfig, out: Path, callbacks: list[Any], loggers: Any) -> L.Trainer:
    kw = trainer_options(cfg)
    return L.Trainer(
        default_root_dir=str(out),
        callbacks=callbacks,
        plugins=[AtomicCheckpointIO()],
        logger=loggers,
        use_distributed_sampler=False,  # lsdo's samplers shard: training EpochSampler, evaluation ShardSampler
        enable_model_summary=False,
        **kw,
    )


def launched_as_rank_zero() -> bool:
    """False in a process that a launcher started as another rank than 0 (before the process group is up).

    torchrun sets ``RANK``; ``srun`` sets ``SLURM_PROCID``; Lightning's own launcher (``trainer.strategy=ddp``
    from one command) starts ranks 1.. with ``LOCAL_RANK`` (and ``NODE_RANK`` on other nodes).
    """
    env = os.environ
    if "RANK" in env:
        return int(env["RANK"]) == 0
    if int(env.get("SLURM_NTASKS", "1") or 1) > 1 and "SLURM_PROCID" in env:
        return int(env["SLURM_PROCID"]) == 0
    return int(env.get("NODE_RANK", "0") or 0) == 0 and int(env.get("LOCAL_RANK", "0") or 0) == 0


def _under_hydra() -> bool:
    try:
        from hydra.core.hydra_config import HydraConfig

        HydraConfig.get()
        return True
    except (ImportError, ValueError):
        return False


class RunDirectory(NamedTuple):
    path: Path
    writes: bool  # this process writes the run's files (rank 0)
    scratch: bool  # a temporary directory of a rank other than 0 (removed at the end)


def run_directory(cfg: DictConfig) -> RunDirectory:
    """The run directory, whether this process writes the run's files (rank 0 does, other ranks do not).

    Under Hydra every rank is given the same directory (Lightning's launcher passes rank 0's
    ``hydra.run.dir`` to the ranks it starts; with torchrun or srun give ``hydra.run.dir=...``);
    outside Hydra a rank other than 0 works in a scratch directory of its own instead of claiming a
    second run directory. The checkpoint callbacks take rank 0's folder whichever (Lightning broadcasts it).
    """
    zero = launched_as_rank_zero()
    if zero or _under_hydra():
        return RunDirectory(output_dir_of(cfg), zero, False)
    return RunDirectory(Path(tempfile.mkdtemp(prefix="lsdo-rank-")), False, True)


def export_checkpoint(cfg: DictConfig, tested: str | None) -> None:
    """``checkpoint.export=PATH``: write the tested (best) checkpoint there too, atomically (e.g. a stage-1 encoder)."""
    dest = cfg.checkpoint.get("export")
    if not dest:
        return
    if not tested:
        log.warning("checkpoint.export=%s: no best checkpoint was kept (fast_dev_run?), nothing written", dest)
        return
    with open(tested, "rb") as src:
        atomic_write(str(dest), lambda f: shutil.copyfileobj(src, f))
    log.info("checkpoint.export: %s -> %s", tested, dest)


def query_ranks(lit: LSDOLitModule) -> dict[str, list[int]] | None:
    """1-based rank of the correct item per test query: ``t2v`` per caption, ``v2t`` per video."""
    out = lit.eval_outputs.get("test")
    if not out:
        return None
    sims, t2v = out["sims"], out["text_to_video"]
    return {"t2v": t2v_ranks(sims, t2v).tolist(), "v2t": v2t_ranks(sims, t2v).tolist()}


def _fit_kwargs() -> dict[str, Any]:
    """``weights_only=True`` for Lightning's own checkpoint loading where the installed version takes it."""
    return {"weights_only": True} if "weights_only" in inspect.signature(L.Trainer.fit).parameters else {}


def run(cfg: DictConfig) -> dict[str, Any]:
    """Train (and test) as configured; returns the final metrics. Under DDP the process group the trainer
    made is destroyed at the end (:func:`lsdo.runtime.owned_process_group`)."""
    with owned_process_group():
        return _run(cfg)


def _run(cfg: DictConfig) -> dict[str, Any]:
    validate(cfg)
    trainer_options(cfg)  # a misspelt trainer key fails here, before any directory or data
    L.seed_everything(int(cfg.seed), workers=True, verbose=False)
    out, writer, scratch = run_directory(cfg)  # writer: rank 0 (one process: itself) writes the run's files
    out.mkdir(parents=True, exist_ok=True)
    if writer:
        (out / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))  # resolved config of this run

    # Cheap checks first: data paths, accelerator, checkpoint; only then build the model
    # (which may download CLIP weights).
    dm = build_datamodule(cfg, image_size_of(cfg.model), report_dir=out if writer else None)
    check_accelerator(str(cfg.trainer.accelerator))
    ckpt_path = resolve_ckpt_path(cfg)
    training = bool(cfg.train)
    if training:
        warn_random_init_at_fine_tuning_rate(cfg)
    lit = LSDOLitModule(OmegaConf.to_container(cfg, resolve=True))
    resumed_at = check_resume_checkpoint(ckpt_path, lit, cfg) if ckpt_path else None
    init_from = cfg.model.get("init_from")
    if init_from and training and not ckpt_path:  # a resumed run has these weights (trained further) in its checkpoint
        init_encoder_from(lit.model, str(init_from))
        log.info("CLIP encoder initialised from %s (model.init_from); the heads start fresh", init_from)
    if compile_requested(cfg):
        log.info("trainer.compile=true: torch.compile %s", ", ".join(compile_model(lit.model)))
    if cfg.get("select_on_test"):
        log.warning(
            "select_on_test=true: model selection looks at the TEST split (as the published codes do); "
            "the reported test metrics are then optimistic"
        )

    # Every run writes only into its own directory. A resumed run starts a new one; its checkpoint
    # callbacks carry the resumed run's best-checkpoint state over (linking the best file in), so
    # the bookkeeping continues exactly as in an uninterrupted run and the earlier run is untouched.
    ckpt_cbs = checkpoint_callbacks(
        out / "checkpoints",
        int(cfg.checkpoint.every_n_steps),
        monitor_window=int(cfg.checkpoint.monitor_window),  # > 1: best mean R@1 over a window (the release)
    )
    best_cb = ckpt_cbs[0]
    callbacks: list[Any] = [*ckpt_cbs]
    if cfg.trainer.get("enable_progress_bar") is not False:  # +trainer.enable_progress_bar=false: none
        callbacks.append(RichProgressBar(leave=True))
    loggers = build_loggers(cfg, out)
    if loggers:
        callbacks.append(LearningRateMonitor(logging_interval="step"))
    trainer = build_trainer(cfg, out, callbacks, loggers)

    results: dict[str, Any] = {"run_dir": str(out)}
    if ckpt_path:
        results["resumed_from"] = {"checkpoint": ckpt_path, **resumed_at}
    if training:
        if ckpt_path:
            log.info("resuming from %s (after epoch %d, step %d)", ckpt_path, resumed_at["epoch"],
                     resumed_at["global_step"])  # fmt: skip
        trainer.fit(lit, datamodule=dm, ckpt_path=ckpt_path, **_fit_kwargs())
        results["val"] = lit.results.get("val", {})
        results["global_step"] = int(trainer.global_step)
        results["epochs"] = int(trainer.current_epoch)
    if cfg.test:
        best = best_cb.best_model_path if training else ckpt_path
        which = best if (best and not cfg.trainer.get("fast_dev_run")) else None
        trainer.test(lit, datamodule=dm, ckpt_path=which, verbose=False, **_fit_kwargs())
        results["test"] = lit.results.get("test", {})
        results["test_checkpoint"] = which
    results["run_dir"] = trainer.strategy.broadcast(str(out))  # DDP: rank 0's directory on every rank
    if not trainer.is_global_zero:  # DDP: the same metrics on every rank (broadcast); rank 0 writes them
        if scratch:
            shutil.rmtree(out, ignore_errors=True)  # this rank's scratch directory (run_directory)
        return results
    if cfg.test:
        print(
            format_metrics_table(
                results["test"], title=f"test metrics ({cfg.dataset.name}, variant={cfg.variant.name}, impl={cfg.impl})"
            )
        )
        export_checkpoint(cfg, results["test_checkpoint"])
        ranks = query_ranks(lit)
        if ranks:  # per-query ranks: paired comparisons between runs on the same queries
            (out / "test_ranks.json").write_text(json.dumps(ranks))
    (out / "metrics.json").write_text(json.dumps(results, indent=2))
    for log_csv in out.glob("csv/*/metrics.csv"):
        plot_training_curves(log_csv, out / "training_curves.png")
    return results
