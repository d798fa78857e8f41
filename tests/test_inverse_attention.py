"""Inverse-attention region embeddings ("Look Beyond Saliency"): each stage on constructed inputs, the heatmap against
brute-force attention, the glue, Dense-Set against a brute-force reading, and the figure."""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from tolerances import reduction_tol
from torch import nn

from lsdo.cli.build_denseset import build_denseset_main
from lsdo.inverse_attention.denseset import build_denseset
from lsdo.inverse_attention.encoder import RegionEncoder
from lsdo.inverse_attention.grid import grid_boxes
from lsdo.inverse_attention.heatmap import attention_heatmap, upsample, visual_forward_with_heatmap
from lsdo.inverse_attention.lace import crop_regions
from lsdo.inverse_attention.lafm import merge, set_similarity, set_similarity_argmax
from lsdo.inverse_attention.larc import cluster_regions, kmeans
from lsdo.inverse_attention.lard import LARDConfig, detect_low_attention, normalize_heatmap
from lsdo.model.encoder import create_clip

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny_clip() -> tuple[nn.Module, object]:
    torch.manual_seed(0)
    clip, tokenizer = create_clip(OmegaConf.load(ROOT / "configs" / "model" / "tiny.yaml"))
    return clip.eval(), tokenizer


def _salient_heatmap() -> torch.Tensor:
    """8x8 map: a high-attention 3x3 block at rows 1-3, cols 1-3; low (noisy) everywhere else."""
    g = torch.Generator().manual_seed(0)
    heat = 0.05 * torch.rand(8, 8, generator=g)
    heat[1:4, 1:4] = 1.0
    return heat


# ------------------------------------------------------------------ LARD
def test_lard_boxes_avoid_the_salient_region() -> None:
    heat = _salient_heatmap()
    boxes = detect_low_attention(heat, (64, 64), LARDConfig())  # 8 px per patch
    assert boxes.dtype == torch.long and boxes.shape[1] == 4 and len(boxes) > 0
    high = torch.zeros(64, 64, dtype=torch.bool)
    high[8:32, 8:32] = True
    for x0, y0, x1, y1 in boxes.tolist():
        assert 0 <= x0 < x1 <= 64 and 0 <= y0 < y1 <= 64
        assert (x1 - x0, y1 - y0) == (24, 24)  # 3x3 patches
        assert not high[y0:y1, x0:x1].any()  # lies entirely in the low-attention area
    # every window that misses the salient block is found (stride 1 patch)
    expected = sum(1 for i in range(6) for j in range(6) if not (i < 4 and i + 3 > 1 and j < 4 and j + 3 > 1))
    assert len(boxes) == expected
    # non-binarised variant and pixel units keep the same property
    soft = detect_low_attention(heat, (64, 64), LARDConfig(binarize=False, window_threshold=0.1))
    assert torch.equal(soft, boxes)  # one salient cell (1/9 of a window) already exceeds 0.1
    pixel = detect_low_attention(heat, (64, 64), LARDConfig(unit="pixel", kernel=16, stride=8))
    assert len(pixel) > 0 and ((pixel[:, 2:] - pixel[:, :2]) == 16).all()
    for x0, y0, x1, y1 in pixel.tolist():  # the upsampled mask spills ~half a patch; 10% overlap is tolerated
        assert not high[y0 + 4 : y1 - 4, x0 + 4 : x1 - 4].any()
    assert torch.allclose(normalize_heatmap(heat).amax(), torch.tensor(1.0))


def test_lard_non_square_frame_scales_boxes() -> None:
    heat = torch.zeros(4, 4)
    heat[0, 0] = 1.0
    boxes = detect_low_attention(heat, (40, 80), LARDConfig(kernel=2))
    assert {tuple(b) for b in boxes.tolist()} >= {(40, 20, 80, 40), (20, 10, 60, 30)}
    assert all(not (x0 < 20 and y0 < 10) for x0, y0, _, _ in boxes.tolist())


# ------------------------------------------------------------------ LARC
def _two_groups() -> torch.Tensor:
    left = [[x, y, x + 10, y + 10] for x in range(0, 6, 2) for y in range(0, 6, 2)]
    right = [[x, y, x + 10, y + 10] for x in range(80, 86, 2) for y in range(60, 66, 2)]
    return torch.tensor(left + right, dtype=torch.long)


def test_larc_k_regions_cover_candidates_and_are_deterministic() -> None:
    cand = _two_groups()
    regions = cluster_regions(cand, k=2, frame_size=(100, 100), seed=3)
    assert regions.tolist() == [[0, 0, 14, 14], [80, 60, 94, 74]]  # bounding box of each group, reading order
    for k in (1, 2, 3, 5):
        r1 = cluster_regions(cand, k=k, frame_size=(100, 100), seed=7)
        r2 = cluster_regions(cand, k=k, frame_size=(100, 100), seed=7)
        assert torch.equal(r1, r2) and len(r1) == k  # integer boxes, the same call twice
        for x0, y0, x1, y1 in cand.tolist():  # every candidate lies inside one region
            assert any(rx0 <= x0 and ry0 <= y0 and x1 <= rx1 and y1 <= ry1 for rx0, ry0, rx1, ry1 in r1.tolist())
    # fewer distinct candidates than k: as many regions as distinct boxes; none: empty
    dup = torch.tensor([[0, 0, 5, 5]] * 4 + [[10, 10, 15, 15]] * 3)
    assert cluster_regions(dup, k=4).tolist() == [[0, 0, 5, 5], [10, 10, 15, 15]]
    assert cluster_regions(torch.zeros(0, 4, dtype=torch.long), k=4).shape == (0, 4)


def test_kmeans_matches_known_partition() -> None:
    rng = np.random.default_rng(0)
    pts = np.concatenate(
        [rng.normal(0, 0.05, (20, 2)), rng.normal(5, 0.05, (20, 2)), rng.normal((0, 5), 0.05, (20, 2))]
    )
    labels, centres = kmeans(pts, 3, seed=1)
    assert len(centres) == 3
    assert all(len(set(labels[i * 20 : (i + 1) * 20])) == 1 for i in range(3))
    assert len(set(labels)) == 3
    assert np.array_equal(labels, kmeans(pts, 3, seed=1)[0])


# ------------------------------------------------------------------ LACE
def test_lace_crops_exact_pixels_from_original_frame() -> None:
    g = torch.Generator().manual_seed(0)
    frame = torch.randint(0, 256, (3, 50, 70), dtype=torch.uint8, generator=g)
    boxes = torch.tensor([[10, 5, 26, 21], [0, 34, 16, 50]])
    crops = crop_regions(frame, boxes, 16)
    assert crops.shape == (2, 3, 16, 16) and crops.dtype == torch.uint8
    assert torch.equal(crops[0], frame[:, 5:21, 10:26])
    assert torch.equal(crops[1], frame[:, 34:50, 0:16])
    # a larger region is resized to the encoder size; a constant region stays constant
    flat = torch.full((3, 40, 40), 77, dtype=torch.uint8)
    big = crop_regions(flat, torch.tensor([[0, 0, 40, 30]]), 16)
    assert big.shape == (1, 3, 16, 16) and (big == 77).all()
    assert crop_regions(frame.float() / 255, boxes, 16).dtype == torch.float32


# ------------------------------------------------------------------ LAFM
def test_lafm_max_over_set_and_mask() -> None:
    g = torch.Generator().manual_seed(0)
    glob = torch.randn(3, 8, generator=g)
    regions = torch.randn(3, 2, 8, generator=g)
    text = torch.randn(4, 8, generator=g)
    mask = torch.tensor([[True, True], [True, False], [False, False]])
    items, full_mask = merge(glob, regions, mask)
    assert items.shape == (3, 3, 8) and full_mask[:, 0].all()
    scores, arg = set_similarity_argmax(text, items, full_mask)
    cos = F.cosine_similarity(text[:, None, None], items[None], dim=-1)  # [Q, N, 3]
    # cosines of 8-d vectors in another order than F.cosine_similarity's: the norms and the dot product
    tol = reduction_tol(torch.float32, 8, stages=2)
    for q in range(4):
        for n in range(3):
            valid = [j for j in range(3) if full_mask[n, j]]
            assert math.isclose(float(scores[q, n]), max(float(cos[q, n, j]) for j in valid), abs_tol=tol)
            assert int(arg[q, n]) in valid
    # a masked region never wins, even when it is the query itself
    items2 = items.clone()
    items2[2, 2] = text[0]
    assert float(set_similarity(text[:1], items2, full_mask)[0, 2]) < 0.999
    assert math.isclose(float(set_similarity(text[:1], items2, None)[0, 2]), 1.0, abs_tol=tol)
    # in chunks of 2 texts: other batch shapes
    assert torch.allclose(set_similarity(text, items, full_mask, chunk_size=2), scores, rtol=0, atol=tol)


# ------------------------------------------------------------------ grid baseline
@pytest.mark.parametrize("size,g", [((64, 64), 2), ((50, 71), 3), ((7, 9), 4)])
def test_grid_tiles_frame_exactly(size: tuple[int, int], g: int) -> None:
    boxes = grid_boxes(size, g)
    assert boxes.shape == (g * g, 4)
    cover = torch.zeros(size, dtype=torch.int32)
    for x0, y0, x1, y1 in boxes.tolist():
        cover[y0:y1, x0:x1] += 1
    assert (cover == 1).all()
    widths = {x1 - x0 for x0, _, x1, _ in boxes.tolist()}
    assert max(widths) - min(widths) <= 1


# ------------------------------------------------------------------ heatmap
def _capture_block_inputs(visual: nn.Module, images: torch.Tensor) -> list[torch.Tensor]:
    seen: list[torch.Tensor] = []
    hooks = [b.register_forward_pre_hook(lambda m, a: seen.append(a[0])) for b in visual.transformer.resblocks]
    with torch.no_grad():
        visual(images)
    for h in hooks:
        h.remove()
    return seen


def test_heatmap_matches_brute_force_cls_attention(tiny_clip) -> None:
    visual = tiny_clip[0].visual
    images = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        feats, heat = visual_forward_with_heatmap(visual, images)
        assert torch.allclose(feats, visual(images), atol=1e-6)
    assert heat.shape == (2, 8, 8)  # 64 / patch 8
    assert torch.allclose(heat.sum(dim=(1, 2)), torch.ones(2), atol=1e-5)
    inputs = _capture_block_inputs(visual, images)
    blocks = list(visual.transformer.resblocks)
    with torch.no_grad():
        weights = []
        for blk, x in zip(blocks, inputs, strict=True):
            y = blk.ln_1(x)
            weights.append(blk.attn(y, y, y, need_weights=True, average_attn_weights=True)[1])  # [B, L, L]
    cls = weights[-1][:, 0, 1:]
    assert torch.allclose(heat.flatten(1), cls / cls.sum(-1, keepdim=True), atol=1e-5)
    # rollout with the residual identity (Abnar & Zuidema)
    roll = None
    for a in weights:
        a = 0.5 * a + 0.5 * torch.eye(a.shape[-1])
        a = a / a.sum(-1, keepdim=True)
        roll = a if roll is None else a @ roll
    ref = roll[:, 0, 1:] / roll[:, 0, 1:].sum(-1, keepdim=True)
    assert torch.allclose(attention_heatmap(visual, images, "rollout").flatten(1), ref, atol=1e-5)
    up = upsample(heat, (40, 56))
    assert up.shape == (2, 40, 56) and (up >= 0).all()


def test_heatmap_full_vit_b32_shape() -> None:
    import open_clip

    visual = open_clip.create_model("ViT-B-32", pretrained=None).visual.eval()
    heat = attention_heatmap(visual, torch.randn(1, 3, 224, 224))
    assert heat.shape == (1, 7, 7) and math.isclose(float(heat.sum()), 1.0, abs_tol=1e-5)


def test_heatmap_modified_resnet_matches_attnpool_weights() -> None:
    """CLIP RN tower: the attnpool query's attention, against torch's own need_weights=True for the same head."""
    from open_clip.modified_resnet import ModifiedResNet

    torch.manual_seed(0)
    visual = ModifiedResNet(layers=(1, 1, 1, 1), output_dim=32, heads=4, image_size=128, width=8).eval()
    pool = visual.attnpool
    with torch.no_grad():  # a peaked head: random init gives near-uniform attention, which would test little
        pool.q_proj.weight.mul_(30.0)
        pool.k_proj.weight.mul_(30.0)
    images = torch.randn(2, 3, 128, 128)
    feats, heat = visual_forward_with_heatmap(visual, images)
    assert torch.allclose(feats, visual(images), atol=1e-6)
    assert heat.shape == (2, 4, 4)  # 128 / 32
    seen: list[torch.Tensor] = []
    hook = pool.register_forward_pre_hook(lambda m, a: seen.append(a[0]))
    with torch.no_grad():
        visual(images)
        hook.remove()
        x = seen[0].flatten(2).permute(2, 0, 1)  # [B, C, H, W] -> [HW, B, C], as the head does
        x = torch.cat([x.mean(dim=0, keepdim=True), x]) + pool.positional_embedding[:, None]
        _, w = F.multi_head_attention_forward(
            x, x, x, x.shape[-1], pool.num_heads, None,
            torch.cat([pool.q_proj.bias, pool.k_proj.bias, pool.v_proj.bias]), None, None, False, 0.0,
            pool.c_proj.weight, pool.c_proj.bias, training=False, need_weights=True, use_separate_proj_weight=True,
            q_proj_weight=pool.q_proj.weight, k_proj_weight=pool.k_proj.weight, v_proj_weight=pool.v_proj.weight,
        )  # fmt: skip
    ref = w[:, 0, 1:]  # [B, 1+HW, 1+HW] head-averaged -> the query token's row, positions only
    assert ref.max() > 2.5 * ref.mean()  # the constructed head is not uniform
    assert torch.allclose(heat.flatten(1), ref / ref.sum(-1, keepdim=True), atol=1e-5)
    with pytest.raises(ValueError, match="rollout.*transformer trunk"):
        attention_heatmap(visual, images, "rollout")


def test_heatmap_timm_attention_pool_matches_module_softmax(monkeypatch) -> None:
    """SigLIP-style tower (timm ViT with a 'map' latent-query pool): the pool's own softmax is the reference."""
    pytest.importorskip("timm")
    from open_clip.timm_model import TimmModel

    torch.manual_seed(0)
    visual = TimmModel("vit_tiny_patch16_224", embed_dim=192, pool="map", proj="none").eval()
    pool = visual.trunk.attn_pool
    images = torch.randn(2, 3, 224, 224)
    heat = attention_heatmap(visual, images)
    assert heat.shape == (2, 14, 14)
    pool.fused_attn = False  # the module's explicit softmax path, recorded below
    recorded: list[torch.Tensor] = []
    orig = torch.Tensor.softmax

    def spy(self, *args, **kwargs):
        out = orig(self, *args, **kwargs)
        recorded.append(out)
        return out

    seen: list[torch.Tensor] = []
    hook = pool.register_forward_pre_hook(lambda m, a: seen.append(a[0]))
    with torch.no_grad():
        visual(images)
    hook.remove()
    monkeypatch.setattr(torch.Tensor, "softmax", spy)
    with torch.no_grad():
        pool(seen[0])
    monkeypatch.undo()
    ref = recorded[-1].mean(dim=(1, 2))  # [B, heads, 1, N] -> [B, N] (the class token is not fed to the pool)
    assert torch.allclose(heat.flatten(1), ref / ref.sum(-1, keepdim=True), atol=1e-5)
    assert attention_heatmap(visual, images, "rollout").shape == (2, 14, 14)


def test_heatmap_siglip_config_without_weights() -> None:
    import open_clip

    if "ViT-B-16-SigLIP" not in open_clip.list_models():  # pragma: no cover - older open_clip
        pytest.skip("this open_clip has no ViT-B-16-SigLIP config")
    model = open_clip.create_model("ViT-B-16-SigLIP", pretrained=None)
    heat = attention_heatmap(model.visual.eval(), torch.randn(1, 3, 224, 224))
    assert heat.shape == (1, 14, 14) and math.isclose(float(heat.sum()), 1.0, abs_tol=1e-5)


def test_heatmap_unsupported_tower_raises_type_error() -> None:
    with pytest.raises(TypeError, match="Conv2d"):
        attention_heatmap(nn.Conv2d(3, 3, 3), torch.randn(1, 3, 8, 8))


# ------------------------------------------------------------------ RegionEncoder
def test_region_encoder_methods(tiny_clip) -> None:
    clip, tokenizer = tiny_clip
    frames = torch.randint(0, 256, (2, 3, 48, 80), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    calls = []
    hook = clip.visual.register_forward_hook(lambda m, a, o: calls.append(a[0].shape[0]))
    try:
        enc = RegionEncoder(clip, "inverse_attention", k=3, lard=LARDConfig(window_threshold=1.01), tokenizer=tokenizer)
        res = enc.encode_detailed(frames)
        assert calls == [2, 6]  # global views, then ALL crops of the batch in one call
        emb, mask, boxes = res.embeddings, res.mask, res.boxes
        assert emb.shape == (2, 4, 512) and mask.all() and [len(b) for b in boxes] == [3, 3]
        assert torch.allclose(emb.norm(dim=-1), torch.ones(2, 4), atol=1e-5)
        assert res.heatmaps is not None and res.heatmaps.shape == (2, 8, 8)
        for b in range(2):  # regions lie in the global view (central 48x48 square of the 80-px-wide frame)
            assert all(16 <= x0 and x1 <= 64 and 0 <= y0 and y1 <= 48 for x0, y0, x1, y1 in boxes[b].tolist())
        # a region slot is exactly the encoding of its LACE crop
        crop = crop_regions(frames[1], boxes[1][1:2], 64, enc.interpolation)
        assert torch.allclose(emb[1, 2], enc._embed(crop)[0], atol=1e-5)
        # the global slot equals method "none"
        calls.clear()
        g_emb, g_mask, g_boxes = RegionEncoder(clip, "none").encode(frames)
        assert calls == [2] and g_emb.shape == (2, 1, 512) and g_boxes[0].shape == (0, 4)
        assert torch.allclose(g_emb[:, 0], emb[:, 0], atol=1e-5)
        calls.clear()
        grid_emb, grid_mask, grid_b = RegionEncoder(clip, "grid", grid=2).encode(frames)
        assert calls == [2, 8] and grid_emb.shape == (2, 5, 512) and grid_mask.all()
        assert torch.equal(grid_b[0], grid_boxes((48, 80), 2))
        # no low-attention region -> only the global slot is valid
        none_enc = RegionEncoder(clip, "inverse_attention", k=3, lard=LARDConfig(window_threshold=0.0))
        e0, m0, b0 = none_enc.encode(frames)
        assert m0.tolist() == [[True, False, False, False]] * 2 and all(len(b) == 0 for b in b0)
        text = enc.encode_text(["a dog"])
        s = RegionEncoder.similarity(text, emb, mask)
        assert s.shape == (1, 2) and (s >= (text @ emb[:, 0].T) - 1e-6).all()
        # frames of different sizes
        e_list, m_list, b_list = enc.encode([frames[0], frames[1, :, :40, :50]])
        assert e_list.shape == (2, 4, 512)
    finally:
        hook.remove()


# ------------------------------------------------------------------ Dense-Set
def _synthetic_coco(n_images: int = 40) -> dict:
    rng = np.random.default_rng(0)
    cats = [{"id": cid, "name": f"class{cid}"} for cid in (1, 2, 3, 5, 8, 13)]
    images = [{"id": 100 + i, "file_name": f"{100 + i:012d}.jpg", "width": 64, "height": 48} for i in range(n_images)]
    anns, aid = [], 1
    for img in images:
        for _ in range(int(rng.integers(0, 12))):
            cid = int(rng.choice([c["id"] for c in cats]))
            crowd = int(rng.random() < 0.05)
            anns.append(
                {"id": aid, "image_id": img["id"], "category_id": cid, "iscrowd": crowd, "area": float(rng.random())}
                | {"bbox": [1, 2, 3, 4]}
            )
            aid += 1
    return {"images": images, "annotations": anns, "categories": cats}


def test_denseset_matches_brute_force(tmp_path: Path) -> None:
    coco = _synthetic_coco()
    # brute force: counts, top ceil(10%) with ties by id, singleton (non-crowd, exactly once) classes
    per_image = {img["id"]: [a for a in coco["annotations"] if a["image_id"] == img["id"]] for img in coco["images"]}
    ranked = sorted(per_image, key=lambda i: (-len(per_image[i]), i))
    top = ranked[: math.ceil(0.1 * len(ranked))]
    expected = {}
    for i in top:
        c = Counter(a["category_id"] for a in per_image[i])
        crowd = {a["category_id"] for a in per_image[i] if a["iscrowd"]}
        singles = sorted(k for k, v in c.items() if v == 1 and k not in crowd)
        if singles:
            expected[i] = singles
    result = build_denseset(coco, pick="first")
    assert result["num_selected"] == len(top) == 4
    assert [it["image_id"] for it in result["items"]] == [i for i in top if i in expected]
    for it in result["items"]:
        assert it["category_id"] == expected[it["image_id"]][0]
        assert it["caption"] == f"class{it['category_id']}"
        assert it["num_objects"] == len(per_image[it["image_id"]])
    assert result["num_dropped"] == len(top) - len(expected)
    rnd = build_denseset(coco, pick="random", seed=5, template="a photo of a {name}")
    assert rnd == build_denseset(coco, pick="random", seed=5, template="a photo of a {name}")
    for it in rnd["items"]:
        assert it["category_id"] in expected[it["image_id"]] and it["caption"].startswith("a photo of a class")
    # console entry point
    src, out = tmp_path / "instances.json", tmp_path / "dense" / "denseset.json"
    src.write_text(json.dumps(coco))
    assert build_denseset_main([f"instances={src}", f"out={out}", "pick=first"]) == 0
    assert json.loads(out.read_text())["items"] == result["items"]
    assert build_denseset_main([f"instances={tmp_path / 'missing.json'}", f"out={out}"]) == 2


# ------------------------------------------------------------------ figure
def test_viz_writes_png(tmp_path: Path, capsys) -> None:
    from PIL import Image

    from lsdo.cli.viz import viz_main

    rng = np.random.default_rng(0)
    image = tmp_path / "frame.png"
    Image.fromarray(rng.integers(0, 256, (40, 56, 3), dtype=np.uint8)).save(image)
    out = tmp_path / "fig.png"
    rc = viz_main(
        ["inverse-attention", f"image={image}", "query=a red bag", f"out={out}", "model=tiny", "window_threshold=1.01"]
    )
    assert rc == 0, capsys.readouterr().err
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "ours" in capsys.readouterr().out
    assert viz_main(["inverse-attention", f"image={tmp_path / 'none.png'}", "query=x", "model=tiny"]) == 2
    assert viz_main(["saliency", "image=x", "query=y"]) == 2


def _viz_error(capsys) -> str:
    """The single ``error:`` line lsdo-viz printed (no traceback)."""
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, err
    return lines[0]


def test_viz_image_folder_says_it_is_a_folder(tmp_path: Path, capsys) -> None:
    from PIL import Image

    from lsdo.cli.viz import viz_main

    folder = tmp_path / "frames"
    folder.mkdir()
    assert viz_main(["inverse-attention", f"image={folder}", "query=x", "model=tiny"]) == 2
    assert _viz_error(capsys) == (
        f"error: image={folder}: is a folder, not an image file: pass one image (any format PIL reads: "
        f".png, .jpg, .jpeg, ...), e.g. image={folder / 'frame.png'}"
    )
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(folder / "b.jpg")
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(folder / "a.png")
    assert viz_main(["inverse-attention", f"image={folder}", "query=x", "model=tiny"]) == 2
    line = _viz_error(capsys)
    assert "is a folder, not an image file; it holds 2 image file(s)" in line
    assert line.endswith(f"e.g. image={folder / 'a.png'}")
    assert viz_main(["inverse-attention", f"image={folder / 'a.png'}", "query=x", "model=tiny", "window_threshold=1.01",
                     f"out={tmp_path / 'fig.png'}"]) == 0  # fmt: skip
    assert viz_main(["inverse-attention", f"image={folder / 'none.png'}", "query=x", "model=tiny"]) == 2
    assert _viz_error(capsys) == (
        f"error: image={folder / 'none.png'}: file not found: pass an image file (any format PIL reads)"
    )


@pytest.mark.parametrize("model", [None, "ViT-B-32/openai"])
def test_viz_offline_suggests_lsdo_viz_arguments(monkeypatch, capsys, tmp_path: Path, model: str | None) -> None:
    """No internet for the weights: the options printed are lsdo-viz's (model=ARCH/FILE, ckpt=), not train.py's."""
    import open_clip
    from PIL import Image

    from lsdo.cli.viz import viz_main
    from lsdo.inverse_attention.viz import DEFAULT_MODEL

    def offline(name: str, pretrained: str | None = None, **kw):
        if pretrained:  # what open_clip raises when the hub is unreachable and the cache is cold
            raise RuntimeError(f"Failed to download weights for tag '{pretrained}': Failed to download file")
        raise AssertionError("lsdo-viz asked for random weights")

    monkeypatch.setattr(open_clip, "create_model", offline)
    image = tmp_path / "frame.png"
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(image)
    spec = model or DEFAULT_MODEL
    assert viz_main(["inverse-attention", f"image={image}", "query=x", *([f"model={model}"] if model else [])]) == 2
    line = _viz_error(capsys)
    tag = spec.split("/")[1]
    assert line.startswith(f"error: model={spec}: could not load CLIP weights '{tag}' for ")
    assert "model.pretrained" not in line and "model.arch" not in line  # train.py's keys
    assert line.endswith(
        "Options: model=ARCH/TAG with an open_clip pretrained tag (e.g. model=ViT-B-32/openai; needs internet or a "
        "warm open_clip cache), model=ARCH/FILE with a local weights file: OpenAI's ViT-B-32.pt or an open_clip state "
        "dict (e.g. model=ViT-B-32/weights/ViT-B-32.pt, or model=ViT-B-32//abs/path/ViT-B-32.pt), ckpt=PATH (an LSDO "
        "training checkpoint), or model=tiny (random init, offline)"
    )


def test_viz_weight_errors_name_the_model_argument(tmp_path: Path, capsys) -> None:
    from PIL import Image

    from lsdo.cli.viz import viz_main

    image = tmp_path / "frame.png"
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(image)
    assert viz_main(["inverse-attention", f"image={image}", "query=x", "model=NoSuchArch/openai"]) == 2
    assert _viz_error(capsys) == (
        "error: model=NoSuchArch/openai: unknown open_clip architecture 'NoSuchArch' (open_clip.list_models() "
        "lists them)"
    )
    missing = tmp_path / "weights" / "ViT-B-32.pt"
    assert viz_main(["inverse-attention", f"image={image}", "query=x", f"model=ViT-B-32/{missing}"]) == 2
    line = _viz_error(capsys)
    assert line.startswith(f"error: model=ViT-B-32/{missing}: checkpoint file not found: {missing}. Options: model=")
    assert "model.pretrained" not in line
