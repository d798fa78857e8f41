"""Evaluation wiring of LSDOLitModule (issue 12): batches -> store -> [T, V] scores -> t2v / v2t metrics.

The metric and scoring maths have their own tests (test_metrics.py, test_retrieval_fast.py); these
tests check the *wiring* in lsdo/lightning_module.py against a brute-force reference computed here:

* the batches hold several captions per video, shuffled, in batches of uneven size, so a missing
  per-batch ``text_to_video`` offset or a text / video transposition changes the metrics;
* ``inference.mode`` (full, fast with prefilter_k >= V, fast with a small prefilter_k),
  ``inference.method`` and ``inference.dsl`` (with a non-default temperature) are each honoured;
* t2v and v2t land under their own names, in ``lit.results[prefix]``, in what is logged, and in
  ``lit.eval_outputs[prefix]``; the store is emptied at each epoch end.

Features are fed through monkeypatched ``tokenize`` / ``encode_text`` / ``encode_video`` (a caption
"t7" is text 7, the "frames" of a batch are its global video ids), so every value is known; the
last test runs the tiny model's real encoders under a real ``L.Trainer`` (validate and test).
X-Pool weights are randomised (identity init could hide a bug).
"""

from __future__ import annotations

import math
import statistics
from typing import Any

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from conftest import randomise_xpool
from omegaconf import DictConfig

from lsdo.errors import ConfigError
from lsdo.lightning_module import LSDOLitModule
from lsdo.model import TextFeatures

D, N = 512, 4
CAPS = (2, 1, 3, 1, 2, 4, 1, 2, 1, 3, 2)  # captions per video: V = 11 videos, T = 22 texts
SPLIT = (4, 2, 5)  # videos per batch (uneven)
V, T = len(CAPS), sum(CAPS)
SMALL_K = 3  # fast mode: 3 of the 11 videos re-ranked per text
METRIC_KEYS = ("R1", "R5", "R10", "R50", "MdR", "MnR")


# ----------------------------------------------------------------------------------- known features
class Data:
    """Global features (texts 0..T-1, videos 0..V-1) and the batches a loader would yield."""

    def __init__(self, seed: int = 0) -> None:
        gen = torch.Generator().manual_seed(seed)
        self.owner = [v for v, c in enumerate(CAPS) for _ in range(c)]  # text -> its video (global ids)
        self.video = torch.randn(V, N, D, generator=gen)  # f_m [V, n, d]
        # each text correlated with its video so the ranks spread over 1..V (neither all 1 nor random),
        # except every 5th text (unrelated to its video: the small prefilter drops some true videos)
        related = torch.tensor([0.0 if t % 5 == 4 else 1.0 for t in range(T)])[:, None]
        self.target = related * self.video[self.owner].mean(1) + torch.randn(T, D, generator=gen)  # [T, d]
        self.query = self.target + 0.5 * torch.randn(T, D, generator=gen)  # differs from target: a mix-up shows
        self.eos = torch.randn(T, D, generator=gen)
        perm = torch.randperm(V, generator=gen).tolist()
        self.batches: list[dict[str, Any]] = []
        self.text_order: list[int] = []  # global text id of each row the module sees
        self.video_order: list[int] = []  # global video id of each column the module sees
        start = 0
        for size in SPLIT:
            vids = perm[start : start + size]
            start += size
            tids = [t for t in range(T) if self.owner[t] in vids]
            tids = [tids[i] for i in torch.randperm(len(tids), generator=gen).tolist()]  # shuffled captions
            self.batches.append(
                {
                    "captions": [f"t{t}" for t in tids],
                    "frames": torch.tensor(vids),  # decoded by the fake encode_video below
                    "text_to_video": torch.tensor([vids.index(self.owner[t]) for t in tids]),  # LOCAL index
                }
            )
            self.text_order += tids
            self.video_order += vids
        # the layout really is off-diagonal: captions out of video order within a batch, videos shuffled
        assert any(b["text_to_video"].tolist() != sorted(b["text_to_video"].tolist()) for b in self.batches)
        assert self.video_order != sorted(self.video_order)

    def text(self, idx: torch.Tensor | list[int] | slice = slice(None)) -> TextFeatures:
        return TextFeatures(self.query[idx], self.target[idx], self.eos[idx])


@pytest.fixture(scope="module")
def data() -> Data:
    return Data()


@pytest.fixture(scope="module")
def lit_module(cfg_tiny_global: DictConfig, data: Data) -> LSDOLitModule:
    lit = LSDOLitModule(cfg_tiny_global)
    randomise_xpool(lit.model, seed=3)
    lit.eval()
    lit.model.tokenize = lambda captions: torch.tensor([int(c[1:]) for c in captions])
    lit.model.encode_text = lambda tokens: data.text(tokens)
    lit.model.encode_video = lambda ids: data.video[ids]
    return lit


class LogRecorder:
    def __init__(self) -> None:
        self.calls: dict[str, tuple[float, dict[str, Any]]] = {}

    def __call__(self, name: str, value: Any, **kwargs: Any) -> None:
        assert name not in self.calls, f"{name} logged twice"
        self.calls[name] = (float(value), kwargs)


def _fresh(lit: LSDOLitModule, **inference: Any) -> LogRecorder:
    """Reset the module's evaluation state and set ``cfg.inference``; returns the recorder of self.log."""
    lit._eval, lit.results, lit.eval_outputs = {}, {}, {}
    inf = {"mode": "full", "prefilter_k": 100, "method": "fast", "chunk_size": 5, "dsl": False, "dsl_temperature": 0.01}
    inf.update(inference)
    for k, v in inf.items():
        lit.cfg.inference[k] = v
    rec = LogRecorder()
    lit.log = rec  # type: ignore[method-assign]
    return rec


# ----------------------------------------------------------------------------------- brute-force reference
def _ref_full(model, data: Data) -> torch.Tensor:
    """[T, V] X-Pool scores, global order, by the naive pooling of every pair (model.similarity)."""
    with torch.no_grad():
        return model.similarity(data.text(), data.video).double()


def _ref_prefilter(sims: torch.Tensor, data: Data, k: int) -> torch.Tensor:
    """Keep the exact score of each text's k best videos by cos(target, frame mean); -inf elsewhere."""
    out = torch.full_like(sims, -math.inf)
    pooled = data.video.double().mean(dim=1)
    for t in range(T):
        coarse = [F.cosine_similarity(data.target[t].double(), pooled[v], dim=0).item() for v in range(V)]
        for v in sorted(range(V), key=lambda j: -coarse[j])[:k]:
            out[t, v] = sims[t, v]
    return out


def _ref_dsl(sims: torch.Tensor, temperature: float) -> torch.Tensor:
    """Dual softmax: each score times the softmax of its video's column over the texts; -inf stays -inf."""
    out = torch.full_like(sims, -math.inf)
    for v in range(sims.shape[1]):
        col = sims[:, v]
        finite = [t for t in range(sims.shape[0]) if math.isfinite(col[t].item())]
        if not finite:
            continue
        top = max(col[t].item() for t in finite)
        z = sum(math.exp((col[t].item() - top) / temperature) for t in finite)
        for t in finite:
            out[t, v] = col[t].item() * math.exp((col[t].item() - top) / temperature) / z
    return out


def _summary(ranks: list[int]) -> dict[str, float]:
    out = {f"R{k}": 100.0 * sum(r <= k for r in ranks) / len(ranks) for k in (1, 5, 10, 50)}
    out["MdR"] = float(statistics.median(ranks))
    out["MnR"] = sum(ranks) / len(ranks)
    return out


def _ref_metrics(sims: torch.Tensor, owner: list[int]) -> dict[str, float]:
    """t2v: rank of the true video per text; v2t: per video, the rank of its best-ranked caption.

    Pessimistic ties: rank = number of candidates scoring >= the target (so a -inf target is last).
    """
    s = sims.tolist()
    t2v = [sum(s[t][v] >= s[t][owner[t]] for v in range(V)) for t in range(T)]
    v2t = [min(sum(s[u][v] >= s[t][v] for u in range(T)) for t in range(T) if owner[t] == v) for v in range(V)]
    out = {f"t2v/{k}": x for k, x in _summary(t2v).items()}
    out.update({f"v2t/{k}": x for k, x in _summary(v2t).items()})
    out["num_texts"], out["num_videos"] = float(T), float(V)
    return out


def _assert_no_near_ties(sims: torch.Tensor, owner: list[int], rel: float = 1e-4) -> None:
    """Every score a rank compares with a target is >= ``rel`` away from it: float rounding flips no rank."""
    for t in range(sims.shape[0]):
        target = sims[t, owner[t]].item()
        if not math.isfinite(target):
            continue
        others = [sims[t, v].item() for v in range(sims.shape[1]) if v != owner[t]]  # t2v: the text's row
        others += [sims[u, owner[t]].item() for u in range(sims.shape[0]) if u != t]  # v2t: the video's column
        gaps = [abs(x - target) for x in others if math.isfinite(x)]
        assert min(gaps) > rel * abs(target), f"near-tie at text {t}: change the test data"


def _reference(lit: LSDOLitModule, data: Data, mode: str, k: int, dsl: bool, temperature: float):
    sims = _ref_full(lit.model, data)
    if mode == "fast" and k < V:
        sims = _ref_prefilter(sims, data, k)
    if dsl:
        sims = _ref_dsl(sims, temperature)
    _assert_no_near_ties(sims, data.owner)
    return sims, _ref_metrics(sims, data.owner)


def _run_validation(lit: LSDOLitModule, data: Data) -> None:
    for i, batch in enumerate(data.batches):
        lit.validation_step(batch, i)
    lit.on_validation_epoch_end()


def _module_sims_global(lit: LSDOLitModule, data: Data, prefix: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The module's [T, V] scores and text_to_video, mapped back to the global text / video order."""
    out = lit.eval_outputs[prefix]
    sims = torch.empty(T, V, dtype=torch.float64)
    sims[torch.tensor(data.text_order)[:, None], torch.tensor(data.video_order)[None, :]] = out["sims"].double()
    t2v_global = [data.video_order[j] for j in out["text_to_video"].tolist()]  # row i -> global video id
    return sims, torch.tensor(t2v_global)


def _assert_sims_equal(got: torch.Tensor, want: torch.Tensor, atol: float) -> None:
    assert torch.equal(torch.isinf(got), torch.isinf(want)), "the -inf (filtered-out) pattern differs"
    finite = torch.isfinite(want)
    torch.testing.assert_close(got[finite], want[finite], atol=atol, rtol=1e-4)


# ----------------------------------------------------------------------------------- tests
CASES = {  # id: inference overrides
    "full": {"mode": "full"},
    "full-naive": {"mode": "full", "method": "naive"},
    "fast-all": {"mode": "fast", "prefilter_k": V},  # every video a candidate: equals full
    "fast-k3": {"mode": "fast", "prefilter_k": SMALL_K},
}


@pytest.mark.parametrize("dsl", [False, True], ids=["plain", "dsl"])
@pytest.mark.parametrize("case", list(CASES))
def test_eval_metrics_match_brute_force(lit_module: LSDOLitModule, data: Data, case: str, dsl: bool) -> None:
    """Batches through validation_step / on_validation_epoch_end give the brute-force t2v / v2t metrics."""
    inf = {**CASES[case], "dsl": dsl, "dsl_temperature": 0.02}  # not the default 0.01: the value is read
    rec = _fresh(lit_module, **inf)
    _run_validation(lit_module, data)
    want_sims, want = _reference(lit_module, data, inf["mode"], inf.get("prefilter_k", 100), dsl, 0.02)

    # the reference is discriminating for this case: t2v differs from v2t, DSL and the prefilter matter
    assert {k: want[f"t2v/{k}"] for k in METRIC_KEYS} != {k: want[f"v2t/{k}"] for k in METRIC_KEYS}
    _, other_dsl = _reference(lit_module, data, inf["mode"], inf.get("prefilter_k", 100), not dsl, 0.02)
    assert other_dsl != want
    if case == "fast-k3":
        assert _reference(lit_module, data, "full", 100, dsl, 0.02)[1] != want
        assert any(math.isinf(want_sims[t, data.owner[t]].item()) for t in range(T))  # some true videos dropped

    got = lit_module.results["val"]
    assert set(got) == set(want)
    for key, value in want.items():
        assert got[key] == pytest.approx(value, rel=1e-12, abs=1e-12), (key, got[key], value)
    assert got["num_texts"] == T and got["num_videos"] == V

    # the stored [T, V] matrix: right rows, columns and text_to_video (global offsets)
    sims, t2v_global = _module_sims_global(lit_module, data, "val")
    _assert_sims_equal(sims, want_sims, atol=1e-5 if not dsl else 1e-4)
    assert t2v_global.tolist() == [data.owner[t] for t in data.text_order]

    # what is logged: every metric once, under "val/", R1 of t2v on the progress bar only
    assert set(rec.calls) == {f"val/{k}" for k in want}
    for key, value in want.items():
        logged, kwargs = rec.calls[f"val/{key}"]
        assert logged == pytest.approx(value, rel=1e-12, abs=1e-12), key
        assert bool(kwargs.get("prog_bar", False)) == (key == "t2v/R1"), key
    assert lit_module._eval == {}  # the store is emptied at the epoch end


def test_fast_with_every_video_equals_full(lit_module: LSDOLitModule, data: Data) -> None:
    results, sims = {}, {}
    for mode, k in (("full", 100), ("fast", V), ("fast", 100)):
        _fresh(lit_module, mode=mode, prefilter_k=k)
        _run_validation(lit_module, data)
        results[(mode, k)], sims[(mode, k)] = lit_module.results["val"], lit_module.eval_outputs["val"]["sims"]
    assert results[("fast", V)] == results[("full", 100)] == results[("fast", 100)]
    torch.testing.assert_close(sims[("fast", V)], sims[("full", 100)], atol=1e-6, rtol=0)
    # and a small prefilter really filters: -inf outside each text's k candidates
    _fresh(lit_module, mode="fast", prefilter_k=SMALL_K)
    _run_validation(lit_module, data)
    small = lit_module.eval_outputs["val"]["sims"]
    assert (torch.isfinite(small).sum(dim=1) == SMALL_K).all()
    assert lit_module.results["val"] != results[("full", 100)]


def test_validation_and_test_hooks_use_their_prefix(lit_module: LSDOLitModule, data: Data) -> None:
    """val and test hooks fill results['val'] / results['test']; epochs do not accumulate batches."""
    rec = _fresh(lit_module)
    want = _reference(lit_module, data, "full", 100, False, 0.01)[1]
    _run_validation(lit_module, data)
    first = dict(lit_module.results["val"])
    rec.calls.clear()
    _run_validation(lit_module, data)  # a second validation epoch: same numbers, not 2T texts
    assert lit_module.results["val"] == first
    assert first["num_texts"] == T
    rec.calls.clear()
    for i, batch in enumerate(reversed(data.batches)):  # test split: another batch order, same metrics
        lit_module.test_step(batch, i)
    lit_module.on_test_epoch_end()
    assert set(lit_module.results) == {"val", "test"}
    for key, value in want.items():
        assert lit_module.results["test"][key] == pytest.approx(value, rel=1e-12, abs=1e-12), key
    assert set(rec.calls) == {f"test/{k}" for k in want}
    assert set(lit_module.eval_outputs) == {"val", "test"}
    assert lit_module.eval_outputs["test"]["sims"].shape == (T, V)


def test_one_batch_with_every_video(lit_module: LSDOLitModule, data: Data) -> None:
    """Same texts and videos in a single batch: the same metrics (offsets are the only difference)."""
    _fresh(lit_module)
    _run_validation(lit_module, data)
    split = dict(lit_module.results["val"])
    vids = data.video_order
    one = {
        "captions": [c for b in data.batches for c in b["captions"]],
        "frames": torch.tensor(vids),
        "text_to_video": torch.tensor([vids.index(data.owner[t]) for t in data.text_order]),
    }
    _fresh(lit_module)
    lit_module.validation_step(one, 0)
    lit_module.on_validation_epoch_end()
    assert lit_module.results["val"] == pytest.approx(split, rel=1e-6)


def test_real_encoders_under_a_trainer(cfg_tiny: DictConfig, tmp_path) -> None:
    """The tiny model's own tokenizer and encoders, under L.Trainer validate and test."""
    torch.manual_seed(0)
    lit = LSDOLitModule(cfg_tiny)
    randomise_xpool(lit.model, seed=4)
    size = int(cfg_tiny.model.clip_cfg.vision_cfg.image_size)
    words = ["red", "green", "blue", "cube", "ball", "star", "small", "large"]
    owner = [v for v, c in enumerate(CAPS) for _ in range(c)]
    caption = [f"a {words[t % 8]} {words[(3 * t + 1) % 8]} number {t}" for t in range(T)]
    frames = torch.randn(V, N, 3, size, size)
    gen = torch.Generator().manual_seed(1)
    perm = torch.randperm(V, generator=gen).tolist()
    batches, text_order, start = [], [], 0
    for n_vid in SPLIT:
        vids = perm[start : start + n_vid]
        start += n_vid
        tids = [t for t in range(T) if owner[t] in vids]
        tids = [tids[i] for i in torch.randperm(len(tids), generator=gen).tolist()]
        batches.append(
            {
                "captions": [caption[t] for t in tids],
                "frames": frames[vids],
                "text_to_video": torch.tensor([vids.index(owner[t]) for t in tids]),
            }
        )
        text_order += tids
    lit.eval()
    with torch.no_grad():  # reference: every text and video encoded at once, in the global order
        text = lit.model.encode_text(lit.model.tokenize(caption))
        video = torch.cat([lit.model.encode_video(frames[v : v + 1]) for v in range(V)])
        ref = lit.model.similarity(text, video).double()
    _assert_no_near_ties(ref, owner)
    want = _ref_metrics(ref, owner)
    assert {k: want[f"t2v/{k}"] for k in METRIC_KEYS} != {k: want[f"v2t/{k}"] for k in METRIC_KEYS}

    loader = torch.utils.data.DataLoader(batches, batch_size=None, collate_fn=lambda b: b)
    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    trainer.validate(lit, dataloaders=loader, verbose=False)
    logged = {k: float(v) for k, v in trainer.callback_metrics.items()}
    trainer.test(lit, dataloaders=loader, verbose=False)
    for prefix in ("val", "test"):
        for key, value in want.items():
            assert lit.results[prefix][key] == pytest.approx(value, rel=1e-9, abs=1e-9), (prefix, key)
    for key, value in want.items():
        assert logged[f"val/{key}"] == pytest.approx(value, rel=1e-6), key
        assert float(trainer.callback_metrics[f"test/{key}"]) == pytest.approx(value, rel=1e-6), key


def test_new_inference_names_equal_their_earlier_aliases(lit_module: LSDOLitModule, data: Data) -> None:
    """inference.mode=prefilter is the earlier 'fast' mode and method=gram the earlier 'fast' method: same scores."""
    sims = {}
    for key, inf in {
        "prefilter": {"mode": "prefilter", "prefilter_k": SMALL_K},
        "fast-mode": {"mode": "fast", "prefilter_k": SMALL_K},
        "gram": {"mode": "full", "method": "gram"},
        "fast-method": {"mode": "full", "method": "fast"},
    }.items():
        _fresh(lit_module, **inf)
        _run_validation(lit_module, data)
        sims[key] = lit_module.eval_outputs["val"]["sims"]
    assert torch.equal(sims["prefilter"], sims["fast-mode"]) and torch.equal(sims["gram"], sims["fast-method"])
    assert (torch.isfinite(sims["prefilter"]).sum(dim=1) == SMALL_K).all()
    _fresh(lit_module, mode="quick")
    with pytest.raises(ConfigError, match=r"inference.mode: expected full \| prefilter"):
        _run_validation(lit_module, data)
