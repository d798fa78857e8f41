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
from lsdo.errors import LSDOUserError


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


def run_plain(fn: Callable[[], int]) -> int:
    """For the non-Hydra tools (lsdo-synth, lsdo-build-bank, ...): user errors as one line, exit code 2."""
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="[%(name)s] %(message)s")
    try:
        return int(fn() or 0)
    except LSDOUserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


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
