"""The package's layers: every ``import`` of an lsdo module (function-local ones included) points down or
sideways within a layer, never up, and no modules import each other round in a cycle.

The rooms, bottom to top (docs/architecture.md):

0. base: ``config``, ``errors``, ``options`` (typed tool options), ``runtime`` (run directory, device), ``names``,
   ``reporting`` (tables), ``plots``, ``stats``, ``sweep_report`` (lsdo-report): no lsdo import above them;
1. ``inverse_attention`` primitives (heatmap, LARD, LARC, LACE, LAFM, grid, the region encoder): open_clip only;
2. ``model``: the LSDO blocks (the ``regions`` variant uses the primitives of 1);
3. ``checkpoint``: the one way from a file to a model;
4. ``data`` and ``retrieval`` (metrics, scorers, the index and its builder); the ``lsdo-viz`` figure;
5. training pieces and measurements: ``loss``, ``callbacks``, ``lightning_module``, ``premise``,
   ``inverse_attention.zero_shot``;
6. ``train``, ``evaluate``, ``zeroshot``: the runs;
7. entry points: the ``cli`` package (every console script and Hydra main, one module each).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "lsdo"

LAYERS: dict[str, int] = {  # module prefix -> layer; the longest matching prefix wins
    "lsdo": 0,
    "lsdo.config": 0,
    "lsdo.errors": 0,
    "lsdo.options": 0,
    "lsdo.runtime": 0,
    "lsdo.processes": 0,
    "lsdo.schema": 0,
    "lsdo.names": 0,
    "lsdo.reporting": 0,
    "lsdo.plots": 0,
    "lsdo.stats": 0,
    "lsdo.sweep_report": 0,
    "lsdo.inverse_attention": 1,
    "lsdo.model": 2,
    "lsdo.checkpoint": 3,
    "lsdo.data": 4,
    "lsdo.retrieval": 4,
    "lsdo.loss": 5,
    "lsdo.callbacks": 5,
    "lsdo.lightning_module": 5,
    "lsdo.premise": 5,
    "lsdo.inverse_attention.zero_shot": 5,
    "lsdo.train": 6,
    "lsdo.evaluate": 6,
    "lsdo.zeroshot": 6,
    "lsdo.inverse_attention.viz": 4,
    "lsdo.paper_figures": 4,
    "lsdo.cli": 7,
}


def modules() -> dict[str, Path]:
    out = {}
    for f in PACKAGE.rglob("*.py"):
        parts = f.relative_to(ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = f
    return out


def imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The lsdo modules ``name`` imports anywhere in its file (``from pkg import sub`` counts as pkg.sub)."""
    is_pkg = path.name == "__init__.py"
    here = name if is_pkg else name.rsplit(".", 1)[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "lsdo"}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here.split(".")[: len(here.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "lsdo":
                continue
            subs = {f"{target}.{a.name}" for a in node.names} & known
            found |= subs or {target}
            if subs and len(subs) < len(node.names):
                found.add(target)
    found.discard(name)
    return {m for m in found if m in known}


def layer(name: str) -> int:
    best = max((p for p in LAYERS if name == p or name.startswith(p + ".")), key=len)
    return LAYERS[best]


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    mods = modules()
    return {name: imports(name, path, set(mods)) for name, path in mods.items()}


def test_every_module_has_a_room() -> None:
    assert "lsdo.model.frame_lsdo" in modules()  # the walk finds the package
    for name in modules():
        layer(name)  # no KeyError: the "lsdo" entry catches the rest at layer 0, so check it is meant
    top = {n for n in modules() if n.count(".") == 1}
    assert all(any(n == p or n.startswith(p + ".") for p in LAYERS if p != "lsdo") for n in top), top


def test_imports_point_down(graph: dict[str, set[str]]) -> None:
    upward = sorted(
        f"{a} (layer {layer(a)}) imports {b} (layer {layer(b)})" for a, bs in graph.items() for b in bs
        if layer(b) > layer(a)
    )  # fmt: skip
    assert not upward, "upward imports:\n" + "\n".join(upward)


def test_no_import_cycles(graph: dict[str, set[str]]) -> None:
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    cycles: list[list[str]] = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append(path[path.index(nxt) :] + [nxt] if nxt in path else [node, nxt])
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = 2

    for start in sorted(graph):
        if start not in state:
            visit(start, [start])
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_the_checker_sees_what_it_should() -> None:
    """The parser itself: relative, function-local and ``from pkg import submodule`` imports all count."""
    mods = modules()
    found = imports("lsdo.data.datamodule", mods["lsdo.data.datamodule"], set(mods))
    assert "lsdo.data.synthetic" in found  # from lsdo.data import synthetic
    assert "lsdo.data.factory" in imports("lsdo.data", mods["lsdo.data"], set(mods))  # inside __getattr__
    assert layer("lsdo.cli.index") == 7 and layer("lsdo.retrieval.index") == 4 and layer("lsdo.retrieval.build") == 4
