"""The shape of the house, read from the code's own imports (ast): the root scripts are shims over segkit.cli
that nothing imports, the package imports nothing outside itself (bench, tests, notebooks), imports run one
way inside it (cli -> training / inference / exporters -> config, data, models, losses, metrics -> catalog, errors),
and no module imports itself back through others."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = {"train", "evaluate", "predict", "export"}
OUTSIDE = ("bench", "tests", "notebooks")
# Inside segkit, by floor: a module imports only modules of its floor or below.
FLOORS = {"cli": 4, "training": 3, "inference": 3, "exporters": 3, "api": 3, "": 3,
          "data": 2, "models": 2, "losses": 2, "metrics": 2, "memory": 1, "runtime": 1, "visualize": 1, "sidecar": 1,
          "fileio": 1, "config": 2, "catalog": 0, "errors": 0}
SKIP = {".git", "runs", "__pycache__", ".pytest_cache", "node_modules", "build"}


def python_files():
    for path in sorted(ROOT.rglob("*.py")):
        parts = path.relative_to(ROOT).parts
        if not SKIP & set(parts) and not parts[0].startswith(".venv"):
            yield path


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imports(path: Path, modules) -> set:
    """The module names `path` imports: `from a import b` names the module a.b when there is one, else a."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                submodule = f"{node.module}.{alias.name}"
                names.add(submodule if submodule in modules else node.module)
    return names


def local_graph() -> dict:
    """module -> the project modules it imports (names resolved to files of this repository)."""
    modules = {module_name(p): p for p in python_files()}
    graph = {}
    for name, path in modules.items():
        graph[name] = {target for target in imports(path, modules) if target in modules and target != name}
    return graph


def test_nothing_imports_a_script():
    offenders = {name: sorted(SCRIPTS & targets) for name, targets in local_graph().items() if SCRIPTS & targets}
    assert offenders == {}


def test_the_package_stands_alone():
    """segkit imports nothing of the repository outside itself: an installed wheel has no bench/ or tests/."""
    graph = local_graph()
    outside = {(a, b) for a, targets in graph.items() if a.split(".")[0] == "segkit"
               for b in targets if b.split(".")[0] != "segkit"}
    assert outside == set()
    assert all(n.split(".")[0] in ("segkit", *SCRIPTS, *OUTSIDE) for n in graph), sorted(graph)


def floor(name: str) -> int:
    """The floor of a module of segkit (segkit.training.trainer -> training's)."""
    parts = name.split(".")
    return FLOORS[parts[1] if len(parts) > 1 else ""]


def test_imports_run_one_way():
    """Inside segkit no module imports one of a higher floor, except the package's face (segkit/__init__.py
    and segkit.api), which hands the API on and imports the rooms inside its functions."""
    graph = local_graph()
    package = {n for n in graph if n.split(".")[0] == "segkit"}
    assert {n.split(".")[1] for n in package if "." in n} <= set(FLOORS), sorted(package)
    upward = sorted((a, b) for a in package for b in graph[a] if b in package and floor(b) > floor(a))
    assert upward == []


def test_no_import_cycle():
    graph = local_graph()
    state, cycles = {}, []

    def visit(node, stack):
        state[node] = "open"
        for target in sorted(graph[node]):
            if state.get(target) == "open":
                cycles.append(stack[stack.index(target):] + [target])
            elif target not in state:
                visit(target, stack + [target])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert cycles == []


def test_scripts_are_shims():
    """train.py & co. only run their segkit.cli command, so a clone and an installed package behave alike."""
    graph = local_graph()
    for name in SCRIPTS:
        text = (ROOT / f"{name}.py").read_text()
        assert not [n for n in ast.walk(ast.parse(text)) if isinstance(n, (ast.FunctionDef, ast.ClassDef))], name
        assert graph[name] == {"segkit.cli", f"segkit.cli.{name}"}, (name, graph[name])
