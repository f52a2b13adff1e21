"""The layering stays true: core -> engine -> app -> experiments -> cli, each importing only downward.

Every ``import`` in fcnkit (module level or inside a function) is parsed; a module may import
fcnkit modules of its own layer or below, the core imports neither Lightning nor torchmetrics,
and the module graph has no cycles (a hidden cycle is an upward import in disguise).
"""

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1] / "fcnkit"
LAYERS = {"engine": 1, "app": 2, "experiments": 3, "cli": 4}  # everything else is core (0)
LAYER_NAMES = ["core", "engine", "app", "experiments", "cli"]
CORE_FORBIDDEN = ("lightning", "torchmetrics", "pytorch_lightning")


def _module_name(path: pathlib.Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _layer(module: str) -> int:
    parts = module.split(".")
    return LAYERS.get(parts[1], 0) if len(parts) > 1 else LAYERS["cli"]  # the fcnkit package: the facade


def _imports(path: pathlib.Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # "from fcnkit import checkpoint" imports the module fcnkit.checkpoint
            names.update(f"{node.module}.{a.name}" for a in node.names)
    return names


MODULES = {_module_name(p): _imports(p) for p in sorted(ROOT.rglob("*.py"))}


def _resolve(name: str) -> str | None:
    """The fcnkit module an import names (``from fcnkit.x import y`` names module ``fcnkit.x``)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def test_every_module_imports_only_its_layer_or_below():
    upward = []
    for module, imports in MODULES.items():
        if module in ("fcnkit", "fcnkit.__main__"):
            continue  # the facade re-exports lazily; __main__ is the CLI entry
        for name in imports:
            target = _resolve(name) if name.startswith("fcnkit") else None
            if target and _layer(target) > _layer(module):
                upward.append(
                    f"{module} ({LAYER_NAMES[_layer(module)]}) imports {target} ({LAYER_NAMES[_layer(target)]})"
                )
    assert not upward, "upward imports:\n" + "\n".join(sorted(upward))


def test_core_does_not_import_lightning():
    bad = [
        f"{m} imports {n}"
        for m, imports in MODULES.items()
        if _layer(m) == 0 and m != "fcnkit"
        for n in imports
        if n.split(".")[0] in CORE_FORBIDDEN
    ]
    assert not bad, "\n".join(bad)


def test_no_import_cycles():
    graph = {
        m: {
            t
            for n in imports
            if n.startswith("fcnkit") and (t := _resolve(n)) and t != m and MODULES.get(t) is not None
        }
        for m, imports in MODULES.items()
    }
    # packages (their __init__) only re-export lazily: an edge into a package is not a cycle risk
    packages = {_module_name(p) for p in ROOT.rglob("__init__.py")}
    graph = {m: {t for t in targets if t not in packages} for m, targets in graph.items()}
    state: dict[str, int] = {}
    cycles = []

    def visit(node, stack):
        state[node] = 1
        for nxt in graph.get(node, ()):
            if state.get(nxt) == 1:
                cycles.append(" -> ".join(stack[stack.index(nxt) :] + [nxt]))
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = 2

    for m in graph:
        if m not in state:
            visit(m, [m])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


@pytest.mark.parametrize(
    "path",
    sorted(ROOT.rglob("*.py")),
    ids=lambda p: str(p.relative_to(ROOT)),
)
def test_files_are_small(path):
    assert len(path.read_text().splitlines()) < 400, f"{path} has 400 lines or more: split it by what it does"


def test_the_checker_sees_an_upward_import():
    assert _layer("fcnkit.models.allconv") == 0 and _layer("fcnkit.engine.loop") == 1 and _layer("fcnkit.cli.main") == 4
    assert _resolve("fcnkit.engine.loop.fit") == "fcnkit.engine.loop"
