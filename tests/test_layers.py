"""The package map of dustpred/__init__.py holds: stages import only downwards, no circles."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "workflow" / "dustpred"
# Layers from the bottom; a module may import from its own layer and the ones before it.
LAYERS = [
    "core",
    "fits",
    "inputs",
    "sky",
    "cutouts",
    "polarisation",
    "models",
    "training",
    "evaluation",
    "qu_evaluation",
    "template",
    "figures",
    "realisations",
]
MAX_LINES = {"module": 560, "subpackage": 1750}


def layer(module: str) -> str:
    """``dustpred.sky.stack`` -> ``sky``; top-level modules are the core."""
    parts = module.split(".")
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and parts[1] in LAYERS) else "core"


def module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports(path: Path) -> set[str]:
    """The dustpred modules ``path`` imports (also inside functions and TYPE_CHECKING)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("dustpred"):
            for alias in node.names:
                candidate = f"{node.module}.{alias.name}"
                is_module = (PACKAGE.parent / candidate.replace(".", "/")).with_suffix(".py")
                found.add(candidate if is_module.exists() else node.module)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("dustpred")}
    return found


GRAPH = {module_name(p): imports(p) for p in PACKAGE.rglob("*.py")}


@pytest.mark.parametrize("module", sorted(GRAPH))
def test_module_imports_only_its_layer_and_the_ones_below(module):
    upward = [
        dep for dep in GRAPH[module] if LAYERS.index(layer(dep)) > LAYERS.index(layer(module))
    ]
    assert upward == [], f"{module} ({layer(module)}) imports upwards: {upward}"


def test_the_import_graph_has_no_circle():
    state: dict[str, str] = {}

    def visit(node, path):
        state[node] = "open"
        for dep in sorted(GRAPH.get(node, ())):
            if dep == node or dep not in GRAPH:
                continue
            assert state.get(dep) != "open", f"import circle: {' -> '.join([*path, dep])}"
            if dep not in state:
                visit(dep, [*path, dep])
        state[node] = "done"

    for module in sorted(GRAPH):
        if module not in state:
            visit(module, [module])


def test_every_module_and_subpackage_stays_small():
    sizes = {p: len(p.read_text().splitlines()) for p in PACKAGE.rglob("*.py")}
    big = {str(p.relative_to(PACKAGE)): n for p, n in sizes.items() if n > MAX_LINES["module"]}
    per_package: dict[str, int] = {}
    for p, n in sizes.items():
        per_package[p.parent.name] = per_package.get(p.parent.name, 0) + n
    del per_package["dustpred"]  # the core is not a subpackage
    big |= {k: n for k, n in per_package.items() if n > MAX_LINES["subpackage"]}
    assert big == {}


def test_the_package_map_names_every_subpackage():
    doc = (PACKAGE / "__init__.py").read_text()
    subpackages = {p.parent.name for p in PACKAGE.glob("*/__init__.py")}
    assert subpackages == set(LAYERS[1:])
    assert all(f"``{name}``" in doc for name in subpackages)
