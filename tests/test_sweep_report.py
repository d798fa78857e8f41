"""``lsdo-report``: a sweep as the paper's table, checked against values computed by hand, on a hand-made
sweep and on a real Hydra multirun (with a failed and a missing run)."""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import TINY_OVERRIDES, run_cli

from lsdo.cli.report import report_main
from lsdo.errors import LSDOUserError
from lsdo.stats import paired_bootstrap, per_query
from lsdo.sweep_report import build_report, format_csv, format_markdown

# Table VII rows on 4 test queries (t2v ranks); vii_6 is the reference. Seeds 0 and 1.
RANKS = {
    ("vii_6", 0): [1, 1, 2, 6],
    ("vii_6", 1): [1, 2, 1, 3],
    ("vii_0", 0): [2, 1, 6, 6],
    ("vii_0", 1): [1, 3, 1, 3],
    ("vii_4", 0): [1, 1, 1, 1],
}


def _ablation(name: str) -> dict:
    from lsdo.config import CONFIG_DIR

    return yaml.safe_load((CONFIG_DIR / "ablation" / f"{name}.yaml").read_text())["ablation"]


def _write_run(path: Path, row: str, seed: int, ranks: list[int] | None) -> None:
    (path / ".hydra").mkdir(parents=True)
    cfg = {"seed": seed, "variant": {"name": "average"}, "ablation": _ablation(row)}
    (path / ".hydra" / "config.yaml").write_text(yaml.safe_dump(cfg))
    if ranks is None:  # started, then failed: Hydra wrote .hydra/, the run wrote nothing
        return
    (path / "config.yaml").write_text(yaml.safe_dump(cfg))
    r = np.array(ranks, dtype=float)
    test = {"t2v/R1": 100 * (r <= 1).mean(), "t2v/R5": 100 * (r <= 5).mean(), "t2v/MnR": r.mean(), "t2v/MdR": 1.0}
    (path / "metrics.json").write_text(json.dumps({"test": test}))
    (path / "test_ranks.json").write_text(json.dumps({"t2v": ranks, "v2t": ranks}))


@pytest.fixture
def sweep(tmp_path: Path) -> Path:
    """vii_0 and vii_6 with seeds 0, 1; vii_4 seed 0 (seed 1 failed); vii_5 asked for, never started."""
    root = tmp_path / "sweep"
    for i, ((row, seed), ranks) in enumerate(RANKS.items()):
        _write_run(root / f"{i}_{row}_seed{seed}", row, seed, ranks)
    _write_run(root / "5_vii_4_seed1", "vii_4", 1, None)
    multirun = {
        "hydra": {"overrides": {"task": ["experiment=premise", "ablation=vii_0,vii_4,vii_5,vii_6", "seed=range(0,2)"]}}
    }
    (root / "multirun.yaml").write_text(yaml.safe_dump(multirun))
    return root


def test_report_equals_hand_computed_values(sweep: Path) -> None:
    rep = build_report(sweep, paper="msrvtt9k", boot=500)
    rows = {r["row"]: r for r in rep.tables["VII"]}
    assert list(rows) == ["vii_0", "vii_4", "vii_5", "vii_6"]  # the paper's order; vii_5 listed without runs
    assert rep.reference == {"VII": "vii_6"}
    # vii_0: R@1 25 and 50 (one and two queries at rank 1 of 4), R@5 50 and 100, MnR 3.75 and 2.0
    assert rows["vii_0"]["R1_per_seed"] == [25.0, 50.0]
    assert rows["vii_0"]["R1_mean"] == pytest.approx(37.5)
    assert rows["vii_0"]["R1_std"] == pytest.approx(17.67767, abs=1e-4)  # sample std of 25, 50
    assert rows["vii_0"]["R5_mean"] == pytest.approx(75.0) and rows["vii_0"]["MnR_mean"] == pytest.approx(2.875)
    assert rows["vii_0"]["R1_paper"] == 46.3 and rows["vii_6"]["R1_paper"] == 48.8  # Table VII, MV-9K
    # paired with vii_6 on seeds 0, 1: R@1 hits differ in one of 8 (seed, query) pairs by -100 -> -12.5
    assert rows["vii_0"]["R1_delta"] == pytest.approx(-12.5)
    assert rows["vii_0"]["MnR_delta"] == pytest.approx(((3.75 - 2.5) + (2.0 - 1.75)) / 2)
    assert rows["vii_0"]["R1_lo"] <= -12.5 <= rows["vii_0"]["R1_hi"] and rows["vii_0"]["R1_lo"] >= -100
    # vii_4: one seed (no std); paired on seed 0 only: R@1 100 vs 50
    assert rows["vii_4"]["seeds"] == [0] and rows["vii_4"]["R1_std"] is None
    assert rows["vii_4"]["R1_delta"] == pytest.approx(50.0) and rows["vii_4"]["paired_seeds"] == [0]
    assert rows["vii_6"]["R1_delta"] is None and rows["vii_6"]["R1_std"] == pytest.approx(0.0)
    assert rows["vii_5"]["seeds"] == [] and rows["vii_5"]["R1_mean"] is None and rows["vii_5"]["R1_paper"] == 46.8
    # the interval is the paired bootstrap of the per-query values
    a = np.stack([per_query(RANKS[("vii_0", s)], "R1") for s in (0, 1)])
    b = np.stack([per_query(RANKS[("vii_6", s)], "R1") for s in (0, 1)])
    assert (rows["vii_0"]["R1_lo"], rows["vii_0"]["R1_hi"]) == pytest.approx(paired_bootstrap(a, b, 500)[1:])
    # the failed and the missing runs are listed, not dropped
    assert rep.missing == [("VII", "vii_5", 0), ("VII", "vii_5", 1)]
    assert [p.name for p in rep.failed] == ["5_vii_4_seed1"]


def test_markdown_and_csv(sweep: Path) -> None:
    rep = build_report(sweep, paper="msrvtt9k", boot=200)
    md = format_markdown(rep, "t")
    assert "| I (`vii_0`) | 2 | 46.3 | 37.5 ± 17.7 | 71.5 | 75.0 ± 35.4 | 14.1 | 2.9 ± 1.2 | -12.5 [" in md
    assert "| I+V+F+T (`vii_6`) **ref** | 2 | 48.8 | 50.0 ± 0.0 |" in md
    assert "- missing: `vii_5` seed 0 (Table VII): no run directory" in md
    assert "- failed: `" in md and "5_vii_4_seed1`" in md
    rows = list(csv.DictReader(io.StringIO(format_csv(rep))))
    by = {(r["row"], r["status"]): r for r in rows}
    assert float(by[("vii_0", "ok")]["R1_mean"]) == pytest.approx(37.5)
    assert by[("vii_0", "ok")]["R1_per_seed"] == "25.0;50.0"
    assert [r["status"] for r in rows].count("missing") == 2 and [r["status"] for r in rows].count("failed") == 1


def test_without_a_multirun_file_every_row_of_the_table_is_expected(sweep: Path) -> None:
    (sweep / "multirun.yaml").unlink()
    rep = build_report(sweep, paper="none", boot=100)
    missing_rows = {row for _, row, _ in rep.missing}
    assert missing_rows == {"vii_1", "vii_2", "vii_3", "vii_5"}  # Table VII's seven rows, seeds 0 and 1
    assert rep.tables["VII"][0]["R1_paper"] is None


def test_user_errors(sweep: Path, tmp_path: Path) -> None:
    with pytest.raises(LSDOUserError, match="no such directory"):
        build_report(tmp_path / "nope")
    with pytest.raises(LSDOUserError, match="paper=coco: expected auto, none or one of"):
        build_report(sweep, paper="coco")
    with pytest.raises(LSDOUserError, match="reference=vii_9: not a row of this sweep"):
        build_report(sweep, reference="vii_9")
    (tmp_path / "empty").mkdir()
    with pytest.raises(LSDOUserError, match="no run directories"):
        build_report(tmp_path / "empty")
    assert report_main([str(tmp_path / "nope")]) == 2


def test_report_of_a_real_multirun(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``python train.py -m 'ablation=glob(xi_*)' seed=0,1`` (tiny, one step each); one run deleted (missing)
    and one result removed (failed): the table holds the rest, computed from the runs' own files."""
    proc = run_cli(
        "train.py", "-m", "variant=average", "ablation=glob(xi_*)", "seed=0,1", *TINY_OVERRIDES,
        "debug=fast_dev_run", f"paths.log_dir={tmp_path}", timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    sweep = next((tmp_path / "debug" / "multiruns").glob("*"))
    jobs = sorted(p.name for p in sweep.iterdir() if p.is_dir())
    assert len(jobs) == 6 and {j.split("_", 1)[1] for j in jobs} == {
        f"xi_{k}_seed{s}" for k in ("fc", "bottleneck", "inverted_bottleneck") for s in (0, 1)
    }
    shutil.rmtree(next(sweep.glob("*_xi_bottleneck_seed1")))  # never ran: missing
    (next(sweep.glob("*_xi_inverted_bottleneck_seed0")) / "metrics.json").unlink()  # failed
    assert report_main([str(sweep), f"out={tmp_path / 'rep'}", "paper=msrvtt7k", "boot=200"]) == 0
    md = (tmp_path / "rep.md").read_text()
    assert "## Table XI (beside the paper's MV-7K figures)" in md and md.strip() in capsys.readouterr().out
    rows = {r["row"]: r for r in csv.DictReader(io.StringIO((tmp_path / "rep.csv").read_text())) if r["status"] == "ok"}

    def measured(row: str, seed: int) -> float:
        return json.loads((next(sweep.glob(f"*_{row}_seed{seed}")) / "metrics.json").read_text())["test"]["t2v/R1"]

    fc = [measured("xi_fc", 0), measured("xi_fc", 1)]
    assert float(rows["xi_fc"]["R1_mean"]) == pytest.approx(np.mean(fc))
    assert float(rows["xi_fc"]["R1_std"]) == pytest.approx(np.std(fc, ddof=1))
    assert rows["xi_bottleneck"]["seeds"] == "0" and rows["xi_inverted_bottleneck"]["seeds"] == "1"
    assert float(rows["xi_bottleneck"]["R1_delta"]) == pytest.approx(measured("xi_bottleneck", 0) - fc[0])
    assert float(rows["xi_fc"]["R1_paper"]) == 46.2  # Table XI, MV-7K
    assert "- missing: `xi_bottleneck` seed 1 (Table XI)" in md
    assert "xi_inverted_bottleneck_seed0`: no metrics.json" in md


def test_rows_follow_the_values_a_run_had_not_how_they_were_given(tmp_path: Path) -> None:
    """A key given to some runs at its default value (``trainer.max_epochs=60``) and left out by others does not
    split a row: rows are named by each overridden key's resolved value; a config group keeps the override."""
    root = tmp_path / "sweep"
    given = {  # run folder -> (its overrides, its dataset.flip)
        "plain_seed0": (["experiment=flip_study", "dataset.flip=plain", "seed=0", "trainer.max_epochs=60"], "plain"),
        "plain_seed1": (["experiment=flip_study", "dataset.flip=plain", "seed=1"], "plain"),
        "none_seed0": (["experiment=flip_study", "dataset.flip=none", "seed=0", "trainer.max_epochs=60"], "none"),
        "none_seed1": (["experiment=flip_study", "dataset.flip=none", "seed=1", "dataset.augment=true"], "none"),
    }
    for name, (overrides, flip) in given.items():
        path = root / name
        (path / ".hydra").mkdir(parents=True)
        seed = int(name[-1])
        cfg = {"seed": seed, "variant": {"name": "average"}, "trainer": {"max_epochs": 60},
               "dataset": {"flip": flip, "augment": True}}  # fmt: skip
        (path / "config.yaml").write_text(yaml.safe_dump(cfg))
        (path / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
        (path / "metrics.json").write_text(json.dumps({"test": {"t2v/R1": 50.0, "t2v/R5": 100.0, "t2v/MnR": 1.5}}))
        (path / "test_ranks.json").write_text(json.dumps({"t2v": [1, 2], "v2t": [1, 2]}))
    report = build_report(root, paper="none", reference="dataset.flip=plain")
    rows = {r["row"]: r for r in report.tables["-"]}
    assert set(rows) == {"dataset.flip=plain", "dataset.flip=none"}
    assert all(r["seeds"] == [0, 1] for r in rows.values())
