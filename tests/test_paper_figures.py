"""``lsdo-viz fig5 | fig7 | fig8`` (:mod:`lsdo.paper_figures`): the paper's Fig. 5, 7 and 8 as PNGs.

Tiny random-init checkpoints (the tiny ViT and the demo's tiny ResNet) and one synthetic mp4 are made once per
module; the figures' data (curves, heatmaps, frame weights) is checked against direct computation, and the
figures themselves by their panels and what those panels draw.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import INDEX_TINY, random_checkpoint
from omegaconf import OmegaConf
from PIL import Image

from lsdo import paper_figures
from lsdo.checkpoint import load_model
from lsdo.cli.viz import viz_main
from lsdo.config import compose
from lsdo.data import synthetic
from lsdo.data.transforms import build_transform
from lsdo.data.video import sample_frames, write_video
from lsdo.errors import LSDOUserError
from lsdo.paper_figures import fig5, fig5_curves, fig7, fig8, fig8_weights


def _checkpoint(path: Path, seed: int, *overrides: str, base: tuple[str, ...] = tuple(INDEX_TINY)) -> Path:
    """A random-init checkpoint of the tiny ViT at 32 px (``base``: another model), sampling 4 frames."""
    return random_checkpoint(path, seed, "dataset.num_frames=4", *overrides, base=base)


@pytest.fixture(scope="module")
def assets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Checkpoints (tiny ViT: two seeds of variant single, a baseline, one without the frame-level block; the demo's
    tiny ResNet), a 12-frame mp4 of the synthetic benchmark and one of its frames as a PNG."""
    root = tmp_path_factory.mktemp("figs")
    dcfg = compose(["experiment=demo"]).dataset
    video = synthetic.SyntheticVideo("v0", big=0, small=1, seed=3, captions=("x",))
    frames = synthetic.render(video, **{**synthetic.render_settings(dcfg, 64), "num_frames": 12})
    write_video(root / "clip.mp4", frames)
    Image.fromarray(np.ascontiguousarray(frames[5].transpose(1, 2, 0))).save(root / "frame.png")
    return {
        "vit_a": _checkpoint(root / "vit_a.ckpt", 0, "variant=single", "seed=0"),
        "vit_b": _checkpoint(root / "vit_b.ckpt", 1, "variant=single", "seed=1"),
        "baseline": _checkpoint(root / "baseline.ckpt", 2, "variant=baseline"),
        "no_frame_lsdo": _checkpoint(root / "no_frame_lsdo.ckpt", 2, "variant=average", "model.use_frame_lsdo=false"),
        "resnet": _checkpoint(root / "resnet.ckpt", 3, "variant=average", base=("experiment=demo",)),
        "video": root / "clip.mp4",
        "image": root / "frame.png",
    }


@pytest.fixture
def saved(monkeypatch: pytest.MonkeyPatch) -> list:
    """The matplotlib figures the module writes (saved as usual; their artists stay readable after closing)."""
    figures: list = []
    save = paper_figures.save

    def keep(fig, out):
        figures.append(fig)
        return save(fig, out)

    monkeypatch.setattr(paper_figures, "save", keep)
    return figures


def _png(path: Path) -> tuple[int, int]:
    with Image.open(path) as im:
        im.load()
        return im.size  # (width, height)


# ---------------------------------------------------------------------------------------------
# Fig. 5
# ---------------------------------------------------------------------------------------------


def _run(root: Path, name: str, cfg: dict, rows: list[dict[str, float | str]]) -> Path:
    run = root / name
    (run / "csv" / "version_0").mkdir(parents=True)
    (run / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(cfg)))
    cols = ["epoch", "step", "train/lambda", "train/loss", "train/theta", "val/t2v/R1"]
    lines = [",".join(cols)] + [",".join(str(r.get(c, "")) for c in cols) for r in rows]
    (run / "csv" / "version_0" / "metrics.csv").write_text("\n".join(lines) + "\n")
    return run


def test_fig5_overlays_the_runs_with_their_default_labels(tmp_path: Path, saved: list) -> None:
    a = _run(
        tmp_path, "a", {"seed": 0, "variant": {"name": "single"}, "ablation": {"label": "θ=0.1 learnable"}},
        [{"epoch": 0, "step": s, "train/lambda": 50 - s, "train/theta": 0.1 + 0.01 * s} for s in range(5)]
        + [{"epoch": 0, "step": 4, "val/t2v/R1": 12.5}],
    )  # fmt: skip
    b = _run(
        tmp_path, "b", {"seed": 2, "variant": {"name": "single"}},
        [{"epoch": 0, "step": s, "train/lambda": 40 - 2 * s, "train/theta": 0.9} for s in range(0, 10, 2)],
    )  # fmt: skip
    curves = fig5_curves([a, b])
    assert list(curves) == ["train/theta", "train/lambda"]
    assert [c.label for c in curves["train/theta"]] == ["θ=0.1 learnable seed 0", "single seed 2"]
    assert curves["train/lambda"][1].steps == [0, 2, 4, 6, 8] and curves["train/lambda"][1].values[-1] == 24.0

    out = fig5([a, b], tmp_path / "out" / "fig5.png")
    (fig,) = saved
    axes = fig.axes
    assert len(axes) == 2
    for ax, key in zip(axes, ["train/theta", "train/lambda"], strict=True):
        lines = ax.get_lines()
        assert len(lines) == 2
        for line, curve in zip(lines, curves[key], strict=True):
            assert list(line.get_xdata()) == curve.steps and list(line.get_ydata()) == curve.values
        assert [t.get_text() for t in ax.get_legend().get_texts()] == ["θ=0.1 learnable seed 0", "single seed 2"]
    w, h = _png(out)
    assert w > 1.8 * h  # two panels side by side


def test_fig5_panels_labels_and_errors(tmp_path: Path, saved: list) -> None:
    # lambda only (a run without a threshold): the theta panel is left out; a folder of two runs draws both
    runs = tmp_path / "sweep"
    for seed in (0, 1):
        _run(runs, f"s{seed}", {"seed": seed, "variant": {"name": "average"}},
             [{"step": s, "train/lambda": 30 + seed} for s in range(3)])  # fmt: skip
    curves = fig5_curves([runs], labels=["x", "y"])
    assert list(curves) == ["train/lambda"] and [c.label for c in curves["train/lambda"]] == ["x", "y"]
    assert viz_main(["fig5", f"runs={runs}", f"out={tmp_path / 'f.png'}"]) == 0
    assert len(saved[-1].axes) == 1 and len(saved[-1].axes[0].get_lines()) == 2
    w, h = _png(tmp_path / "f.png")
    assert w < 1.8 * h

    empty = tmp_path / "tb_run"
    empty.mkdir()
    (empty / "config.yaml").write_text("seed: 0\n")
    with pytest.raises(LSDOUserError, match=r"no metrics\.csv under it; fig5 reads the CSV logger's .*logger=csv"):
        fig5([empty], tmp_path / "x.png")
    neither = _run(tmp_path, "loss_only", {"seed": 0}, [{"step": 0, "train/loss": 1.0}])
    with pytest.raises(LSDOUserError, match=r"loss_only.*logged neither train/theta or train/lambda"):
        fig5_curves([runs, neither])
    with pytest.raises(LSDOUserError, match="labels: 1 given for 2 runs"):
        fig5_curves([runs], labels=["only"])


def test_fig5_cli_error_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert viz_main(["fig5", f"runs={tmp_path}"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "logger=csv" in err


# ---------------------------------------------------------------------------------------------
# Fig. 7
# ---------------------------------------------------------------------------------------------


def test_fig7_two_checkpoints_three_columns(assets: dict[str, Path], tmp_path: Path, saved: list) -> None:
    out = fig7([assets["vit_a"], assets["vit_b"]], tmp_path / "fig7.png", image=str(assets["image"]))
    fig = saved[-1]
    images = [ax for ax in fig.axes if ax.get_images()]
    assert len(images) == 3  # the frame, then one column per checkpoint
    assert [len(ax.get_images()) for ax in images] == [1, 2, 2]  # frame; frame + heatmap overlay
    assert [ax.get_title() for ax in images[1:]] == ["single seed 0", "single seed 1"]
    heat = images[1].get_images()[1]
    assert heat.get_cmap().name == "jet" and heat.get_array().min() == 0 and heat.get_array().max() == 1
    # the two seeds see the frame differently
    assert not np.allclose(images[1].get_images()[1].get_array(), images[2].get_images()[1].get_array())
    w, h = _png(out)
    assert w > 2 * h  # three square columns side by side


def test_fig7_heatmaps_are_the_encoders_attention(assets: dict[str, Path]) -> None:
    from lsdo.inverse_attention.heatmap import attention_heatmap, upsample
    from lsdo.inverse_attention.viz import load_image

    frame = load_image(str(assets["image"]))  # 64 x 64: the view is the whole frame
    model, _ = load_model(assets["resnet"])  # the demo's ModifiedResNet: attnpool over a 2 x 2 grid
    maps, box = paper_figures.fig7_heatmaps([model], frame)
    assert box == (0, 0, 64, 64) and maps[0].shape == (64, 64)
    x, _ = paper_figures._visual_input(model.encoder.clip, frame)
    raw = attention_heatmap(model.encoder.clip.visual, x)[0]
    assert raw.shape == (2, 2)
    want = upsample(raw, (64, 64))
    torch.testing.assert_close(maps[0], (want - want.min()) / (want.max() - want.min()))


def test_fig7_video_frame_and_errors(assets: dict[str, Path], tmp_path: Path, saved: list) -> None:
    args = ["fig7", f"ckpt={assets['resnet']},{assets['vit_a']}", f"video={assets['video']}", "frame=1"]
    assert viz_main([*args, f"out={tmp_path / 'v.png'}", "labels=ResNet,ViT"]) == 0
    fig = saved[-1]
    images = [ax for ax in fig.axes if ax.get_images()]
    assert [ax.get_title() for ax in images[1:]] == ["ResNet", "ViT"]
    want = sample_frames(assets["video"], 4, mode="uniform")[1].permute(1, 2, 0).numpy()
    np.testing.assert_array_equal(images[0].get_images()[0].get_array(), want)
    assert "sampled frame 1/4, video frame 4" in images[0].get_title()
    with pytest.raises(LSDOUserError, match="image=FILE or as video=FILE"):
        fig7([assets["vit_a"]], tmp_path / "x.png")
    with pytest.raises(LSDOUserError, match="frame=4: the checkpoint samples 4 frames"):
        fig7([assets["vit_a"]], tmp_path / "x.png", video=str(assets["video"]), frame=4)
    with pytest.raises(LSDOUserError, match="rollout.*ModifiedResNet"):
        fig7([assets["resnet"]], tmp_path / "x.png", image=str(assets["image"]), heatmap="rollout")


# ---------------------------------------------------------------------------------------------
# Fig. 8
# ---------------------------------------------------------------------------------------------


def test_fig8_bars_are_the_frame_weights(assets: dict[str, Path], tmp_path: Path, saved: list) -> None:
    out = fig8(assets["vit_a"], assets["video"], tmp_path / "fig8.png")
    model, cfg = load_model(assets["vit_a"])
    frames = sample_frames(assets["video"], 4, mode="uniform")
    clip = build_transform(model.image_size, train=False)(frames)
    with torch.no_grad():
        want = model.encode_video(clip[None], return_details=True)[1]["frame_weights"][0]
    assert want.shape == (4,)
    torch.testing.assert_close(float(want.sum()), 1.0)
    torch.testing.assert_close(fig8_weights(model, clip), want)

    fig = saved[-1]
    frame_axes = [ax for ax in fig.axes if ax.get_images()]
    assert len(frame_axes) == 4
    assert [ax.get_title() for ax in frame_axes] == ["frame 1", "frame 4", "frame 7", "frame 10"]
    (bars,) = [ax for ax in fig.axes if ax.patches]
    heights = torch.tensor([p.get_height() for p in bars.patches], dtype=torch.float32)
    torch.testing.assert_close(heights, want.float())
    w, h = _png(out)
    assert w > h

    # num_frames overrides the checkpoint's; the ResNet tower works too
    assert viz_main(["fig8", f"ckpt={assets['resnet']}", f"video={assets['video']}", "num_frames=3",
                     f"out={tmp_path / 'r.png'}"]) == 0  # fmt: skip
    (bars,) = [ax for ax in saved[-1].axes if ax.patches]
    assert len(bars.patches) == 3 and abs(sum(p.get_height() for p in bars.patches) - 1) < 1e-5


def test_fig8_without_a_frame_level_block(assets: dict[str, Path], tmp_path: Path, capsys) -> None:
    with pytest.raises(LSDOUserError, match=r"has no frame-level LSDO block \(variant=baseline: no LSDO blocks\)"):
        fig8(assets["baseline"], assets["video"], tmp_path / "x.png")
    with pytest.raises(LSDOUserError, match=r"no frame-level LSDO block \(variant=average: model.use_frame_lsdo=false"):
        fig8(assets["no_frame_lsdo"], assets["video"], tmp_path / "x.png")
    assert viz_main(["fig8", f"ckpt={assets['baseline']}", f"video={assets['video']}", f"out={tmp_path}/x.png"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "frame-level" in err
    assert not (tmp_path / "x.png").exists()
