"""``lsdo-build-denseset instances=PATH out=PATH [fraction=0.1] [pick=random] ...``: the crowded COCO subset."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path

from lsdo.cli.common import run_tool
from lsdo.errors import read_json_file
from lsdo.inverse_attention.denseset import DensesetOptions, build_denseset


def denseset(opts: DensesetOptions) -> int:
    path = Path(opts.instances)
    instances = read_json_file(path, "instances")
    result = build_denseset(
        instances,
        fraction=opts.fraction,
        pick=opts.pick,
        seed=opts.seed,
        template=opts.template,
        count_by=opts.count,
    )
    result["source"] = str(path)
    out = Path(opts.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    print(
        f"Dense-Set: {result['num_items']} image-description pairs from the {result['num_selected']} most crowded of "
        f"{result['num_images_total']} images ({result['num_dropped']} without a class present exactly once) -> {out}"
    )
    return 0


def build_denseset_main(argv: Sequence[str] | None = None) -> int:
    """Console entry point ``lsdo-build-denseset``; returns the exit code."""
    return run_tool("lsdo-build-denseset", DensesetOptions, denseset, argv)


if __name__ == "__main__":
    sys.exit(build_denseset_main())
