"""The layers say what may import what (docs/architecture.md): CLI -> capabilities -> core.

Read from the source (every ``import``, top-level or inside a function), so a late import
cannot hide a dependency.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "compose_atomic"

#: Modules every layer may use; they import nothing above them.
CORE = {"__init__", "errors", "docker", "project", "config", "progress", "durations", "plugins",
        "hookspecs", "statedir", "settings", "schema", "images", "restarts", "ports"}
#: The one module that may import every capability.
CLI = {"cli", "__main__"}
#: Which capability may use which other one; anything else is a layering error.
CAPABILITY_USES = {
    "deploy": {"proxy"},
    "swarm": {"proxy"},
    "migrate": {"lint"},
    # the operator's view reads every capability's state (history, proxy routes, snapshots)
    "ops": {"deploy", "proxy", "migrate"},
    "pitr": {"backup"},
}


def module_of(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imports() -> dict[str, set[str]]:
    found: dict[str, set[str]] = defaultdict(set)
    for path in PACKAGE.rglob("*.py"):
        module = module_of(path)
        package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                if target == "compose_atomic":
                    found[module] |= {f"compose_atomic.{a.name}" for a in node.names}
                elif target.startswith("compose_atomic."):
                    found[module].add(target)
            elif isinstance(node, ast.Import):
                found[module] |= {a.name for a in node.names if a.name.startswith("compose_atomic.")}
    return found


def top(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def is_package(name: str) -> bool:
    return (PACKAGE / name).is_dir()


def test_core_imports_only_core():
    wrong = sorted(f"{m} -> {t}" for m, targets in imports().items() if top(m) in CORE
                   for t in targets if top(t) not in CORE and not (PACKAGE / f"{top(t)}.py").exists()
                   and top(t) != "hookimpl")
    assert not wrong, "core modules must not import capabilities or the CLI:\n" + "\n".join(wrong)


def test_nothing_but_the_cli_imports_the_cli():
    wrong = sorted(f"{m} -> {t}" for m, targets in imports().items() if top(m) not in CLI
                   for t in targets if top(t) in CLI)
    assert not wrong, "\n".join(wrong)


def test_capabilities_use_only_the_capabilities_they_declare():
    wrong = []
    for module, targets in imports().items():
        source = top(module)
        if source in CORE or source in CLI or not is_package(source):
            continue
        for target in targets:
            dest = top(target)
            if dest != source and is_package(dest) and dest not in CAPABILITY_USES.get(source, set()):
                wrong.append(f"{module} -> {target}")
    assert not wrong, ("a capability imports another one it does not declare in CAPABILITY_USES "
                       "(and docs/architecture.md):\n" + "\n".join(sorted(wrong)))


def test_no_import_cycles_between_packages_or_modules():
    graph = imports()
    edges = {m: {t for t in ts if t in graph and t != m} for m, ts in graph.items()}

    def cycle_from(start: str) -> list[str] | None:
        stack = [(start, [start])]
        while stack:
            node, path = stack.pop()
            for nxt in edges.get(node, ()):
                if nxt == start:
                    return path + [start]
                if nxt not in path and len(path) < 12:
                    stack.append((nxt, path + [nxt]))
        return None

    # Top-level imports only make a cycle that bites; but a newcomer follows every import, so
    # any module cycle is reported, package-level ones included.
    packages = defaultdict(set)
    for m, ts in edges.items():
        for t in ts:
            if top(m) != top(t) and is_package(top(m)) and is_package(top(t)):
                packages[top(m)].add(top(t))
    cyclic = [f"{a} <-> {b}" for a in packages for b in packages[a] if a in packages.get(b, set()) and a < b]
    assert not cyclic, "capability packages import each other: " + ", ".join(cyclic)
    found = [cycle_from(m) for m in edges]
    found = [c for c in found if c]
    assert not found, "import cycle: " + " -> ".join(found[0])
