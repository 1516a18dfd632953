"""The import graph of ``rmt_engine`` has no cycle, its folders are layered, and ``rmt_engine.study`` imports one way.

Layers (``rmt_engine/__init__.py`` and each folder's ``__init__`` state them): backend < linalg <
sampling < theory < montecarlo < study < report; a module may import its own folder and the folders
before it, never one after it. ``report`` reads cubes: of ``study`` it may import only the cube
format (``study.store``) and the study file parser (``study.spec``), never the driver. The top-level
modules (``cli``, ``testing``, ``pytest_plugin``) may import anything; ``_version`` and ``_moved``
import nothing of the engine.

Every module under ``rmt_engine/`` is parsed with ``ast`` (nothing is imported); an edge A -> B is
any ``import``/``from ... import`` in A, at module level or inside a function, relative or absolute,
that names module B of the package (``from . import store`` names ``rmt_engine.study.store``; ``from .x
import name`` names ``rmt_engine.x``). Importing a submodule also runs its parent packages'
``__init__``; those implicit edges are not counted, otherwise every module would close a trivial
cycle through ``rmt_engine/__init__.py``, which re-exports the public API from its submodules.
The explicit edges of ``rmt_engine/__init__.py`` (and of ``rmt_engine/study/__init__.py``) are
counted like any other.

``KNOWN_CYCLES`` lists the cycles that existed before this test and are not yet broken; the test
fails on any other cycle, and also when a known one is gone (remove it from the list then).
"""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "rmt_engine"

#: (empty: the one cycle found when this test was written, train_report <-> train_plots, was broken
#: by moving the report section that draws the figures into train_section.)
KNOWN_CYCLES: set = set()


def _modules() -> dict[str, tuple[Path, bool]]:
    out = {}
    for p in sorted(PKG.rglob("*.py")):
        parts = list(p.relative_to(PKG.parent).with_suffix("").parts)
        is_pkg = parts[-1] == "__init__"
        if is_pkg:
            parts = parts[:-1]
        out[".".join(parts)] = (p, is_pkg)
    return out


def _targets(mod: str, is_pkg: bool, node, mods) -> list[str]:
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
    else:
        if node.level:
            base = mod if is_pkg else mod.rpartition(".")[0]
            for _ in range(node.level - 1):
                base = base.rpartition(".")[0]
            target = base + ("." + node.module if node.module else "")
        else:
            target = node.module or ""
        names = [f"{target}.{a.name}" if f"{target}.{a.name}" in mods else target for a in node.names]
    out = []
    for x in names:
        while x and x not in mods:  # `import rmt_engine.study.run` -> that module; stdlib -> nothing
            x = x.rpartition(".")[0]
        if x and x != mod:
            out.append(x)
    return out


def import_graph() -> dict[str, set[str]]:
    mods = _modules()
    graph = {}
    for mod, (path, is_pkg) in mods.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        graph[mod] = {t for node in ast.walk(tree) if isinstance(node, (ast.Import, ast.ImportFrom))
                      for t in _targets(mod, is_pkg, node, mods)}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index, low, on, stack, out = {}, {}, set(), [], []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


LAYERS = ("backend", "linalg", "sampling", "theory", "montecarlo", "study", "report")
#: the only modules of ``study`` that ``report`` may import (the cube format and the study file parser)
REPORT_READS_FROM_STUDY = {"rmt_engine.study.store", "rmt_engine.study.spec"}
LEAVES = {"rmt_engine._version", "rmt_engine._moved"}  # import nothing of the engine; anyone may import them


def _layer(mod: str):
    parts = mod.split(".")
    return LAYERS.index(parts[1]) if len(parts) > 1 and parts[1] in LAYERS else None


def layer_violations(graph: dict[str, set[str]]) -> list[tuple[str, str, str]]:
    """(importer, imported, why) for every edge that points up the layers or into the study driver."""
    bad = []
    for mod, deps in graph.items():
        if mod in LEAVES:
            bad += [(mod, d, "a leaf imports the engine") for d in deps]
            continue
        here = _layer(mod)
        if here is None:  # rmt_engine/__init__, cli, testing, pytest_plugin: the top
            continue
        for d in deps:
            there = _layer(d)
            if d in LEAVES:
                continue
            if there is None:
                bad.append((mod, d, "imports a top-level module"))
            elif there > here:
                bad.append((mod, d, f"{LAYERS[here]} imports {LAYERS[there]} (upward)"))
            elif LAYERS[here] == "report" and LAYERS[there] == "study" and d not in REPORT_READS_FROM_STUDY:
                bad.append((mod, d, "report imports study driver code"))
    return sorted(bad)


def test_the_graph_sees_relative_absolute_and_function_level_imports():
    g = import_graph()
    assert "rmt_engine.study.spec" in g["rmt_engine.study.plan"]  # from .spec import ...
    assert "rmt_engine.study.store" in g["rmt_engine.study.plan"]  # from . import store as _store
    assert "rmt_engine.study.cluster" in g["rmt_engine.study.run"]  # function level
    assert "rmt_engine.study" in g["rmt_engine.cli"]  # function level, from .study import ...
    assert "rmt_engine.study.provenance" in g["rmt_engine.study.cluster"]
    assert "rmt_engine.theory.asymptotics" in g["rmt_engine.montecarlo.fields"]  # from ..theory.asymptotics


def test_every_module_lives_in_a_layer_but_the_top():
    top = {m for m in import_graph() if _layer(m) is None}
    assert top == {"rmt_engine", "rmt_engine.cli", "rmt_engine.testing", "rmt_engine.pytest_plugin",
                   "rmt_engine._version", "rmt_engine._moved"}, sorted(top)
    assert len(list(PKG.glob("*.py"))) <= 8


def test_imports_point_down_the_layers():
    assert layer_violations(import_graph()) == []


def test_an_upward_import_is_caught():
    """The check itself fails on a deliberate upward import (and on report -> the study driver)."""
    g = import_graph()
    g["rmt_engine.theory.bounds"] = g["rmt_engine.theory.bounds"] | {"rmt_engine.montecarlo.trial"}
    g["rmt_engine.report.analysis"] = g["rmt_engine.report.analysis"] | {"rmt_engine.study.run"}
    g["rmt_engine.linalg.spectra"] = g["rmt_engine.linalg.spectra"] | {"rmt_engine.cli"}
    found = layer_violations(g)
    assert ("rmt_engine.theory.bounds", "rmt_engine.montecarlo.trial", "theory imports montecarlo (upward)") in found
    assert ("rmt_engine.report.analysis", "rmt_engine.study.run", "report imports study driver code") in found
    assert ("rmt_engine.linalg.spectra", "rmt_engine.cli", "imports a top-level module") in found
    assert len(found) == 3


def test_cycles_are_found():
    g = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert cycles(g) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle():
    found = {frozenset(c) for c in cycles(import_graph())}
    assert found - KNOWN_CYCLES == set(), f"import cycles: {[sorted(c) for c in found - KNOWN_CYCLES]}"
    assert KNOWN_CYCLES - found == set(), f"no longer a cycle, remove from KNOWN_CYCLES: {KNOWN_CYCLES - found}"


def test_study_package_imports_flow_one_way():
    g = import_graph()
    order = ["spec", "plan", "tasks", "run"]  # each may import only those before it
    services = {"store", "cluster", "provenance", "resources"}  # beside the chain; import none of it
    sub = {m.rpartition(".")[2]: m for m in g if m.startswith("rmt_engine.study.")}
    assert set(order) <= set(sub), sorted(sub)
    for name, mod in sub.items():
        study_deps = {d.rpartition(".")[2] for d in g[mod] if d.startswith("rmt_engine.study")}
        assert "rmt_engine.study" not in g[mod], f"{mod} imports the package's __init__ (a cycle through it)"
        if name in order:
            allowed = set(order[:order.index(name)]) | ({"store_setup"} if name == "run" else set()) | services
        elif name in services:
            allowed = services
        else:  # helpers beside the chain (store_setup) sit on spec and the services only
            allowed = {"spec"} | services
        assert study_deps <= allowed, f"{mod} imports {sorted(study_deps - allowed)} of rmt_engine.study"
    assert not {d for d in g["rmt_engine.study.spec"] if d.startswith("rmt_engine.study")} - {
        f"rmt_engine.study.{s}" for s in services}
    assert not any("rmt_engine.study.run" in g[m] for m in g if m not in ("rmt_engine.study",)), \
        "only the package __init__ imports rmt_engine.study.run"


def test_cluster_does_not_import_the_study():
    g = import_graph()
    assert not {d for d in g["rmt_engine.study.cluster"] if d.startswith("rmt_engine.study")} - {
        "rmt_engine.study.provenance"}
