"""The shape of the code: one app per noun, dependencies pointing one way (see the README's layout).

Read from the source with `ast`, imports inside functions included: a lazy import is a dependency
too (it is how the old circle between accounts and vms hid).
"""

import ast
import itertools
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = (
    "hypervisor", "kvmpanel", "accounts", "nodes", "images", "network", "vms", "firewall", "backups", "api",
)  # fmt: skip
# From the bottom up: an app may import the apps before it, never one after it.
LAYERS = (
    "hypervisor", "kvmpanel", "accounts", "nodes", "images", "network", "vms", "firewall", "backups", "api",
)  # fmt: skip
# The project's wiring: it mounts every app's URLs and websocket routes, so it stands above them all.
WIRING = {"kvmpanel.urls", "kvmpanel.asgi", "kvmpanel.wsgi"}


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imported_modules(path: Path) -> set[str]:
    """Every absolute module name the file imports, relative imports resolved."""
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)  # `from pkg import module`
    return found


def _source_files():
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            if "migrations" not in path.parts and "tests" not in path.parts:
                yield path


def app_imports() -> dict[str, dict[str, set[str]]]:
    """app -> imported app -> the files that import it."""
    graph: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    for path in _source_files():
        if _module_name(path) in WIRING:
            continue
        app = _module_name(path).split(".")[0]
        for imported in _imported_modules(path):
            other = imported.split(".")[0]
            if other in PACKAGES and other != app:
                graph[app][other].add(str(path.relative_to(ROOT)))
    return graph


def _cycles(graph) -> list[list[str]]:
    """Each cycle once, as the list of apps along it (depth-first search)."""
    cycles, state = [], {}

    def visit(app, trail):
        state[app] = "open"
        for other in sorted(graph.get(app, {})):
            if state.get(other) == "open":
                cycles.append([*trail[trail.index(other) :], other])
            elif other not in state:
                visit(other, [*trail, other])
        state[app] = "done"

    for app in sorted(graph):
        if app not in state:
            visit(app, [app])
    return cycles


def test_apps_never_import_each_other_in_a_circle():
    graph = app_imports()
    described = [
        " -> ".join(cycle)
        + " ("
        + "; ".join(f"{a}->{b}: {sorted(graph[a][b])}" for a, b in itertools.pairwise(cycle))
        + ")"
        for cycle in _cycles(graph)
    ]
    assert not described, "apps import each other in a circle:\n" + "\n".join(described)


def test_the_cycle_check_finds_a_circle_when_there_is_one():
    graph = {
        "accounts": {"vms": {"accounts/suspension.py"}},
        "vms": {"nodes": {"x"}},
        "nodes": {"accounts": {"y"}},
    }
    assert _cycles(graph) == [["accounts", "vms", "nodes", "accounts"]]


def test_every_app_imports_only_the_apps_below_it():
    graph = app_imports()
    upward = [
        f"{app} imports {other} in {sorted(files)}"
        for app, imported in graph.items()
        for other, files in imported.items()
        if LAYERS.index(other) > LAYERS.index(app)
    ]
    assert not upward, "\n".join(upward)


def test_only_the_hypervisor_package_imports_libvirt():
    importers = [
        str(path.relative_to(ROOT))
        for path in _source_files()
        if "libvirt" in {name.split(".")[0] for name in _imported_modules(path)}
        and _module_name(path).split(".")[0] != "hypervisor"
    ]
    assert importers == []


def test_the_hypervisor_package_imports_nothing_of_the_project():
    assert dict(app_imports().get("hypervisor", {})) == {}
