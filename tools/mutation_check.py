"""Mutation check of the test suite's wiring tests: each plausible single-line bug must fail a test.

    python tools/mutation_check.py [only=NAME,NAME] [workdir=/tmp/lsdo_mutants]

For every mutation below, a copy of the repository (package, configs, tests, entry scripts) gets
that one edit, and the named default-suite test files run in the copy (``pytest -x``, the copy
first on ``sys.path`` so neither the editable install nor the working tree is used). A mutation
is *killed* when a test fails; the first failing test is reported. Prints a Markdown table.
The mutations are the wiring bug classes: optimiser groups, evaluation, checkpoint loading,
index save / load, config composition, resume, the training loss as the module computes it, the
premise probes' held-out test set, and how worker processes start.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from lsdo.processes import run_in_group

ROOT = Path(__file__).resolve().parents[1]
MUTANT_DEADLINE_S = 1800  # one mutant's test files; the slowest take about 5 min on 2 cores
COPY = ("lsdo", "configs", "tests", "train.py", "eval.py", "zeroshot.py", "pyproject.toml")


@dataclass(frozen=True)
class Mutation:
    name: str
    file: str
    old: str
    new: str
    tests: tuple[str, ...]


M = Mutation
MUTATIONS = [
    # --- optimiser groups
    M("lr groups swapped", "lsdo/lightning_module.py",
      "((clip_params, float(o.clip_lr)), (new_params, float(o.lr)))",
      "((clip_params, float(o.lr)), (new_params, float(o.clip_lr)))", ("tests/test_optim.py",)),
    M("every parameter in the new-parameter group", "lsdo/lightning_module.py",
      '(clip_params if name.startswith("encoder.") else new_params)', "(new_params)", ("tests/test_optim.py",)),
    M("1-D exclusion also drops decay of matrices", "lsdo/lightning_module.py",
      "p.ndim >= 2]", "p.ndim >= 3]", ("tests/test_optim.py",)),
    M("warm-up skipped", "lsdo/lightning_module.py",
      "warmup = int(float(o.warmup_ratio) * total)", "warmup = 0", ("tests/test_optim.py",)),
    # --- evaluation in the Lightning module
    M("t2v and v2t metrics swapped", "lsdo/lightning_module.py",
      'metrics = {f"t2v/{k}": v for k, v in t2v_metrics(sims, t2v_idx).items()}',
      'metrics = {f"t2v/{k}": v for k, v in v2t_metrics(sims, t2v_idx).items()}', ("tests/test_lit_evaluation.py",)),
    M("dual softmax always on", "lsdo/lightning_module.py",
      'if bool(inf["dsl"]):', "if True:", ("tests/test_lit_evaluation.py",)),
    M("batch offset of caption -> video indices dropped", "lsdo/lightning_module.py",
      "t2v.append(idx + n)", "t2v.append(idx)", ("tests/test_lit_evaluation.py",)),
    M("fast mode ignores prefilter_k", "lsdo/lightning_module.py",
      'prefilter_k=int(inf["prefilter_k"])', "prefilter_k=10**9", ("tests/test_lit_evaluation.py",)),
    # --- checkpoint loading
    M("checkpoint weights not loaded", "lsdo/checkpoint.py",
      "    model.load_state_dict(weights)\n", "", ("tests/test_trust.py", "tests/test_index.py")),
    M("checkpoint read without weights_only", "lsdo/checkpoint.py",
      'torch.load(p, map_location="cpu", weights_only=True)', 'torch.load(p, map_location="cpu", weights_only=False)',
      ("tests/test_trust.py",)),
    M("eval rebuild keeps random weights", "lsdo/evaluate.py",
      "    lit.load_state_dict(state_dict)\n", "", ("tests/test_training.py",)),
    M("eval ignores command-line inference settings", "lsdo/evaluate.py",
      'return OmegaConf.merge(base, {"inference": inference})', "return base", ("tests/test_training.py",)),
    # --- index save / load
    M("ids sorted on load", "lsdo/retrieval/index/format.py",
      'ids = doc.get("ids")', 'ids = sorted(doc.get("ids") or [])', ("tests/test_index_contracts.py",)),
    M("prefilter mean from fp32 frames, not the stored fp16", "lsdo/retrieval/index/video_index.py",
      "means = mean_pool(features)", "means = mean_pool(video.float())",
      ("tests/test_index_contracts.py",)),
    # --- config composition
    M("compose drops the overrides", "lsdo/config.py",
      "overrides=list(overrides or [])", "overrides=[]", ("tests/test_optim.py", "tests/test_trust.py")),
    M("demo preset composes the ViT instead of its ResNet tower", "configs/experiment/demo.yaml",
      "  - override /model: tiny_resnet", "  - override /model: tiny", ("tests/test_training.py",)),
    M("demo preset loses its encoder rate", "configs/experiment/demo.yaml",
      "  clip_lr: 1.0e-3", "  clip_lr: 1.0e-6", ("tests/test_optim.py",)),
    # --- training / resume
    M("test on the last checkpoint instead of the best", "lsdo/train.py",
      "best = best_cb.best_model_path if training else ckpt_path",
      "best = ckpt_cbs[1].best_model_path if training else ckpt_path", ("tests/test_training.py",)),
    M("last.ckpt only when a new best is saved", "lsdo/callbacks.py",
      "    callbacks = [best, last(", "    best.save_last = True\n    callbacks = [best] or [best, last(", ("tests/test_trust.py",)),  # noqa: E501
    M("resume forgets the best score", "lsdo/callbacks.py",
      "        super().load_state_dict(state)\n", "        ModelCheckpoint.load_state_dict(self, state_dict)\n",
      ("tests/test_trust.py",)),
    M("captions paired with the wrong videos", "lsdo/lightning_module.py",
      'tokens = self.model.tokenize(batch["captions"]).to(self.device)\n        text = self.model.encode_text(tokens)\n'
      '        video = self.model.encode_video(batch["frames"])  # [B, n, d]',
      'tokens = self.model.tokenize(batch["captions"]).to(self.device)\n        text = self.model.encode_text(tokens)\n'
      '        video = self.model.encode_video(batch["frames"].roll(1, 0))  # [B, n, d]',
      ("tests/test_learning_signal.py",)),
    # --- the training loss in the Lightning module (Eq. 21-23: InfoNCE on lambda * s, lambda = exp(logit_scale))
    M("training loss on unscaled similarities", "lsdo/lightning_module.py",
      "sims.float(), self.model.logit_scale.float(), average=",
      "sims.float(), torch.zeros_like(self.model.logit_scale).float(), average=", ("tests/test_loss.py",)),
    M("training loss with lambda detached", "lsdo/lightning_module.py",
      "sims.float(), self.model.logit_scale.float(), average=",
      "sims.float(), self.model.logit_scale.detach().float(), average=", ("tests/test_loss.py",)),
    M("training loss with lambda exponentiated twice", "lsdo/lightning_module.py",
      "sims.float(), self.model.logit_scale.float(), average=",
      "sims.float(), self.model.logit_scale.float().exp(), average=", ("tests/test_loss.py",)),
    M("training loss directions always averaged", "lsdo/lightning_module.py",
      "average=self.model.loss_averages_directions", "average=True", ("tests/test_loss.py",)),
    M("training loss on similarities detached from the encoders", "lsdo/lightning_module.py",
      "sims.float(), self.model.logit_scale.float(), average=",
      "sims.float().detach(), self.model.logit_scale.float(), average=", ("tests/test_loss.py",)),
    # --- the premise probes: scored on renderings they never trained on
    M("premise probes tested on training renderings", "lsdo/premise.py",
      'test = probe_frames(dcfg, "test", size,', 'test = probe_frames(dcfg, "train", size,',
      ("tests/test_premise.py",)),
    M("premise probe train and test renderings share their seeds", "lsdo/premise.py",
      'salt = {"train": 11, "test": 13}[part]', 'salt = {"train": 11, "test": 11}[part]',
      ("tests/test_premise.py",)),
    M("premise probe scored on its training frames", "lsdo/premise.py",
      "linear_probe(x_tr, lab_tr[key], x_te, lab_te[key], classes)",
      "linear_probe(x_tr, lab_tr[key], x_tr, lab_tr[key], classes)", ("tests/test_premise.py",)),
    # --- worker processes
    M("worker pools fork the caller", "lsdo/processes.py",
      'START_METHOD: str = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"',
      'START_METHOD: str = "fork"', ("tests/test_processes.py",)),
]  # fmt: skip


def run_one(m: Mutation, work: Path) -> tuple[str, str]:
    """("killed" | "SURVIVED" | "not applied", first failing test or note)."""
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    for name in COPY:
        src = ROOT / name
        (shutil.copytree if src.is_dir() else shutil.copy2)(src, work / name)
    target = work / m.file
    text = target.read_text()
    if text.count(m.old) != 1:
        return "not applied", f"pattern found {text.count(m.old)} times in {m.file}"
    target.write_text(text.replace(m.old, m.new))
    env = {**os.environ, "PYTHONPATH": str(work), "PYTHONDONTWRITEBYTECODE": "1"}
    cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "-m", "not slow", *m.tests]
    try:
        proc = run_in_group(cmd, MUTANT_DEADLINE_S, cwd=work, env=env, merge_stderr=True)
    except subprocess.TimeoutExpired:  # a mutant that hangs is caught, but must not hang the check
        return "killed", f"no result in {MUTANT_DEADLINE_S} s (hung)"
    failed = re.findall(r"^(?:FAILED|ERROR) (\S+)", proc.stdout, flags=re.M)
    if proc.returncode == 0:
        return "SURVIVED", ""
    return "killed", failed[0] if failed else f"pytest exit {proc.returncode}"


def main(argv: list[str] | None = None) -> int:
    args = dict(a.split("=", 1) for a in (sys.argv[1:] if argv is None else argv))
    only = set(args["only"].split(",")) if "only" in args else None
    work = Path(args.get("workdir", "/tmp/lsdo_mutants"))
    rows = []
    for m in MUTATIONS:
        if only and not any(o in m.name for o in only):
            continue
        status, where = run_one(m, work)
        rows.append((m, status, where))
        print(f"{status:12s} {m.name}: {where}", flush=True)
    print("\n| mutation | file | result | first failing test |\n|---|---|---|---|")
    for m, status, where in rows:
        print(f"| {m.name} | `{m.file}` | {status} | `{where}` |")
    return 0 if all(s == "killed" for _, s, _ in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
