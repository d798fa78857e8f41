"""``lsdo-build-bank out=BANK.json [ckpt=PATH] [m=20] <config overrides>``: a ``shared``-variant bank file.

The bank holds the mean frame embeddings of ``m`` training videos (``variant.init=feature``,
:func:`lsdo.model.video_lsdo.write_bank_file`), encoded by the checkpoint's model or, without
``ckpt``, by the model the config overrides (``dataset=msrvtt model=clip_b32 ...``) compose.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass

from lsdo.cli.common import Help, option, parse, usage
from lsdo.errors import run_plain


@dataclass
class BuildBankArgs:
    out: str = option("the bank JSON file to write")
    ckpt: str | None = option(
        "a training checkpoint whose model encodes the videos (default: the composed model)", None
    )
    m: int | None = option("videos in the bank (default: the config's variant.m)", None, minimum=1)


def bank_size(cfg: object) -> int:
    """The config's ``variant.m``, else the ``shared`` variant's (configs/variant/shared.yaml)."""
    from omegaconf import OmegaConf

    from lsdo.config import CONFIG_DIR

    m = OmegaConf.select(cfg, "variant.m", default=None)  # type: ignore[arg-type]
    return int(m if m is not None else OmegaConf.load(CONFIG_DIR / "variant" / "shared.yaml").m)


def build_bank(args: BuildBankArgs, overrides: list[str]) -> int:
    import torch
    from omegaconf import OmegaConf

    from lsdo.checkpoint import load_model
    from lsdo.config import compose
    from lsdo.data import build_datamodule
    from lsdo.model import build_model
    from lsdo.model.encoder import image_size_of
    from lsdo.model.video_lsdo import write_bank_file

    if args.ckpt:
        model, saved = load_model(args.ckpt)
        cfg = OmegaConf.merge(OmegaConf.create(saved), OmegaConf.from_dotlist(overrides))
    else:
        cfg = compose(overrides)
        model = build_model(cfg)
    m = args.m if args.m is not None else bank_size(cfg)
    dm = build_datamodule(cfg, image_size_of(cfg.model))
    dm.setup("fit")
    ids = dm.bank_video_ids(m)
    frames = dm.bank_videos(m)  # [m, n, 3, H, W]
    model.eval()
    with torch.no_grad():
        feats = model.encode_frames(frames).mean(dim=1)  # [m, n, d] -> [m, d]
    write_bank_file(args.out, ids, feats)
    print(f"wrote {args.out}: {len(ids)} videos x {feats.shape[1]} ({cfg.dataset.name})")
    return 0


def build_bank_main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)

    def main() -> int:
        try:
            opts, overrides = parse(BuildBankArgs, args, passthrough=True)
        except Help:
            about = (__doc__ or "").split("\n\n", 1)[1]
            print(usage("lsdo-build-bank", BuildBankArgs, about) + "\n  ... and any config override of python train.py")
            return 0
        return build_bank(opts, overrides)

    return run_plain(main)
