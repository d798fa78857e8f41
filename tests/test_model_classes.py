"""impl=paper and impl=official as two classes on one base (lsdo.model.base.LSDOModel).

What must not move when the model code is reorganised: the class ``build_model`` picks per
``impl``, the state_dict keys (and their order) of each impl (checkpoints load by key), and the
similarities on a fixed seed. The key lists and the numbers below were recorded from the single
``LSDOModel`` class that branched on ``impl`` before the split; the head parameters start from the
identity / LayerNorm initialisation plus a seeded perturbation, so the numbers do not depend on
the (random) tiny CLIP.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest
import torch
from tolerances import reduction_tol

from lsdo.config import compose
from lsdo.errors import ConfigError
from lsdo.model import LSDOModel, OfficialLSDOModel, PaperLSDOModel, TextFeatures, build_model, lsdo_model
from lsdo.model.xpool_layout import XPoolLayout

pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).resolve().parents[1]
D = 512


def _wb(*names: str) -> list[str]:
    return [f"{n}.{p}" for n in names for p in ("weight", "bias")]


def _sub(prefix: str, *names: str) -> list[str]:
    return _wb(*(f"{prefix}.{n}" for n in names))


BANK = ["video_lsdo.bank", "video_lsdo.initialised"]
FRAME_LSDO = _sub("frame_lsdo", "norm_frames", "norm_lsdo", "q", "k", "v", "out", "norm_out")
TEXT_LSDO = _wb("text_lsdo.fc1", "text_lsdo.fc2")
XPOOL_PAPER = _sub("xpool", "norm_in", "q", "k", "v", "out", "norm_out")
SCENE = _sub("scene", "norm_frames", "norm_s", "q", "k", "v", "out")
XPOOL_OFFICIAL = _sub("xpool", "norm1", "norm2", "norm3", "q", "k", "v", "out", "linear_proj")

# state_dict keys after ``encoder.``, in state_dict order (recorded before the split)
HEAD_KEYS = {
    ("paper", "average"): _wb("frame_proj", "video_lsdo.fc", "video_lsdo.norm") + FRAME_LSDO + TEXT_LSDO + XPOOL_PAPER,
    ("paper", "shared"): _wb("frame_proj") + BANK + FRAME_LSDO + TEXT_LSDO + XPOOL_PAPER,
    ("paper", "baseline"): _wb("frame_proj") + XPOOL_PAPER,
    ("official", "average"): SCENE + ["official_fusion.logits"] + XPOOL_OFFICIAL,
    ("official", "shared"): BANK + SCENE + ["official_fusion.logits"] + XPOOL_OFFICIAL,
}

# similarity [3 texts, 2 videos] row-major, from video_from_features on seeded f_v (recorded before the split)
SIMS = {
    ("paper", "average"): [0.10196998, 0.02822593, -0.02707002, -0.02460395, -0.01332518, -0.01466670],
    ("paper", "shared"): [0.04458379, -0.04771539, -0.00498934, -0.07010414, 0.08405071, 0.00697694],
    ("paper", "baseline"): [0.06710529, -0.03971488, -0.01960438, -0.00877713, -0.04379620, -0.02245542],
    ("official", "average"): [0.01783829, 0.02987645, -0.01697281, 0.05172896, 0.07706942, 0.03154104],
    ("official", "shared"): [-0.02907019, -0.03791598, 0.02809427, 0.10338978, 0.01354086, 0.01700587],
}

# The recorded figures came from one CPU; another CPU, thread count or instruction set rounds the float32
# reductions in another order. A similarity is a cosine (scale 1: the error is relative to |t||z|, not to the
# value, which can be near 0 through cancellation) at the end of at most 16 float32 reductions over d in
# sequence (either impl: the frame/scene heads' LayerNorms, projections, attention logits and pooling, then
# X-Pool's, its residual stage, and the cosine).
SIMS_TOL = reduction_tol(torch.float32, D, stages=16)

CLASSES = {"paper": PaperLSDOModel, "official": OfficialLSDOModel}


@pytest.fixture(scope="module")
def bank_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    gen = torch.Generator().manual_seed(7)
    path = tmp_path_factory.mktemp("bank") / "bank.json"
    feats = torch.randn(20, D, generator=gen)
    path.write_text(json.dumps({"videos": [f"v{i}" for i in range(20)], "features": feats.tolist()}))
    return path


def _build(impl: str, variant: str, bank: Path) -> LSDOModel:
    extra = ["variant.init=file", f"variant.bank_path='{bank}'"] if variant == "shared" else []
    return build_model(compose(["model=tiny", f"variant={variant}", f"impl={impl}", *extra]))


@pytest.fixture(scope="module")
def models(bank_file: Path) -> dict[tuple[str, str], LSDOModel]:
    return {case: _build(*case, bank_file) for case in HEAD_KEYS}


@pytest.mark.parametrize("impl", ["paper", "official"])
def test_build_model_picks_the_class_of_impl(models: dict, impl: str) -> None:
    model = models[(impl, "average")]
    assert type(model) is CLASSES[impl] and lsdo_model.MODEL_CLASSES[impl] is CLASSES[impl]
    assert isinstance(model, LSDOModel) and model.impl == impl


def test_unknown_impl_and_the_abstract_base_are_refused() -> None:
    cfg = compose(["model=tiny", "variant=average"])
    cfg.impl = "other"
    with pytest.raises(ConfigError, match="impl: expected paper | official, got 'other'"):
        build_model(cfg)
    with pytest.raises(TypeError, match="abstract"):
        LSDOModel(cfg.model, cfg.variant)


@pytest.mark.parametrize("case", list(HEAD_KEYS), ids="-".join)
def test_state_dict_keys_unchanged(models: dict, case: tuple[str, str]) -> None:
    keys = list(models[case].state_dict())
    assert [k for k in keys if not k.startswith("encoder.")] == HEAD_KEYS[case]
    assert keys[: -len(HEAD_KEYS[case])] == [k for k in keys if k.startswith("encoder.")]  # encoder first
    encoder = [k for k in keys if k.startswith("encoder.")]
    assert encoder == [k for k in models[("paper", "average")].state_dict() if k.startswith("encoder.")]


@pytest.mark.parametrize("case", list(SIMS), ids="-".join)
def test_similarities_unchanged(models: dict, case: tuple[str, str]) -> None:
    model = models[case]
    gen = torch.Generator().manual_seed(123)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    try:
        with torch.no_grad():
            for name, p in model.named_parameters():
                if not name.startswith("encoder."):
                    p.add_(0.05 * torch.randn(p.shape, generator=gen))
        gen = torch.Generator().manual_seed(2)
        f_v = torch.randn(2, 4, D, generator=gen)
        query, target = torch.randn(3, D, generator=gen), torch.randn(3, D, generator=gen)
        with torch.no_grad():
            sims = model.eval().similarity(TextFeatures(query, target, query), model.video_from_features(f_v))
    finally:
        model.load_state_dict(state)
    torch.testing.assert_close(sims.flatten(), torch.tensor(SIMS[case]), rtol=0, atol=SIMS_TOL)


@pytest.mark.parametrize("impl", ["paper", "official"])
def test_xpool_layout_names_the_heads_own_modules(models: dict, impl: str) -> None:
    xpool = models[(impl, "average")].xpool
    lay = xpool.layout()
    assert isinstance(lay, XPoolLayout) and lay.scale == xpool.scale
    assert (lay.q, lay.k, lay.v, lay.out) == (xpool.q, xpool.k, xpool.v, xpool.out)
    if impl == "paper":
        assert lay.norm_in is xpool.norm_in and lay.norm_out is xpool.norm_out and lay.residual is None
    else:
        assert lay.norm_in is xpool.norm1 and lay.norm_out is xpool.norm3
        assert lay.residual == (xpool.norm2, xpool.linear_proj)


def test_official_video_from_features_takes_a_given_f_s(models: dict) -> None:
    model = models[("official", "average")].eval()
    f_v = torch.randn(2, 4, D, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        own = model.video_from_features(f_v)
        given = model.video_from_features(f_v, f_s=f_v.mean(dim=1, keepdim=True))
        other, det = model.video_from_features(f_v, True, f_s=f_v[:, :1])
    # own computes f_s = f_v.mean(dim=1, keepdim=True) itself: the same ops as the given one
    assert torch.equal(own, given) and torch.equal(det["f_s"], f_v[:, :1]) and not torch.equal(other, own)
    with pytest.raises(ValueError, match="key mask"):
        model.video_from_features(f_v, f_s=f_v, key_mask=torch.ones(2, 4, dtype=torch.bool))


def _compares_impl(tree: ast.AST) -> list[int]:
    """Lines of comparisons that read an ``impl`` attribute or name."""

    def reads_impl(node: ast.AST) -> bool:
        return any(
            (isinstance(n, ast.Attribute) and n.attr == "impl") or (isinstance(n, ast.Name) and n.id == "impl")
            for n in ast.walk(node)
        )

    return [n.lineno for n in ast.walk(tree) if isinstance(n, ast.Compare) and reads_impl(n)]


@pytest.mark.parametrize("path", ["lsdo/model/base.py", "lsdo/model/lsdo_model.py", "lsdo/model/official.py"])
def test_no_impl_branches_in_the_model_classes(path: str) -> None:
    tree = ast.parse((ROOT / path).read_text())
    classes = [c for c in ast.walk(tree) if isinstance(c, ast.ClassDef)]
    methods = [f for c in classes for f in c.body if isinstance(f, ast.FunctionDef)]
    assert [line for f in methods for line in _compares_impl(f)] == []


def test_fast_scorer_does_not_dispatch_on_the_module_type() -> None:
    tree = ast.parse((ROOT / "lsdo/retrieval/xpool_fast.py").read_text())
    imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) for a in n.names}
    assert not imported & {"XPool", "OfficialXPool", "PaperXPool"}
    assert _compares_impl(tree) == []
