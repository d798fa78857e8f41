"""``lsdo-synth out=DIR``: the synthetic benchmark as real mp4 files in the MSR-VTT layout (lsdo.data.synth_export)."""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Sequence

from lsdo.cli.common import run_tool
from lsdo.data import synth_export
from lsdo.data.synth_export import SynthOptions, export


def synth(opts: SynthOptions) -> int:
    counts = export(**dataclasses.asdict(opts))
    print(
        f"wrote {opts.out}: train {counts['train']}, val {counts['val']}, test {counts['test']} videos "
        f"({counts['written']} encoded, {counts['kept']} already there)\n"
        f"train on it: python train.py dataset=msrvtt dataset.root={opts.out} model=tiny trainer=cpu"
    )
    return 0


def synth_main(argv: Sequence[str] | None = None) -> int:
    """Console entry point ``lsdo-synth``."""
    return run_tool("lsdo-synth", SynthOptions, synth, argv, about=(synth_export.__doc__ or "").split("\n\n")[0])


if __name__ == "__main__":
    sys.exit(synth_main())
