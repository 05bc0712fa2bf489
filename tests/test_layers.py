"""Imports run one way: `python -m engines.tools.imports` finds no arrow against the layers."""

from __future__ import annotations

import subprocess
import sys

from engines.tools import imports


def test_no_import_runs_against_the_layer_order() -> None:
    bad = imports.violations(imports.arrows())
    assert not bad, "\n".join(f"{a.source} -> {a.target} at {a.where}" for a in bad)


def test_every_package_has_a_layer() -> None:
    packages = {p.name for p in imports.PACKAGE.iterdir()
                if (p / "__init__.py").exists() or p.suffix == ".py"}
    packages = {p.removesuffix(".py") for p in packages} - {"__init__"}
    for package in packages:
        imports.layer_of(package)


def test_an_upward_import_is_reported() -> None:
    found = [imports.Arrow("storage", "canvas_artifacts", "engines/storage/x.py:1")]
    assert imports.violations(found) == found


def test_the_command_prints_the_graph() -> None:
    result = subprocess.run([sys.executable, "-m", "engines.tools.imports"],
                            capture_output=True, text=True)
    assert "canvas_artifacts" in result.stdout and "against the layer order" in result.stdout
