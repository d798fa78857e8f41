"""``model.pretrained``: local checkpoint files, architecture resolution and user-facing errors.

The fast tests exercise ``lsdo.model.encoder.load_state_dict_file`` and the architecture choice
on small files; the ViT-B/32 round trip through ``build_model`` is marked slow.
"""

from __future__ import annotations

import logging
import re

import open_clip
import pytest
import torch
from torch import nn

from lsdo.config import compose
from lsdo.errors import ConfigError, LSDOUserError
from lsdo.model import build_model
from lsdo.model.encoder import _resolve_arch, load_state_dict_file

OPENAI_EXTRA = {
    "input_resolution": torch.tensor(224),
    "context_length": torch.tensor(77),
    "vocab_size": torch.tensor(49408),
}


def _small_state_dict() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {"visual.proj": torch.randn(4, 3, generator=g), "ln_final.weight": torch.randn(5, generator=g)}


def _assert_same(actual: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    assert set(actual) == set(expected)
    for key, value in expected.items():
        assert torch.equal(actual[key], value), key


def _clip_b32(pretrained: str) -> object:
    """The ``model`` node of clip_b32 with ``model.pretrained`` set (quoted for Hydra)."""
    return compose(["model=clip_b32", f"model.pretrained='{pretrained}'"]).model


# ----------------------------------------------------------------------------- load_state_dict_file
def test_plain_state_dict(tmp_path):
    sd = _small_state_dict()
    path = tmp_path / "plain.pt"
    torch.save(sd, path)
    _assert_same(load_state_dict_file(str(path)), sd)


def test_wrapped_state_dict_with_module_prefix(tmp_path):
    sd = _small_state_dict()
    path = tmp_path / "wrapped.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in sd.items()}, "epoch": 3}, path)
    _assert_same(load_state_dict_file(str(path)), sd)


def test_openai_layout_state_dict(tmp_path):
    sd = _small_state_dict()
    path = tmp_path / "openai.pt"
    torch.save({**sd, **OPENAI_EXTRA}, path)
    loaded = load_state_dict_file(str(path))
    _assert_same(loaded, {**sd, **OPENAI_EXTRA})  # the extra keys are dropped later, by create_clip
    # an OpenAI-layout file is a QuickGELU model; a plain open_clip state dict is not
    assert _resolve_arch(_clip_b32(str(path))) == "ViT-B-32-quickgelu"
    plain = tmp_path / "plain.pt"
    torch.save(sd, plain)
    assert _resolve_arch(_clip_b32(str(plain))) == "ViT-B-32"


@pytest.mark.filterwarnings("ignore::FutureWarning")  # torch.jit is deprecated, OpenAI's files are TorchScript
def test_torchscript_archive(tmp_path):
    module = torch.jit.script(nn.Linear(3, 2))
    path = tmp_path / "ViT-B-32.pt"
    module.save(str(path))
    _assert_same(load_state_dict_file(str(path)), dict(module.state_dict()))
    assert _resolve_arch(_clip_b32(str(path))) == "ViT-B-32-quickgelu"  # OpenAI archives are QuickGELU


def test_safetensors_file(tmp_path):
    safetensors_torch = pytest.importorskip("safetensors.torch")
    sd = _small_state_dict()
    path = tmp_path / "weights.safetensors"
    safetensors_torch.save_file(sd, str(path))
    _assert_same(load_state_dict_file(str(path)), sd)


def test_unreadable_files_name_the_path(tmp_path):
    missing = tmp_path / "nope" / "ViT-B-32.pt"
    with pytest.raises(LSDOUserError, match=re.escape(str(missing))) as info:
        load_state_dict_file(str(missing))
    assert "model.pretrained=null" in str(info.value)  # the message lists the options
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"this is not a checkpoint\x00\x01\x02")
    with pytest.raises(LSDOUserError, match=re.escape(str(garbage))):
        load_state_dict_file(str(garbage))
    empty = tmp_path / "empty.pt"
    torch.save({}, empty)
    with pytest.raises(LSDOUserError, match=re.escape(str(empty))):
        load_state_dict_file(str(empty))
    not_a_dict = tmp_path / "list.pt"
    torch.save([torch.zeros(1)], not_a_dict)
    with pytest.raises(LSDOUserError, match=re.escape(str(not_a_dict))):
        load_state_dict_file(str(not_a_dict))


# ----------------------------------------------------------------------------- architecture / tags
def test_arch_follows_the_weights():
    assert _resolve_arch(compose(["model=clip_b32"]).model) == "ViT-B-32-quickgelu"  # openai tag
    assert _resolve_arch(compose(["model=clip_b32", "model.pretrained=null"]).model) == "ViT-B-32"
    assert _resolve_arch(compose(["model=clip_b32", "model.pretrained=laion2b_s34b_b79k"]).model) == "ViT-B-32"
    assert _resolve_arch(compose(["model=clip_b32", "model.arch=ViT-B-16"]).model) == "ViT-B-16"  # explicit wins


def test_unknown_tag_fails_fast_with_the_options(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # must not need the network to fail
    with pytest.raises(LSDOUserError, match="some_unknown_tag") as info:
        build_model(compose(["model=clip_b32", "model.pretrained=some_unknown_tag"]))
    assert "model.pretrained=null" in str(info.value)


def test_inline_tiny_model_rejects_a_checkpoint(tmp_path):
    with pytest.raises(ConfigError, match=r"model\.pretrained"):
        build_model(compose(["model=tiny", f"model.pretrained='{tmp_path / 'ViT-B-32.pt'}'"]))


def test_missing_checkpoint_through_build_model(tmp_path):
    missing = tmp_path / "ViT-B-32.pt"
    with pytest.raises(LSDOUserError, match=re.escape(str(missing))):
        build_model(compose(["model=clip_b32", f"model.pretrained='{missing}'"]))


def test_checkpoint_of_the_wrong_architecture_names_model_arch(tmp_path):
    path = tmp_path / "small.pt"
    torch.save(_small_state_dict(), path)
    with pytest.raises(LSDOUserError, match=r"model\.arch"):
        build_model(compose(["model=clip_b32", f"model.pretrained='{path}'"]))


# ----------------------------------------------------------------------------- ViT-B/32 round trip
@pytest.mark.slow
def test_local_openai_checkpoint_round_trip(tmp_path):
    torch.manual_seed(0)
    source = build_model(compose(["model=clip_b32", "model.pretrained=null"]))
    assert not any(isinstance(m, open_clip.transformer.QuickGELU) for m in source.modules())
    with torch.no_grad():
        for p in source.encoder.clip.parameters():
            p.add_(0.01 * torch.randn_like(p))  # weights no fresh initialisation reproduces
    sd = {k: v.clone() for k, v in source.encoder.clip.state_dict().items()}
    path = tmp_path / "ViT-B-32.pt"
    torch.save({**sd, **OPENAI_EXTRA}, path)

    torch.manual_seed(1)
    loaded = build_model(compose(["model=clip_b32", f"model.pretrained='{path}'"]))
    assert _resolve_arch(_clip_b32(str(path))) == "ViT-B-32-quickgelu"
    assert any(isinstance(m, open_clip.transformer.QuickGELU) for m in loaded.encoder.clip.modules())
    loaded_sd = loaded.encoder.clip.state_dict()
    assert set(loaded_sd) == set(sd)
    for key, value in sd.items():
        assert torch.equal(loaded_sd[key], value), key

    # an open_clip state dict wrapped by DDP/Lightning, logit_scale stored as [1]: GELU architecture
    wrapped = {f"module.{k}": v for k, v in sd.items()}
    wrapped["module.logit_scale"] = sd["logit_scale"].reshape(1)
    path2 = tmp_path / "open_clip.pth"
    torch.save({"state_dict": wrapped}, path2)
    loaded2 = build_model(compose(["model=clip_b32", f"model.pretrained='{path2}'"]))
    assert not any(isinstance(m, open_clip.transformer.QuickGELU) for m in loaded2.encoder.clip.modules())
    for key, value in loaded2.encoder.clip.state_dict().items():
        assert torch.equal(value, sd[key]), key


# ----------------------------------------------------------------------------- activation of a state-dict file
TINY_ARCH = "LSDOTestTinyViT"  # registered below with its -quickgelu twin, as open_clip pairs ViT-B-32 / -quickgelu


@pytest.fixture(scope="module")
def tiny_arch(tmp_path_factory) -> str:
    import json

    folder = tmp_path_factory.mktemp("open_clip_configs")
    cfg = {
        "embed_dim": 32,
        "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 16},
        "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
    }
    (folder / f"{TINY_ARCH}.json").write_text(json.dumps(cfg))
    (folder / f"{TINY_ARCH}-quickgelu.json").write_text(json.dumps({**cfg, "quick_gelu": True}))
    open_clip.add_model_config(folder)
    return TINY_ARCH


@pytest.fixture(scope="module")
def quickgelu_state_dict(tiny_arch, tmp_path_factory):
    """(path of a plain open_clip state dict saved from the QuickGELU model, that model's image features)."""
    torch.manual_seed(0)
    source = open_clip.create_model(f"{tiny_arch}-quickgelu").eval()
    path = tmp_path_factory.mktemp("weights") / "tiny_open_clip.pt"
    torch.save(source.state_dict(), path)
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        feats = source.encode_image(images)
    return path, images, feats


def _records(caplog, level: int) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "lsdo.model.encoder" and r.levelno == level]


def _has_quickgelu(model: nn.Module) -> bool:
    return any(isinstance(m, open_clip.transformer.QuickGELU) for m in model.modules())


def test_state_dict_file_activation_is_logged_and_warned(tiny_arch, quickgelu_state_dict, caplog):
    from lsdo.model.encoder import create_clip

    path, images, feats = quickgelu_state_dict
    cfg = compose(["model=clip_b32", f"model.base_arch={tiny_arch}", f"model.pretrained='{path}'"]).model
    with caplog.at_level(logging.INFO, logger="lsdo.model.encoder"):
        clip, _ = create_clip(cfg)
    assert not _has_quickgelu(clip)  # the rule is unchanged: GELU ...
    assert _records(caplog, logging.INFO) == [
        f"CLIP: open_clip architecture {tiny_arch} (GELU activation; a state-dict file)"
    ]
    assert _records(caplog, logging.WARNING) == [  # ... but no longer silent
        f"model.pretrained: {path} is a state dict, which does not record the activation (GELU and QuickGELU have "
        f"the same weights): built as open_clip {tiny_arch} (GELU). If it holds QuickGELU weights (OpenAI's CLIP, "
        f"open_clip's *-quickgelu models), every feature is off by about 1%: pass model.arch={tiny_arch}-quickgelu; "
        f"pass model.arch={tiny_arch} to keep GELU and silence this warning"
    ]
    with torch.no_grad():
        assert not torch.allclose(clip.eval().encode_image(images), feats, atol=1e-4)  # what the warning is about

    # The warning's fix, typed as printed: the QuickGELU twin reproduces the source model, no warning.
    caplog.clear()
    fixed = compose(["model=clip_b32", f"model.arch={tiny_arch}-quickgelu", f"model.pretrained='{path}'"]).model
    with caplog.at_level(logging.INFO, logger="lsdo.model.encoder"):
        clip, _ = create_clip(fixed)
    assert _has_quickgelu(clip) and not _records(caplog, logging.WARNING)
    assert _records(caplog, logging.INFO) == [
        f"CLIP: open_clip architecture {tiny_arch}-quickgelu (QuickGELU activation; given by model.arch)"
    ]
    with torch.no_grad():
        torch.testing.assert_close(clip.eval().encode_image(images), feats)

    # And the other choice: GELU confirmed with model.arch, no warning.
    caplog.clear()
    gelu = compose(["model=clip_b32", f"model.arch={tiny_arch}", f"model.pretrained='{path}'"]).model
    with caplog.at_level(logging.INFO, logger="lsdo.model.encoder"):
        create_clip(gelu)
    assert not _records(caplog, logging.WARNING)


def test_openai_layout_file_is_quickgelu_without_warning(tiny_arch, quickgelu_state_dict, tmp_path, caplog):
    from lsdo.model.encoder import create_clip

    path, images, feats = quickgelu_state_dict
    openai = tmp_path / "openai_layout.pt"
    torch.save({**torch.load(path, weights_only=True), **OPENAI_EXTRA}, openai)
    cfg = compose(["model=clip_b32", f"model.base_arch={tiny_arch}", f"model.pretrained='{openai}'"]).model
    with caplog.at_level(logging.INFO, logger="lsdo.model.encoder"):
        clip, _ = create_clip(cfg)
    assert _has_quickgelu(clip) and not _records(caplog, logging.WARNING)
    assert _records(caplog, logging.INFO) == [
        f"CLIP: open_clip architecture {tiny_arch}-quickgelu (QuickGELU activation; an OpenAI checkpoint file "
        "(OpenAI's CLIP models use QuickGELU))"
    ]
    with torch.no_grad():
        torch.testing.assert_close(clip.eval().encode_image(images), feats)


def test_lsdo_viz_warning_names_its_own_argument(tiny_arch, quickgelu_state_dict, caplog):
    from lsdo.inverse_attention.viz import load_model

    path, images, feats = quickgelu_state_dict
    with caplog.at_level(logging.WARNING, logger="lsdo.model.encoder"):
        load_model(f"{tiny_arch}/{path}")
    (warning,) = _records(caplog, logging.WARNING)
    assert warning.startswith(f"model={tiny_arch}/{path}: {path} is a state dict")
    assert warning.endswith(f"every feature is off by about 1%: pass model={tiny_arch}-quickgelu/{path}")
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="lsdo.model.encoder"):
        clip, _, _ = load_model(f"{tiny_arch}-quickgelu/{path}")  # the fix, as printed
    assert not _records(caplog, logging.WARNING)
    with torch.no_grad():
        torch.testing.assert_close(clip.eval().encode_image(images), feats)
