"""The ablation rows ``ablation=<table>_<row>`` (Tables VI-XI): the switches each row names, the paper's
figures each carries (against the paper text), the variant check, and one training step of each kind of row."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from conftest import ROOT
from omegaconf import OmegaConf
from test_paper_presets import PAPER, _fast_overrides

from lsdo.config import compose, validate
from lsdo.errors import ConfigError
from lsdo.train import run

DATASETS = ("msrvtt9k", "msrvtt7k", "msvd", "lsmdc", "didemo")  # the column groups of Tables VI-XI, in order
# Tables VI-VIII: the modules of each row, I (frame features), V, F, T (video-, frame-, text-level LSDOs).
# The paper text loses one check mark: rows 3 and 4 both read "I V x x", but Section IV-D.1 says row 4 adds the
# frame-level features to row 3 ("When frame-level LSDO features were further incorporated in No.4").
MODULES = {"0": "I", "1": "VF", "2": "VFT", "3": "IV", "4": "IVF", "5": "IT", "6": "IVFT"}
SWITCH = {"I": "use_frame_features", "V": "use_video_lsdo", "F": "use_frame_lsdo", "T": "use_text_lsdo"}
TABLE_VARIANT = {"VI": "shared", "VII": "average", "VIII": "single", "IX": "single", "X": "shared", "XI": "average"}
ROWS: dict[str, dict[str, str]] = {  # file name -> the table's row as the paper labels it
    **{f"{t.lower()}_{r}": {"table": t, "row": r} for t in ("VI", "VII", "VIII") for r in MODULES},
    **{f"ix_{th.replace('.', '')}_{'learnable' if ln else 'fixed'}":
       {"table": "IX", "row": f"{th} {'✓' if ln else '×'}"} for ln in (False, True) for th in ("0.1", "0.5", "0.9")},
    **{f"x_{i.lower()}": {"table": "X", "row": i} for i in ("Zero", "Unique", "Feature")},
    **{f"xi_{k}": {"table": "XI", "row": r}
       for k, r in (("fc", "FC"), ("bottleneck", "Bottleneck"), ("inverted_bottleneck", "Inverted bottleneck"))},
}  # fmt: skip
REFERENCE = {"vi_6", "vii_6", "viii_6", "ix_09_learnable", "x_feature", "xi_fc"}  # the paper's configuration


def _file(name: str) -> dict:
    return yaml.safe_load((ROOT / "configs" / "ablation" / f"{name}.yaml").read_text())["ablation"]


def test_the_rows_are_the_files() -> None:
    assert {p.stem for p in (ROOT / "configs" / "ablation").glob("*.yaml")} == set(ROWS)


@pytest.mark.parametrize("name", sorted(ROWS))
def test_row_composes_with_its_switches(name: str) -> None:
    table = ROWS[name]["table"]
    variant = TABLE_VARIANT[table]
    cfg = compose([f"experiment=msrvtt9k_{variant}", f"ablation={name}"])
    validate(cfg)
    assert cfg.ablation.table == table and cfg.ablation.variant == variant
    assert cfg.ablation.reference == (name in REFERENCE)
    assert cfg.paper.table == "I"  # the Tables I-V preset's own figures stay as they were
    expected: dict[str, object] = {}
    if table in ("VI", "VII", "VIII"):
        on = MODULES[ROWS[name]["row"]]
        expected = {f"model.{SWITCH[m]}": m in on for m in "IVFT"}
    elif table == "IX":
        theta, learnable = name.split("_")[1:]
        expected = {"variant.theta": float(theta) / 10, "variant.learnable_threshold": learnable == "learnable"}
    elif table == "X":
        expected = {"variant.init": name.split("_", 1)[1]}
    elif table == "XI":
        expected = {"model.frame_proj": name.split("_", 1)[1]}
    default = compose([f"experiment=msrvtt9k_{variant}"])
    for key in ("model.use_frame_features", "model.use_video_lsdo", "model.use_frame_lsdo", "model.use_text_lsdo",
                "model.frame_proj", "variant.theta", "variant.learnable_threshold", "variant.init"):  # fmt: skip
        want = expected.get(key, OmegaConf.select(default, key))  # what the row does not name stays the preset's
        assert OmegaConf.select(cfg, key) == (pytest.approx(want) if isinstance(want, float) else want), key
    if name in REFERENCE:  # the reference row is the preset itself
        assert all(OmegaConf.select(cfg, k) == OmegaConf.select(default, k) for k in expected)


def test_another_variant_is_refused() -> None:
    with pytest.raises(
        ConfigError, match=r"ablation=vi_4 is a row of Table VI \(LSDO-shared\), not of variant=average"
    ):
        validate(compose(["experiment=msrvtt9k_average", "ablation=vi_4"]))


def _paper_rows(text: str, table: str, label_columns: int) -> dict[str, list[float]]:
    start = text.index(f"\nTABLE {table}\n")
    block = text[start : text.index("\nTABLE ", start + 1)] if "\nTABLE " in text[start + 1 :] else text[start:]
    rows = {}
    for line in block.splitlines():
        parts = line.split("\t")
        if len(parts) == label_columns + 15 and re.fullmatch(r"[\d.]+", parts[-1]):
            key = parts[0] if table in ("VI", "VII", "VIII") else " ".join(parts[:label_columns])  # No. / the label
            rows[key] = [float(x) for x in parts[label_columns:]]
    return rows


def test_carried_figures_match_the_paper_text() -> None:
    if not PAPER.is_file():
        pytest.skip("../shared/papers/lsdo-tip2025.txt is not present")
    text = PAPER.read_text().split("\nREFERENCES")[0]
    columns = {"VI": 5, "VII": 5, "VIII": 5, "IX": 2, "X": 1, "XI": 1}
    tables = {t: _paper_rows(text, t, c) for t, c in columns.items()}
    assert [len(tables[t]) for t in columns] == [7, 7, 7, 6, 3, 3]
    for name, where in ROWS.items():
        figures = tables[where["table"]][where["row"]]
        carried = _file(name)["paper"]
        assert list(carried) == list(DATASETS), name
        for i, ds in enumerate(DATASETS):
            assert [carried[ds][m] for m in ("R1", "R5", "MnR")] == figures[3 * i : 3 * i + 3], (name, ds)


# One training step of each kind of row: without frame features, without F, a fixed theta, each shared
# initialisation, each projection (the others differ from these only in which switches are on).
STEP_ROWS = [
    "vi_1",
    "vii_2",
    "viii_3",
    "vii_5",
    "ix_01_fixed",
    "x_zero",
    "x_unique",
    "xi_bottleneck",
    "xi_inverted_bottleneck",
]


@pytest.mark.parametrize("name", STEP_ROWS)
def test_row_runs_one_step(name: str, tmp_path: Path) -> None:
    variant = TABLE_VARIANT[ROWS[name]["table"]]
    cfg = compose([*_fast_overrides(f"msrvtt9k_{variant}", tmp_path), f"ablation={name}"])
    validate(cfg)
    results = run(cfg)
    assert 0.0 <= results["test"]["t2v/R1"] <= 100.0
    saved = (Path(results["run_dir"]) / "config.yaml").read_text()
    assert f"name: {name}" in saved  # the row travels with the run (lsdo-report reads it)


def test_rows_are_in_the_paper_order() -> None:
    """``position`` is each row's place in its table, as printed (lsdo-report lists rows in that order)."""
    order = {t: [n for n in ROWS if ROWS[n]["table"] == t] for t in TABLE_VARIANT}  # ROWS lists rows as printed
    order["IX"] = [f"ix_{th}_{kind}" for kind in ("fixed", "learnable") for th in ("01", "05", "09")]
    order["X"] = ["x_zero", "x_unique", "x_feature"]
    for table, names in order.items():
        assert [_file(n)["position"] for n in names] == list(range(len(names))), table
