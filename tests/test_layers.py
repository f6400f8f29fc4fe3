"""The import structure DESIGN.md promises, checked on the source (every import, also those inside
functions): dependencies point down, modules do not import each other in a circle, and no module
imports another's private names.

    common → recipe → data, model → train, evals → track, run, sweep → serve, cli → entry
"""

import ast
from pathlib import Path

import pytest

RUNNER = Path(__file__).resolve().parents[1] / "runner"
LAYER = {"runner": 0, "common": 0, "recipe": 1, "data": 2, "model": 2, "preflight": 2, "train": 3, "evals": 3,
         "plan": 3, "track": 4, "run": 4, "sweep": 4, "export": 4, "serve": 5, "cli": 5, "entry": 6}
# Packages of one layer that may import the other (never the reverse).
SIDEWAYS = {("run", "track"), ("sweep", "run"), ("sweep", "track"), ("export", "track"), ("cli", "serve")}
# Downward but still wrong: serving loads a model through model/ and train/, not the conductor.
FORBIDDEN = {("serve", "run"), ("serve", "sweep")}


def module_name(path: Path) -> str:
    parts = ["runner", *path.relative_to(RUNNER).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(RUNNER.rglob("*.py"))}


def imports(name: str) -> list[tuple[str, list[str], int]]:
    """(imported module, names taken from it, line) for every import in module `name`."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(a.name, [], node.lineno) for a in node.names if a.name.split(".")[0] == "runner"]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            elif node.module and node.module.split(".")[0] == "runner":
                target = node.module
            else:
                continue
            names = [a.name for a in node.names]
            # `from . import run`: the names may be modules themselves
            submodules = [f"{target}.{n}" for n in names if f"{target}.{n}" in MODULES]
            found += [(m, [], node.lineno) for m in submodules]
            rest = [n for n in names if f"{target}.{n}" not in MODULES]
            if rest or not submodules:
                found.append((target, rest, node.lineno))
    return found


def package_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "runner"


EDGES = {name: imports(name) for name in MODULES}


def test_every_package_has_a_layer():
    assert {package_of(m) for m in MODULES} <= set(LAYER)


def test_dependencies_point_down():
    wrong = []
    for name, found in EDGES.items():
        here = package_of(name)
        for target, _, line in found:
            there = package_of(target)
            if here == there:
                continue
            if (LAYER[there] > LAYER[here] or (LAYER[there] == LAYER[here] and (here, there) not in SIDEWAYS)
                    or (here, there) in FORBIDDEN):
                wrong.append(f"{MODULES[name].relative_to(RUNNER.parent)}:{line}: {here} imports {target}")
    assert not wrong, "\n".join(wrong)


def test_no_private_names_across_modules():
    wrong = [f"{MODULES[name].relative_to(RUNNER.parent)}:{line}: {n} from {target}"
             for name, found in EDGES.items() for target, names, line in found
             for n in names if n.startswith("_") and not n.startswith("__") and target != name]
    assert not wrong, "\n".join(wrong)


def test_no_import_cycles():
    """Between modules (a package's __init__ re-exporting its own modules does not count)."""
    graph = {name: {t for t, _, _ in found if t in MODULES and t != name
                    and not (MODULES[t].name == "__init__.py" and name.startswith(t + "."))}
             for name, found in EDGES.items()}
    cycles, state = [], {}

    def visit(node, stack):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                cycles.append(" → ".join(stack[stack.index(nxt):] + [nxt]))
            elif nxt not in state:
                visit(nxt, stack)
        stack.pop()
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [])
    assert not cycles, "\n".join(cycles)


@pytest.mark.parametrize("source, target", [("runner.data.stage", "runner.model"), ("runner.recipe.load", "runner.cli")])
def test_the_checker_sees_a_wrong_import(source, target, monkeypatch):
    """The rules fail when broken (a lower layer importing a higher one, or sideways)."""
    monkeypatch.setitem(EDGES, source, [*EDGES[source], (target, ["x"], 1)])
    with pytest.raises(AssertionError, match=f"imports {target}"):
        test_dependencies_point_down()
