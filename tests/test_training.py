"""End-to-end training behaviour: presets, CLI errors, checkpoints, exact resume, eval.py."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import ROOT, TINY_OVERRIDES, run_cli
from omegaconf import open_dict

from lsdo.config import compose
from lsdo.model.video_lsdo import write_bank_file
from lsdo.train import run

# the recipes on the synthetic benchmark; the paper's per-table presets (real datasets, configs/experiment/paper/)
# run one step each in tests/test_paper_presets.py, the flip study's (an mp4 export) in tests/test_video_datamodule.py
EXPERIMENTS = sorted(
    p.stem
    for p in (ROOT / "configs" / "experiment").glob("*.yaml")
    if "/experiment/paper/" not in p.read_text() and "override /dataset: msrvtt" not in p.read_text()
)
CASES = [("paper", v) for v in ("baseline", "shared", "average", "single", "regions")] + [
    ("official", "average"),
    ("official", "shared"),
]


@pytest.mark.parametrize("experiment", EXPERIMENTS)
@pytest.mark.parametrize(("impl", "variant"), CASES)
def test_fast_dev_run_every_preset(experiment: str, impl: str, variant: str, tmp_path: Path) -> None:
    overrides = [o for o in TINY_OVERRIDES if not o.startswith("experiment=")]
    cfg = compose(
        [
            f"experiment={experiment}",
            *overrides,
            f"variant={variant}",
            f"impl={impl}",
            "debug=fast_dev_run",
            f"paths.log_dir={tmp_path}",
            # stage 2 of the premise benchmark starts from stage 1's export (tests/test_premise.py); here fresh
            *(["model.init_from=null"] if experiment == "premise" else []),
        ]
    )
    if impl == "official" and variant == "shared":
        bank = tmp_path / "bank.json"
        write_bank_file(bank, [f"v{i}" for i in range(20)], torch.randn(20, 512))
        with open_dict(cfg):
            cfg.variant.init, cfg.variant.bank_path = "file", str(bank)  # the release reads a constant bank file
    results = run(cfg)
    test = results["test"]
    assert set(test) >= {"t2v/R1", "t2v/R5", "t2v/R10", "t2v/MdR", "t2v/MnR", "v2t/R1", "v2t/MnR"}
    assert 0.0 <= test["t2v/R1"] <= 100.0
    run_dir = Path(results["run_dir"])
    saved = (run_dir / "config.yaml").read_text()
    assert f"name: {variant}" in saved and f"impl: {impl}" in saved  # resolved config saved with the run
    assert json.loads((run_dir / "metrics.json").read_text())["test"] == test


@pytest.mark.parametrize("variant", ["average", "regions"])
def test_fast_dev_run_demo_resnet_tower(variant: str, tmp_path: Path) -> None:
    """The demo preset as shipped: its tiny CLIP ModifiedResNet tower at 64 px (attnpool heatmap 2 x 2)."""
    from open_clip.modified_resnet import ModifiedResNet

    data = [o for o in TINY_OVERRIDES if o.startswith("dataset.")]
    cfg = compose(["experiment=demo", *data, "logger=none", "debug=fast_dev_run", f"variant={variant}",
                   f"paths.log_dir={tmp_path}"])  # fmt: skip
    assert cfg.model.name == "tiny_resnet"
    results = run(cfg)
    assert 0.0 <= results["test"]["t2v/R1"] <= 100.0
    from lsdo.model import build_model

    assert isinstance(build_model(cfg).encoder.clip.visual, ModifiedResNet)


def test_training_logs_lambda_theta_and_checkpoints(cfg_tiny, tmp_path: Path) -> None:
    with open_dict(cfg_tiny):
        cfg_tiny.variant = compose(["variant=single"]).variant
        cfg_tiny.logger = {"name": "csv"}
        cfg_tiny.trainer.log_every_n_steps = 1
    results = run(cfg_tiny)
    run_dir = Path(results["run_dir"])
    ckpts = sorted(p.name for p in (run_dir / "checkpoints").glob("*.ckpt"))
    assert "last.ckpt" in ckpts and any(n.startswith("best-epoch") for n in ckpts)
    metrics_csv = next((run_dir / "csv").glob("*/metrics.csv")).read_text()
    header = metrics_csv.splitlines()[0]
    assert "train/lambda" in header and "train/theta" in header and "val/t2v/R1" in header
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["hyper_parameters"]["cfg"]["variant"]["name"] == "single"  # a checkpoint rebuilds the model


def test_missing_dataset_fails_fast_with_one_message() -> None:
    start = time.time()
    proc = run_cli("train.py", "dataset=msrvtt", timeout=120)
    elapsed = time.time() - start
    assert proc.returncode != 0
    assert elapsed < 60
    assert "Traceback" not in proc.stderr + proc.stdout
    err_lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(err_lines) == 1
    assert "data/msrvtt" in err_lines[0] and "data/README.md" in err_lines[0]


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_gpu_without_gpu_suggests_cpu(tmp_path: Path) -> None:
    proc = run_cli("train.py", *TINY_OVERRIDES, "trainer=gpu", f"paths.log_dir={tmp_path}", timeout=120)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    assert "trainer=cpu" in proc.stderr.strip().splitlines()[-1]


def test_bad_config_value_is_one_line_error(tmp_path: Path) -> None:
    proc = run_cli("train.py", *TINY_OVERRIDES, "model.frame_proj=wide", f"paths.log_dir={tmp_path}", timeout=120)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "model.frame_proj" in proc.stderr


RESUME_OVERRIDES = [
    *[o for o in TINY_OVERRIDES if not o.startswith("trainer.max_epochs")],
    "trainer.max_epochs=3",
    "variant=single",
    "task_name=resume",
]


def _metrics(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


def _run_dirs(log_dir: Path) -> list[Path]:
    return sorted((log_dir / "resume" / "runs").glob("*"))


def test_sigkill_after_epoch_2_of_3_then_resume_matches_uninterrupted(tmp_path: Path) -> None:
    """Kill once last.ckpt holds epoch 2 of 3; ``ckpt_path=last`` trains only epoch 3, same metrics."""
    ref_logs, kill_logs = tmp_path / "ref", tmp_path / "kill"
    ref = run_cli("train.py", *RESUME_OVERRIDES, f"paths.log_dir={ref_logs}", timeout=600)
    assert ref.returncode == 0, ref.stderr[-2000:]
    reference = _metrics(_run_dirs(ref_logs)[0])
    expected, total_steps = reference["test"], reference["global_step"]
    assert total_steps % 3 == 0 and reference["epochs"] == 3
    assert Path(reference["test_checkpoint"]).name.startswith("best-epoch")  # tested on the best, not the last
    per_epoch = total_steps // 3

    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "train.py"), *RESUME_OVERRIDES, f"paths.log_dir={kill_logs}"],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    deadline = time.time() + 400
    epoch = None
    while time.time() < deadline and proc.poll() is None:
        found = list(kill_logs.glob("resume/runs/*/checkpoints/last.ckpt"))
        if found:  # written atomically: never read half-written
            epoch = torch.load(found[0], map_location="cpu", weights_only=True)["epoch"]
            if epoch == 1:  # epochs 0 and 1 done: the third is running
                break
        time.sleep(0.1)
    assert epoch == 1, f"last.ckpt never reached epoch 2 of 3 (saw {epoch})"
    assert proc.poll() is None, "the run finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    first_dir = _run_dirs(kill_logs)[0]
    assert not (first_dir / "metrics.json").exists()
    before = {p: p.read_bytes() for p in first_dir.rglob("*") if p.is_file()}

    resumed = run_cli("train.py", *RESUME_OVERRIDES, f"paths.log_dir={kill_logs}", "ckpt_path=last", timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    dirs = _run_dirs(kill_logs)
    assert len(dirs) == 2 and first_dir in dirs  # the resumed run has its own directory
    after = {p: p.read_bytes() for p in first_dir.rglob("*") if p.is_file()}
    assert after == before  # ... and never wrote into the killed run's
    report = _metrics(next(d for d in dirs if d != first_dir))
    assert report["resumed_from"]["global_step"] == 2 * per_epoch  # resumed after epoch 2 ...
    assert report["global_step"] == total_steps  # ... and trained exactly one more epoch
    assert Path(report["test_checkpoint"]).name == Path(reference["test_checkpoint"]).name  # the same best epoch
    assert Path(report["test_checkpoint"]).parent.parent == Path(report["run_dir"])  # linked into its own run
    for key, value in expected.items():
        assert report["test"][key] == pytest.approx(value, abs=1e-6), key


def test_eval_py_reproduces_training_metrics(tmp_path: Path) -> None:
    proc = run_cli("train.py", *TINY_OVERRIDES, "trainer.max_epochs=2", f"paths.log_dir={tmp_path}", timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    run_dir = next((tmp_path / "demo" / "runs").glob("*"))
    trained = _metrics(run_dir)
    ckpt = trained["test_checkpoint"]
    ev = run_cli("eval.py", f"ckpt={ckpt}", f"paths.log_dir={tmp_path}", "trainer.accelerator=cpu", timeout=600)
    assert ev.returncode == 0, ev.stderr[-2000:]
    ev_dir = next((tmp_path / "eval" / "runs").glob("*"))
    report = json.loads((ev_dir / "metrics.json").read_text())
    got = report["test"]
    for key, value in trained["test"].items():
        assert got[key] == pytest.approx(value, abs=1e-6), key
    assert report["protocol"] == "full protocol" and report["inference"]["dsl"] is False
    assert "| t2v |" in (ev_dir / "metrics.md").read_text()
    for png in ("recall_at_k.png", "rank_histogram.png"):
        assert (ev_dir / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # Fast inference with every video a candidate is the full protocol, exactly; labelled as fast.
    fast_dir = tmp_path / "fast"
    ev = run_cli(
        "eval.py",
        f"ckpt={ckpt}",
        "trainer.accelerator=cpu",
        "inference.mode=fast",
        "inference.prefilter_k=100000",
        f"hydra.run.dir={fast_dir}",
        timeout=600,
    )
    assert ev.returncode == 0, ev.stderr[-2000:]
    fast = json.loads((fast_dir / "metrics.json").read_text())
    assert fast["protocol"].startswith("fast (prefilter k=100000)")
    assert fast["test"] == got

    # Model settings that contradict the checkpoint: one line, no traceback.
    ev = run_cli("eval.py", f"ckpt={ckpt}", "variant=single", f"hydra.run.dir={tmp_path / 'bad'}", timeout=120)
    assert ev.returncode == 2 and "Traceback" not in ev.stderr
    assert ev.stderr.strip().splitlines()[-1].startswith("error: variant=single given, but the checkpoint")


def test_eval_py_rejects_a_corrupt_checkpoint(tmp_path: Path) -> None:
    bad = tmp_path / "model.ckpt"
    bad.write_bytes(b"not a checkpoint")
    proc = run_cli("eval.py", f"ckpt={bad}", f"paths.log_dir={tmp_path}", timeout=120)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert str(bad) in proc.stderr


@pytest.mark.slow
def test_multirun_sweeps_variants_into_separate_directories(tmp_path: Path) -> None:
    proc = run_cli(
        "train.py",
        "-m",
        "variant=baseline,shared,average,single",
        *TINY_OVERRIDES,
        "debug=fast_dev_run",
        f"paths.log_dir={tmp_path}",
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    sweep = next((tmp_path / "debug" / "multiruns").glob("*"))
    jobs = sorted(p.name for p in sweep.iterdir() if p.is_dir() and not p.name.startswith("."))
    assert jobs == ["0_baseline", "1_shared", "2_average", "3_single"]
    for job in jobs:
        assert (sweep / job / "config.yaml").exists() and (sweep / job / "metrics.json").exists()


def test_trainer_keys_pass_through_to_lightning(cfg_tiny, tmp_path: Path) -> None:
    """Any Lightning Trainer option is applied (no whitelist); a key Lightning does not take is one line naming it."""
    from lsdo.errors import ConfigError
    from lsdo.train import build_trainer, trainer_options

    with open_dict(cfg_tiny):
        cfg_tiny.trainer.accumulate_grad_batches = 4
        cfg_tiny.trainer.num_sanity_val_steps = 0
    trainer = build_trainer(cfg_tiny, tmp_path, [], False)
    assert trainer.accumulate_grad_batches == 4 and trainer.num_sanity_val_steps == 0
    with open_dict(cfg_tiny):
        cfg_tiny.trainer.max_epoch = 3
    with pytest.raises(ConfigError, match=r"trainer.max_epoch: not an option of lightning.Trainer \(did you mean "
                       r"trainer.max_epochs\?\)"):  # fmt: skip
        trainer_options(cfg_tiny)
    with pytest.raises(ConfigError, match="trainer.max_epoch"):
        run(cfg_tiny)
    assert not Path(cfg_tiny.paths.log_dir).exists()  # refused before any directory or data


def test_misspelt_trainer_key_on_the_command_line(tmp_path: Path) -> None:
    typo = run_cli("train.py", "experiment=demo", "logger=none", f"paths.log_dir={tmp_path}", "trainer.max_epoch=3")
    assert typo.returncode != 0 and "trainer.max_epoch" in typo.stderr and "Traceback" not in typo.stderr
    added = run_cli("train.py", "experiment=demo", "logger=none", f"paths.log_dir={tmp_path}", "+trainer.max_epoch=3")
    assert added.returncode == 2 and "did you mean trainer.max_epochs?" in added.stderr
    assert "Traceback" not in added.stderr
