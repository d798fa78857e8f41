"""Video folder compression (lsdo.data.compress): fps, short side, sub-folders, resume, bad inputs."""

from __future__ import annotations

import shutil
from pathlib import Path

import av
import numpy as np
import pytest

from lsdo.cli.prepare import prepare_main
from lsdo.data.compress import compress_video, output_size
from lsdo.data.video import VideoDecodeError, probe_video, write_video

pytestmark = pytest.mark.timeout(120)


def grey_clip(frames: int, h: int, w: int) -> np.ndarray:
    """uint8 [T, h, w, 3]: frame i is grey level 8 * i (T <= 32)."""
    return np.stack([np.full((h, w, 3), 8 * i, np.uint8) for i in range(frames)])


def read_info(path: Path) -> tuple[float, int, int, list[int]]:
    """(fps, width, height, source index of each frame) of a compressed grey clip."""
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        ids = [round(f.to_ndarray(format="rgb24").mean() / 8) for f in c.decode(s)]
        return float(s.average_rate), s.codec_context.width, s.codec_context.height, ids


@pytest.fixture
def in_dir(tmp_path: Path) -> Path:
    root = tmp_path / "in"
    write_video(root / "movieA" / "clip1.mp4", grey_clip(30, 48, 64), fps=30)  # 1 s, landscape
    write_video(root / "movieB" / "clip2.mp4", grey_clip(30, 80, 48), fps=25)  # 1.2 s, portrait
    (root / "movieB" / "broken.mp4").write_text("not a video at all\n" * 10)
    return root


def test_output_size_even_short_side() -> None:
    assert output_size(320, 240, 224) == (298, 224)
    assert output_size(48, 80, 32) == (32, 54)
    assert output_size(224, 224, 224) == (224, 224)


def test_compress_folder_fps_size_structure_and_resume(in_dir: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    args = [str(in_dir), str(out), "--fps", "3", "--short-side", "32", "--no-progress"]
    assert prepare_main(["compress", *args, "--workers", "2"]) == 1  # one input is broken
    captured = capsys.readouterr()
    assert "compressed 2, skipped 0 (already done), failed 1" in captured.out
    assert str(in_dir / "movieB" / "broken.mp4") in captured.err

    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*")) == [
        "movieA",
        "movieA/clip1.mp4",
        "movieB",
        "movieB/clip2.mp4",
    ]
    fps, w, h, ids = read_info(out / "movieA" / "clip1.mp4")
    assert (fps, w, h) == (3.0, 42, 32)  # 64 x 48 -> short side 32, 42.7 -> 42 (even)
    assert ids == [0, 10, 20]  # 1 s at 3 fps: the source frames nearest to 0, 1/3, 2/3 s
    fps, w, h, ids = read_info(out / "movieB" / "clip2.mp4")
    assert (fps, w, h) == (3.0, 32, 54)
    assert ids == [0, 8, 17, 25]  # 30 frames at 25 fps = 1.2 s -> 4 frames at 0, 1/3, 2/3, 1 s
    assert probe_video(out / "movieA" / "clip1.mp4") == 3

    # Rerun: done files are skipped, the broken one is reported again.
    mtime = (out / "movieA" / "clip1.mp4").stat().st_mtime_ns
    assert prepare_main(["compress", *args, "--workers", "1"]) == 1
    assert "compressed 0, skipped 2 (already done), failed 1" in capsys.readouterr().out
    assert (out / "movieA" / "clip1.mp4").stat().st_mtime_ns == mtime

    # A killed run leaves at most a hidden temporary file, which is not taken for a done output.
    (out / "movieA" / "clip1.mp4").unlink()
    (out / "movieA" / ".clip1.mp4.part").write_bytes(b"half a file")
    (in_dir / "movieB" / "broken.mp4").unlink()
    assert prepare_main(["compress", *args, "--workers", "1"]) == 0
    assert "compressed 1, skipped 1 (already done), failed 0" in capsys.readouterr().out
    assert sorted(p.name for p in (out / "movieA").iterdir()) == ["clip1.mp4"]


def test_failed_decode_leaves_no_output(tmp_path: Path) -> None:
    src = tmp_path / "tail.mp4"
    noise = np.random.default_rng(0).integers(0, 256, (24, 48, 64, 3), dtype=np.uint8)
    write_video(src, noise, faststart=True)
    data = bytearray(src.read_bytes())
    data[len(data) // 2 :] = bytes(len(data) - len(data) // 2)  # the second half of the data is zeros
    src.write_bytes(bytes(data))
    dst = tmp_path / "out" / "tail.mp4"
    with pytest.raises(VideoDecodeError, match=str(src)):
        compress_video(src, dst, fps=3, short_side=32)
    assert not dst.exists() and list(dst.parent.iterdir()) == []


def test_ext_filter_output_always_mp4_and_prepare_dispatch(in_dir: Path, tmp_path: Path, capsys) -> None:
    shutil.copy(in_dir / "movieA" / "clip1.mp4", in_dir / "movieA" / "clip9.mov")
    out = tmp_path / "out"
    rc = prepare_main(["compress", str(in_dir), str(out), "--ext", ".mov", "--short-side", "32", "--no-progress"])
    assert rc == 0 and "compressed 1, skipped 0 (already done), failed 0" in capsys.readouterr().out
    assert [p.relative_to(out).as_posix() for p in out.rglob("*.*")] == ["movieA/clip9.mp4"]
    assert read_info(out / "movieA" / "clip9.mp4")[:3] == (3.0, 42, 32)

    assert prepare_main(["nope"]) == 2
    assert prepare_main(["compress", str(tmp_path / "missing"), str(out), "--no-progress"]) == 2
    assert str(tmp_path / "missing") in capsys.readouterr().err
    assert prepare_main(["compress", str(in_dir), str(in_dir), "--no-progress"]) == 2  # would overwrite the inputs


def test_name_clash_is_refused_before_any_work(in_dir: Path, tmp_path: Path, capsys) -> None:
    """clip.avi and clip.mp4 in one folder would both become clip.mp4: a one-line error, nothing written."""
    shutil.copy(in_dir / "movieA" / "clip1.mp4", in_dir / "movieA" / "clip1.avi")
    shutil.copy(in_dir / "movieB" / "clip2.mp4", in_dir / "movieB" / "clip2.MKV")
    out = tmp_path / "out"
    assert prepare_main(["compress", str(in_dir), str(out), "--short-side", "32", "--no-progress"]) == 2
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: 2 output name clash(es)"), err
    assert "movieA/clip1.avi and movieA/clip1.mp4 -> movieA/clip1.mp4" in err[0]
    assert "movieB/clip2.MKV and movieB/clip2.mp4 -> movieB/clip2.mp4" in err[0]
    assert "rename one file of each group" in err[0] and "Traceback" not in captured.err
    assert not out.exists()  # refused before any work
    assert prepare_main(["compress", str(in_dir), str(out), "--no-progress"]) == 2
    # one extension only: no clash
    assert (
        prepare_main(["compress", str(in_dir), str(out), "--short-side", "32", "--no-progress", "--ext", ".avi"]) == 0
    )
    assert [p.relative_to(out).as_posix() for p in out.rglob("*.mp4")] == ["movieA/clip1.mp4"]


def test_failures_listed_one_line_each_match_the_count(in_dir: Path, tmp_path: Path, capsys) -> None:
    (in_dir / "movieA" / "bad\nname.avi").write_bytes(b"")  # a newline in the name, zero bytes
    (in_dir / "movieA" / "worse\tname.mkv").write_text("not a video")
    out = tmp_path / "out"
    assert (
        prepare_main(["compress", str(in_dir), str(out), "--short-side", "32", "--no-progress", "--workers", "1"]) == 1
    )
    captured = capsys.readouterr()
    assert "compressed 2, skipped 0 (already done), failed 3" in captured.out
    failed = [line for line in captured.err.splitlines() if line.startswith("failed: ")]
    assert len(failed) == 3 == len(captured.err.strip().splitlines())
    assert any(f"{in_dir / 'movieA' / 'bad'}\\nname.avi: zero-byte" in line for line in failed)
    assert any(f"{in_dir / 'movieA' / 'worse'}\\tname.mkv: " in line for line in failed)
