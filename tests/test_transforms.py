"""Clip transforms (lsdo.data.transforms): one crop / flip per clip, reproducible, CLIP-normalised."""

from __future__ import annotations

import pytest
import torch

from lsdo.data.transforms import CLIP_MEAN, CLIP_STD, VideoTransform, build_transform, normalize


def ramp_clip(n: int = 4, h: int = 60, w: int = 80) -> torch.Tensor:
    """uint8 [n, 3, h, w]: red = column ramp, green = row ramp, blue = 10 * frame index."""
    x = torch.linspace(0, 255, w).round().to(torch.uint8).expand(n, h, w)
    y = torch.linspace(0, 255, h).round().to(torch.uint8)[:, None].expand(n, h, w)
    b = (10 * torch.arange(n, dtype=torch.uint8))[:, None, None].expand(n, h, w)
    return torch.stack([x, y, b], dim=1).contiguous()


def unnormalize(x: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(CLIP_MEAN).view(3, 1, 1)
    std = torch.tensor(CLIP_STD).view(3, 1, 1)
    return (x * std + mean) * 255


def test_normalize_unchanged() -> None:
    x = torch.full((2, 3, 4, 4), 255, dtype=torch.uint8)
    expected = (1 - torch.tensor(CLIP_MEAN)) / torch.tensor(CLIP_STD)
    assert torch.allclose(normalize(x)[0, :, 0, 0], expected)


@pytest.mark.parametrize("train", [True, False])
def test_output_shape_dtype_and_normalisation(train: bool) -> None:
    t = VideoTransform(32, train=train)
    out = t(ramp_clip(), generator=torch.Generator().manual_seed(0))
    assert out.shape == (4, 3, 32, 32) and out.dtype == torch.float32
    flat = torch.full((2, 3, 50, 70), 128, dtype=torch.uint8)
    assert torch.allclose(t(flat, torch.Generator().manual_seed(1)), normalize(flat[:, :, :32, :32]), atol=1e-5)


def test_train_crop_and_flip_identical_across_frames() -> None:
    clip = ramp_clip(6)
    t = VideoTransform(32, train=True)
    for seed in range(8):
        out = unnormalize(t(clip, generator=torch.Generator().manual_seed(seed)))
        # Red / green (the spatial ramps) are the same in every frame: one crop and flip for the clip.
        assert torch.allclose(out[:, :2], out[:1, :2].expand(6, -1, -1, -1), atol=1e-3)
        # Blue still tells the frames apart (10 * index): order and content kept.
        assert torch.allclose(out[:, 2].mean(dim=(1, 2)), 10 * torch.arange(6.0), atol=1.0)


def test_train_randomness_comes_from_the_generator() -> None:
    clip, t = ramp_clip(), VideoTransform(32, train=True)
    a = t(clip, generator=torch.Generator().manual_seed(3))
    torch.manual_seed(123)  # the global RNG must not matter
    b = t(clip, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    outs = {tuple(t(clip, generator=torch.Generator().manual_seed(s))[0, 0, 0, :4].tolist()) for s in range(6)}
    assert len(outs) > 1  # different seeds give different crops


def test_flip_follows_the_generator() -> None:
    clip = ramp_clip(2, 40, 40)
    full = VideoTransform(40, train=True, scale=(1.0, 1.0), ratio=(1.0, 1.0), hflip=0.5)
    flips = []
    for seed in range(16):
        g = torch.Generator().manual_seed(seed)
        red = unnormalize(full(clip, generator=g))[0, 0, 0]  # column ramp along the top row
        flips.append(bool(red[0] > red[-1]))
        g = torch.Generator().manual_seed(seed)
        full.crop_params(40, 40, g)
        assert flips[-1] == bool(float(torch.rand(1, generator=g)) < 0.5)  # flip drawn right after the crop
    assert any(flips) and not all(flips)
    never = VideoTransform(40, train=True, scale=(1.0, 1.0), ratio=(1.0, 1.0), hflip=0.0)
    always = VideoTransform(40, train=True, scale=(1.0, 1.0), ratio=(1.0, 1.0), hflip=1.0)
    g = torch.Generator().manual_seed(0)
    assert torch.allclose(never(clip, g), normalize(clip), atol=1e-5)
    assert torch.allclose(always(clip, g), normalize(clip.flip(-1)), atol=1e-5)


def test_crop_params_follow_torchvision_bounds() -> None:
    t = VideoTransform(16, train=True)
    g = torch.Generator().manual_seed(0)
    for _ in range(200):
        top, left, h, w = t.crop_params(60, 80, g)
        assert 0 <= top <= 60 - h and 0 <= left <= 80 - w
        assert 0.5 * 4800 * 0.9 <= h * w <= 4800 and 3 / 4 * 0.9 <= w / h <= 4 / 3 * 1.1


def test_test_transform_resizes_short_side_and_keeps_the_centre() -> None:
    # 40 x 80 frame: red columns 0-9, green 10-69, blue 70-79.
    clip = torch.zeros(3, 3, 40, 80, dtype=torch.uint8)
    clip[:, 0, :, :10] = 255
    clip[:, 1, :, 10:70] = 255
    clip[:, 2, :, 70:] = 255
    t = VideoTransform(20, train=False)
    out = unnormalize(t(clip))
    assert out.shape == (3, 3, 20, 20)
    # Short side 40 -> 20 (so 80 -> 40), centre 20 x 20 crop = source columns 20-59: all green.
    assert torch.allclose(out[:, 1], torch.full_like(out[:, 1], 255), atol=2)
    assert out[:, [0, 2]].abs().max() < 2
    # Deterministic and independent of any generator.
    assert torch.equal(t(clip), t(clip, torch.Generator().manual_seed(5)))


def test_build_transform_and_validation() -> None:
    assert build_transform(32, train=True).train
    assert not build_transform(32, train=True, augment=False).train
    assert not build_transform(32, train=False).train
    with pytest.raises(ValueError, match="uint8"):
        VideoTransform(8, train=False)(torch.zeros(2, 3, 8, 8))
    with pytest.raises(ValueError, match=r"\[n, 3, H, W\]"):
        VideoTransform(8, train=False)(torch.zeros(3, 8, 8, dtype=torch.uint8))
    with pytest.raises(ValueError, match="scale"):
        VideoTransform(8, train=True, scale=(0.0, 1.0))
