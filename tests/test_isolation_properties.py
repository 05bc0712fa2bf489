"""Tenant/env isolation as a property: no sequence of creates and reads leaks a scope.

A hypothesis state machine drives one app with four scopes ({t_acme, t_beta}
x {dev, prod}). Every scope writes to the *same* few canvas ids on purpose,
so a query that forgot its tenant or env filter would find another scope's
rows. Each read (list, latest, record, content, lineage, media_v2 list/get)
is made from every scope and checked against a model of what each scope
wrote: lists match exactly, every returned item carries the reader's
tenant_id/env, content bytes are the owner's own, and an id owned by another
scope answers 404 with the same body as an id that never existed (except
request_id), so a foreign id reveals nothing.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, rule, run_state_machine_as_test

from conftest import PNG, Stack

Scope = tuple[str, str]
SCOPES: list[Scope] = [(t, e) for t in ("t_acme", "t_beta") for e in ("dev", "prod")]
KINDS = ("preview", "replay", "audit")
CANVASES_PER_EXAMPLE = 3
MISSING_ARTIFACT = "art_00000000000000000000000000"
MISSING_ASSET = "ma_00000000000000000000000000"
MISSING_MEDIA_ARTIFACT = "mda_00000000000000000000000000"

scopes = st.sampled_from(SCOPES)
revs = st.integers(min_value=0, max_value=3)
canvas_indexes = st.integers(min_value=0, max_value=CANVASES_PER_EXAMPLE - 1)


@dataclass
class Written:
    """What one scope wrote as one canvas artifact, and what reading it must give back."""

    scope: Scope
    canvas_id: str
    kind: str
    rev: int
    record: dict[str, Any]
    content: bytes | None = None
    document: Any = None
    redirect: str | None = None


@dataclass
class World:
    """Everything written through the app so far, across examples (the app is reused)."""

    asset_scope: dict[str, Scope] = field(default_factory=dict)
    asset_artifacts: dict[str, set[str]] = field(default_factory=dict)
    media_artifact_scope: dict[str, Scope] = field(default_factory=dict)


def _strip_request_id(body: dict[str, Any]) -> dict[str, Any]:
    error = dict(body["error"])
    assert error.pop("request_id"), "the envelope always carries a request_id"
    return {"error": error}


class IsolationMachine(RuleBasedStateMachine):
    """Creates and reads in random scopes; bound to a Stack and a World by the test."""

    stack: Stack
    world: World

    def __init__(self) -> None:
        super().__init__()
        # Fresh canvas ids per example keep the per-canvas model exact while the
        # app (and its database) lives across examples; within an example all
        # four scopes share these ids.
        prefix = uuid.uuid4().hex[:10]
        self.canvases = [f"c_{prefix}_{i}" for i in range(CANVASES_PER_EXAMPLE)]
        self.artifacts: dict[str, Written] = {}
        # Draws pick from what this example created, in creation order, so the
        # data hypothesis draws never depends on earlier examples.
        self.assets: list[str] = []
        self.media_artifacts: list[str] = []
        self.headers = {scope: self.stack.headers(*scope) for scope in SCOPES}

    # ---- helpers -------------------------------------------------------------

    def _assert_in_scope(self, item: dict[str, Any], scope: Scope) -> None:
        assert (item["tenant_id"], item["env"]) == scope, (
            f"{scope} read an item of {(item['tenant_id'], item['env'])}: {item}")

    def _assert_hidden(self, path: str, missing_path: str, reader: Scope) -> None:
        """A foreign id answers exactly like an id that never existed."""
        client = self.stack.client
        foreign = client.get(path, headers=self.headers[reader], follow_redirects=False)
        missing = client.get(missing_path, headers=self.headers[reader], follow_redirects=False)
        assert missing.status_code == 404, missing.text
        assert foreign.status_code == 404, f"{reader} reached {path}: {foreign.status_code}"
        assert foreign.headers["content-type"] == missing.headers["content-type"]
        assert _strip_request_id(foreign.json()) == _strip_request_id(missing.json())
        assert foreign.json()["error"]["request_id"] == foreign.headers["x-request-id"]

    def _note_canvas_write(self, scope: Scope, written: Written) -> None:
        record = written.record
        self._assert_in_scope(record, scope)
        assert (record["canvas_id"], record["kind"], record["rev"]) == (
            written.canvas_id, written.kind, written.rev)
        self.artifacts[record["id"]] = written
        asset = record["media_asset_id"]
        owner = self.world.asset_scope.setdefault(asset, scope)
        assert owner == scope, f"canvas asset {asset} shared by {owner} and {scope}"
        if asset not in self.assets:
            self.assets.append(asset)
        self.world.asset_artifacts.setdefault(asset, set()).add(record["media_artifact_id"])
        self.world.media_artifact_scope[record["media_artifact_id"]] = scope
        self.media_artifacts.append(record["media_artifact_id"])

    def _canvas_path(self, written: Written, suffix: str = "") -> str:
        return f"/canvas/{written.canvas_id}/artifacts/{written.record['id']}{suffix}"

    def _expected(self, scope: Scope, canvas_id: str, kind: str | None = None,
                  rev: int | None = None) -> list[str]:
        """Ids the scope wrote to that canvas, newest first (ids are time-ordered)."""
        return sorted((aid for aid, w in self.artifacts.items()
                       if w.scope == scope and w.canvas_id == canvas_id
                       and (kind is None or w.kind == kind) and (rev is None or w.rev == rev)),
                      reverse=True)

    # ---- canvas creates --------------------------------------------------------

    @rule(scope=scopes, canvas=canvas_indexes, rev=revs,
          form=st.sampled_from(["png", "svg", "multipart", "render_ref"]),
          salt=st.binary(max_size=16))
    def create_preview(self, scope: Scope, canvas: int, rev: int, form: str, salt: bytes) -> None:
        canvas_id = self.canvases[canvas]
        marker = f"{scope[0]}/{scope[1]}/{salt.hex()}".encode()
        url = f"/canvas/{canvas_id}/artifacts/preview?rev={rev}"
        headers = dict(self.headers[scope])
        written = Written(scope, canvas_id, "preview", rev, record={})
        if form == "render_ref":
            written.redirect = f"https://renders.example/{scope[0]}/{scope[1]}/{uuid.uuid4().hex}"
            response = self.stack.client.post(url, headers=headers,
                                              json={"uri": written.redirect})
        elif form == "multipart":
            written.content = PNG + marker
            response = self.stack.client.post(
                url, headers=headers, files={"file": ("p.png", written.content, "image/png")})
        else:
            if form == "png":
                written.content, headers["Content-Type"] = PNG + marker, "image/png"
            else:
                written.content = (b'<svg xmlns="http://www.w3.org/2000/svg"><!-- '
                                   + marker + b" --></svg>")
                headers["Content-Type"] = "image/svg+xml"
            response = self.stack.client.post(url, headers=headers, content=written.content)
        assert response.status_code == 201, response.text
        written.record = response.json()
        self._note_canvas_write(scope, written)

    @rule(scope=scopes, canvas=canvas_indexes, rev=revs, frames=st.integers(0, 4))
    def create_replay(self, scope: Scope, canvas: int, rev: int, frames: int) -> None:
        canvas_id = self.canvases[canvas]
        document = {"rev": rev, "summary": {"scope": list(scope)},
                    "keyframes": [{"t_ms": 10 * i, "type": "snapshot" if i == 0 else "commit",
                                   "data": {"tenant": scope[0], "env": scope[1], "i": i}}
                                  for i in range(frames)]}
        response = self.stack.client.post(f"/canvas/{canvas_id}/artifacts/replay",
                                          headers=self.headers[scope], json=document)
        assert response.status_code == 201, response.text
        self._note_canvas_write(scope, Written(scope, canvas_id, "replay", rev,
                                               record=response.json(), document=document))

    @rule(scope=scopes, canvas=canvas_indexes, rev=revs, placeholder=st.booleans())
    def create_audit(self, scope: Scope, canvas: int, rev: int, placeholder: bool) -> None:
        canvas_id = self.canvases[canvas]
        url = f"/canvas/{canvas_id}/artifacts/audit?rev={rev}"
        document = None if placeholder else {
            "v": 1, "kind": f"{scope[0]}-{scope[1]}", "status": "passed", "checks": [],
            "findings": [{"scope": list(scope)}], "summary": {"errors": 0, "warnings": 1},
            "generated_at": "2024-01-01T00:00:00+00:00"}
        if document is None:
            response = self.stack.client.post(url, headers=self.headers[scope])
        else:
            response = self.stack.client.post(url, headers=self.headers[scope], json=document)
        assert response.status_code == 201, response.text
        self._note_canvas_write(scope, Written(scope, canvas_id, "audit", rev,
                                               record=response.json(), document=document))

    # ---- media_v2 creates ------------------------------------------------------

    @rule(scope=scopes, kind=st.sampled_from(["video", "audio", "image", "other"]))
    def media_create_asset(self, scope: Scope, kind: str) -> None:
        body = {"source_uri": f"https://src.example/{scope[0]}/{scope[1]}/{uuid.uuid4().hex}",
                "kind": kind, "tags": [f"{scope[0]}:{scope[1]}"]}
        response = self.stack.client.post("/media-v2/assets", headers=self.headers[scope],
                                          json=body)
        assert response.status_code == 201, response.text
        asset = response.json()
        self._assert_in_scope(asset, scope)
        assert asset["source_uri"] == body["source_uri"]
        self.world.asset_scope[asset["id"]] = scope
        self.world.asset_artifacts[asset["id"]] = set()
        self.assets.append(asset["id"])

    @rule(scope=scopes, data=st.data())
    def media_register_artifact(self, scope: Scope, data: st.DataObject) -> None:
        """Registering under another scope's asset is refused exactly like a missing one."""
        asset_id = data.draw(st.sampled_from(self.assets)) if self.assets else MISSING_ASSET
        body = {"kind": "thumbnail", "uri": f"https://thumbs.example/{uuid.uuid4().hex}.png",
                "start_ms": 0, "end_ms": 5}
        client, headers = self.stack.client, self.headers[scope]
        response = client.post(f"/media-v2/assets/{asset_id}/artifacts", headers=headers,
                               json=body)
        if self.world.asset_scope.get(asset_id) == scope:
            assert response.status_code == 201, response.text
            artifact = response.json()
            self._assert_in_scope(artifact, scope)
            assert artifact["parent_asset_id"] == asset_id
            self.world.asset_artifacts[asset_id].add(artifact["id"])
            self.world.media_artifact_scope[artifact["id"]] = scope
            self.media_artifacts.append(artifact["id"])
            return
        missing = client.post(f"/media-v2/assets/{MISSING_ASSET}/artifacts", headers=headers,
                              json=body)
        assert response.status_code == missing.status_code == 404, response.text
        assert _strip_request_id(response.json()) == _strip_request_id(missing.json())

    # ---- canvas reads ----------------------------------------------------------
    # Every read is made from all four scopes: the owner must get its data
    # back, the three others must see nothing. Checking every reader (rather
    # than one drawn at random) makes a leak between any pair of scopes show
    # up on the first read that touches an affected id.

    @rule(canvas=canvas_indexes, kind=st.none() | st.sampled_from(KINDS),
          rev=st.none() | revs, limit=st.integers(1, 4))
    def read_list(self, canvas: int, kind: str | None, rev: int | None, limit: int) -> None:
        canvas_id = self.canvases[canvas]
        for reader in SCOPES:
            params: dict[str, Any] = {"limit": limit}
            if kind is not None:
                params["kind"] = kind
            if rev is not None:
                params["rev"] = rev
            seen: list[str] = []
            for _ in range(100):
                response = self.stack.client.get(f"/canvas/{canvas_id}/artifacts",
                                                 headers=self.headers[reader], params=params)
                assert response.status_code == 200, response.text
                page = response.json()
                assert len(page["items"]) <= limit
                for item in page["items"]:
                    self._assert_in_scope(item, reader)
                    assert item["canvas_id"] == canvas_id
                    assert item == self.artifacts[item["id"]].record
                seen.extend(item["id"] for item in page["items"])
                if page["next_cursor"] is None:
                    break
                params["cursor"] = page["next_cursor"]
            assert seen == self._expected(reader, canvas_id, kind, rev)

    @rule(canvas=canvas_indexes, kind=st.sampled_from(KINDS))
    def read_latest(self, canvas: int, kind: str) -> None:
        canvas_id = self.canvases[canvas]
        for reader in SCOPES:
            response = self.stack.client.get(f"/canvas/{canvas_id}/artifacts/latest",
                                             headers=self.headers[reader], params={"kind": kind})
            mine = [self.artifacts[aid] for aid in self._expected(reader, canvas_id, kind)]
            if not mine:
                assert response.status_code == 404, response.text
                assert response.json()["error"]["code"] == "canvas.not_found"
                continue
            assert response.status_code == 200, response.text
            best = max(mine, key=lambda w: (w.rev, w.record["id"]))
            assert response.json() == best.record

    def _draw_artifact(self, data: st.DataObject) -> Written | None:
        ids = list(self.artifacts)
        return self.artifacts[data.draw(st.sampled_from(ids))] if ids else None

    def _hidden_from_others(self, owner: Scope, path: str, missing_path: str) -> None:
        for reader in SCOPES:
            if reader != owner:
                self._assert_hidden(path, missing_path, reader)

    @rule(data=st.data())
    def read_record(self, data: st.DataObject) -> None:
        written = self._draw_artifact(data)
        if written is None:
            return
        path = self._canvas_path(written)
        self._hidden_from_others(written.scope, path,
                                 f"/canvas/{written.canvas_id}/artifacts/{MISSING_ARTIFACT}")
        response = self.stack.client.get(path, headers=self.headers[written.scope])
        assert response.status_code == 200, response.text
        assert response.json() == written.record

    @rule(data=st.data())
    def read_content(self, data: st.DataObject) -> None:
        written = self._draw_artifact(data)
        if written is None:
            return
        path = self._canvas_path(written, "/content")
        self._hidden_from_others(
            written.scope, path,
            f"/canvas/{written.canvas_id}/artifacts/{MISSING_ARTIFACT}/content")
        response = self.stack.client.get(path, headers=self.headers[written.scope],
                                         follow_redirects=False)
        if written.redirect is not None:
            assert response.status_code == 307, response.text
            assert response.headers["location"] == written.redirect
        elif written.content is not None:
            assert response.status_code == 200, response.text
            assert response.content == written.content
        else:
            assert response.status_code == 200, response.text
            document = json.loads(response.content)
            if written.document is not None:
                assert document == written.document
            else:
                assert (document["status"], document["findings"]) == ("pending", [])

    @rule(data=st.data())
    def read_lineage(self, data: st.DataObject) -> None:
        written = self._draw_artifact(data)
        if written is None:
            return
        path = self._canvas_path(written, "/lineage")
        self._hidden_from_others(
            written.scope, path,
            f"/canvas/{written.canvas_id}/artifacts/{MISSING_ARTIFACT}/lineage")
        response = self.stack.client.get(path, headers=self.headers[written.scope])
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["artifact_id"] == written.record["id"]
        assert body["documents"] and body["events"]
        for entry in body["documents"] + body["events"]:
            self._assert_in_scope(entry, written.scope)
            self._assert_in_scope(entry["lineage"], written.scope)
            assert entry["lineage"]["artifact_id"] == written.record["id"]
            assert entry["lineage"]["canvas_id"] == written.canvas_id

    # ---- media_v2 reads ----------------------------------------------------------

    @rule(limit=st.sampled_from([7, 200]))
    def media_list(self, limit: int) -> None:
        for reader in SCOPES:
            params: dict[str, Any] = {"limit": limit}
            seen: list[str] = []
            for _ in range(1000):
                response = self.stack.client.get("/media-v2/assets",
                                                 headers=self.headers[reader], params=params)
                assert response.status_code == 200, response.text
                page = response.json()
                for item in page["items"]:
                    self._assert_in_scope(item, reader)
                seen.extend(item["id"] for item in page["items"])
                if page["next_cursor"] is None:
                    break
                params["cursor"] = page["next_cursor"]
            assert len(seen) == len(set(seen)), "pagination repeated an asset"
            assert set(seen) == {a for a, s in self.world.asset_scope.items() if s == reader}

    @rule(data=st.data())
    def media_get_asset(self, data: st.DataObject) -> None:
        if not self.assets:
            return
        asset_id = data.draw(st.sampled_from(self.assets))
        owner = self.world.asset_scope[asset_id]
        path = f"/media-v2/assets/{asset_id}"
        self._hidden_from_others(owner, path, f"/media-v2/assets/{MISSING_ASSET}")
        response = self.stack.client.get(path, headers=self.headers[owner])
        assert response.status_code == 200, response.text
        detail = response.json()
        self._assert_in_scope(detail["asset"], owner)
        for artifact in detail["artifacts"]:
            self._assert_in_scope(artifact, owner)
            assert artifact["parent_asset_id"] == asset_id
        assert {a["id"] for a in detail["artifacts"]} == self.world.asset_artifacts[asset_id]

    @rule(data=st.data())
    def media_get_artifact(self, data: st.DataObject) -> None:
        if not self.media_artifacts:
            return
        artifact_id = data.draw(st.sampled_from(self.media_artifacts))
        owner = self.world.media_artifact_scope[artifact_id]
        path = f"/media-v2/artifacts/{artifact_id}"
        self._hidden_from_others(owner, path, f"/media-v2/artifacts/{MISSING_MEDIA_ARTIFACT}")
        response = self.stack.client.get(path, headers=self.headers[owner])
        assert response.status_code == 200, response.text
        self._assert_in_scope(response.json(), owner)
        assert response.json()["id"] == artifact_id


@pytest.mark.slow
def test_no_read_ever_crosses_tenant_or_env(local: Stack) -> None:
    """One app for the whole run; each example adds to what the model knows."""
    machine = type("BoundIsolationMachine", (IsolationMachine,),
                   {"stack": local, "world": World()})
    run_state_machine_as_test(machine, settings=settings(
        max_examples=25, stateful_step_count=15, deadline=None,
        suppress_health_check=[HealthCheck.too_slow]))
