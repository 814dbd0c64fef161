"""The shape of the house, read from the code's own imports (ast): scripts stay entry points that nothing
imports, imports run one way (scripts -> segkit -> data/models/losses/metrics -> errors), and no
module imports itself back through others."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = {"train", "evaluate", "predict", "export"}
BASE = {"data", "models", "losses", "metrics"}
SKIP = {".git", "runs", "__pycache__", ".pytest_cache"}


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


def layer(name: str) -> int:
    top = name.split(".")[0]
    return 3 if top in SCRIPTS else 2 if top in ("segkit", "bench", "notebooks", "tests") else 1 if top in BASE else 0


def test_imports_run_one_way():
    graph = local_graph()
    upward = [(a, b) for a, targets in graph.items() for b in targets if layer(b) > layer(a)]
    assert upward == []
    assert [n for n in graph if layer(n) == 0] == ["errors"]  # the one module below the packages


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


def test_scripts_are_thin():
    for name in SCRIPTS:
        text = (ROOT / f"{name}.py").read_text()
        functions = [n.name for n in ast.walk(ast.parse(text)) if isinstance(n, ast.FunctionDef)]
        assert set(functions) <= {"parse_args", "main"}, (name, functions)
        assert len(text.splitlines()) < 90, name
