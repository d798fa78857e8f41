"""``lsdo-viz inverse-attention image=PATH query="..." [out=PNG] [ckpt=PATH | model=ARCH/TAG | model=tiny]``.

One column of the paper's Table 2 as one PNG (:func:`lsdo.inverse_attention.viz.render_figure`):
the input frame, the LARD stage, the LACE crops with their similarity to the query, and the
retrieval similarity of the global embedding vs ours.

The LSDO paper's figures (:mod:`lsdo.paper_figures`), one PNG each:

* ``lsdo-viz fig5 runs=DIR[,DIR...] [out=PNG] [labels=A,B,...]``: Fig. 5, theta and lambda over training;
* ``lsdo-viz fig7 ckpt=A.ckpt,B.ckpt (image=FRAME | video=FILE [frame=K]) [out=PNG] [labels=...]``: Fig. 7, the
  image encoder's last-layer attention map over one frame, one column per checkpoint;
* ``lsdo-viz fig8 ckpt=PATH video=FILE [out=PNG] [num_frames=N]``: Fig. 8, the sampled frames of a video and
  their frame-level LSDO attention weights.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from lsdo.cli.common import Subcommand, subcommands
from lsdo.errors import LSDOUserError
from lsdo.inverse_attention.lard import LARDConfig
from lsdo.inverse_attention.viz import VizOptions, load_image, load_model, render_figure
from lsdo.paper_figures import Fig5Options, Fig7Options, Fig8Options, fig5, fig7, fig8


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


def fig5_cmd(opts: Fig5Options) -> int:
    print(fig5(opts.runs, opts.out, labels=opts.labels))
    return 0


def fig7_cmd(opts: Fig7Options) -> int:
    out = fig7(
        opts.ckpt, opts.out, image=opts.image, video=opts.video, frame=opts.frame, labels=opts.labels,
        heatmap=opts.heatmap,
    )  # fmt: skip
    print(out)
    return 0


def fig8_cmd(opts: Fig8Options) -> int:
    print(fig8(opts.ckpt, opts.video, opts.out, num_frames=opts.num_frames))
    return 0


COMMANDS = {
    "inverse-attention": Subcommand(
        "the inverse-attention encoder on one frame (paper Table 2)", VizOptions, inverse_attention,
        (__doc__ or "").split("\n\n", 1)[1],
    ),
    "fig5": Subcommand(
        "theta and lambda over training, runs overlaid (paper Fig. 5)", Fig5Options, fig5_cmd,
        "Paper Fig. 5: theta (a) and lambda (b) against the training iteration, several runs overlaid.",
    ),
    "fig7": Subcommand(
        "the image encoder's last-layer attention map per checkpoint (paper Fig. 7)", Fig7Options, fig7_cmd,
        "Paper Fig. 7: one frame, then each checkpoint's last-layer attention map over it (blue low, red high).",
    ),
    "fig8": Subcommand(
        "a video's frames and their frame-level LSDO weights (paper Fig. 8)", Fig8Options, fig8_cmd,
        "Paper Fig. 8: a video's test-time frames, each with its frame-level LSDO attention weight.",
    ),
}  # fmt: skip


def viz_main(argv: Sequence[str] | None = None) -> int:
    """Console entry point ``lsdo-viz VISUALISATION ...``; returns the exit code."""
    return subcommands("lsdo-viz", COMMANDS, argv)


if __name__ == "__main__":
    sys.exit(viz_main())
