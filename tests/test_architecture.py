"""The layering the package promises (README "Layout"), checked on the source itself.

* the import graph of meanfield/ and solvers/ (every import statement, also those inside
  functions) has no cycles;
* theory (meanfield/theory) imports nothing from solvers or the workflow, and solvers import
  nothing from the workflow;
* no module outside meanfield/domains/ compares anything with a domain's name;
* nothing imports a private (underscore) name from another module.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("meanfield", "solvers")


def _modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for path in (ROOT / pkg).rglob("*.py"):
            rel = path.relative_to(ROOT).with_suffix("")
            parts = list(rel.parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = path
    return out


MODULES = _modules()


def _resolve(module: str, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    base = module.split(".")
    if not MODULES[module].name == "__init__.py":
        base = base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _imports(module: str) -> list[tuple[str, str | None, int]]:
    """(imported module, imported name or None, line) for every import in ``module``."""
    tree = ast.parse(MODULES[module].read_text())
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(a.name, None, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            target = _resolve(module, node)
            for a in node.names:
                sub = f"{target}.{a.name}"
                out.append((sub, None, node.lineno) if sub in MODULES
                           else (target, a.name, node.lineno))
    return out


def _graph() -> dict[str, set[str]]:
    graph = {}
    for mod in MODULES:
        deps = set()
        for target, _name, _line in _imports(mod):
            # an import of pkg.sub.x names the deepest known module
            while target and target not in MODULES:
                target = target.rpartition(".")[0]
            if target and target != mod:
                deps.add(target)
        graph[mod] = deps
    return graph


def _layer(mod: str) -> int:
    if mod.startswith("meanfield.theory") or mod == "meanfield._version":
        return 1
    if mod.startswith("solvers"):
        return 2
    return 3


def test_import_graph_has_no_cycles():
    graph = _graph()
    state: dict[str, int] = {}
    stack: list[str] = []
    cycles = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for d in sorted(graph[m]):
            if state.get(d) == 1:
                cycles.append(" -> ".join([*stack[stack.index(d):], d]))
            elif d not in state:
                visit(d)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_layers_point_down_only():
    graph = _graph()
    bad = [f"{m} (layer {_layer(m)}) imports {d} (layer {_layer(d)})"
           for m, deps in graph.items() for d in deps
           # the package facade meanfield/__init__ re-exports theory and opens files lazily
           if m != "meanfield" and _layer(d) > _layer(m)]
    assert not bad, "\n".join(bad)
    assert any(d.startswith("solvers") for deps in graph.values() for d in deps)  # sanity


def _package(mod: str) -> str:
    return mod if MODULES[mod].name == "__init__.py" else mod.rpartition(".")[0]


def test_no_private_names_across_packages():
    """A private name (leading underscore) is used only inside its own package folder."""
    bad = []
    for mod in MODULES:
        for target, name, line in _imports(mod):
            if name is not None and name.startswith("_") and not name.startswith("__") \
                    and target in MODULES and _package(target) != _package(mod):
                bad.append(f"{MODULES[mod].relative_to(ROOT)}:{line} imports {target}.{name}")
            if name is None and target.rpartition(".")[2].startswith("_") \
                    and target != "meanfield._version":
                bad.append(f"{MODULES[mod].relative_to(ROOT)}:{line} imports {target}")
    assert not bad, "\n".join(bad)


def _domain_names() -> set[str]:
    from meanfield.domains import DOMAINS

    return set(DOMAINS)


def _literals(node: ast.AST) -> list[str]:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node.value]
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        return [e.value for e in node.elts
                if isinstance(e, ast.Constant) and isinstance(e.value, str)]
    return []


def domain_switches(source: str, names: set[str]) -> list[int]:
    """Lines that compare something with a domain's name (==, !=, in, match-case)."""
    lines = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Compare):
            operands = [node.left, *node.comparators]
            if any(set(_literals(o)) & names for o in operands):
                lines.append(node.lineno)
        elif isinstance(node, ast.match_case):
            pats = [p for p in ast.walk(node.pattern) if isinstance(p, ast.MatchValue)]
            if any(set(_literals(p.value)) & names for p in pats):
                lines.append(node.pattern.lineno)
    return lines


def test_the_switch_detector_detects_switches():
    names = {"circle", "sphere"}
    src = ('if cfg["domain"] == "circle":\n    pass\n'
           'x = dom in ("sphere", "zonal")\n'
           'match d:\n    case "sphere":\n        pass\n'
           'ok = {"circle": 1}\nname = "circle"\n')
    assert domain_switches(src, names) == [1, 3, 5]


def test_no_switch_on_a_domain_name_outside_the_domain_modules():
    names = _domain_names()
    assert names >= {"circle", "sphere", "zonal", "particles"}
    bad = []
    for mod, path in MODULES.items():
        if mod.startswith("meanfield.domains"):
            continue
        for line in domain_switches(path.read_text(), names):
            bad.append(f"{path.relative_to(ROOT)}:{line}")
    assert not bad, "switches on a domain name outside meanfield/domains/:\n" + "\n".join(bad)


@pytest.mark.parametrize("contract,impl", [
    ("Drift", "solvers.drifts.convolution:Convolution"),
    ("Drift", "solvers.drifts.rotation:RigidRotation"),
    ("Scheme", "solvers.circle:FiniteVolume"),
    ("Scheme", "solvers.zonal:Zonal"),
])
def test_registered_implementations_follow_their_contract(contract, impl):
    import importlib

    from solvers import contracts

    protocol = getattr(contracts, contract)
    mod, cls = impl.split(":")
    obj = getattr(importlib.import_module(mod), cls)
    members = {n for n in vars(protocol) if not n.startswith("_")} | set(
        protocol.__annotations__)
    missing = [m for m in sorted(members) if not hasattr(obj, m)
               and m not in getattr(obj, "__annotations__", {})]
    if contract == "Scheme":  # instance attributes set in __init__
        missing = [m for m in missing if m not in ("cfl", "reference_density")]
    assert not missing, f"{impl} lacks {missing} of the {contract} contract"


def test_every_registered_drift_and_domain_is_documented():
    from meanfield.domains import DOMAINS
    from solvers.drifts import DRIFTS

    for name, cls in DRIFTS.items():
        assert cls.name == name and cls.__doc__ and cls.PARAMETERS is not None
    for name, dom in DOMAINS.items():
        assert dom.name == name and dom.summary
