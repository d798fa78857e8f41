"""``lsdo-report SWEEP_DIR``: a sweep's runs as the paper's table, beside the paper's figures.

Every run directory under ``SWEEP_DIR`` (a Hydra multirun's job folders, or any folders holding a run's
``config.yaml`` / ``.hydra/config.yaml``) is read:

* its **row**: ``ablation.name`` (``ablation=vii_4``: a row of Tables VI-XI), else the Tables I-V preset's
  ``paper.row`` (``experiment=msrvtt9k_average``), else the run's command-line overrides that differ between
  runs, each with the value the run had (its resolved config), else ``variant.name``;
* its **result**: ``metrics.json``'s ``test`` section and the per-query ranks of ``test_ranks.json``.
  A run directory without them is **failed**; a (row, seed) the sweep asked for with no directory at all
  is **missing**. Both are listed under the table, never dropped silently.

For each row and metric (t2v; R@1, R@5, MnR as the ablation tables, R@10 and MdR as well for Tables I-V):
the paper's figure (for one dataset, ``paper=``), the measured mean +- sample std over seeds, and the
paired difference to the table's **reference row** (``ablation.reference: true``, the paper's
configuration; else ``reference=``): mean over the common seeds and test queries of row - reference,
with a 95% bootstrap interval resampling seeds and queries (:func:`lsdo.stats.paired_bootstrap`).

The expected (row, seed) pairs: the sweep's own axes where its ``multirun.yaml`` names them
(``ablation=glob(vii_*)``, ``ablation=vii_0,vii_6``, ``seed=0,1,2``, ``seed=range(0,3)``), else every row
of the table (``configs/ablation/``) times every seed seen.
"""

from __future__ import annotations

import csv
import fnmatch
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from lsdo.errors import LSDOUserError
from lsdo.options import option
from lsdo.stats import paired_bootstrap, per_query

PAPER_DATASETS = ("msrvtt9k", "msrvtt7k", "msvd", "lsmdc", "didemo")
PAPER_NAMES = {"msrvtt9k": "MV-9K", "msrvtt7k": "MV-7K", "msvd": "MSVD", "lsmdc": "LSMDC", "didemo": "DiDeMo"}
TABLE_DATASET = {"I": "msrvtt9k", "II": "msrvtt7k", "III": "msvd", "IV": "lsmdc", "V": "didemo"}  # Tables I-V
ABLATION_METRICS = ("R1", "R5", "MnR")  # the columns of Tables VI-XI
MAIN_METRICS = ("R1", "R5", "R10", "MdR", "MnR")  # the columns of Tables I-V
LOWER_IS_BETTER = ("MdR", "MnR")
HEADER = {"R1": "R@1", "R5": "R@5", "R10": "R@10", "MdR": "MdR", "MnR": "MnR"}


@dataclass
class Run:
    """One run directory of a sweep."""

    path: Path
    table: str
    row: str
    label: str
    seed: int
    reference: bool
    paper: dict[str, dict[str, float]]  # dataset -> metric -> the paper's figure ("" = any dataset)
    overrides: dict[str, str] = field(default_factory=dict)  # its row-making command-line overrides, key -> value
    config: dict[str, Any] = field(default_factory=dict, repr=False)  # its resolved config
    test: dict[str, float] | None = None  # metrics.json's test section; None: failed
    ranks: list[int] | None = None  # t2v ranks per query


@dataclass
class Row:
    key: str
    label: str
    order: int
    reference: bool
    paper: dict[str, dict[str, float]]
    runs: list[Run] = field(default_factory=list)


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise LSDOUserError(f"{path}: not a readable YAML file ({str(exc).splitlines()[0]})") from None
    return data if isinstance(data, dict) else {}


def _run_of(path: Path) -> Run:
    cfg_file = path / "config.yaml" if (path / "config.yaml").is_file() else path / ".hydra" / "config.yaml"
    cfg = _read_yaml(cfg_file)
    ablation, paper = cfg.get("ablation") or {}, cfg.get("paper") or {}
    variant = (cfg.get("variant") or {}).get("name", "?")
    if ablation:
        table, row, label = str(ablation.get("table")), str(ablation.get("name")), str(ablation.get("label"))
        figures = {str(k): dict(v) for k, v in (ablation.get("paper") or {}).items()}
        reference = bool(ablation.get("reference", False))
    elif paper:
        table, row, label = str(paper.get("table")), str(paper.get("row")), str(paper.get("row"))
        figures = {TABLE_DATASET.get(table, ""): dict(paper.get("t2v") or {})}
        reference = False
    else:
        table, figures, reference = "-", {}, False
        overrides = _varied(path)
        row = label = variant  # named by its overrides' values in build_report (_effective_rows)
    run = Run(path, table, row, label, int(cfg.get("seed", 0)), reference, figures)
    if table == "-":
        run.overrides, run.config = overrides, cfg
    metrics_file, ranks_file = path / "metrics.json", path / "test_ranks.json"
    if metrics_file.is_file() and ranks_file.is_file():
        try:
            test = json.loads(metrics_file.read_text()).get("test")
            ranks = json.loads(ranks_file.read_text()).get("t2v")
        except (OSError, ValueError, AttributeError):
            return run  # unreadable: listed as failed
        if isinstance(test, dict) and isinstance(ranks, list) and ranks:
            run.test, run.ranks = test, [int(r) for r in ranks]
    return run


IGNORED_OVERRIDES = ("seed", "ckpt_path", "hydra.", "paths.")  # not what makes a row


def _varied(path: Path) -> dict[str, str]:
    """A run's own command-line overrides (Hydra's ``.hydra/overrides.yaml``) but its seed and paths, sorted:
    key -> value as given."""
    file = path / ".hydra" / "overrides.yaml"
    if not file.is_file():
        return {}
    try:
        overrides = yaml.safe_load(file.read_text()) or []
    except (OSError, yaml.YAMLError):
        return {}
    keep = [str(o) for o in overrides if not str(o).lstrip("+~").startswith(IGNORED_OVERRIDES)]
    return dict(sorted(o.split("=", 1) if "=" in o else (o, "") for o in keep))


def _effective_rows(runs: list[Run]) -> None:
    """Rows named by overrides give every overridden key the value the run had (its resolved config), so a
    run that sets a key to its default and one that leaves it out share a row (``trainer.max_epochs=60``
    given to some runs only). A key whose value is a config group (``variant=shared``) keeps the override
    as given."""
    from omegaconf import OmegaConf

    keys = sorted({k for r in runs for k in r.overrides if not k.startswith("~")})
    if not keys:
        return
    absent = object()
    for r in runs:
        config, tokens = OmegaConf.create(r.config), []
        for key in keys:
            value = OmegaConf.select(config, key.lstrip("+"), default=absent)
            if value is None or isinstance(value, (str, int, float, bool)):  # a leaf: the value the run had
                text = "null" if value is None else str(value).lower() if isinstance(value, bool) else str(value)
                tokens.append(f"{key.lstrip('+')}={text}")
            elif key in r.overrides:  # a config group (or a key this run's config lacks): as given
                tokens.append(f"{key}={r.overrides[key]}")
        tokens += [k for k in r.overrides if k.startswith("~")]
        r.row = r.label = " ".join(tokens) or r.row


def find_runs(sweep: Path) -> list[Run]:
    """Every run directory under ``sweep`` (one holding ``config.yaml`` or ``.hydra/config.yaml``)."""
    if not sweep.is_dir():
        raise LSDOUserError(f"{sweep}: no such directory (give a sweep directory, e.g. logs/train/multiruns/<date>)")
    dirs = {p.parent for p in sweep.rglob("config.yaml") if p.parent.name != ".hydra"}
    dirs |= {p.parent.parent for p in sweep.rglob(".hydra/config.yaml")}
    dirs = {d for d in dirs if not any(a in dirs for a in d.parents)}  # the outermost: a run's own sub-folders aside
    return [_run_of(d) for d in sorted(dirs)]


def _shorten_rows(runs: list[Run]) -> None:
    """Rows named by overrides keep only the ones that differ between runs (``variant=shared``, not the
    ``experiment=...`` every run shares)."""
    tokens = [set(r.row.split(" ")) for r in runs if "=" in r.row]
    if len(tokens) < 2:
        return
    common = set.intersection(*tokens)
    for r in runs:
        if "=" in r.row:
            r.row = r.label = " ".join(t for t in r.row.split(" ") if t not in common) or r.row


def _axis_values(text: str) -> list[str]:
    """A Hydra sweep axis's values: ``a,b,c``, ``range(0,3)`` / ``range(3)``, ``glob(vii_*)`` (kept as one)."""
    text = text.strip()
    if text.startswith("range(") and text.endswith(")"):
        args = [int(x) for x in text[6:-1].split(",") if x.strip()]
        return [str(v) for v in range(*args)]
    if text.startswith("glob("):
        return [text]
    return [v.strip() for v in text.split(",") if v.strip()]


def sweep_axes(sweep: Path) -> dict[str, list[str]]:
    """The ``seed`` and ``ablation`` axes a Hydra multirun was asked for (its ``multirun.yaml``); {} if none."""
    files = sorted(sweep.rglob("multirun.yaml"))
    if not files:
        return {}
    overrides = ((_read_yaml(files[0]).get("hydra") or {}).get("overrides") or {}).get("task") or []
    axes: dict[str, list[str]] = {}
    for o in overrides:
        key, _, value = str(o).partition("=")
        if key.lstrip("+~") in ("seed", "ablation"):
            axes[key.lstrip("+~")] = _axis_values(value)
    return axes


def ablation_rows(config_dir: Path) -> dict[str, dict[str, Any]]:
    """Every ``configs/ablation/*.yaml``'s ``ablation`` section, by name, in the paper's row order."""
    rows = {}
    for path in sorted(config_dir.glob("*.yaml")):
        section = _read_yaml(path).get("ablation")
        if isinstance(section, dict) and section.get("name"):
            rows[str(section["name"])] = section
    return dict(sorted(rows.items(), key=lambda kv: (str(kv[1].get("table")), int(kv[1].get("position", 0)), kv[0])))


def _row_order(name: str, known: dict[str, dict[str, Any]]) -> int:
    names = list(known)
    return names.index(name) if name in names else len(names)


def _expected(
    runs: list[Run], axes: dict[str, list[str]], known: dict[str, dict[str, Any]]
) -> set[tuple[str, str, int]]:
    """(table, row, seed) the sweep asked for."""
    seeds = {r.seed for r in runs} | {int(s) for s in axes.get("seed", []) if s.lstrip("-").isdigit()}
    expected: set[tuple[str, str, int]] = set()
    tables = {r.table for r in runs}
    for table in tables:
        rows = {r.row for r in runs if r.table == table}
        if table in {str(v.get("table")) for v in known.values()}:
            table_rows = {n for n, v in known.items() if str(v.get("table")) == table}
            asked = axes.get("ablation")
            if asked:
                rows |= {n for n in table_rows if any(fnmatch.fnmatch(n, _pattern(a)) for a in asked)}
            else:
                rows |= table_rows
        expected |= {(table, row, s) for row in rows for s in seeds}
    return expected


def _pattern(axis_value: str) -> str:
    return axis_value[5:-1] if axis_value.startswith("glob(") and axis_value.endswith(")") else axis_value


@dataclass
class Report:
    tables: dict[str, list[dict[str, Any]]]  # table -> rows (what the CSV holds)
    missing: list[tuple[str, str, int]]
    failed: list[Path]
    paper: str | None
    reference: dict[str, str]  # table -> reference row key


def build_report(
    sweep: str | Path,
    paper: str = "auto",
    reference: str | None = None,
    boot: int = 2000,
    config_dir: str | Path | None = None,
) -> Report:
    """Read a sweep and compute every row's statistics (see the module docstring)."""
    from lsdo.config import CONFIG_DIR

    sweep = Path(sweep)
    runs = find_runs(sweep)
    if not runs:
        raise LSDOUserError(f"{sweep}: no run directories (folders with config.yaml or .hydra/config.yaml) under it")
    known = ablation_rows(Path(config_dir) if config_dir else CONFIG_DIR / "ablation")
    if paper == "auto":
        found = {TABLE_DATASET[r.table] for r in runs if r.table in TABLE_DATASET}
        paper = found.pop() if len(found) == 1 else "none"
    if paper not in (*PAPER_DATASETS, "none"):
        raise LSDOUserError(f"paper={paper}: expected auto, none or one of {', '.join(PAPER_DATASETS)}")
    _effective_rows([r for r in runs if r.table == "-"])
    _shorten_rows([r for r in runs if r.table == "-"])
    failed = [r.path for r in runs if r.test is None]
    seen = {(r.table, r.row, r.seed) for r in runs}  # done or failed: either way not missing
    missing = sorted(_expected(runs, sweep_axes(sweep), known) - seen)

    tables: dict[str, list[dict[str, Any]]] = {}
    references: dict[str, str] = {}
    for table in sorted({r.table for r in runs}):
        rows: dict[str, Row] = {}
        for r in runs:
            if r.table == table:
                row = rows.setdefault(r.row, Row(r.row, r.label, _row_order(r.row, known), r.reference, r.paper))
                if r.test is not None:
                    row.runs.append(r)
        for name, section in known.items():  # rows of the table the sweep asked for but no run reached
            if str(section.get("table")) == table and any(m[1] == name for m in missing) and name not in rows:
                figures = {str(k): dict(v) for k, v in (section.get("paper") or {}).items()}
                rows[name] = Row(
                    name, str(section.get("label")), _row_order(name, known), bool(section.get("reference")), figures
                )
        ordered = sorted(rows.values(), key=lambda x: (x.order, x.key))
        ref = reference if reference in rows else next((x.key for x in ordered if x.reference), None)
        metrics = MAIN_METRICS if table in TABLE_DATASET else ABLATION_METRICS
        tables[table] = [_row_stats(x, rows.get(ref) if ref else None, metrics, paper, boot) for x in ordered]
        if ref:
            references[table] = ref
    if reference and not any(r["row"] == reference for rows in tables.values() for r in rows):
        known_rows = ", ".join(r["row"] for rows in tables.values() for r in rows)
        raise LSDOUserError(f"reference={reference}: not a row of this sweep ({known_rows})")
    return Report(tables, missing, failed, None if paper == "none" else paper, references)


def _row_stats(row: Row, ref: Row | None, metrics: tuple[str, ...], paper: str, boot: int) -> dict[str, Any]:
    runs = sorted(row.runs, key=lambda r: r.seed)
    out: dict[str, Any] = {"row": row.key, "label": row.label, "seeds": [r.seed for r in runs], "reference": ref is row}
    figures = row.paper.get(paper) or row.paper.get("") or {}
    ref_runs = {r.seed: r for r in ref.runs} if ref is not None else {}
    paired = ref is not None and ref is not row
    common = [r for r in runs if r.seed in ref_runs] if paired else []
    out["paired_seeds"] = [r.seed for r in common]
    for m in metrics:
        values = np.array([float(r.test[f"t2v/{m}"]) for r in runs if f"t2v/{m}" in r.test])  # type: ignore[index]
        out[f"{m}_paper"] = figures.get(m) if paper != "none" else None
        out[f"{m}_mean"] = float(values.mean()) if len(values) else None
        out[f"{m}_std"] = float(values.std(ddof=1)) if len(values) > 1 else None
        out[f"{m}_per_seed"] = [float(v) for v in values]
        delta = (None, None, None)
        if common and m != "MdR":
            a = np.stack([per_query(r.ranks, m) for r in common])  # type: ignore[arg-type]  # [S, Q]
            b = np.stack([per_query(ref_runs[r.seed].ranks, m) for r in common])  # type: ignore[arg-type]
            if a.shape != b.shape:
                raise LSDOUserError(
                    f"{common[0].path} and {ref_runs[common[0].seed].path}: different test sets "
                    f"({a.shape[1]} vs {b.shape[1]} queries); a paired difference needs the same queries"
                )
            delta = paired_bootstrap(a, b, boot)
        out[f"{m}_delta"], out[f"{m}_lo"], out[f"{m}_hi"] = delta
    return out


def _fmt(v: float | None, digits: int = 1) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}f}"


def format_markdown(report: Report, title: str = "") -> str:
    """The report as Markdown: one table per paper table, then the runs that are not in it."""
    lines = [f"# {title}" if title else "# Sweep report", ""]
    paper = report.paper
    for table, rows in report.tables.items():
        metrics = [m for m in (*MAIN_METRICS, *ABLATION_METRICS) if f"{m}_mean" in rows[0]]
        metrics = list(dict.fromkeys(metrics))
        ref = report.reference.get(table)
        name = f"Table {table}" if table != "-" else "Runs"
        lines += [f"## {name}" + (f" (beside the paper's {PAPER_NAMES[paper]} figures)" if paper else ""), ""]
        head = ["row", "seeds"]
        for m in metrics:
            head += [f"{HEADER[m]} paper", f"{HEADER[m]} ours"] if paper else [f"{HEADER[m]} ours"]
        head += [f"Δ{HEADER[m]} vs ref [95% CI]" for m in metrics if m != "MdR"] if ref else []
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for r in rows:
            label = (r["label"] if r["label"] == r["row"] else f"{r['label']} (`{r['row']}`)") + (
                " **ref**" if r["reference"] else ""
            )
            cells = [label, str(len(r["seeds"]))]
            for m in metrics:
                ours = _fmt(r[f"{m}_mean"]) + (f" ± {_fmt(r[f'{m}_std'])}" if r[f"{m}_std"] is not None else "")
                cells += [_fmt(r[f"{m}_paper"]), ours] if paper else [ours]
            if ref:
                for m in metrics:
                    if m == "MdR":
                        continue
                    d = r[f"{m}_delta"]
                    cells.append("-" if d is None else f"{d:+.1f} [{r[f'{m}_lo']:+.1f}, {r[f'{m}_hi']:+.1f}]")
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
        lines.append(
            "ours: mean ± sample std over seeds (t2v, test split). "
            + (
                f"Δ: row minus the reference row `{ref}`, over the seeds both have and the test queries, with a "
                "95% bootstrap interval (seeds and queries resampled); MnR: lower is better."
                if ref
                else "No reference row: no paired differences."
            )
        )
        lines.append("")
    if report.missing or report.failed:
        lines += ["## Runs not in the table", ""]
        lines += [
            f"- missing: `{row}` seed {seed} (Table {table}): no run directory" for table, row, seed in report.missing
        ]
        lines += [f"- failed: `{p}`: no metrics.json / test_ranks.json (see its log)" for p in report.failed]
        lines.append("")
    else:
        lines += ["Every run the sweep asked for is in the table.", ""]
    return "\n".join(lines)


def format_csv(report: Report) -> str:
    """One line per (table, row): paper figure, mean, std, per-seed values, Δ and its interval per metric."""
    buf = io.StringIO()
    fields: list[str] = ["table", "row", "label", "reference", "seeds"]
    for rows in report.tables.values():
        for key in rows[0]:
            if key not in fields and key not in ("paired_seeds",):
                fields.append(key)
    writer = csv.DictWriter(buf, fieldnames=[*fields, "paired_seeds", "status"], lineterminator="\n")
    writer.writeheader()
    for table, rows in report.tables.items():
        for r in rows:
            line = {k: (";".join(str(x) for x in v) if isinstance(v, list) else v) for k, v in r.items()}
            writer.writerow({**line, "table": table, "status": "ok" if r["seeds"] else "no runs"})
    for table, row, seed in report.missing:
        writer.writerow({"table": table, "row": row, "seeds": str(seed), "status": "missing"})
    for p in report.failed:
        writer.writerow({"row": str(p), "status": "failed"})
    return buf.getvalue()


@dataclass
class ReportOptions:
    sweep_dir: str = option(
        "a sweep directory: a Hydra multirun's folder, or any folder of run folders", positional=True
    )
    out: str | None = option("write OUT.md and OUT.csv (null: <sweep_dir>/report.md and .csv)", None)
    paper: str = option(
        "the dataset whose published figures stand beside ours: auto (from the runs' experiment= preset), none, "
        + ", ".join(PAPER_DATASETS),
        "auto",
    )
    reference: str | None = option(
        "the row every other row is compared with (null: the table's own, the paper's configuration)", None
    )
    boot: int = option("bootstrap resamples of the paired difference", 2000, minimum=100)
    title: str | None = option("the report's heading (null: the sweep directory)", None)


def write_report(opts: ReportOptions) -> tuple[Path, Path, str]:
    """Build the report of ``opts.sweep_dir`` and write it as Markdown and CSV; returns (md, csv, markdown)."""
    report = build_report(opts.sweep_dir, paper=opts.paper, reference=opts.reference, boot=opts.boot)
    stem = Path(opts.out) if opts.out else Path(opts.sweep_dir) / "report"
    stem.parent.mkdir(parents=True, exist_ok=True)
    md_path, csv_path = stem.with_name(stem.name + ".md"), stem.with_name(stem.name + ".csv")
    markdown = format_markdown(report, opts.title or f"Sweep report: {opts.sweep_dir}")
    md_path.write_text(markdown)
    csv_path.write_text(format_csv(report))
    return md_path, csv_path, markdown
