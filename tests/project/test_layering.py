"""The package's layering rule (docs/architecture.md): a module imports only from its own stage and
the stages below it, and no import cycle exists. Every import counts, at module level and inside
functions (an import inside a function hides a cycle from Python, not from a reader)."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "mixdpo_kit"
# The stages, lowest first: a module may import its own stage and any stage listed before it.
LAYERS = ["core", "objectives", "data", "modeling", "margins", "reports", "evaluation", "training",
          "workflows", "interface"]
FACADE = {"mixdpo_kit", "mixdpo_kit.__main__"}  # the short public imports and `python -m`: above every stage


def package_sources() -> dict[str, str]:
    """Every module of the package by dotted name (a package's ``__init__`` under its own name)."""
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path.read_text()
    return out


def imports_of(text: str, modules: set[str]) -> set[str]:
    """The kit's modules that ``text`` imports, anywhere in it."""
    found = set()
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "mixdpo_kit"}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "mixdpo_kit":
            for alias in node.names:  # `from pkg import module` imports the module
                sub = f"{node.module}.{alias.name}"
                found.add(sub if sub in modules else node.module)
    return found


def layer(module: str) -> int | None:
    parts = module.split(".")
    return LAYERS.index(parts[1]) if len(parts) > 1 and parts[1] in LAYERS else None


def layering_violations(sources: dict[str, str]) -> list[str]:
    """Each import that breaks the rule, as ``importer -> imported (why)``."""
    modules, bad = set(sources), []
    for name, text in sources.items():
        if name in FACADE:
            continue
        if layer(name) is None:
            bad.append(f"{name} (in no stage: put it in one of {LAYERS})")
            continue
        for target in sorted(imports_of(text, modules)):
            if target in FACADE:
                bad.append(f"{name} -> {target} (the facade is for users; import the defining module)")
            elif target not in modules:
                bad.append(f"{name} -> {target} (no such module)")
            elif layer(target) > layer(name):
                bad.append(f"{name} -> {target} ({LAYERS[layer(target)]} is above {LAYERS[layer(name)]})")
    return bad


def import_cycles(sources: dict[str, str]) -> list[list[str]]:
    """The import cycles among the modules (each as a path that returns to its start)."""
    modules = set(sources)
    graph = {name: sorted(imports_of(text, modules) & modules - {name}) for name, text in sources.items()}
    cycles, state = [], {}

    def visit(node, path):
        state[node] = "open"
        for nxt in graph[node]:
            if state.get(nxt) == "open":
                cycles.append(path[path.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = "done"

    for start in sorted(graph):
        if start not in state:
            visit(start, [start])
    return cycles


def test_every_module_imports_only_its_own_stage_and_those_below():
    assert layering_violations(package_sources()) == []


def test_no_import_cycles():
    assert import_cycles(package_sources()) == []


@pytest.mark.parametrize("added", ["from mixdpo_kit.interface.cli import main",
                                   "def f():\n    from mixdpo_kit.workflows import runs\n",
                                   "from mixdpo_kit import run_demo"])
def test_an_upward_import_is_caught(added):
    sources = package_sources()
    sources["mixdpo_kit.core.units"] += "\n" + added + "\n"
    bad = layering_violations(sources)
    assert len(bad) == 1 and bad[0].startswith("mixdpo_kit.core.units -> "), bad


def test_a_cycle_inside_one_stage_is_caught():
    sources = package_sources()  # logprobs imports pairbatch; the reverse closes a cycle
    sources["mixdpo_kit.modeling.pairbatch"] += "\ndef f():\n    from mixdpo_kit.modeling.logprobs import token_logps\n"
    assert layering_violations(sources) == []  # same stage: the layer rule allows it ...
    assert any({"mixdpo_kit.modeling.pairbatch", "mixdpo_kit.modeling.logprobs"} <= set(c)
               for c in import_cycles(sources))  # ... the cycle test does not


def test_a_module_outside_every_stage_is_caught():
    sources = {**package_sources(), "mixdpo_kit.helpers": "import numpy\n"}
    assert layering_violations(sources) == ["mixdpo_kit.helpers (in no stage: put it in one of %s)" % LAYERS]


def test_the_architecture_doc_draws_this_tree():
    doc = (PACKAGE.parent / "docs" / "architecture.md").read_text()
    for name in package_sources():
        if name not in FACADE and "__init__" not in name and name.count(".") == 2:
            stage, module = name.split(".")[1:]
            assert f"{module}.py" in doc, f"docs/architecture.md does not name {stage}/{module}.py"
    positions = [doc.index(f"{stage}/") for stage in LAYERS]
    assert positions == sorted(positions), "docs/architecture.md lists the stages in another order than LAYERS"
