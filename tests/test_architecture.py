"""The rooms of docs/architecture.md and which may import which, read from every module's imports with `ast`: those
at the top, those inside functions (deferred) and those only for type checking. Deferred imports break no rule
here: one that hides a circle is a circle all the same."""

from __future__ import annotations

import ast
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).parents[1]

ENTRY, CORE, ADAPTERS, STEPS, CLI, DEVSTACK = "entry points", "core", "adapters", "steps", "CLI", "devstack"
# Processes of their own, started by the platform or by the local backend.
ENTRY_POINTS = frozenset({"main", "relay.adapters.local_runner"})
ALLOWED: Mapping[str, frozenset[str]] = {
    ENTRY: frozenset({CORE, ADAPTERS}),
    CORE: frozenset({CORE}),
    ADAPTERS: frozenset({CORE, ADAPTERS}),
    STEPS: frozenset({STEPS, CORE}),
    CLI: frozenset({CLI, STEPS, CORE, ADAPTERS}),
    DEVSTACK: frozenset({DEVSTACK, CLI, STEPS, CORE, ADAPTERS, ENTRY}),
}
# Besides the rooms: the one door each. The core builds adapters only in the runtime, through the factory; the steps
# open stores and notifiers as the functions do; the CLI borrows devstack's emulator client (plain gRPC, no proxy).
DOORS: Mapping[str, frozenset[str]] = {
    "relay.runtime": frozenset({"relay.adapters.factory"}),
    "pipelines": frozenset({"relay.adapters.stores", "relay.adapters.factory"}),
    "relaycli": frozenset({"devstack.pubsub"}),
}
# Who builds Relay itself: the entry points, the CLI and devstack. Not the adapters (local_backend importing the
# runtime was a circle), not the steps (they run inside a pipeline, with the policy and stores only).
BUILDS_RELAY = frozenset({ENTRY, CLI, DEVSTACK})


@dataclass(frozen=True)
class Import:
    source: str
    target: str
    line: int
    kind: str  # "top", "deferred" (inside a function) or "typing" (under TYPE_CHECKING)

    def __str__(self) -> str:
        return f"{self.source}:{self.line} imports {self.target} ({self.kind})"


def modules(root: Path = ROOT) -> dict[str, Path]:
    """Relay's own modules by dotted name: functions/ (main and relay), pipelines, relaycli, devstack. Folders
    without __init__.py (the example algorithms) are not modules of Relay."""
    found = {"main": root / "functions" / "main.py"}
    for base, package in ((root / "functions", "relay"), (root, "pipelines"), (root, "relaycli"), (root, "devstack")):
        for path in sorted((base / package).rglob("*.py")):
            if not (path.parent / "__init__.py").exists():
                continue
            parts = path.relative_to(base).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imports_of(name: str, source: str, known: Iterable[str]) -> list[Import]:
    """Every import of a known module in `source`, the module `name`; `from a import b` is a.b when that is one."""
    known = set(known)
    package = name.split(".") if _is_package(name, known) else name.split(".")[:-1]
    found: list[Import] = []

    def visit(node: ast.AST, kind: str) -> None:
        for child in ast.iter_child_nodes(node):
            inner = kind
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda) and kind == "top":
                inner = "deferred"
            elif isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                inner = "typing"
            if isinstance(child, ast.Import):
                found.extend(Import(name, alias.name, child.lineno, inner) for alias in child.names)
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    base = ".".join([*package[: len(package) - child.level + 1], *([base] if base else [])])
                for alias in child.names:
                    whole = f"{base}.{alias.name}"
                    found.append(Import(name, whole if whole in known else base, child.lineno, inner))
            visit(child, inner)

    visit(ast.parse(source), "top")
    own = []
    for item in found:
        target = item.target
        while target and target not in known:
            target = target.rpartition(".")[0]
        if target and target != name:
            own.append(Import(item.source, target, item.line, item.kind))
    return own


def _is_package(name: str, known: set[str]) -> bool:
    return any(other.startswith(name + ".") for other in known)


def room(module: str) -> str:
    if module in ENTRY_POINTS:
        return ENTRY
    top = module.split(".")[0]
    if top == "relay":
        return ADAPTERS if module.split(".")[:2] == ["relay", "adapters"] else CORE
    return {"pipelines": STEPS, "relaycli": CLI, "devstack": DEVSTACK}[top]


def refused(edges: Iterable[Import]) -> list[tuple[Import, str]]:
    """The imports that go against the rooms' directions, each with why."""
    wrong = []
    for edge in edges:
        source, target = room(edge.source), room(edge.target)
        doors = {door for prefix, named in DOORS.items() if _within(edge.source, prefix) for door in named}
        if target not in ALLOWED[source] and edge.target not in doors:
            wrong.append((edge, f"the {source} room may not import the {target} room"))
        elif edge.target == "relay.runtime" and source not in BUILDS_RELAY:
            wrong.append((edge, "only the entry points, the CLI and devstack build Relay (relay.runtime)"))
    return wrong


def _within(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def circles(edges: Iterable[Import]) -> list[list[str]]:
    """Groups of modules that import each other, at load time or later (type-checking imports never run).
    Importing a.b.c runs a's and a.b's __init__ first, so those count as imported too."""
    graph: dict[str, set[str]] = {}
    for edge in edges:
        if edge.kind == "typing":
            continue
        parts = edge.target.split(".")
        for depth in range(1, len(parts) + 1):
            target = ".".join(parts[:depth])
            if target != edge.source and not _within(edge.source, target):
                graph.setdefault(edge.source, set()).add(target)
    return [sorted(group) for group in _strongly_connected(graph) if len(group) > 1]


def _strongly_connected(graph: Mapping[str, set[str]]) -> Iterator[list[str]]:
    """Tarjan's algorithm, iteratively."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph.get(start, ()))))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    group = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        group.append(member)
                        if member == node:
                            break
                    yield group


def all_imports() -> list[Import]:
    known = modules()
    return [edge for name, path in known.items() for edge in imports_of(name, path.read_text(), known)]


def test_every_import_goes_in_a_direction_the_rooms_allow():
    assert [f"{edge}: {why}" for edge, why in refused(all_imports())] == []


def test_no_modules_import_each_other_even_through_deferred_imports():
    assert circles(all_imports()) == []


def test_the_rooms_cover_every_module_and_the_parse_sees_deferred_and_typing_imports():
    known = modules()
    assert {"main", "relay.runtime", "relay.adapters.factory", "pipelines.steps.errors", "relaycli.main"} <= set(known)
    assert {room(name) for name in known} == set(ALLOWED)
    kinds = {(edge.source, edge.target): edge.kind for edge in all_imports()}
    assert kinds[("relay.adapters.factory", "relay.adapters.local_backend")] == "deferred"
    assert kinds[("relaycli.objects", "pipelines.steps.errors")] == "deferred"
    assert kinds[("relaycli.next_steps", "relaycli.preflight")] == "typing"


def test_a_wrong_import_is_refused_wherever_it_is_written():
    known = {"relay", "relay.policy", "relay.runtime", "relay.adapters", "relay.adapters.gcs", "relay.adapters.factory",
             "relay.adapters.local_backend", "pipelines", "pipelines.steps", "pipelines.steps.gate", "relaycli",
             "relaycli.sync", "devstack", "devstack.up", "devstack.pubsub"}  # fmt: skip
    sources = {
        "relay.policy": "def read():\n    from relay.adapters.gcs import GcsBlobStore\n",
        "relay.adapters.local_backend": "from relay.runtime import build_relay\n",
        "relay.adapters.gcs": "import typing\nif typing.TYPE_CHECKING:\n    from pipelines.steps import gate\n",
        "pipelines.steps.gate": "from relay.adapters.gcs import GcsBlobStore\nfrom relay import runtime\n",
        "relaycli.sync": "from devstack.up import up\nfrom devstack.pubsub import publisher_client\n",
        "devstack.up": "from relaycli.sync import relay_for\nfrom relay.runtime import current\n",
        "relay.runtime": "from relay.adapters import factory\n",
    }
    edges = [edge for name, source in sources.items() for edge in imports_of(name, source, known)]
    assert [(edge.source, edge.target, edge.kind) for edge, _ in refused(edges)] == [
        ("relay.policy", "relay.adapters.gcs", "deferred"),
        ("relay.adapters.local_backend", "relay.runtime", "top"),
        ("relay.adapters.gcs", "pipelines.steps.gate", "typing"),
        ("pipelines.steps.gate", "relay.adapters.gcs", "top"),
        ("pipelines.steps.gate", "relay.runtime", "top"),
        ("relaycli.sync", "devstack.up", "top"),
    ]


def test_a_circle_is_found_through_a_deferred_import_and_a_package():
    known = {"relay", "relay.runtime", "relay.adapters", "relay.adapters.local_backend", "devstack", "devstack.a"}
    sources = {
        "relay.runtime": "def backend():\n    from relay.adapters.local_backend import LocalBackend\n",
        "relay.adapters.local_backend": "def store():\n    from relay.runtime import results_store\n",
        "relay.adapters": "import typing\nif typing.TYPE_CHECKING:\n    from relay import runtime\n",
        "devstack": "from devstack.a import x\n",
        "devstack.a": "from relay import runtime\n",
    }
    edges = [edge for name, source in sources.items() for edge in imports_of(name, source, known)]
    assert circles(edges) == [["relay.adapters.local_backend", "relay.runtime"]]
    # Importing devstack.a runs devstack's __init__ first: an __init__ importing the importer is a circle too.
    known |= {"relaycli", "relaycli.pubsub"}
    sources = {
        "devstack": "import relaycli.pubsub\n",
        "devstack.a": "import json\n",
        "relaycli.pubsub": "def client():\n    import devstack.a\n",
    }
    edges = [edge for name, source in sources.items() for edge in imports_of(name, source, known)]
    assert circles(edges) == [["devstack", "relaycli.pubsub"]]
