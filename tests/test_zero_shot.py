"""Zero-shot retrieval with region crops: max-over-set scoring vs brute force, the COCO / Dense-Set loaders, the
``zeroshot.py`` entry point end to end, and the synthetic benchmark's exact small-object pixels."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import ROOT, bench_module, run_cli
from omegaconf import OmegaConf
from PIL import Image
from tolerances import reduction_tol
from torch import nn

from lsdo.config import compose
from lsdo.data import synthetic
from lsdo.data.annotations import AnnotationError
from lsdo.data.coco import ImageDecodeError, load_coco, load_image_file
from lsdo.errors import ConfigError, DataNotFoundError, LSDOUserError
from lsdo.inverse_attention.denseset import build_denseset
from lsdo.inverse_attention.encoder import RegionEncoder
from lsdo.inverse_attention.lard import LARDConfig
from lsdo.inverse_attention.zero_shot import encode_items, evaluate_zero_shot, region_encoder, score
from lsdo.model.encoder import create_clip
from lsdo.retrieval.metrics import t2v_metrics, t2v_ranks, v2t_metrics, v2t_ranks

TINY32 = ["model=tiny", "model.clip_cfg.vision_cfg.image_size=32"]
# Cosines (scale 1) of CLIP embeddings encoded in other batches (batches across items against one frame at a
# time): the tiny ViT's 20 sequential float32 reductions (patch embedding, two blocks of eight, LayerNorms,
# projection), the normalisation and the dot product.
SIMS_TOL = reduction_tol(torch.float32, 512, stages=22)


@pytest.fixture(scope="module")
def tiny32() -> tuple[nn.Module, object]:
    cfg = OmegaConf.load(ROOT / "configs" / "model" / "tiny.yaml")
    cfg.clip_cfg.vision_cfg.image_size = 32
    torch.manual_seed(0)
    clip, tokenizer = create_clip(cfg)
    return clip.eval(), tokenizer


def _items() -> list[torch.Tensor]:
    """Images of different sizes and videos of different lengths (uint8)."""
    g = torch.Generator().manual_seed(1)
    rnd = lambda *s: torch.randint(0, 256, s, generator=g, dtype=torch.uint8)  # noqa: E731
    return [rnd(3, 32, 32), rnd(3, 40, 56), rnd(3, 3, 48, 32), rnd(2, 3, 32, 32), rnd(3, 64, 64), rnd(1, 3, 32, 44)]


# ---------------------------------------------------------------------- scoring


@pytest.mark.timeout(120)
@pytest.mark.parametrize("method", ["none", "grid", "inverse_attention"])
def test_max_over_frames_and_regions_matches_brute_force(tiny32, method: str) -> None:
    clip, tokenizer = tiny32
    # a permissive LARD so the random model's frames do get regions
    enc = RegionEncoder(clip, method, k=3, lard=LARDConfig(kernel=2, window_threshold=0.6), tokenizer=tokenizer)
    items = _items()
    captions = ["a red circle", "a small cyan ring", "noise", "two frames", "a big image", "wide", "extra caption"]
    t2i = [0, 1, 2, 3, 4, 5, 2]
    # batch_size=4 makes batches span item boundaries
    got = evaluate_zero_shot(enc, items, captions, t2i, batch_size=4, chunk_size=3, return_scores=True)

    brute = torch.full((len(captions), len(items)), -2.0)
    n_regions = 0
    with torch.no_grad():
        text = F.normalize(clip.encode_text(tokenizer(captions)).float(), dim=-1)
        for i, item in enumerate(items):
            for frame in item.reshape(-1, *item.shape[-3:]):
                emb, mask, boxes = enc.encode(frame[None])  # one frame at a time
                n_regions += len(boxes[0])
                for s in range(emb.shape[1]):
                    if mask[0, s]:
                        cos = F.normalize(emb[0, s], dim=-1) @ text.T
                        brute[:, i] = torch.maximum(brute[:, i], cos)
    if method != "none":
        assert n_regions > 0
    torch.testing.assert_close(got["sims"], brute, atol=SIMS_TOL, rtol=0)
    t2v = torch.tensor(t2i)
    # the reported metrics and ranks are those of its own scores (the same functions on the same tensor)
    assert torch.equal(got["t2v_ranks"], t2v_ranks(got["sims"], t2v))
    assert torch.equal(got["v2t_ranks"], v2t_ranks(got["sims"], t2v))
    for direction, metrics in (("t2v", t2v_metrics(got["sims"], t2v)), ("v2t", v2t_metrics(got["sims"], t2v))):
        assert all(got[f"{direction}/{key}"] == value for key, value in metrics.items())
    # and those ranks are brute force's, except where a ground truth's score has competitors within 2 SIMS_TOL,
    # whose order may swap: a rank moves by at most their number (method none has one, 3.7e-5 apart)
    truth = torch.zeros_like(brute, dtype=torch.bool)
    truth[torch.arange(len(t2i)), t2v] = True
    near = lambda scores, mine: int(((scores[~mine][None] - scores[mine][:, None]).abs() <= 2 * SIMS_TOL).any(0).sum())
    near_t2v = torch.tensor([near(row, mine) for row, mine in zip(brute, truth, strict=True)])
    near_v2t = torch.tensor([near(col, mine) for col, mine in zip(brute.T, truth.T, strict=True)])
    assert ((got["t2v_ranks"] - t2v_ranks(brute, t2v)).abs() <= near_t2v).all()
    assert ((got["v2t_ranks"] - v2t_ranks(brute, t2v)).abs() <= near_v2t).all()
    if not near_t2v.any() and not near_v2t.any():  # no near-tie: the same metrics
        for key, value in t2v_metrics(brute, t2v).items():
            assert got[f"t2v/{key}"] == pytest.approx(value)
        for key, value in v2t_metrics(brute, t2v).items():
            assert got[f"v2t/{key}"] == pytest.approx(value)
    assert got["num_items"] == 6 and got["num_texts"] == 7
    assert got["num_frames"] == 1 + 1 + 3 + 2 + 1 + 1
    assert got["method"] == method


def test_score_blocks_and_padding_are_exact() -> None:
    g = torch.Generator().manual_seed(0)
    text = F.normalize(torch.randn(11, 8, generator=g), dim=-1)
    sets = F.normalize(torch.randn(7, 5, 8, generator=g), dim=-1)
    mask = torch.rand(7, 5, generator=g) > 0.4
    mask[:, 0] = True
    want = torch.stack(
        [torch.stack([(sets[n][mask[n]] @ text[q]).max() for n in range(7)]) for q in range(11)]
    )  # brute force
    for chunk in (1, 2, 3, 100):
        torch.testing.assert_close(score(text, sets, mask, chunk), want)


def test_region_encoder_copies_with_other_method(tiny32) -> None:
    clip, tokenizer = tiny32
    enc = RegionEncoder(clip, "none", tokenizer=tokenizer)
    assert region_encoder(enc) is enc
    other = region_encoder(enc, "grid", 4)
    assert other is not enc and other.method == "grid" and enc.method == "none" and other.num_regions == 4
    assert region_encoder(clip, "inverse_attention", 2, tokenizer=tokenizer).k == 2
    with pytest.raises(ValueError, match="method"):
        region_encoder(enc, "bogus")
    sets, mask = encode_items(other, [torch.zeros(2, 3, 32, 32, dtype=torch.uint8)], batch_size=1)
    assert sets.shape[:2] == (1, 2 * 5) and bool(mask.all())


# ---------------------------------------------------------------------- COCO


def _save(path: Path, h: int, w: int, seed: int, mode: str = "RGB") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    im = Image.fromarray(arr)
    im = im.convert(mode) if mode != "RGB" else im
    im.save(path)


def make_coco(root: Path, n_test: int = 3, missing: int = 0) -> Path:
    """A Karpathy file with ``n_test`` test images (+ one train image) and the images (``missing`` left out)."""
    images = []
    for i in range(n_test):
        name = f"COCO_val2014_{i:012d}." + ("jpg" if i % 2 == 0 else "png")
        images.append(
            {
                "filepath": "val2014",
                "filename": name,
                "split": "test",
                "cocoid": 100 + i,
                "sentences": [{"raw": f" image {i} caption {j} "} for j in range(6 if i == 0 else 5)],
            }
        )
        if i >= missing:
            _save(root / "images" / "val2014" / name, 36 + 4 * i, 48, i, mode="L" if i == 2 else "RGB")
    images.append(
        {"filepath": "train2014", "filename": "COCO_train2014_1.jpg", "split": "train", "cocoid": 1, "sentences": []}
    )
    (root / "dataset_coco.json").write_text(json.dumps({"images": images}))
    return root


def _dcfg(root: Path, **kw) -> OmegaConf:
    base = OmegaConf.load(ROOT / "configs" / "dataset" / "coco.yaml")
    base.root = str(root)
    for k, v in kw.items():
        base[k] = v
    return base


def test_karpathy_loader(tmp_path: Path) -> None:
    root = make_coco(tmp_path / "coco", n_test=3)
    split = load_coco(_dcfg(root))
    assert split.image_ids == ["100", "101", "102"]
    assert [p.name for p in split.paths] == ["COCO_val2014_000000000000.jpg", "COCO_val2014_000000000001.png"] + [
        "COCO_val2014_000000000002.jpg"
    ]
    assert [len(c) for c in split.captions] == [5, 5, 5]  # first 5 of image 0's 6
    assert split.captions[1][0] == "image 1 caption 0"  # stripped
    texts, t2i = split.pairs()
    assert len(texts) == 15 and t2i.tolist() == [0] * 5 + [1] * 5 + [2] * 5
    assert len(load_coco(_dcfg(root, captions_per_image=None)).captions[0]) == 6
    items = split.items()
    assert len(items) == 3
    img = items[1]
    assert img.dtype == torch.uint8 and tuple(img.shape) == (3, 40, 48)
    assert tuple(items[2].shape) == (3, 44, 48)  # greyscale JPEG -> RGB
    with pytest.raises(ConfigError, match="dataset.split"):
        load_coco(_dcfg(root, split="testing"))


def test_coco_missing_images_error_or_skip(tmp_path: Path) -> None:
    root = make_coco(tmp_path / "coco", n_test=4, missing=2)
    with pytest.raises(
        DataNotFoundError, match=r"2 of 4 images are missing .*COCO_val2014_000000000000\.jpg.*on_missing"
    ):
        load_coco(_dcfg(root))
    report = tmp_path / "run"
    split = load_coco(_dcfg(root, on_missing="skip"), report_dir=report)
    assert split.num_missing == 2 and split.image_ids == ["102", "103"]
    listed = (report / "missing_images_test.txt").read_text().splitlines()
    assert [line.split("\t")[0] for line in listed] == ["100", "101"]


def test_coco_captions_json_formats_and_errors(tmp_path: Path) -> None:
    root = make_coco(tmp_path / "coco", n_test=2)
    ann = {
        "images": [
            {"id": 100, "file_name": "COCO_val2014_000000000000.jpg"},
            {"id": 101, "file_name": "COCO_val2014_000000000001.png"},
        ],
        "annotations": [
            {"image_id": 101, "id": 1, "caption": "b one"},
            {"image_id": 100, "id": 2, "caption": "a one"},
            {"image_id": 100, "id": 3, "caption": "a two"},
        ],
    }
    (root / "annotations").mkdir()
    (root / "annotations" / "captions_val2014.json").write_text(json.dumps(ann))
    # Karpathy split + the official captions
    both = load_coco(_dcfg(root, captions_json="annotations/captions_val2014.json"))
    assert both.captions == [["a one", "a two"], ["b one"]]
    # captions file alone (images found in the folder named in the file names)
    alone = load_coco(_dcfg(root, karpathy_json=None, captions_json="annotations/captions_val2014.json"))
    assert alone.image_ids == ["100", "101"] and alone.captions[1] == ["b one"]
    with pytest.raises(DataNotFoundError, match="karpathy_json"):
        load_coco(_dcfg(root, karpathy_json="nope.json"))
    (root / "bad.json").write_text(json.dumps({"images": [{"filename": "x.jpg", "split": "test", "sentences": [{}]}]}))
    with pytest.raises(AnnotationError, match=r"bad\.json: images\[0\]\.sentences\[0\] has no 'raw' field"):
        load_coco(_dcfg(root, karpathy_json="bad.json"))
    (root / "broken.json").write_text("{")
    with pytest.raises(AnnotationError, match=r"broken\.json: malformed JSON"):
        load_coco(_dcfg(root, karpathy_json="broken.json"))
    (root / "corrupt.jpg").write_bytes(b"not an image")
    with pytest.raises(ImageDecodeError, match="corrupt.jpg"):
        load_image_file(root / "corrupt.jpg")


def _denseset(root: Path) -> Path:
    instances = {
        "images": [{"id": i, "file_name": f"{i:012d}.jpg", "width": 48, "height": 40} for i in range(1, 6)],
        "categories": [{"id": 1, "name": "person"}, {"id": 2, "name": "dog"}, {"id": 3, "name": "kite"}],
        "annotations": [
            {"id": j, "image_id": img, "category_id": cat, "iscrowd": 0, "area": 10.0, "bbox": [1, 2, 3, 4]}
            for j, (img, cat) in enumerate([(1, 1), (1, 1), (1, 2), (2, 3), (2, 1), (3, 2), (3, 3), (4, 1), (5, 3)])
        ],
    }
    for i in range(1, 6):
        _save(root / "images" / "val2017" / f"{i:012d}.jpg", 40, 48, i)
    out = build_denseset(instances, fraction=0.6, pick="first")
    out["source"] = "annotations/instances_val2017.json"
    path = root / "denseset.json"
    path.write_text(json.dumps(out))
    return path


def test_denseset_loader(tmp_path: Path) -> None:
    root = tmp_path / "coco"
    path = _denseset(root)
    data = json.loads(path.read_text())
    split = load_coco(_dcfg(root, denseset=str(path), karpathy_json=None))
    assert split.name == "denseset"
    assert split.image_ids == [str(it["image_id"]) for it in data["items"]]
    assert split.captions == [[it["caption"]] for it in data["items"]]
    assert all(p.parent.name == "val2017" for p in split.paths)  # folder read off the instances file's name


# ---------------------------------------------------------------------- the entry point


def _zeroshot_cfg(tmp_path: Path, *overrides: str):
    return compose([*TINY32, f"paths.log_dir={tmp_path / 'logs'}", *overrides], config_name="zeroshot")


@pytest.mark.timeout(120)
def test_denseset_zero_shot_run(tmp_path: Path) -> None:
    from lsdo.zeroshot import run

    root = tmp_path / "coco"
    path = _denseset(root)
    cfg = _zeroshot_cfg(tmp_path, "dataset=coco", f"dataset.root={root}", f"dataset.denseset={path}")
    metrics = run(cfg)
    n = len(json.loads(path.read_text())["items"])
    assert metrics["num_items"] == n and metrics["num_texts"] == n
    out = next((tmp_path / "logs" / "zeroshot" / "runs").iterdir())
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["inference"]["region_encoder"] == "inverse_attention" and "Dense-Set" in saved["data"]
    assert "t2v" in (out / "metrics.md").read_text()


@pytest.mark.timeout(120)
def test_user_errors_are_one_line(tmp_path: Path) -> None:
    from lsdo.zeroshot import run

    root = make_coco(tmp_path / "coco", n_test=2, missing=1)
    with pytest.raises(DataNotFoundError, match="1 of 2 images are missing"):
        run(_zeroshot_cfg(tmp_path, f"dataset.root={root}"))
    with pytest.raises(ConfigError, match="inference.region_encoder"):
        run(_zeroshot_cfg(tmp_path, f"dataset.root={root}", "inference.region_encoder=saliency"))
    with pytest.raises(ConfigError, match="inference.lard"):
        run(_zeroshot_cfg(tmp_path, f"dataset.root={root}", "inference.lard.unit=inch"))
    with pytest.raises(LSDOUserError, match="ckpt"):
        run(_zeroshot_cfg(tmp_path, f"dataset.root={root}", f"ckpt={tmp_path / 'none.ckpt'}"))


@pytest.mark.timeout(300)
def test_zeroshot_py_coco_every_region_encoder(tmp_path: Path) -> None:
    root = make_coco(tmp_path / "coco", n_test=3)
    sweep = tmp_path / "sweep"
    proc = run_cli(
        "zeroshot.py",
        "-m",
        "inference.region_encoder=none,grid,inverse_attention",
        "dataset=coco",
        f"dataset.root={root}",
        *TINY32,
        "inference.lard.kernel=2",
        f"hydra.sweep.dir={sweep}",
        timeout=280,
        env={"OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = {p.name: json.loads((p / "metrics.json").read_text()) for p in sweep.iterdir() if p.is_dir()}
    assert sorted(runs) == ["0_none", "1_grid", "2_inverse_attention"]
    for name, m in runs.items():
        test = m["test"]
        assert test["num_items"] == 3 and test["num_texts"] == 15
        assert 0 <= test["t2v/R1"] <= 100 and 1 <= test["v2t/MnR"] <= 15
        assert m["inference"]["region_encoder"] == name.split("_", 1)[1]
        assert (sweep / name / "metrics.md").is_file() and (sweep / name / "recall_at_k.png").is_file()
    assert runs["0_none"]["test"]["mean_regions_per_frame"] == 0
    assert runs["1_grid"]["test"]["mean_regions_per_frame"] == 4


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_zeroshot_py_missing_image_exits_with_one_line(tmp_path: Path) -> None:
    root = make_coco(tmp_path / "coco", n_test=2, missing=1)
    proc = run_cli("zeroshot.py", f"dataset.root={root}", *TINY32, f"hydra.run.dir={tmp_path / 'run'}", timeout=280)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("error: COCO Karpathy test: 1 of 2 images are missing")


# ---------------------------------------------------------------------- synthetic videos and checkpoints


def _fake_checkpoint(tmp_path: Path) -> Path:
    """An untrained tiny LSDO checkpoint (the layout eval.py reads), on a small synthetic benchmark."""
    from lsdo.lightning_module import LSDOLitModule

    cfg = compose(
        [
            "experiment=demo",
            "model=tiny",
            "logger=none",
            "model.clip_cfg.vision_cfg.image_size=32",
            "dataset.val_combos=9",
            "dataset.test_combos=9",
            "dataset.clip_len=4",
            "dataset.num_frames=2",
        ]
    )
    container = OmegaConf.to_container(cfg, resolve=True)
    torch.manual_seed(0)
    lit = LSDOLitModule(container)
    path = tmp_path / "tiny.ckpt"
    torch.save({"hyper_parameters": {"cfg": container}, "state_dict": lit.state_dict()}, path)
    return path


@pytest.mark.timeout(180)
def test_zero_shot_synthetic_videos_with_a_checkpoint(tmp_path: Path) -> None:
    from lsdo.zeroshot import run

    ckpt = _fake_checkpoint(tmp_path)
    cfg = _zeroshot_cfg(
        tmp_path,
        f"ckpt={ckpt}",
        "dataset=synthetic",
        "dataset.val_combos=9",
        "dataset.test_combos=9",
        "dataset.clip_len=4",
        "dataset.num_frames=2",
        "inference.region_encoder=grid",
    )
    metrics = run(cfg)
    assert metrics["num_items"] == 9 and metrics["num_texts"] == 9 and metrics["num_frames"] == 18
    assert metrics["mean_regions_per_frame"] == 4


@pytest.mark.timeout(180)
def test_zero_shot_video_files_msrvtt_layout(tmp_path: Path) -> None:
    """A real-video dataset's test split: frames decoded from mp4 files (MSR-VTT 1k-A csv layout)."""
    from lsdo.data.video import write_video
    from lsdo.zeroshot import run

    root = tmp_path / "msrvtt"
    videos = synthetic.make_split("test", 0, 20, 60, 1)[:3]
    rows = ["key,vid_key,video_id,sentence"]
    for v in videos:
        write_video(root / "videos" / f"{v.video_id}.mp4", synthetic.render(v, 6, 32, 0.8, 2, 0.1))
        rows.append(f"ret{v.video_id},msr{v.video_id},{v.video_id},{v.captions[0]}")
    (root / "MSRVTT_JSFUSION_test.csv").write_text("\n".join(rows) + "\n")
    cfg = _zeroshot_cfg(tmp_path, "dataset=msrvtt", f"dataset.root={root}", "dataset.num_frames=3")
    metrics = run(cfg)
    assert metrics["num_items"] == 3 and metrics["num_texts"] == 3 and metrics["num_frames"] == 9


RENDER_ARGS = {"num_frames": 16, "size": 64, "small_visible_frac": 0.8, "distractors": 2, "small_radius": 0.1}


FORMER_DEFAULTS = {"num_frames": 16, "size": 64, "small_visible_frac": 0.6, "distractors": 3, "small_radius": 0.07}


@pytest.mark.parametrize("args", [FORMER_DEFAULTS, RENDER_ARGS])  # render()'s former defaults, the dataset config
def test_small_object_track_is_pixel_exact(args: dict) -> None:
    bench = bench_module("inverse_attention_synthetic")
    videos = synthetic.make_split("test", 0, 20, 60, 1)[:12]
    hidden = 0
    for v in videos:
        frames = synthetic.render(v, **args)
        track = bench.small_object_track(v, **args)
        colour = np.asarray(track.colour, dtype=np.uint8)[None, :, None, None]
        showing = (frames == colour).all(axis=1)  # no other pixel has the small object's exact colour
        np.testing.assert_array_equal(showing, track.pixels)
        assert not track.pixels[~track.shown].any()
        assert (track.drawn >= track.pixels).all()
        hidden += int((track.drawn & ~track.pixels).any())
        for t, (x0, y0, x1, y1) in enumerate(track.boxes):
            if track.pixels[t].any():
                ys, xs = np.nonzero(showing[t])
                assert (x0, y0, x1, y1) == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
                cy, cx = track.centres[t]
                assert x0 - 1 <= cx <= x1 + 1 and y0 - 1 <= cy <= y1 + 1
    assert hidden > 0  # the large object does pass over the small one: occlusion is exercised


def test_coverage_and_random_boxes() -> None:
    bench = bench_module("inverse_attention_synthetic")
    pixels = np.zeros((10, 12), bool)
    pixels[2:4, 3:7] = True  # 8 pixels
    boxes = np.array([[0, 0, 5, 10], [5, 0, 12, 3]])
    assert bench.coverage(pixels, boxes) == pytest.approx(4 / 8)
    assert bench.coverage(pixels, np.zeros((0, 4), dtype=np.int64)) == 0.0
    rng = np.random.default_rng(0)
    for _ in range(20):
        rb = bench.random_boxes_like(boxes, (10, 12), rng)
        np.testing.assert_array_equal(rb[:, 2:] - rb[:, :2], boxes[:, 2:] - boxes[:, :2])
        assert (rb[:, :2] >= 0).all() and (rb[:, 2] <= 12).all() and (rb[:, 3] <= 10).all()


@pytest.mark.timeout(300)
def test_synthetic_bench_runs_on_a_checkpoint(tmp_path: Path, capsys) -> None:
    bench = bench_module("inverse_attention_synthetic")
    out = tmp_path / "res.json"
    assert bench.main([f"ckpt={_fake_checkpoint(tmp_path)}", "ks=2", "draws=2", f"out={out}"]) == 0
    printed = capsys.readouterr().out
    assert "| global only |" in printed and "inverse attention (rollout)" in printed
    results = json.loads(out.read_text())["results"]
    assert [r["setting"]["method"] for r in results][:3] == ["none", "grid", "grid"]


def test_synthetic_bench_renderings_and_argument_errors(tmp_path: Path, capsys) -> None:
    bench = bench_module("inverse_attention_synthetic")
    dcfg = {"seed": 0, "val_combos": 20, "test_combos": 60, "train_videos_per_combo": 1, "clip_len": 6,
            "num_frames": 3, "small_visible_frac": 0.8, "distractors": 2, "small_radius": 0.1}  # fmt: skip
    v0, c0, t0 = bench.test_split(dcfg, 32)
    v1, c1, t1 = bench.test_split(dcfg, 32, rendering=1)
    assert [(a.big, a.small, a.captions) for a in v0] == [(b.big, b.small, b.captions) for b in v1]  # same queries
    assert c0.shape == c1.shape == (60, 3, 3, 32, 32) and not torch.equal(c0, c1)  # new videos
    assert torch.equal(bench.test_split(dcfg, 32, rendering=1)[1], c1)  # deterministic
    ckpt = _fake_checkpoint(tmp_path)
    for bad, msg in (("renders=0", "renders: expected an integer >= 1"), ("scale=0", "scale: expected an integer")):
        assert bench.main([f"ckpt={ckpt}", bad]) == 2
        assert msg in capsys.readouterr().err
