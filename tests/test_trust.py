"""Checkpoints that cannot run code, a true last checkpoint, resumes of the same configuration
only, run directories that cannot collide, eval.py on moved data, one-line config errors.

Each test here failed on the code before these were mended (issue 11 of the tracker).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import pytest
import torch
from conftest import ROOT, TINY_OVERRIDES, run_cli
from omegaconf import OmegaConf, open_dict

from lsdo.callbacks import AtomicCheckpointIO, RunCheckpoint, checkpoint_callbacks
from lsdo.checkpoint import load_checkpoint, load_model, read_checkpoint
from lsdo.config import compose, validate
from lsdo.errors import ConfigError, LSDOUserError
from lsdo.evaluate import merge_eval_config
from lsdo.train import find_last_checkpoint, output_dir_of, warn_random_init_at_fine_tuning_rate

pytestmark = pytest.mark.timeout(300)
NON_DATA = [o for o in TINY_OVERRIDES if not o.startswith("dataset.")]  # for the real datasets' presets


class Payload:
    """Unpickling this calls ``open(marker, "w")``: the file appears iff the payload ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def _tiny_checkpoint(path: Path, extra: dict | None = None) -> Path:
    """A Lightning-style LSDO checkpoint of a random-init tiny model (what a training run saves)."""
    from lsdo.lightning_module import LSDOLitModule

    cfg = OmegaConf.to_container(compose(TINY_OVERRIDES), resolve=True)
    torch.manual_seed(0)
    lit = LSDOLitModule(cfg)
    torch.save({"epoch": 0, "global_step": 0, "state_dict": lit.state_dict(), "hyper_parameters": {"cfg": cfg},
                **(extra or {})}, path)  # fmt: skip
    return path


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("ckpts")
    marker = root / "PAYLOAD_RAN"
    good = _tiny_checkpoint(root / "good.ckpt")
    evil = _tiny_checkpoint(root / "evil.ckpt", {"payload": Payload(marker)})
    truncated = root / "truncated.ckpt"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    return {"good": good, "evil": evil, "truncated": truncated, "marker": marker, "root": root}


# ------------------------------------------------------------------------- 1. safe checkpoint loading


def test_good_checkpoint_loads_with_weights_only(ckpts) -> None:
    cfg, state = load_checkpoint(ckpts["good"])
    assert cfg["model"]["name"] == "tiny" and any(k.startswith("model.") for k in state)
    model, saved = load_model(ckpts["good"])
    assert not model.training and saved == cfg
    weights = model.state_dict()
    assert weights and all(torch.equal(v, state[f"model.{k}"]) for k, v in weights.items())  # the saved weights


def test_malicious_checkpoint_is_refused_and_its_payload_never_runs(ckpts) -> None:
    with pytest.raises(LSDOUserError, match=r"^ckpt: refused .*evil\.ckpt.*could run code"):
        read_checkpoint(ckpts["evil"])
    assert not ckpts["marker"].exists()
    assert "(io.open)" in str(_refusal(ckpts["evil"]))  # the refused global is named


def _refusal(path: Path) -> LSDOUserError:
    with pytest.raises(LSDOUserError) as info:
        read_checkpoint(path)
    return info.value


def test_no_unsafe_torch_load_left_in_the_package() -> None:
    offenders = [
        f"{p.relative_to(ROOT)}:{i}"
        for p in (ROOT / "lsdo").rglob("*.py")
        for i, line in enumerate(p.read_text().splitlines(), 1)
        if "weights_only=False" in line
    ]
    assert offenders == []


def _plain_tool(fn, argv: list[str], capsys) -> tuple[int, str]:
    rc = fn(argv)
    return rc, capsys.readouterr().err


def test_malicious_checkpoint_through_every_plain_tool(ckpts, tmp_path: Path, capsys) -> None:
    """index build, search, viz and build-bank: refused (exit 2, one line), payload not run."""
    from lsdo.cli import build_bank_main
    from lsdo.cli.index import index_main
    from lsdo.cli.search import search_main
    from lsdo.cli.viz import viz_main
    from lsdo.model import build_model
    from lsdo.retrieval.index import VideoIndex

    evil = str(ckpts["evil"])
    videos = tmp_path / "videos"
    videos.mkdir()
    (videos / "clip.mp4").write_bytes(b"\x00" * 64)  # listed before the checkpoint is read
    index_dir = tmp_path / "index"
    model = build_model(compose(TINY_OVERRIDES)).eval()
    VideoIndex.build(model, torch.randn(3, 4, 512), ["a", "b", "c"]).save(index_dir)
    image = tmp_path / "frame.png"
    from PIL import Image

    Image.new("RGB", (32, 32), (200, 10, 10)).save(image)
    runs = {
        "lsdo-index build": (index_main, ["build", f"ckpt={evil}", f"videos={videos}", f"out={tmp_path / 'new'}"]),
        "lsdo-search": (search_main, [f"index={index_dir}", f"ckpt={evil}", "a red circle"]),
        "lsdo-viz": (viz_main, ["inverse-attention", f"image={image}", "query=a red circle", f"ckpt={evil}",
                                f"out={tmp_path / 'viz.png'}"]),
        "lsdo-build-bank": (build_bank_main, [f"ckpt={evil}", f"out={tmp_path / 'bank.json'}"]),
    }  # fmt: skip
    for tool, (fn, argv) in runs.items():
        rc, err = _plain_tool(fn, argv, capsys)
        errors = [line for line in err.splitlines() if line.startswith("error:")]
        assert rc == 2, (tool, err)
        assert len(errors) == 1 and "refused" in errors[0] and "evil.ckpt" in errors[0], (tool, err)
        assert not ckpts["marker"].exists(), tool


def test_malicious_checkpoint_through_zeroshot(ckpts, tmp_path: Path) -> None:
    from lsdo.zeroshot import run as zeroshot_run

    cfg = compose([f"ckpt={ckpts['evil']}", f"paths.log_dir={tmp_path}"], config_name="zeroshot")
    with pytest.raises(LSDOUserError, match="refused"):
        zeroshot_run(cfg)
    assert not ckpts["marker"].exists()


def test_malicious_checkpoint_through_eval_and_resume(ckpts, tmp_path: Path) -> None:
    """The Hydra entry points as users run them: eval.py ckpt=... and train.py ckpt_path=..."""
    for script, args in (
        ("eval.py", [f"ckpt={ckpts['evil']}", f"paths.log_dir={tmp_path}"]),
        ("train.py", [*TINY_OVERRIDES, f"ckpt_path={ckpts['evil']}", f"paths.log_dir={tmp_path}"]),
    ):
        proc = run_cli(script, *args, timeout=240)
        assert proc.returncode == 2, (script, proc.stderr[-1500:])
        assert "Traceback" not in proc.stderr
        last = proc.stderr.strip().splitlines()[-1]
        assert last.startswith("error: ckpt") and "refused" in last, script
        assert not ckpts["marker"].exists(), script


# ------------------------------------------------------------------------- 2. a true, atomic last checkpoint


class _Toy(L.LightningModule):
    """Five batches per epoch; the monitored metric is best at epoch 0 and falls after it."""

    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(3))

    def training_step(self, batch, batch_idx):
        return (self.w - batch[0]).pow(2).sum()

    def validation_step(self, batch, batch_idx):
        self.log("val/t2v/R1", 10.0 - self.current_epoch)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)

    def train_dataloader(self):
        return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(5, 3)), batch_size=1)

    def val_dataloader(self):
        return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(1, 3)), batch_size=1)


def _fit_toy(ckpt_dir: Path, epochs: int, every_n_steps: int = 0, ckpt_path: str | None = None) -> L.Trainer:
    trainer = L.Trainer(
        max_epochs=epochs, callbacks=checkpoint_callbacks(ckpt_dir, every_n_steps), plugins=[AtomicCheckpointIO()],
        logger=False, enable_progress_bar=False, enable_model_summary=False, accelerator="cpu",
    )  # fmt: skip
    trainer.fit(_Toy(), ckpt_path=ckpt_path, weights_only=True)
    return trainer


def test_last_checkpoint_holds_the_last_epoch_not_the_best(tmp_path: Path) -> None:
    _fit_toy(tmp_path / "ck", epochs=3)
    last = torch.load(tmp_path / "ck" / "last.ckpt", weights_only=True)
    best = torch.load(tmp_path / "ck" / "best-epoch00.ckpt", weights_only=True)
    assert (last["epoch"], last["global_step"]) == (2, 15)  # Lightning 2.6's save_last gave epoch 0 here
    assert best["epoch"] == 0
    assert sorted(p.name for p in (tmp_path / "ck").iterdir()) == ["best-epoch00.ckpt", "last.ckpt"]  # no temp files


def test_last_checkpoint_every_n_steps_when_asked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    written: list[tuple[str, int]] = []
    original = AtomicCheckpointIO.save_checkpoint

    def record(self, checkpoint, path, storage_options=None):
        written.append((Path(path).name, int(checkpoint["global_step"])))
        return original(self, checkpoint, path, storage_options)

    monkeypatch.setattr(AtomicCheckpointIO, "save_checkpoint", record)
    _fit_toy(tmp_path / "ck", epochs=2, every_n_steps=2)
    last_steps = [step for name, step in written if name == "last.ckpt"]
    assert {2, 4, 6, 8}.issubset(last_steps) and {5, 10}.issubset(last_steps)  # every 2 steps and every epoch end


def test_atomic_save_keeps_the_previous_file_when_writing_fails(tmp_path: Path, monkeypatch) -> None:
    io = AtomicCheckpointIO()
    target = tmp_path / "last.ckpt"
    io.save_checkpoint({"epoch": 1}, target)

    def dies_half_way(obj, f, *a, **k):
        f.write(b"PK\x03\x04 half a checkpoint")
        raise KeyboardInterrupt  # e.g. Ctrl-C while saving

    monkeypatch.setattr(torch, "save", dies_half_way)
    with pytest.raises(KeyboardInterrupt):
        io.save_checkpoint({"epoch": 2}, target)
    monkeypatch.undo()
    assert torch.load(target, weights_only=True) == {"epoch": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]


def test_resume_into_a_new_directory_carries_the_best_state_and_never_touches_the_old_run(tmp_path: Path) -> None:
    old, new = tmp_path / "run1" / "ck", tmp_path / "run2" / "ck"
    _fit_toy(old, epochs=2)
    before = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in old.iterdir()}
    trainer = _fit_toy(new, epochs=4, ckpt_path=str(old / "last.ckpt"))
    best_cb = next(c for c in trainer.callbacks if isinstance(c, RunCheckpoint) and c.monitor)
    assert best_cb.best_model_path == str(new / "best-epoch00.ckpt")  # the true best (epoch 0) carried over
    assert float(best_cb.best_model_score) == 10.0
    assert torch.load(new / "last.ckpt", weights_only=True)["epoch"] == 3
    assert {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in old.iterdir()} == before


# ------------------------------------------------------------------------- 3. ckpt_path=last: same configuration


def _fake_run(root: Path, name: str, overrides: list[str], mtime: float) -> Path:
    run = root / "runs" / name
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.yaml").write_text(OmegaConf.to_yaml(compose(overrides)))
    last = run / "checkpoints" / "last.ckpt"
    last.write_bytes(b"x")
    os.utime(last, (mtime, mtime))
    return last


def test_ckpt_path_last_takes_the_newest_run_of_the_same_configuration(cfg_tiny) -> None:
    root = Path(cfg_tiny.paths.log_dir) / str(cfg_tiny.task_name)
    now = time.time()
    mine_old = _fake_run(root, "a", TINY_OVERRIDES, now - 30)
    _fake_run(root, "b", [*TINY_OVERRIDES, "variant=single"], now - 20)
    _fake_run(root, "c", [*NON_DATA, "dataset=msrvtt"], now - 10)
    assert find_last_checkpoint(cfg_tiny) == mine_old
    mine_new = _fake_run(root, "d", TINY_OVERRIDES, now)
    assert find_last_checkpoint(cfg_tiny) == mine_new


def test_ckpt_path_last_refuses_other_configurations_with_what_it_found(cfg_tiny) -> None:
    root = Path(cfg_tiny.paths.log_dir) / str(cfg_tiny.task_name)
    _fake_run(root, "b", [*TINY_OVERRIDES, "variant=single"], time.time())
    _fake_run(root, "c", ["experiment=demo", "dataset=msrvtt", "model=clip_b32"], time.time())
    with pytest.raises(LSDOUserError) as info:
        find_last_checkpoint(cfg_tiny)
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith("ckpt_path=last: no run of this configuration")
    assert "variant=average" in msg and "variant=single" in msg and "dataset=msrvtt" in msg and "model=clip_b32" in msg
    assert "ckpt_path=<file>" in msg


def test_truncated_checkpoint_resume_is_one_line(ckpts, cfg_tiny) -> None:
    from lsdo.train import run

    with open_dict(cfg_tiny):
        cfg_tiny.ckpt_path = str(ckpts["truncated"])
    with pytest.raises(LSDOUserError, match=r"^ckpt_path: cannot read .*truncated\.ckpt.*truncated"):
        run(cfg_tiny)


def test_resume_from_another_model_is_one_line(ckpts, cfg_tiny) -> None:
    from lsdo.train import run

    with open_dict(cfg_tiny):
        cfg_tiny.ckpt_path = str(ckpts["good"])
        cfg_tiny.model.clip_cfg.embed_dim = 256  # another width: the weights cannot fit
    with pytest.raises(LSDOUserError, match=r"^ckpt_path: the weights in .*good\.ckpt do not fit"):
        run(cfg_tiny)


# ------------------------------------------------------------------------- 4. run directories


def test_run_directories_outside_hydra_never_collide(cfg_tiny) -> None:
    dirs = {output_dir_of(cfg_tiny) for _ in range(5)}  # same second, same process
    assert len(dirs) == 5 and all(d.is_dir() for d in dirs)


def test_two_runs_started_together_get_two_complete_directories(tmp_path: Path) -> None:
    args = [sys.executable, str(ROOT / "train.py"), *TINY_OVERRIDES, "debug=fast_dev_run", f"paths.log_dir={tmp_path}"]
    procs = [subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for _ in range(2)]  # fmt: skip
    outputs = [p.communicate(timeout=240)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs[0][-2000:]
    runs = sorted((tmp_path / "debug" / "runs").iterdir())
    assert len(runs) == 2
    for run in runs:
        assert (run / "config.yaml").is_file() and (run / "metrics.json").is_file()
    # 11. one copy of each log line (Lightning's own handler used to print every line a second time)
    for out in outputs:
        assert len(re.findall(r"`Trainer.fit` stopped", out)) == 1, out[-3000:]


# ------------------------------------------------------------------------- 7. eval.py on moved data


def _eval_cfg(*overrides: str):
    return compose(["ckpt=x.ckpt", *overrides], config_name="eval")


def _msrvtt_saved() -> dict:
    saved = compose([*NON_DATA, "dataset=msrvtt", "dataset.num_frames=4", "dataset.root=/old/msrvtt"])
    return OmegaConf.to_container(saved, resolve=True)


def test_eval_dataset_root_alone_moves_the_data_and_keeps_the_rest(caplog) -> None:
    saved = _msrvtt_saved()
    with caplog.at_level("INFO", logger="lsdo.evaluate"):
        merged = merge_eval_config(saved, _eval_cfg("dataset.root=/new/msrvtt"), {"ckpt", "dataset.root"})
    assert merged.dataset.root == "/new/msrvtt"
    rest = {k: v for k, v in saved["dataset"].items() if k != "root"}
    assert {k: v for k, v in OmegaConf.to_container(merged.dataset).items() if k != "root"} == rest
    assert "dataset.root: '/old/msrvtt' -> '/new/msrvtt' (command line)" in caplog.text


def test_eval_same_preset_keeps_the_training_data_settings(caplog) -> None:
    saved = _msrvtt_saved()
    given = {"ckpt", "dataset", "dataset.root"}
    with caplog.at_level("INFO", logger="lsdo.evaluate"):
        merged = merge_eval_config(saved, _eval_cfg("dataset=msrvtt", "dataset.root=/new"), given)
    assert merged.dataset.num_frames == 4  # as trained, not the preset's 12
    assert merged.dataset.root == "/new" and "num_frames" not in caplog.text


def test_eval_another_dataset_uses_its_preset_but_the_trained_frame_count(caplog) -> None:
    saved = _msrvtt_saved()
    with caplog.at_level("INFO", logger="lsdo.evaluate"):
        merged = merge_eval_config(saved, _eval_cfg("dataset=msvd", "dataset.root=/msvd"), {"dataset", "dataset.root"})
    assert merged.dataset.name == "msvd" and merged.dataset.root == "/msvd" and merged.dataset.num_frames == 4
    assert "dataset.name: 'msrvtt' -> 'msvd' (the msvd preset)" in caplog.text


def test_eval_unknown_dataset_key_names_it() -> None:
    saved = OmegaConf.to_container(compose(TINY_OVERRIDES), resolve=True)  # synthetic: no ann_dir
    with pytest.raises(LSDOUserError, match=r"^dataset\.ann_dir: the checkpoint's dataset \(synthetic\) has no such"):
        merge_eval_config(saved, _eval_cfg("dataset.ann_dir=/x"), {"dataset.ann_dir"})


def test_eval_cli_with_moved_data_and_the_checkpoints_own_model_preset(ckpts, tmp_path: Path) -> None:
    """``dataset.root=`` alone and ``model=tiny`` on a model=tiny checkpoint both work (9: no value dump)."""
    proc = run_cli("eval.py", f"ckpt={ckpts['good']}", "dataset.root=/moved", "model=tiny", "trainer.accelerator=cpu",
                   f"hydra.run.dir={tmp_path / 'ev'}", timeout=240)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "dataset.root: None -> '/moved' (command line)" in proc.stdout + proc.stderr
    assert (tmp_path / "ev" / "metrics.json").is_file()
    bad = run_cli("eval.py", f"ckpt={ckpts['good']}", "model=tiny", "model.clip_cfg.vision_cfg.layers=4",
                  f"hydra.run.dir={tmp_path / 'bad'}")  # fmt: skip
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert bad.stderr.strip().splitlines()[-1] == (
        "error: model.clip_cfg.vision_cfg.layers=4 given, but the checkpoint was trained with "
        "model.clip_cfg.vision_cfg.layers=2; a checkpoint rebuilds its own model "
        "(leave model.clip_cfg.vision_cfg.layers out)"
    )


# ------------------------------------------------------------------------- 8. user mistakes: one line naming the key


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("trainer.max_epochs=abc", "trainer.max_epochs=abc: expected an integer"),
        ("trainer.max_epochs=0", "trainer.max_epochs=0: expected an integer >= 1 (or -1: no limit)"),
        ("dataset.batch_size=-4", "dataset.batch_size=-4: expected an integer >= 1"),
        ("dataset.batch_size=0", "dataset.batch_size=0: expected an integer >= 1"),
        ("dataset.num_frames=0", "dataset.num_frames=0: expected an integer >= 1"),
        ("dataset.num_frames=2.5", "dataset.num_frames=2.5: expected an integer"),
        ("optim.clip_lr=fast", "optim.clip_lr=fast: expected a number"),
        ("optim.warmup_ratio=3", "optim.warmup_ratio=3: expected a fraction"),
        ("inference.prefilter_k=0", "inference.prefilter_k=0: expected an integer >= 1"),
    ],
)
def test_bad_values_are_one_line_errors_naming_the_key(override: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        validate(compose([*TINY_OVERRIDES, override]))
    assert str(info.value).startswith(message) and "\n" not in str(info.value)


def test_interpolation_errors_name_their_key() -> None:
    with pytest.raises(ConfigError, match=r"^dataset\.lr: .*'8k' is not one of"):
        validate(compose(["dataset=msrvtt", "dataset.train_split=8k"]))


def test_cli_user_mistakes_exit_2_with_one_line(tmp_path: Path) -> None:
    cases = [
        ("train.py", [*TINY_OVERRIDES, "trainer.max_epochs=abc"], "error: trainer.max_epochs=abc: expected an integer"),
        ("eval.py", [], "error: ckpt: give the checkpoint to evaluate: python eval.py ckpt=PATH"),
    ]
    for script, args, first in cases:
        proc = run_cli(script, *args, f"paths.log_dir={tmp_path}", timeout=120)
        errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-1500:]
        assert len(errors) == 1 and errors[0].startswith(first), proc.stderr[-1500:]


# ------------------------------------------------------------------------- 11. warnings users need


def test_random_init_encoder_at_a_fine_tuning_rate_is_warned(caplog) -> None:
    cfg = compose([*TINY_OVERRIDES, "optim.clip_lr=1e-6"])
    with caplog.at_level("WARNING", logger="lsdo.train"):
        warn_random_init_at_fine_tuning_rate(cfg)
    assert "model.pretrained=null" in caplog.text and "optim.clip_lr=1e-06" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="lsdo.train"):
        warn_random_init_at_fine_tuning_rate(compose(TINY_OVERRIDES))  # the demo: from scratch at 1e-3
        warn_random_init_at_fine_tuning_rate(compose(["model.pretrained=openai"]))  # pretrained at 1e-6
    assert caplog.text == ""


def test_openmp_threads_sleep_when_idle_unless_the_user_chose() -> None:
    code = "import lsdo, os; print(os.environ['OMP_WAIT_POLICY'])"
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    default = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    chosen = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env={**env, "OMP_WAIT_POLICY": "ACTIVE"})  # fmt: skip
    assert (default.stdout.strip(), chosen.stdout.strip()) == ("PASSIVE", "ACTIVE")
