"""lsdo.schema: every key of every YAML is declared with its type, misspelt keys are one-line errors."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from lsdo import schema
from lsdo.config import CONFIG_DIR, compose, validate
from lsdo.errors import ConfigError

GROUP_SECTION = {"dataset": schema.Dataset, "model": schema.Model, "variant": schema.Variant, "paths": schema.Paths}


def _keys(node: object, prefix: str = "") -> set[str]:
    if not isinstance(node, dict):
        return set()
    out = set()
    for k, v in node.items():
        out.add(prefix + k)
        if k not in ("clip_cfg", "files"):  # open_clip's config, annotation file names: free-form
            out |= _keys(v, f"{prefix}{k}.")
    return out


def _declared(cls: type, prefix: str = "") -> set[str]:
    out = set()
    for f in dataclasses.fields(cls):
        out.add(prefix + f.name)
        nested = getattr(schema, str(f.type), None)
        if dataclasses.is_dataclass(nested):
            out |= _declared(nested, f"{prefix}{f.name}.")
    return out


def test_every_yaml_key_is_declared_and_every_declared_key_is_used() -> None:
    seen: dict[type, set[str]] = {cls: set() for cls in GROUP_SECTION.values()}
    for group, cls in GROUP_SECTION.items():
        for path in sorted((Path(CONFIG_DIR) / group).rglob("*.yaml")):
            doc = OmegaConf.to_container(OmegaConf.load(path))
            doc.pop("defaults", None)
            keys = _keys(doc)
            assert keys <= _declared(cls), (path, keys - _declared(cls))
            seen[cls] |= keys
    for name in ("train", "eval", "zeroshot"):
        doc = OmegaConf.to_container(OmegaConf.load(Path(CONFIG_DIR) / f"{name}.yaml"))
        for section, cls in {
            **schema.SECTIONS,
            **({"inference": schema.ZeroShotInference} if name == "zeroshot" else {}),
        }.items():
            keys = _keys(doc.get(section) or {})
            assert keys <= _declared(cls), (name, section, keys - _declared(cls))
            seen.setdefault(cls, set()).update(keys)
        assert set(doc) - {"defaults", "hydra"} <= schema.TOP_KEYS, (name, set(doc) - schema.TOP_KEYS)
    for cls, keys in seen.items():
        assert _declared(cls) <= keys, (cls.__name__, "declared but in no YAML:", _declared(cls) - keys)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["+model.alpah=0.5"], "model.alpah: not a config key (did you mean model.alpha?)"),
        (["+dataset.num_frame=3"], "dataset.num_frame: not a config key (did you mean dataset.num_frames?)"),
        (
            ["variant=regions", "+variant.lard.kernl=2"],
            "variant.lard.kernl: not a config key (did you mean variant.lard.kernel?)",
        ),
        (["+seeds=3"], "seeds: not a config key (did you mean seed?)"),
        (["model.alpha=abc"], "model.alpha=abc: expected a number"),
        (["dataset.fresh_renders=maybe"], "dataset.fresh_renders=maybe: expected true or false"),
    ],
)
def test_misspelt_or_mistyped_keys_are_named(overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        validate(compose(overrides))
    assert str(err.value) == message


def test_every_preset_passes() -> None:
    for overrides in (["experiment=demo"], ["experiment=premise"], ["impl=official", "experiment=official_release"]):
        validate(compose(overrides))
    for d in ("synthetic", "msrvtt", "msvd", "lsmdc", "didemo"):
        for v in ("baseline", "shared", "average", "single", "regions"):
            validate(compose([f"dataset={d}", f"variant={v}"]))
