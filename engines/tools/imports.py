"""The package's import graph, and the layer order it must keep.

`python -m engines.tools.imports` prints which package of `engines` imports which, then
every import that runs against the layer order (a package may import its own layer's
packages and those of lower layers, never a higher one) and exits 1 if there is any.
Function-level imports count: a deferred import is still an arrow. Test modules are left
out: a test may reach anything it checks. `tests/test_layers.py` runs the check in
`make test`; `docs/architecture.md` draws the same order.
"""

from __future__ import annotations

import ast
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1]

# Top to bottom. Each entry is one layer; its packages may import each other.
LAYERS: list[tuple[str, ...]] = [
    ("app", "cli", "client", "preflight", "server", "settings_view", "tools"),  # composition
    # the end of an artifact's life across every domain: the one package that knows every
    # table holding a blob URI (as MLflow's gc sits above its stores)
    ("lifecycle",),
    ("canvas_artifacts",),  # the artifacts: create, read, replay, variants, signed URLs
    ("media_v2",),  # the media registry canvas artifacts are recorded in
    ("events",),  # the outbox feed, SSE and webhooks
    ("observability",),  # metrics, request logs, traces, readiness
    ("runtime", "create"),  # the per-process wiring every route depends on; the create protocol
    ("lineage",),  # Nexus documents and dataset events
    ("storage", "db"),  # blob stores; SQL engine, writers, tables' metadata, idempotency
    ("auth",),  # tokens and routing headers
    ("http",),  # errors, bodies, params, HEAD, lean routes, OpenAPI
    ("common", "config"),  # ids, durations; settings
]


@dataclass(frozen=True)
class Arrow:
    """One import of one `engines` package by another, where it is written."""

    source: str
    target: str
    where: str


def top(module: str) -> str | None:
    """`engines.canvas_artifacts.reads` -> `canvas_artifacts`; `engines` itself -> None."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "engines" else None


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported(tree: ast.AST, package: str) -> list[tuple[str, int]]:
    """Every `engines...` module a file imports (relative imports resolved), with its line."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parent + ([base] if base else []))
            found += [(f"{base}.{alias.name}" if base == "engines" else base, node.lineno)
                      for alias in node.names]
    return [(name, line) for name, line in found if name.startswith("engines")]


def arrows() -> list[Arrow]:
    """Every import from one top-level package of `engines` into another."""
    out = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if "tests" in path.relative_to(PACKAGE).parts:
            continue
        name = module_name(path)
        source = top(name)
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for target_module, line in imported(ast.parse(path.read_text()), package):
            target = top(target_module)
            if source and target and target != source:
                out.append(Arrow(source, target, f"{path.relative_to(PACKAGE.parent)}:{line}"))
    return out


def layer_of(package: str) -> int:
    for index, layer in enumerate(LAYERS):
        if package in layer:
            return index
    raise KeyError(f"engines/{package} is in no layer of engines/tools/imports.py LAYERS")


def violations(found: list[Arrow]) -> list[Arrow]:
    """Arrows from a lower layer to a higher one (a smaller index is higher)."""
    return [a for a in found if layer_of(a.target) < layer_of(a.source)]


def main() -> int:
    found = arrows()
    graph: dict[str, set[str]] = defaultdict(set)
    for arrow in found:
        graph[arrow.source].add(arrow.target)
    for layer in LAYERS:
        for package in layer:
            print(f"{package:18} -> {', '.join(sorted(graph.get(package, ()))) or '(nothing)'}")
    bad = violations(found)
    for arrow in bad:
        print(f"UP: {arrow.source} -> {arrow.target} at {arrow.where}")
    print(f"{len(found)} imports across packages, {len(bad)} against the layer order")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
