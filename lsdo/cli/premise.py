"""``lsdo-premise ckpt=PATH``: the paper's premise measured on a synthetic-benchmark checkpoint (lsdo.premise)."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from lsdo.cli.common import option, run_tool


@dataclass
class PremiseArgs:
    ckpt: str = option("a training checkpoint of the synthetic benchmark (e.g. logs/premise/stage1.ckpt)")
    renders: int = option("renderings per combination to train the probes on (half as many test them)", 4, minimum=1)
    out: str | None = option("a JSON file for the measurement", None)


def run(args: PremiseArgs) -> int:
    from lsdo.premise import format_premise, measure_premise

    r = measure_premise(args.ckpt, args.renders)
    print(format_premise(r))
    if args.out:
        Path(args.out).write_text(json.dumps(r, indent=1))
    return 0


def premise_main(argv: Sequence[str] | None = None) -> int:
    from lsdo import premise

    code = run_tool("lsdo-premise", PremiseArgs, run, argv, about=(premise.__doc__ or "").split("\n\n")[0])
    if argv is None:
        sys.exit(code)
    return code
