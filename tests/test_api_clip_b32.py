"""The public API at paper size: ViT-B/32 (random init) for every variant."""

from __future__ import annotations

import pytest
import torch

from lsdo.config import compose
from lsdo.model import TextFeatures, build_model


@pytest.mark.parametrize("variant", ["baseline", "shared", "average", "single"])
def test_public_api_with_clip_b32_random_init(variant: str) -> None:
    torch.manual_seed(0)
    cfg = compose(["model=clip_b32", "model.pretrained=null", f"variant={variant}"])
    model = build_model(cfg).eval()
    assert model.encoder.clip.visual.conv1.kernel_size == (32, 32)  # ViT-B/32
    assert model.image_size == 224 and model.dim == 512
    tokens = model.tokenize(["a man sings into a microphone", "a pot on a stove"])
    assert tokens.dtype == torch.long and tokens.shape == (2, 77)
    frames = torch.randn(3, 2, 3, 224, 224)
    with torch.no_grad():
        text = model.encode_text(tokens)
        video = model.encode_video(frames)
        sims = model.similarity(text, video)
    assert isinstance(text, TextFeatures) and text.query.shape == (2, 512)
    assert video.shape == (3, 2, 512)
    assert sims.shape == (2, 3) and torch.isfinite(sims).all() and sims.abs().max() <= 1 + 1e-5
