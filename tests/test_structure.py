"""The shape issue 16 asked for, kept: no import cycles among the package's modules (none hidden by an import
inside a function either), and no function in train.py, sample.py or nanor1/ much longer than 60 lines."""
import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("nanor1", "kernels")


def modules():
    """{dotted name: path} for every module of the two packages."""
    out = {}
    for pkg in PACKAGES:
        for p in sorted((ROOT / pkg).rglob("*.py")):
            parts = p.relative_to(ROOT).with_suffix("").parts
            out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = p
    return out


def imports(path, names):
    """(project modules imported at module level, project imports inside functions) of one file."""
    tree = ast.parse(path.read_text())
    top, nested = set(), []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            found = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in names else node.module
                     for a in node.names]
        elif isinstance(node, ast.Import):
            found = [a.name for a in node.names]
        else:
            continue
        found = {f for f in found if f in names}
        if node.col_offset == 0:
            top |= found
        elif found:
            nested.append((node.lineno, sorted(found)))
    return top, nested


def test_no_import_cycles_and_no_deferred_project_imports():
    mods = modules()
    graph, deferred = {}, []
    for name, path in mods.items():
        graph[name], nested = imports(path, mods)
        deferred += [f"{path.relative_to(ROOT)}:{line} imports {found} inside a function" for line, found in nested]
    assert not deferred, deferred

    state = {}  # depth-first search: 1 on the stack, 2 done

    def visit(n, stack):
        state[n] = 1
        for m in sorted(graph[n] - {n}):
            if state.get(m) == 1:
                raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(m):] + [n, m]))
            if m not in state:
                visit(m, stack + [n])
        state[n] = 2

    for n in sorted(graph):
        if n not in state:
            visit(n, [])


def test_functions_stay_short():
    files = [ROOT / "train.py", ROOT / "sample.py", *sorted((ROOT / "nanor1").rglob("*.py"))]
    long = []
    for p in files:
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > 65:
                    long.append(f"{p.relative_to(ROOT)}:{node.lineno} {node.name} has {n} lines")
    assert not long, long
