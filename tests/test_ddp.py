"""DDP equals one process (issue 15): 2 gloo processes on CPU measured against 1 process.

* one training step: the loss and every parameter's gradient of 2 ranks x 4 videos, wrapped in
  torch's ``DistributedDataParallel`` (its gradient average over the ranks), equal one process on the
  8-video global batch, for every variant;
* a training run (``lsdo.train.run`` in 2 processes started as torchrun starts them): validation and test
  metrics equal one process with the global batch, the best checkpoint is saved (and tested) under DDP,
  every rank holds the same metrics; ``lsdo.evaluate.run`` on 2 devices equals 1 device;
* ``trainer.compile=true``: a compiled tiny step gives the eager loss.

Each 2-process case runs in fresh ``spawn`` processes with a deadline: a stuck collective fails the
test (the processes are killed), it never hangs. Measured numbers: docs/distributed.md.
"""

from __future__ import annotations

import json
import os
import socket
import time
import traceback
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.multiprocessing as mp
from conftest import TINY_OVERRIDES, randomise_xpool, run_cli
from omegaconf import OmegaConf

from lsdo.config import compose

WORLD = 2
DEADLINE_S = 240  # per 2-process launch: far above the measured time, a hang fails instead of blocking
GRAD_VARIANTS = [("paper", "baseline"), ("paper", "shared"), ("paper", "average"), ("paper", "single"),
                 ("paper", "regions"), ("official", "average")]  # fmt: skip
PER_RANK = 4  # videos per rank in the step test; the global batch is WORLD * PER_RANK


# ----------------------------------------------------------------------------------- process harness
def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _child(target: Any, rank: int, world: int, port: int, out: str, args: tuple) -> None:
    """A rank: torchrun's environment, one thread (2 ranks share 2 cores), ``target``; errors to a file."""
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        WORLD_SIZE=str(world),
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        LOCAL_WORLD_SIZE=str(world),
        GROUP_RANK="0",
        NODE_RANK="0",
        TORCHELASTIC_RUN_ID="lsdo-test",
    )
    torch.set_num_threads(1)
    try:
        target(rank, world, Path(out), *args)
    except BaseException:
        (Path(out) / f"error_rank{rank}.txt").write_text(traceback.format_exc())
        raise


def spawn(target: Any, out: Path, *args: Any, world: int = WORLD, deadline: float = DEADLINE_S) -> float:
    """Run ``target(rank, world, out, *args)`` in ``world`` fresh processes; returns the wall time (s).

    Killed and failed at ``deadline`` seconds; a rank's traceback is the failure message.
    """
    ctx = mp.get_context("spawn")
    port = _free_port()
    start = time.monotonic()
    procs = [ctx.Process(target=_child, args=(target, r, world, port, str(out), args)) for r in range(world)]
    for p in procs:
        p.start()
    try:
        for p in procs:
            p.join(max(1.0, deadline - (time.monotonic() - start)))
        hung = [r for r, p in enumerate(procs) if p.is_alive()]
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
                p.join(10)
    errors = "\n".join(f.read_text() for f in sorted(out.glob("error_rank*.txt")))
    assert not errors, errors
    assert not hung, f"ranks {hung} still running after {deadline} s (a collective waited forever?)"
    codes = [p.exitcode for p in procs]
    assert codes == [0] * world, f"exit codes {codes}"
    return time.monotonic() - start


# ----------------------------------------------------------------------------------- samplers (no processes)
def _as_rank(monkeypatch: pytest.MonkeyPatch, rank: int, world: int) -> None:
    import lsdo.data.batching

    monkeypatch.setattr(lsdo.data.batching, "rank_and_world", lambda: (rank, world))


@pytest.mark.parametrize("world", [1, 2, 3, 4])
def test_shard_sampler_splits_evaluation_exactly(monkeypatch: pytest.MonkeyPatch, world: int) -> None:
    """Every video on exactly one rank, none repeated, the ranks' blocks in rank order = the split in order."""
    from lsdo.data.batching import ShardSampler

    for size in (world, 9, 18, 1000, 1001):
        blocks = []
        for rank in range(world):
            _as_rank(monkeypatch, rank, world)
            blocks.append(list(ShardSampler(size)))
            assert len(ShardSampler(size)) == len(blocks[-1])
        assert [i for b in blocks for i in b] == list(range(size))
        assert max(map(len, blocks)) - min(map(len, blocks)) <= 1
    _as_rank(monkeypatch, 0, world + 1)
    with pytest.raises(ValueError, match="cannot be split"):
        list(ShardSampler(world))


@pytest.mark.parametrize("group_size", [0, 4])
def test_epoch_sampler_global_batches_equal_one_process(monkeypatch: pytest.MonkeyPatch, group_size: int) -> None:
    """With its batch size, rank r's batch k, concatenated over the ranks, is batch k of one process with the
    global batch (same items, same order, same item seeds); hard-negative runs stay whole."""
    from lsdo.data.batching import EpochSampler

    size, per_rank, world = 150, 8, 2
    groups = [i % 5 for i in range(size)] if group_size else None

    def batches(rank: int, w: int, b: int) -> list[list[tuple[int, int]]]:
        _as_rank(monkeypatch, rank, w)
        s = EpochSampler(size, seed=3, groups=groups, keys=list(range(size)) if groups else None,
                         group_size=group_size, batch_size=b)  # fmt: skip
        s.set_epoch(2)
        items = list(s)
        assert len(items) == len(s)
        return [items[i : i + b] for i in range(0, len(items) - b + 1, b)]  # drop_last

    one = batches(0, 1, world * per_rank)
    ranks = [batches(r, world, per_rank) for r in range(world)]
    assert len(ranks[0]) == len(ranks[1]) == len(one)
    for k, want in enumerate(one):
        assert [it for r in ranks for it in r[k]] == want
        if group_size and (k + 1) * world * per_rank <= 140:  # the full runs (5 groups x 7 x 4) come first
            for r in ranks:  # runs of 4 of one group stay whole within each rank's batch
                assert all(len({groups[i] for i, _ in r[k][j : j + 4]}) == 1 for j in range(0, per_rank, 4))


def test_padded_duplicates_are_dropped_by_video_index() -> None:
    """A padding sampler (DistributedSampler) repeats videos: with video_index each video counts once, every
    caption stays with its video, and the layout is one process's."""
    from lsdo.lightning_module import first_of_each_video
    from lsdo.model import TextFeatures

    caps = [2, 1, 3, 1, 2]  # captions of videos 0..4
    video = torch.arange(5.0)[:, None, None].expand(5, 2, 3)  # video v's features are all v
    owner = [v for v, c in enumerate(caps) for _ in range(c)]
    text = torch.arange(float(len(owner)))[:, None].expand(-1, 3)  # text t's features are all t
    # rank 0 read videos 0, 2, 4; rank 1 read 1, 3 and 0 again (padding); captions in reading order
    order = [0, 2, 4, 1, 3, 0]
    t_rows = [t for v in order for t in range(len(owner)) if owner[t] == v]
    t2v = torch.tensor([order.index(owner[t]) if i < len(t_rows) - caps[0] else 5 for i, t in enumerate(t_rows)])
    feats = TextFeatures(text[t_rows], text[t_rows] + 1, text[t_rows] + 2)
    got_text, got_video, got_t2v = first_of_each_video(feats, video[order], t2v, torch.tensor(order))
    assert got_video[:, 0, 0].tolist() == [0, 1, 2, 3, 4]
    assert got_text.query[:, 0].tolist() == list(range(len(owner)))  # texts grouped by video, in order
    assert got_t2v.tolist() == owner
    assert torch.equal(got_text.eos, got_text.query + 2)


# ----------------------------------------------------------------------------------- one training step
def _step_config(impl: str, variant: str) -> dict[str, Any]:
    cfg = compose([*TINY_OVERRIDES, f"variant={variant}", f"impl={impl}", "model.dropout=0.0"])
    return OmegaConf.to_container(cfg, resolve=True)


def _step_batch(cfg: dict[str, Any], size: int) -> dict[str, Any]:
    gen = torch.Generator().manual_seed(7)
    n, px = int(cfg["dataset"]["num_frames"]), int(cfg["model"]["clip_cfg"]["vision_cfg"]["image_size"])
    words = ["red", "green", "blue", "cube", "ball", "star", "small", "large"]
    return {
        "frames": torch.randn(size, n, 3, px, px, generator=gen),
        "captions": [
            f"a {words[i % 8]} {words[(3 * i + 1) % 8]} and a {words[(5 * i + 2) % 8]} {i}" for i in range(size)
        ],
    }


def _lit(cfg: dict[str, Any], state: dict[str, torch.Tensor] | None = None):
    from lsdo.lightning_module import LSDOLitModule

    torch.manual_seed(0)
    lit = LSDOLitModule(cfg)
    if state is not None:
        lit.load_state_dict(state)
    if lit.model.needs_bank_init():  # variant=shared: the bank as on_fit_start fills it (from other videos)
        lit.model.init_shared_bank(_step_batch(cfg, 20)["frames"])
    return lit.train()


class _Step(torch.nn.Module):
    """DDP wraps this: its forward is the training step (what Lightning's forward redirection does)."""

    def __init__(self, lit: Any) -> None:
        super().__init__()
        self.lit = lit

    def forward(self, batch: dict[str, Any]) -> torch.Tensor:
        return self.lit.training_step(batch, 0)


def _grads(lit: Any) -> dict[str, torch.Tensor]:
    return {n: p.grad.detach().clone() for n, p in lit.named_parameters() if p.grad is not None}


def _ddp_step_worker(rank: int, world: int, out: Path, cases: list[tuple[str, str]]) -> None:
    from datetime import timedelta

    torch.distributed.init_process_group("gloo", rank=rank, world_size=world, timeout=timedelta(seconds=120))
    try:
        for impl, variant in cases:
            ref = torch.load(out / f"ref_{impl}_{variant}.pt", weights_only=True)
            cfg = _step_config(impl, variant)
            lit = _lit(cfg, ref["state"])
            batch = _step_batch(cfg, world * PER_RANK)
            mine = {k: v[rank * PER_RANK : (rank + 1) * PER_RANK] for k, v in batch.items()}
            ddp = torch.nn.parallel.DistributedDataParallel(_Step(lit))
            loss = ddp(mine)
            loss.backward()  # DDP averages the ranks' gradients
            if rank == 0:
                torch.save({"loss": loss.detach(), "grads": _grads(lit)}, out / f"ddp_{impl}_{variant}.pt")
    finally:
        torch.distributed.destroy_process_group()


def test_one_ddp_step_equals_one_process_for_every_variant(tmp_path: Path) -> None:
    """Loss and every gradient of 2 ranks x 4 videos (DDP) = one process on the 8 videos, to 1e-5."""
    want = {}
    for impl, variant in GRAD_VARIANTS:
        cfg = _step_config(impl, variant)
        lit = _lit(cfg)
        state = {k: v.clone() for k, v in lit.state_dict().items()}
        loss = lit.training_step(_step_batch(cfg, WORLD * PER_RANK), 0)
        loss.backward()
        want[(impl, variant)] = (loss.detach(), _grads(lit))
        unused = sorted(n for n, p in lit.named_parameters() if p.requires_grad and p.grad is None)
        torch.save({"state": state}, tmp_path / f"ref_{impl}_{variant}.pt")
        want[(impl, variant)] += (unused,)
    wall = spawn(_ddp_step_worker, tmp_path, GRAD_VARIANTS)
    report = {}
    for impl, variant in GRAD_VARIANTS:
        loss, grads, unused = want[(impl, variant)]
        got = torch.load(tmp_path / f"ddp_{impl}_{variant}.pt", weights_only=True)
        assert set(got["grads"]) == set(grads), (impl, variant)
        loss_diff = abs(float(got["loss"]) - float(loss))
        grad_diff = max(float((got["grads"][n] - g).abs().max()) for n, g in grads.items())
        scale = max(float(g.abs().max()) for g in grads.values())
        report[f"{impl}/{variant}"] = {"loss": float(loss), "loss_diff": loss_diff, "max_grad": scale,
                                       "grad_diff": grad_diff, "params": len(grads), "unused": unused}  # fmt: skip
        assert loss_diff <= 1e-5, (impl, variant, loss_diff)
        assert grad_diff <= 1e-5, (impl, variant, grad_diff)
    print(json.dumps({"wall_s": round(wall, 1), **report}, indent=1))


# ----------------------------------------------------------------------------------- runs under Lightning
# 2 training steps, then validation (9 videos) and test (18 videos); 2 ranks x 8 videos = 1 process x 16.
RUN = [*[o for o in TINY_OVERRIDES if not o.startswith("dataset.batch_size")], "trainer.limit_train_batches=2",
       "+trainer.num_sanity_val_steps=0", "+trainer.enable_progress_bar=false"]  # fmt: skip
DDP = ["trainer.accelerator=cpu", f"trainer.devices={WORLD}", "trainer.strategy=ddp"]


def _train_worker(rank: int, world: int, out: Path, overrides: list[str]) -> None:
    from lsdo.train import run

    results = run(compose(overrides))
    # The trainer's process group is gone (left alive, a gloo rank could abort at exit: exit code -6).
    assert not torch.distributed.is_initialized(), "lsdo.train.run left its process group alive"
    (out / f"result_rank{rank}.json").write_text(json.dumps(results))


def _eval_worker(rank: int, world: int, out: Path, overrides: list[str]) -> None:
    import lsdo.evaluate

    ranks = lsdo.evaluate.query_ranks

    def keep_scores(lit: Any) -> Any:  # rank 0: the [T, V] scores it computed, for the comparison
        torch.save(lit.eval_outputs["test"], out / "scores_ddp.pt")
        return ranks(lit)

    lsdo.evaluate.query_ranks = keep_scores
    metrics = lsdo.evaluate.run(compose(overrides, config_name="eval"))
    assert not torch.distributed.is_initialized(), "lsdo.evaluate.run left its process group alive"
    (out / f"eval_rank{rank}.json").write_text(json.dumps(metrics))


def module_like(outputs: dict[str, torch.Tensor]) -> Any:
    """What lsdo.train.query_ranks reads of a module: its test scores."""
    return type("Scored", (), {"eval_outputs": {"test": outputs}})()


def _assert_same_metrics(got: dict[str, float], want: dict[str, float], what: str) -> None:
    assert set(got) == set(want) and want, what
    diff = {k: got[k] - want[k] for k in want if got[k] != want[k]}
    assert not diff, f"{what}: 2 ranks differ from 1 process: {diff}"


def test_ddp_training_run_equals_one_process_and_keeps_the_best_checkpoint(tmp_path: Path) -> None:
    """2 ranks x 8 videos = 1 process x 16: the same 2 steps, validation and test metrics and per-query ranks;
    the best checkpoint (monitored val/t2v/R1) saved by rank 0 and tested; every rank holds the same metrics."""
    from lsdo.train import run

    one = run(compose([*RUN, "dataset.batch_size=16", f"paths.log_dir={tmp_path / 'one'}"]))
    ddp_dir = tmp_path / "ddp"
    ddp_dir.mkdir()
    wall = spawn(_train_worker, ddp_dir, [*RUN, *DDP, "dataset.batch_size=8", f"paths.log_dir={ddp_dir / 'logs'}"])
    ranks = [json.loads((ddp_dir / f"result_rank{r}.json").read_text()) for r in range(WORLD)]
    two = ranks[0]
    assert two["global_step"] == one["global_step"] == 2
    _assert_same_metrics(two["val"], one["val"], "val")
    _assert_same_metrics(two["test"], one["test"], "test")
    assert two["val"]["num_videos"] == 9 and two["test"]["num_videos"] == 18  # every video once, none repeated
    assert 0 < two["val"]["t2v/R1"] < 100 and two["val"]["t2v/MnR"] > 1  # not a degenerate ranking
    for other in ranks[1:]:  # every rank holds rank 0's metrics (broadcast), and rank 0's run directory
        assert other["val"] == two["val"] and other["test"] == two["test"] and other["run_dir"] == two["run_dir"]
    # one run directory, written by rank 0: the best checkpoint of the monitored val/t2v/R1, tested
    runs = list((ddp_dir / "logs").glob("*/runs/*"))
    assert [Path(two["run_dir"])] == runs
    best = Path(two["test_checkpoint"])
    assert best.parent == runs[0] / "checkpoints" and best.name.startswith("best-epoch") and best.is_file()
    assert json.loads((runs[0] / "metrics.json").read_text())["test"] == two["test"]
    same_queries = json.loads((runs[0] / "test_ranks.json").read_text())
    assert same_queries == json.loads((Path(one["run_dir"]) / "test_ranks.json").read_text())  # query by query
    saved = torch.load(best, map_location="cpu", weights_only=True)
    (callback,) = [v for k, v in saved["callbacks"].items() if "val/t2v/R1" in k]
    assert float(callback["best_model_score"]) == pytest.approx(two["val"]["t2v/R1"], rel=1e-6)  # float32
    print(json.dumps({"ddp_fit_wall_s": round(wall, 1), "val": two["val"], "test": two["test"]}))


def test_train_py_ddp_with_lightnings_launcher_writes_one_run(tmp_path: Path) -> None:
    """``python train.py trainer.strategy=ddp trainer.devices=2``: Lightning starts rank 1 itself (the same command
    with rank 0's hydra.run.dir); one run directory, written by rank 0, with the best checkpoint tested."""
    args = [*[o for o in RUN if "enable_progress_bar" not in o], "logger=csv", *DDP, f"paths.log_dir={tmp_path}"]
    proc = run_cli("train.py", *args, timeout=DEADLINE_S)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run_dir,) = list(tmp_path.glob("*/runs/*"))
    report = json.loads((run_dir / "metrics.json").read_text())
    assert Path(report["test_checkpoint"]).parent == run_dir / "checkpoints"
    assert Path(report["test_checkpoint"]).name.startswith("best-epoch")
    assert report["val"]["num_videos"] == 9 and report["test"]["num_videos"] == 18
    assert "val/t2v/R1" in next(run_dir.glob("csv/*/metrics.csv")).read_text().splitlines()[0]
    assert "sync_dist=True" not in proc.stdout + proc.stderr  # no per-rank metric left unsynchronised


def test_eval_py_on_two_devices_equals_one(tmp_path: Path) -> None:
    """``eval.py trainer.devices=2 trainer.strategy=ddp``: the scores, metrics and files of one device."""
    import lsdo.evaluate

    cfg = _step_config("paper", "average")
    lit = randomise_xpool(_lit(cfg).model, seed=5)  # spread scores: no near-ties to flip
    ckpt = tmp_path / "model.ckpt"
    state = {f"model.{k}": v for k, v in lit.state_dict().items()}
    torch.save({"state_dict": state, "hyper_parameters": {"cfg": cfg}}, ckpt)

    ranks = lsdo.evaluate.query_ranks
    kept = {}

    def keep_scores(module: Any) -> Any:
        kept.update(module.eval_outputs["test"])
        return ranks(module)

    lsdo.evaluate.query_ranks = keep_scores
    try:
        want = lsdo.evaluate.run(compose([f"ckpt={ckpt}", "trainer.accelerator=cpu",
                                          f"paths.log_dir={tmp_path / 'one'}"], config_name="eval"))  # fmt: skip
    finally:
        lsdo.evaluate.query_ranks = ranks
    wall = spawn(_eval_worker, tmp_path, [f"ckpt={ckpt}", *DDP, f"paths.log_dir={tmp_path / 'two'}"])
    for r in range(WORLD):
        _assert_same_metrics(json.loads((tmp_path / f"eval_rank{r}.json").read_text()), want, f"rank {r}")
    got = torch.load(tmp_path / "scores_ddp.pt", weights_only=True)
    assert torch.equal(got["text_to_video"], kept["text_to_video"])  # every caption with its video, same order
    diff = float((got["sims"] - kept["sims"]).abs().max())
    assert diff <= 1e-5, diff
    assert want["num_videos"] == 18 and len(set(ranks(module_like(kept))["t2v"])) > 5  # ranks spread over 1..18
    written = list((tmp_path / "two").glob("*/runs/*/metrics.json"))
    assert len(written) == 1 and json.loads(written[0].read_text())["test"] == want  # rank 0 alone wrote the run
    print(json.dumps({"eval_ddp_wall_s": round(wall, 1), "max_abs_score_diff": diff, "test": want}))


# ----------------------------------------------------------------------------------- trainer.compile
def _compiled_step_matches_eager(backend: str) -> dict[str, float]:
    from lsdo.lightning_module import compile_model

    cfg = _step_config("paper", "average")
    lit = _lit(cfg)
    batch = _step_batch(cfg, 8)
    eager = lit.training_step(batch, 0)
    eager.backward()
    want = _grads(lit)
    keys = list(lit.state_dict())
    names = compile_model(lit.model, backend=backend)
    assert {"encoder.clip.visual", "encoder.clip.transformer", "xpool"} <= set(names)
    lit.zero_grad(set_to_none=True)
    loss = lit.training_step(batch, 0)
    loss.backward()
    got = _grads(lit)
    assert list(lit.state_dict()) == keys  # in place: checkpoints keep their keys
    assert set(got) == set(want)
    scale = max(float(g.abs().max()) for g in want.values())
    grad = max(float((got[n] - g).abs().max()) for n, g in want.items())
    diffs = {"loss": abs(float(loss) - float(eager)), "grad": grad, "grad_rel": grad / scale}
    # fused kernels sum in another order: the loss to 1e-5, gradients to 1e-3 of the largest one
    assert diffs["loss"] <= 1e-5 and diffs["grad_rel"] <= 1e-3, diffs
    return diffs


def test_trainer_compile_is_lsdos_key_and_a_compiled_step_keeps_the_loss(tmp_path: Path, monkeypatch) -> None:
    """trainer.compile is read by lsdo (not passed to lightning.Trainer); a compiled step (dynamo graphs, AOT
    autograd) gives the eager loss and gradients. The inductor backend (C++ code generation, minutes on 2
    cores) is the slow test below."""
    import lsdo.train
    from lsdo.errors import ConfigError

    cfg = compose([*TINY_OVERRIDES, "debug=fast_dev_run", "trainer.compile=true", f"paths.log_dir={tmp_path}"])
    assert "compile" not in lsdo.train.trainer_options(cfg) and lsdo.train.compile_requested(cfg)
    assert not lsdo.train.compile_requested(compose(TINY_OVERRIDES))  # configs/trainer/cpu.yaml: false
    with pytest.raises(ConfigError, match="trainer.compile=yes: expected true or false"):
        lsdo.train.compile_requested(compose([*TINY_OVERRIDES, "trainer.compile=yes"]))
    compiled = []
    monkeypatch.setattr(lsdo.train, "compile_model", lambda model: compiled.append(model) or ["..."])
    results = lsdo.train.run(cfg)  # the Trainer is built without the key; the model went through compile_model
    assert len(compiled) == 1 and 0 <= results["test"]["t2v/R1"] <= 100
    print(json.dumps(_compiled_step_matches_eager("aot_eager")))
    torch._dynamo.reset()


@pytest.mark.slow
def test_inductor_compiled_step_keeps_the_loss() -> None:
    """torch.compile's default backend (what trainer.compile=true uses) on the tiny model, CPU: same loss."""
    print(json.dumps(_compiled_step_matches_eager("inductor")))
