"""Video decoding (lsdo.data.video): the right frames, both backends, clear errors, never a hang.

Test clips are real H.264 mp4s written with ``write_video``; frame i is a flat grey of level 8 * i,
so the index of every decoded frame can be read back from its mean.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lsdo.data.sampling import segment_indices
from lsdo.data.video import (
    VideoDecodeError,
    available_backends,
    probe_video,
    sample_frames,
    write_video,
)
from lsdo.errors import DataNotFoundError, LSDOUserError

# decord can spin forever in native code holding the GIL: only the thread method can end such a test.
pytestmark = pytest.mark.timeout(60)

H, W = 48, 64
BACKENDS = [pytest.param(b, marks=pytest.mark.skipif(b not in available_backends(), reason=f"{b} missing"))
            for b in ("decord", "pyav")]  # fmt: skip


def grey_clip(frames: int, h: int = H, w: int = W) -> np.ndarray:
    """uint8 [T, h, w, 3]: frame i is grey level 8 * i (T <= 32)."""
    return np.stack([np.full((h, w, 3), 8 * i, np.uint8) for i in range(frames)])


def frame_ids(frames: torch.Tensor) -> list[int]:
    """The source index of each decoded grey frame."""
    return (frames.float().mean(dim=(1, 2, 3)) / 8).round().int().tolist()


@pytest.fixture(scope="module")
def clip24(tmp_path_factory: pytest.TempPathFactory):
    path = tmp_path_factory.mktemp("videos") / "clip24.mp4"
    write_video(path, grey_clip(24))
    return path


def test_available_backends() -> None:
    assert "pyav" in available_backends()
    assert set(available_backends()) <= {"decord", "pyav"}


@pytest.mark.parametrize("backend", BACKENDS)
def test_uniform_frames_shape_and_order(clip24, backend: str) -> None:
    x = sample_frames(clip24, 8, "uniform", backend=backend)
    assert x.shape == (8, 3, H, W) and x.dtype == torch.uint8 and x.is_contiguous()
    assert frame_ids(x) == segment_indices(24, 8, "uniform").tolist() == [1, 4, 7, 10, 13, 16, 19, 22]


@pytest.mark.parametrize("backend", BACKENDS)
def test_rand_frames_inside_their_segments(clip24, backend: str) -> None:
    for seed in range(5):
        ids = frame_ids(sample_frames(clip24, 6, "rand", rng=np.random.default_rng(seed), backend=backend))
        assert ids == segment_indices(24, 6, "rand", np.random.default_rng(seed)).tolist()
        assert all(4 * s <= i < 4 * (s + 1) for s, i in enumerate(ids))  # 6 segments of 4 frames


@pytest.mark.parametrize("backend", BACKENDS)
def test_video_shorter_than_num_frames(tmp_path, backend: str) -> None:
    path = tmp_path / "short.mp4"
    write_video(path, grey_clip(5))
    x = sample_frames(path, 12, "uniform", backend=backend)
    assert x.shape == (12, 3, H, W)
    assert frame_ids(x) == segment_indices(5, 12, "uniform").tolist()
    rand = frame_ids(sample_frames(path, 12, "rand", rng=np.random.default_rng(0), backend=backend))
    assert rand == sorted(rand) and set(rand) <= set(range(5))


@pytest.mark.parametrize("backend", BACKENDS)
def test_one_frame_segments_and_one_frame_video(tmp_path, clip24, backend: str) -> None:
    assert frame_ids(sample_frames(clip24, 24, "uniform", backend=backend)) == list(range(24))
    assert frame_ids(sample_frames(clip24, 24, "rand", rng=np.random.default_rng(1), backend=backend)) == list(
        range(24)
    )
    one = tmp_path / "one.mp4"
    write_video(one, grey_clip(1) + 100)
    x = sample_frames(one, 4, "rand", backend=backend)
    assert x.shape == (4, 3, H, W) and torch.equal(x[0], x[3])
    assert probe_video(one, backend=backend) == 1


def test_backends_agree_on_colour_video(tmp_path, monkeypatch) -> None:
    if "decord" not in available_backends():
        pytest.skip("decord missing")
    import lsdo.data.video as video

    def no_fallback(*args, **kwargs):
        raise AssertionError("decord failed and fell back to PyAV")

    monkeypatch.setattr(video, "_av_sample", no_fallback)  # the decord numbers must come from decord
    yy, xx = np.mgrid[0:H, 0:W]
    frames = np.stack([np.stack([(4 * xx + 8 * i) % 256, 5 * yy, np.full_like(xx, 16 * i)], -1) for i in range(16)])
    path = tmp_path / "colour.mp4"
    write_video(path, frames.astype(np.uint8))
    a = sample_frames(path, 7, "uniform", backend="decord").int()
    monkeypatch.undo()
    b = sample_frames(path, 7, "uniform", backend="pyav").int()
    assert (a - b).abs().max() <= 2
    # And both are close to what was written (lossy H.264 at crf 12).
    idx = segment_indices(16, 7, "uniform")
    ref = torch.from_numpy(frames[idx].astype(np.int32)).permute(0, 3, 1, 2)
    assert (a - ref).abs().float().mean() < 4


@pytest.mark.parametrize("backend", BACKENDS)
def test_resize_on_decode_and_probe(clip24, backend: str) -> None:
    x = sample_frames(clip24, 3, backend=backend, size=24)
    assert x.shape == (3, 3, 24, 32)  # short side 48 -> 24, aspect kept
    assert frame_ids(x) == segment_indices(24, 3, "uniform").tolist()
    assert probe_video(clip24, backend=backend) == 24


def test_write_video_layouts_odd_sizes_and_bad_input(tmp_path) -> None:
    chw = torch.from_numpy(grey_clip(4, 31, 33)).permute(0, 3, 1, 2)  # [T, 3, H, W], odd sizes
    path = tmp_path / "new" / "sub" / "odd.mp4"
    write_video(path, chw, fps=4)
    assert path.is_file() and not list(path.parent.glob(".*"))  # no temporary file left behind
    x = sample_frames(path, 4, backend="pyav")
    assert x.shape == (4, 3, 32, 34)  # padded to even by repeating the last row / column
    assert frame_ids(x) == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="uint8"):
        write_video(tmp_path / "f.mp4", np.zeros((2, 8, 8, 3), np.float32))
    with pytest.raises(ValueError, match="shape"):
        write_video(tmp_path / "f.mp4", np.zeros((8, 8, 3), np.uint8))


@pytest.mark.parametrize("backend", BACKENDS)
def test_missing_file(tmp_path, backend: str) -> None:
    missing = tmp_path / "nope.mp4"
    for fn in (lambda: sample_frames(missing, 4, backend=backend), lambda: probe_video(missing, backend=backend)):
        with pytest.raises(DataNotFoundError, match="nope.mp4") as exc:
            fn()
        assert str(missing) in str(exc.value)


def _damage(path, kind: str) -> None:
    if kind == "zero_byte":
        path.write_bytes(b"")
    elif kind == "text":
        path.write_text("this is a caption file, not a video\n" * 20)
    elif kind == "truncated":  # moov atom at the end: the index is gone
        write_video(path, grey_clip(24))
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif kind == "truncated_faststart":  # moov first: the index lists 24 frames, half the data is gone
        noise = np.random.default_rng(0).integers(0, 256, (24, H, W, 3), dtype=np.uint8)
        write_video(path, noise, faststart=True)
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif kind == "corrupt_tail":  # the size is intact, the second half of the data is zeros
        noise = np.random.default_rng(0).integers(0, 256, (24, H, W, 3), dtype=np.uint8)
        write_video(path, noise, faststart=True)
        data = bytearray(path.read_bytes())
        data[len(data) // 2 :] = bytes(len(data) - len(data) // 2)
        path.write_bytes(bytes(data))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kind", ["zero_byte", "text", "truncated", "truncated_faststart", "corrupt_tail"])
def test_damaged_files_raise_decode_error_naming_the_file(tmp_path, kind: str, backend: str) -> None:
    path = tmp_path / f"{kind}.mp4"
    _damage(path, kind)
    with pytest.raises(VideoDecodeError) as exc:
        probe_video(path, backend=backend)
    assert str(path) in str(exc.value) and isinstance(exc.value, LSDOUserError)
    if kind == "zero_byte":
        assert "zero-byte" in str(exc.value)
    if kind == "truncated_faststart":
        assert "truncated" in str(exc.value)
    with pytest.raises(VideoDecodeError) as exc:
        sample_frames(path, 8, "uniform", backend=backend)
    assert str(path) in str(exc.value)


@pytest.mark.parametrize("backend", BACKENDS)
def test_index_lists_more_frames_than_present(tmp_path, backend: str) -> None:
    """A file cut at a packet boundary: the index lists 24 frames, 12 packets survive.

    Sampling uses the frames that are there (asking decord for a frame past the real end can hang
    it forever, decord#373); the pre-flight probe reports the file as truncated.
    """
    import av

    path = tmp_path / "cut.mp4"
    write_video(path, grey_clip(24), faststart=True)
    with av.open(str(path)) as c:
        ends = sorted(p.pos + p.size for p in c.demux(c.streams.video[0]) if p.size)
    path.write_bytes(path.read_bytes()[: ends[11]])  # keep the first 12 packets in file order
    with pytest.raises(VideoDecodeError, match="lists 24 frames but holds only 12") as exc:
        probe_video(path, backend=backend)
    assert str(path) in str(exc.value)
    x = sample_frames(path, 8, "uniform", backend=backend)
    assert x.shape == (8, 3, H, W)
    ids = frame_ids(x)
    assert ids == sorted(ids) and max(ids) < 24


def test_bad_arguments(clip24) -> None:
    with pytest.raises(ValueError, match="sample mode"):
        sample_frames(clip24, 4, "middle")
    with pytest.raises(ValueError, match="backend"):
        sample_frames(clip24, 4, backend="opencv")
    with pytest.raises(ValueError, match="num_frames"):
        sample_frames(clip24, 0)
