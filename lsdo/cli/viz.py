"""``lsdo-viz inverse-attention image=PATH query="..." [out=PNG] [ckpt=PATH | model=ARCH/TAG | model=tiny]``.

One column of the paper's Table 2 as one PNG (:func:`lsdo.inverse_attention.viz.render_figure`):
the input frame, the LARD stage, the LACE crops with their similarity to the query, and the
retrieval similarity of the global embedding vs ours.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from lsdo.cli.common import run_tool, subcommands
from lsdo.errors import LSDOUserError
from lsdo.inverse_attention.lard import LARDConfig
from lsdo.inverse_attention.viz import VizOptions, load_image, load_model, render_figure


def inverse_attention(opts: VizOptions) -> int:
    if opts.ckpt and opts.model:
        raise LSDOUserError("give either ckpt=... or model=..., not both")
    try:
        lard = LARDConfig(
            mask_threshold=opts.mask_threshold,
            window_threshold=opts.window_threshold,
            kernel=opts.kernel,
            stride=opts.stride,
        )
    except ValueError as exc:
        raise LSDOUserError(str(exc)) from None
    frame = load_image(opts.image)
    model, tokenizer, label = load_model(opts.model, opts.ckpt)
    try:
        result = render_figure(
            frame, opts.query, model, tokenizer, opts.out, k=opts.k, heatmap=opts.heatmap, lard=lard,
            seed=opts.seed, title=label,
        )  # fmt: skip
    except (TypeError, ValueError) as exc:  # an unsupported visual tower; a setting the figure cannot use
        raise LSDOUserError(str(exc)) from None
    print(
        f"{result['out']}: similarity to {opts.query!r}: global {result['global']:.4f}, ours {result['ours']:.4f} "
        f"({len(result['boxes'])} regions from {result['num_candidates']} LARD candidates)"
    )
    return 0


def inverse_attention_main(argv: Sequence[str] | None = None) -> int:
    about = (__doc__ or "").split("\n\n", 1)[1]
    return run_tool("lsdo-viz inverse-attention", VizOptions, inverse_attention, argv, about=about)


COMMANDS = {"inverse-attention": ("the inverse-attention encoder on one frame (paper Table 2)", inverse_attention_main)}


def viz_main(argv: Sequence[str] | None = None) -> int:
    """Console entry point ``lsdo-viz VISUALISATION ...``; returns the exit code."""
    return subcommands("lsdo-viz", COMMANDS, argv)


if __name__ == "__main__":
    sys.exit(viz_main())
