"""The entry points: every console script and Hydra main, one module each; what they share is in ``common``.

| command | module |
|---|---|
| ``python train.py`` / ``lsdo-train`` | :mod:`lsdo.cli.train` |
| ``python eval.py`` / ``lsdo-eval`` | :mod:`lsdo.cli.evaluate` |
| ``python zeroshot.py`` / ``lsdo-zeroshot`` | :mod:`lsdo.cli.zeroshot` |
| ``lsdo-index build|info|verify`` | :mod:`lsdo.cli.index` |
| ``lsdo-search`` | :mod:`lsdo.cli.search` |
| ``lsdo-synth`` | :mod:`lsdo.cli.synth` |
| ``lsdo-prepare compress`` | :mod:`lsdo.cli.prepare` |
| ``lsdo-build-bank`` | :mod:`lsdo.cli.build_bank` |
| ``lsdo-build-denseset`` | :mod:`lsdo.cli.build_denseset` |
| ``lsdo-viz inverse-attention`` | :mod:`lsdo.cli.viz` |
| ``lsdo-premise`` | :mod:`lsdo.cli.premise` |

Every tool reads ``key=value`` arguments (:mod:`lsdo.cli.common`), reports a user error as one
line ``error: ...`` with exit status 2, and prints its keys with ``--help``.
"""

from lsdo.cli.build_bank import build_bank_main
from lsdo.cli.common import guarded, one_copy_of_each_log_line
from lsdo.cli.evaluate import eval_main, eval_task
from lsdo.cli.premise import premise_main
from lsdo.cli.train import train_main, train_task
from lsdo.errors import run_plain

__all__ = [
    "build_bank_main",
    "eval_main",
    "eval_task",
    "guarded",
    "one_copy_of_each_log_line",
    "premise_main",
    "run_plain",
    "train_main",
    "train_task",
]
