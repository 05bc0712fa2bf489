"""The docs stay true to the tree: every layout map names real paths, every local link resolves.

A newcomer reads `docs/architecture.md`'s layout map to find code; a map that names a
module which moved sends them nowhere. The README must also stay short enough to read.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", REPO / "CONTRIBUTING.md", *sorted((REPO / "docs").glob("*.md"))]
_FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.M | re.S)
_LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")
_PATH = re.compile(r"^[\w.\-/]+(?:/|\.py|\.md|\.sh|\.ini)$")


def layout_paths(block: str) -> list[str]:
    """The paths a layout map names, each joined to the folders it is indented under."""
    stack: list[tuple[int, str]] = []
    paths = []
    for line in block.splitlines():
        indent = len(line) - len(line.lstrip())
        first = line.strip().split("  ")[0]
        names = [name.strip() for name in first.split(",")]
        if not names or not all(_PATH.match(name) for name in names):
            continue
        while stack and stack[-1][0] >= indent:
            stack.pop()
        parent = stack[-1][1] if stack else ""
        for name in names:
            paths.append(parent + name)
        if names[-1].endswith("/"):
            stack.append((indent, parent + names[-1]))
    return paths


def layout_maps() -> list[tuple[Path, str]]:
    return [(doc, block) for doc in DOCS for block in _FENCE.findall(doc.read_text())
            if block.startswith("engines/\n")]


def test_the_docs_have_a_layout_map() -> None:
    assert any(doc.name == "architecture.md" for doc, _ in layout_maps())


@pytest.mark.parametrize(("doc", "block"), layout_maps(),
                         ids=lambda value: value.name if isinstance(value, Path) else "")
def test_every_path_in_a_layout_map_exists(doc: Path, block: str) -> None:
    paths = layout_paths(block)
    assert len(paths) > 5, block
    missing = [path for path in paths if not (REPO / path).exists()]
    assert not missing, f"{doc.relative_to(REPO)} names paths that do not exist: {missing}"


@pytest.mark.parametrize("doc", DOCS, ids=lambda doc: str(doc.relative_to(REPO)))
def test_every_local_link_resolves(doc: Path) -> None:
    targets = [t for t in _LINK.findall(doc.read_text()) if "://" not in t
               and not t.startswith("mailto:")]
    missing = [t for t in targets if not (doc.parent / t).exists()]
    assert not missing, f"{doc.relative_to(REPO)} links to missing files: {missing}"


def test_the_readme_is_short_enough_to_read() -> None:
    assert len((REPO / "README.md").read_text().splitlines()) < 300


# ---- the samples shown are what the service prints ------------------------------------

EVENT_KEYS = {"v", "type", "event_id", "seq", "ts", "routing", "ids", "data"}
_VAR_USE = re.compile(r"\$\{?([A-Z][A-Z0-9_]*)")
_VAR_SET = re.compile(r"(?:^|[\s;(])([A-Z][A-Z0-9_]*)=", re.M)
WALKTHROUGH_VARS = set(_VAR_SET.findall((REPO / "examples" / "walkthrough.sh").read_text()))
SHELL_VARS = {"HOME", "PATH", "PWD"}


@pytest.mark.parametrize("doc", DOCS, ids=lambda doc: str(doc.relative_to(REPO)))
def test_shown_events_have_the_shape_the_feed_sends(doc: Path) -> None:
    """Every `data: {...}` of an SSE sample is an event as the feed writes it (with its
    `seq`), and every URI in a sample is in the stored, canonical form."""
    text = doc.read_text()
    for line in re.findall(r"^data: (\{.*\})$", text, re.M):
        if line.endswith(",...}"):  # an elided sample still shows where it stands
            assert '"seq":' in line, (doc.name, line)
            continue
        event = json.loads(line)
        assert event.keys() >= EVENT_KEYS, (doc.name, sorted(EVENT_KEYS - event.keys()))
        assert isinstance(event["seq"], int)
    uris = re.findall(r'"(?:uri|source_uri)": ?"([^"]+)"', text)
    wrong = [uri for uri in uris if not uri.startswith(("local:", "s3://", "https://"))]
    assert not wrong, f"{doc.name} shows URIs the service never stores: {wrong}"


@pytest.mark.parametrize("doc", DOCS, ids=lambda doc: str(doc.relative_to(REPO)))
def test_every_shell_variable_a_sample_uses_is_defined(doc: Path) -> None:
    """A reader can paste a sample: each `$VAR` it uses is set in the same page, in the
    README walkthrough, or by examples/walkthrough.sh."""
    shell = [block for block in re.findall(r"^```(?:sh|bash)\n(.*?)^```", doc.read_text(),
                                           re.M | re.S)]
    defined = set(_VAR_SET.findall(doc.read_text())) | WALKTHROUGH_VARS | SHELL_VARS
    defined |= set(_VAR_SET.findall((REPO / "README.md").read_text()))
    used = {name for block in shell for name in _VAR_USE.findall(block)}
    assert not used - defined, f"{doc.name} uses undefined {sorted(used - defined)}"
