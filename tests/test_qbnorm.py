"""QB-Norm with the dynamic inverted softmax (issue 16): lsdo.retrieval.qbnorm, the inference option, labels.

* :func:`qb_norm` against a brute-force reference written with Python loops (random S and bank, several
  beta and k), including queries outside the activation set (left unchanged) and -inf entries;
* ``inference.qb_norm`` through ``LSDOLitModule.retrieval_scores`` against the reference on the plain
  scores (the test queries as the bank), and the metrics it gives;
* the label "QB-Norm (transductive)" in the protocol (metrics.json's ``protocol``) and the table title;
* ``inference.qb_norm`` with ``inference.dsl``: one ConfigError naming both keys;
* lsdo.evaluate.run (eval.py) on an untrained tiny checkpoint: the label in metrics.json and metrics.md.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from omegaconf import DictConfig, OmegaConf

from lsdo.config import LEGACY, compose, upgrade
from lsdo.errors import ConfigError
from lsdo.evaluate import protocol_label, run
from lsdo.lightning_module import LSDOLitModule
from lsdo.model import TextFeatures
from lsdo.reporting import format_metrics_table
from lsdo.retrieval.qbnorm import activation_set, check_options, qb_norm


# ----------------------------------------------------------------------------------- reference
def _ref_qb_norm(sims: list[list[float]], bank: list[list[float]], beta: float, k: int) -> list[list[float]]:
    """The dynamic inverted softmax, loop by loop (float64 math)."""
    num_v = len(sims[0])
    active = set()
    for row in bank:
        order = sorted(range(num_v), key=lambda v: -row[v])
        active.update(v for v in order[:k] if math.isfinite(row[v]))
    norm = [sum(math.exp(beta * row[v]) for row in bank) for v in range(num_v)]
    out = []
    for row in sims:
        top1 = max(range(num_v), key=lambda v: row[v])
        if top1 in active and math.isfinite(row[top1]):
            out.append(
                [math.exp(beta * row[v]) / norm[v] if math.isfinite(row[v]) else -math.inf for v in range(num_v)]
            )
        else:
            out.append(list(row))
    return out


def _random(t: int, v: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(t, v, generator=gen, dtype=torch.float64) * 2 - 1  # cosine-like scores in [-1, 1]


@pytest.mark.parametrize("beta", [1.0, 20.0, 50.0])
@pytest.mark.parametrize("k", [1, 2, 5])
@pytest.mark.parametrize("same_bank", [True, False], ids=["test-bank", "other-bank"])
def test_qb_norm_matches_loops(beta: float, k: int, same_bank: bool) -> None:
    sims = _random(13, 9, seed=int(beta) * 10 + k)
    bank = sims if same_bank else _random(6, 9, seed=100 + k)
    got = qb_norm(sims, bank, beta=beta, k=k)
    want = torch.tensor(_ref_qb_norm(sims.tolist(), bank.tolist(), beta, k), dtype=torch.float64)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
    assert got.shape == sims.shape and got.dtype == sims.dtype


def test_queries_outside_the_activation_set_are_unchanged() -> None:
    """A bank that only ever retrieves video 0: queries whose top-1 is another video keep their scores."""
    sims = _random(10, 6, seed=1)
    bank = torch.full((4, 6), -0.5, dtype=torch.float64)
    bank[:, 0] = 0.9
    assert activation_set(bank, 1).tolist() == [True] + [False] * 5
    got = qb_norm(sims, bank, beta=20.0, k=1)
    top1 = sims.argmax(dim=1)
    outside = top1 != 0
    assert outside.any() and (~outside).any()  # both kinds of query are present
    assert torch.equal(got[outside], sims[outside])  # bitwise: those rows are passed through as they are
    assert not torch.allclose(got[~outside], sims[~outside])
    want = torch.tensor(_ref_qb_norm(sims.tolist(), bank.tolist(), 20.0, 1), dtype=torch.float64)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
    # k = 2: the second-ranked video of the bank (every other video ties at -0.5) widens the set
    assert int(activation_set(bank, 2).sum()) == 2


def test_minus_inf_entries_stay_and_stay_out() -> None:
    """Pairs a prefilter dropped (-inf) stay -inf and never enter the activation set."""
    sims = _random(8, 7, seed=2)
    sims[torch.rand(8, 7, generator=torch.Generator().manual_seed(3)) < 0.4] = -math.inf
    sims[:, 3] = -math.inf  # a video nobody keeps
    sims[5, :] = -math.inf  # a query with no candidate
    got = qb_norm(sims, sims, beta=20.0, k=3)
    assert torch.equal(torch.isinf(got), torch.isinf(sims))
    assert not activation_set(sims, 3)[3]
    want = torch.tensor(_ref_qb_norm(sims.tolist(), sims.tolist(), 20.0, 3), dtype=torch.float64)
    assert torch.equal(torch.isinf(want), torch.isinf(got))
    finite = torch.isfinite(want)
    torch.testing.assert_close(got[finite], want[finite], rtol=1e-10, atol=1e-12)


def test_no_overflow_at_large_beta() -> None:
    sims = _random(5, 4, seed=4).float() * 10  # exp(200 * 10) overflows float32; the ratio does not
    got = qb_norm(sims, sims, beta=200.0)
    assert torch.isfinite(got).all()
    assert (got <= 1 + 1e-6).all()  # the test bank holds the query itself: each ratio <= 1


def test_bad_arguments() -> None:
    sims = _random(3, 4, seed=5)
    with pytest.raises(ValueError, match="bank must be"):
        qb_norm(sims, sims[:, :3])
    with pytest.raises(ValueError, match="beta"):
        qb_norm(sims, sims, beta=0.0)
    with pytest.raises(ValueError, match="k must be"):
        qb_norm(sims, sims, k=0)


# ----------------------------------------------------------------------------------- the option
BASE = {"mode": "full", "prefilter_k": 100, "method": "gram", "chunk_size": 4, "dsl": False, "dsl_temperature": 0.01}
QB = {"qb_norm": False, "qb_norm_beta": 20, "qb_norm_k": 1, "qb_norm_bank": "test"}


@pytest.fixture(scope="module")
def lit(cfg_tiny_global: DictConfig) -> LSDOLitModule:
    module = LSDOLitModule(cfg_tiny_global)  # its own copy of the config (OmegaConf.create)
    module.eval()
    return module


def _features(seed: int = 0, t: int = 12, v: int = 7) -> tuple[TextFeatures, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    video = torch.randn(v, 4, 512, generator=gen)
    target = video[torch.arange(t) % v].mean(1) + torch.randn(t, 512, generator=gen)
    query = target + 0.5 * torch.randn(t, 512, generator=gen)
    return TextFeatures(query, target, torch.randn(t, 512, generator=gen)), video


def _scores(lit: LSDOLitModule, **inference: object) -> torch.Tensor:
    for key, value in {**BASE, **QB, **inference}.items():
        lit.cfg.inference[key] = value
    text, video = _features()
    return lit.retrieval_scores(text, video)


@pytest.mark.parametrize("beta,k", [(20, 1), (5.0, 2), (50, 3)])
@pytest.mark.parametrize("mode", ["full", "prefilter"])
def test_retrieval_scores_apply_qb_norm(lit: LSDOLitModule, beta: float, k: int, mode: str) -> None:
    extra = {"mode": mode, "prefilter_k": 4}
    plain = _scores(lit, **extra).double()
    got = _scores(lit, **extra, qb_norm=True, qb_norm_beta=beta, qb_norm_k=k).double()
    want = torch.tensor(_ref_qb_norm(plain.tolist(), plain.tolist(), float(beta), k), dtype=torch.float64)
    assert torch.equal(torch.isinf(got), torch.isinf(want))
    finite = torch.isfinite(want)
    torch.testing.assert_close(got[finite], want[finite], rtol=1e-4, atol=1e-6)
    assert not torch.allclose(got[finite], plain[finite])  # the option is read
    _scores(lit)  # back to the defaults for the other tests


def test_qb_norm_with_dsl_is_refused(lit: LSDOLitModule) -> None:
    with pytest.raises(ConfigError, match=r"inference\.qb_norm=true and inference\.dsl=true") as err:
        _scores(lit, qb_norm=True, dsl=True)
    assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match="inference.qb_norm_bank"):
        _scores(lit, qb_norm=True, qb_norm_bank="train")
    with pytest.raises(ConfigError, match="inference.qb_norm_k"):
        _scores(lit, qb_norm=True, qb_norm_k=0)
    _scores(lit)
    with pytest.raises(ConfigError, match=r"inference\.qb_norm=true and inference\.dsl=true"):
        protocol_label({**BASE, **QB, "qb_norm": True, "dsl": True})  # eval.py: before the model is built
    check_options({**BASE, **QB, "dsl": True})  # dsl alone is fine


def test_label_in_protocol_and_table() -> None:
    """eval.py writes ``protocol_label`` as metrics.json's ``protocol`` and in the table's title."""
    assert "QB-Norm" not in protocol_label({**BASE, **QB})
    label = protocol_label({**BASE, **QB, "qb_norm": True})
    assert label.startswith("full protocol, ") and "QB-Norm (transductive)" in label
    assert "QB-Norm (transductive)" in protocol_label({**BASE, **QB, "mode": "prefilter", "qb_norm": True})
    metrics = {f"{d}/{c}": 1.0 for d in ("t2v", "v2t") for c in ("R1", "R5", "R10", "R50", "MdR", "MnR")}
    table = format_metrics_table(metrics, title=f"test metrics of x.ckpt (synthetic; {label})")
    assert "QB-Norm (transductive)" in table.splitlines()[0]


def test_legacy_configs_get_qb_norm_off() -> None:
    old = {"inference": {k: v for k, v in BASE.items()}}
    new = upgrade(old)
    assert new["inference"]["qb_norm"] is False and LEGACY["inference.qb_norm"] == (False, None)
    assert {k: new["inference"][k] for k in QB} == QB
    assert "QB-Norm" not in protocol_label(OmegaConf.create(new)["inference"])


# ----------------------------------------------------------------------------------- eval, end to end
def test_eval_writes_the_label(cfg_tiny: DictConfig, tmp_path: Path) -> None:
    """lsdo.evaluate.run with inference.qb_norm=true: metrics.json's protocol and metrics.md's title say so."""
    ckpt = tmp_path / "tiny.ckpt"
    torch.manual_seed(0)
    saved = OmegaConf.to_container(cfg_tiny, resolve=True)
    torch.save({"state_dict": LSDOLitModule(cfg_tiny).state_dict(), "hyper_parameters": {"cfg": saved}}, ckpt)
    base = [f"ckpt={ckpt}", "trainer.accelerator=cpu", f"paths.log_dir={tmp_path / 'logs'}"]
    with pytest.raises(ConfigError, match=r"inference\.qb_norm=true and inference\.dsl=true"):
        run(compose([*base, "inference.qb_norm=true", "inference.dsl=true"], config_name="eval"))
    metrics = run(compose([*base, "inference.qb_norm=true"], config_name="eval"))
    out = next((tmp_path / "logs" / "eval" / "runs").glob("*"))
    report = json.loads((out / "metrics.json").read_text())
    assert "QB-Norm (transductive)" in report["protocol"] and report["inference"]["qb_norm"] is True
    assert report["test"] == metrics
    assert "QB-Norm (transductive)" in (out / "metrics.md").read_text().splitlines()[0]
