"""Console entry points: ``lsdo-train`` and ``lsdo-eval`` (Hydra command lines) and the plain tools' error guard."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from typing import Any

import hydra
from omegaconf import DictConfig
from omegaconf.errors import InterpolationResolutionError, MissingMandatoryValue

from lsdo.config import CONFIG_DIR, register_resolvers
from lsdo.errors import LSDOUserError, run_plain


def one_copy_of_each_log_line() -> None:
    """Lightning's loggers print through Hydra's root handler only (they had handlers of their own too)."""
    import lightning  # noqa: F401  (importing it installs the handlers removed below)

    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True


def guarded(fn: Callable[[DictConfig], Any]) -> Callable[[DictConfig], Any]:
    """Report user errors as one line on stderr and exit 2 (no traceback)."""

    def wrapper(cfg: DictConfig) -> Any:
        one_copy_of_each_log_line()
        try:
            return fn(cfg)
        except LSDOUserError as exc:
            print(f"error: {exc}", file=sys.stderr)
            sys.exit(2)
        except (MissingMandatoryValue, InterpolationResolutionError) as exc:
            # A config value the user left out (???) or an interpolation that cannot resolve.
            key = getattr(exc, "full_key", None) or ""
            print(f"error: {key + ': ' if key else ''}{str(exc).splitlines()[0]}", file=sys.stderr)
            sys.exit(2)

    wrapper.__name__ = fn.__name__
    return wrapper


def _train(cfg: DictConfig) -> Any:
    from lsdo.train import run

    return run(cfg)


def _eval(cfg: DictConfig) -> Any:
    from lsdo.evaluate import run

    return run(cfg)


train_task = guarded(_train)
eval_task = guarded(_eval)


def train_main() -> None:
    register_resolvers()
    hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="train")(train_task)()


def eval_main() -> None:
    register_resolvers()
    hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="eval")(eval_task)()


def premise_main() -> None:
    """``lsdo-premise``: the paper's premise measured on a synthetic-benchmark checkpoint (lsdo.premise)."""
    from lsdo.premise import main

    sys.exit(run_plain(main))


def build_bank_main(argv: list[str] | None = None) -> int:
    """``lsdo-build-bank [ckpt=PATH] [m=20] out=BANK.json <config overrides>``: a shared-variant bank file."""
    import torch
    from omegaconf import OmegaConf

    from lsdo.config import compose
    from lsdo.data import build_datamodule
    from lsdo.model import build_model
    from lsdo.model.encoder import image_size_of
    from lsdo.model.video_lsdo import write_bank_file

    def main() -> int:
        args = list(sys.argv[1:] if argv is None else argv)
        opts = {k: a.split("=", 1)[1] for a in args for k in ("out", "ckpt", "m") if a.startswith(k + "=")}
        overrides = [a for a in args if a.split("=", 1)[0] not in ("out", "ckpt", "m")]
        if "out" not in opts:
            raise LSDOUserError("lsdo-build-bank: give out=PATH for the bank JSON")
        if "ckpt" in opts:
            from lsdo.checkpoint import load_model as load_checkpoint_model

            model, saved = load_checkpoint_model(opts["ckpt"])
            cfg = OmegaConf.merge(OmegaConf.create(saved), OmegaConf.from_dotlist(overrides))
        else:
            cfg = compose(overrides)
            model = build_model(cfg)
        m = int(opts.get("m", cfg.variant.get("m", 20)))
        dm = build_datamodule(cfg, image_size_of(cfg.model))
        dm.setup("fit")
        ids = dm.bank_video_ids(m)
        frames = dm.bank_videos(m)  # [m, n, 3, H, W]
        model.eval()
        with torch.no_grad():
            feats = model.encode_frames(frames).mean(dim=1)  # [m, n, d] -> [m, d]
        write_bank_file(opts["out"], ids, feats)
        print(f"wrote {opts['out']}: {len(ids)} videos x {feats.shape[1]} ({cfg.dataset.name})")
        return 0

    return run_plain(main)
