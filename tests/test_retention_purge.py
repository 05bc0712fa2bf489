"""Retention (`engines gc` expires old artifacts) and tenant purge, on both stacks.

Both run as an operator runs them: the `engines` command against the same
database and store as the service, then the tables and the store are
checked directly.
"""

from __future__ import annotations

import json
import os
import subprocess
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import event, func, select, update

from conftest import SIGNING_KEY, Stack, new_canvas
from engines.canvas_artifacts.repository import canvas_artifacts
from engines.canvas_artifacts.tests.helpers import (
    METADATA_TABLES,
    blob_keys,
    create_audit,
    create_preview,
    create_replay,
    created,
    fail_third_deletion_in_batches_of_two,
    new_tenant,
    row_counts,
    url,
)
from engines.http.errors import ServiceUnavailable
from engines.lifecycle import delete as lifecycle
from engines.lineage.dataset_events import SCOPE_PURGED
from engines.lineage.nexus.backends.sql import events as dataset_events
from tests._inprocess_cli import call_cli
from tests.test_crash_gc import ENGINES, service_env


def cli_env(stack: Stack, **extra: object) -> dict[str, str]:
    settings = stack.settings
    values: dict[str, object] = {"database_url": settings.database_url,
                                 "auth_jwt_signing": SIGNING_KEY, **extra}
    if settings.raw_bucket:
        values.update(raw_bucket=settings.raw_bucket,
                      aws_endpoint_url_s3=settings.aws_endpoint_url_s3, s3_max_attempts=2)
        for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
            values[name] = os.environ.get(name, "testing")
    else:
        values["media_local_root"] = settings.media_local_root
    return service_env(**values)


def engines(env: dict[str, str], *args: str, expect: int = 0) -> str:
    done = subprocess.run([ENGINES, *args], env=env, capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == expect, done.stdout + done.stderr
    return done.stdout


def engines_here(env: dict[str, str], *args: str, expect: int = 0) -> str:
    """engines() in this process (engines.cli.main with env as the whole environment):
    the same command without a second of re-importing the package; the tests that use
    it run the real script for their other calls."""
    done = call_cli(*args, env=env)
    assert done.returncode == expect, done.stdout + done.stderr
    return done.stdout


def summary(output: str) -> dict[str, Any]:
    """The JSON summary the command prints after its progress lines."""
    return json.JSONDecoder().raw_decode(output[output.index("\n{") + 1:])[0]


def ids(stack: Stack, canvas: str, tenant: str = "t_acme") -> list[str]:
    items = stack.client.get(url(canvas), headers=stack.headers(tenant)).json()["items"]
    return sorted(item["id"] for item in items)


def expired_events(stack: Stack, tenant: str) -> list[dict[str, Any]]:
    with stack.runtime.engine.connect() as conn:
        return [dict(r) for r in conn.execute(select(dataset_events).where(
            dataset_events.c.tenant_id == tenant,
            dataset_events.c.event_type.like("%.expired"))).mappings()]


def plans(output: str, tenant: str) -> list[dict[str, Any]]:
    """The retention lines of a gc summary for one tenant (the PostgreSQL database is
    shared by the tests of one worker)."""
    return [{k: v for k, v in plan.items() if k != "created_before"}
            for plan in summary(output)["retention"] if plan["tenant_id"] == tenant]


def age(stack: Stack, tenant: str, by: timedelta = timedelta(hours=2)) -> None:
    """Make a tenant's artifacts older (in every env) instead of waiting for them to age:
    the `engines gc` subprocess judges retention by its own clock."""
    table = canvas_artifacts
    with stack.runtime.engine.begin() as conn:
        rows = conn.execute(select(table.c.id, table.c.created_at)
                            .where(table.c.tenant_id == tenant)).all()
        for artifact_id, created_at in rows:
            conn.execute(update(table).where(table.c.id == artifact_id)
                         .values(created_at=created_at - by))


# ---- retention ------------------------------------------------------------------


def test_retention_expires_old_artifacts_but_keeps_each_canvas_latest(stack: Stack) -> None:
    t = new_tenant()
    a, b = new_canvas(), new_canvas()
    old_a = [created(create_preview(stack, a, rev=r, tenant=t)) for r in (1, 2)]
    old_replay = created(create_replay(stack, a, tenant=t))
    latest_b = created(create_preview(stack, b, rev=9, tenant=t))
    age(stack, t)
    env = cli_env(stack, retention_preview="1h")

    dry = engines(env, "gc", "--older-than", "15m")
    assert plans(dry, t) == [{"tenant_id": t, "env": "dev", "kind": "preview",
                              "would_expire": 1}]
    assert len(ids(stack, a, t)) == 3, "a dry run removes nothing"
    fresh_a = created(create_preview(stack, a, rev=0, tenant=t))  # newest by time, not by rev

    applied = engines(env, "gc", "--older-than", "15m", "--apply")
    assert [plan["expired"] for plan in plans(applied, t)] == [1]
    # rev 2 is `latest` for canvas a (highest rev), so it stays however old;
    # the fresh rev-0 preview is younger than the retention; replays keep forever
    assert ids(stack, a, t) == sorted([old_a[1]["id"], old_replay["id"], fresh_a["id"]])
    assert ids(stack, b, t) == [latest_b["id"]]
    assert stack.runtime.store.key_for(old_a[0]["uri"]) not in blob_keys(stack)
    [event] = expired_events(stack, t)
    assert event["subject_id"] == old_a[0]["id"]
    assert event["event_type"] == "canvas.preview.expired"
    assert event["lineage"]["actor_id"] == "system" and event["lineage"]["reason"] == "expired"



def _listed_ids(output: str, tenant: str, kind: str) -> list[str]:
    """The `retention:   <id>` lines printed under one tenant's plan for one kind."""
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines)
                 if line.startswith(f"retention: {tenant}/dev {kind}: "))
    listed = []
    for line in lines[start + 1:]:
        if not line.startswith("retention:   "):
            break
        listed.append(line.removeprefix("retention:   "))
    return listed


def test_the_dry_run_and_the_expiry_read_the_due_artifacts_a_page_at_a_time(
        stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each page (and each batch) reads on from where the last ended, as short statements
    however many are due: paged by twos, both find exactly what one page would."""
    t, canvas = new_tenant(), new_canvas()
    previews = [created(create_preview(stack, canvas, rev=rev, tenant=t))["id"]
                for rev in range(7)]
    age(stack, t)
    env = cli_env(stack, retention_preview="1h")
    monkeypatch.setattr(lifecycle, "DRY_RUN_PAGE", 2)
    monkeypatch.setattr(lifecycle, "BATCH", 2)

    dry = engines_here(env, "gc", "--verbose")
    assert _listed_ids(dry, t, "preview") == previews[:-1], "oldest first, the latest kept"
    applied = engines_here(env, "gc", "--apply")
    assert (f"retention: {t}/dev preview: 7 created before " in applied
            and "; the newest of each canvas stays" in applied), applied
    assert f"retention: {t}/dev preview: expired 6 (" in applied
    with stack.runtime.engine.connect() as conn:
        live = conn.execute(select(canvas_artifacts.c.id).where(
            canvas_artifacts.c.tenant_id == t, canvas_artifacts.c.deleted_at.is_(None))).all()
    assert [row.id for row in live] == previews[-1:]


def test_the_dry_run_lists_the_ids_it_would_expire(stack: Stack, tmp_path) -> None:
    """An operator can check exactly what --apply would expire: the first 100 ids per
    tenant and kind, then "... and N more"; all of them with --verbose and in --output."""
    t, canvas = new_tenant(), new_canvas()
    previews = [created(create_preview(stack, canvas, rev=rev, tenant=t))["id"]
                for rev in range(105)]
    replays = sorted(created(create_replay(stack, canvas, tenant=t))["id"] for _ in range(2))
    age(stack, t)
    env = cli_env(stack, retention_preview="1h", retention_replay="1h")
    expiring = set(previews[:-1])  # rev 104 is the canvas's latest preview: kept

    dry = engines(env, "gc")
    assert f"retention: {t}/dev preview: would expire 104 (" in dry
    shown = _listed_ids(dry, t, "preview")
    assert len(shown) == 101 and shown[-1].startswith("... and 4 more"), shown[-1]
    assert set(shown[:100]) <= expiring and len(set(shown[:100])) == 100
    assert _listed_ids(dry, t, "replay") == [replays[0]]
    assert sorted(p["would_expire"] for p in plans(dry, t)) == [1, 104]
    assert all("ids" not in plan for plan in summary(dry)["retention"])

    listing = tmp_path / "gc.jsonl"
    verbose = engines_here(env, "gc", "--verbose", "--output", str(listing))
    assert set(_listed_ids(verbose, t, "preview")) == expiring, "--verbose: every id"
    written = [json.loads(line) for line in listing.read_text().splitlines()]
    mine = [entry for entry in written if entry.get("tenant_id") == t]
    assert sorted(e["id"] for e in mine if e["kind"] == "preview") == sorted(expiring)
    assert [e["id"] for e in mine if e["kind"] == "replay"] == [replays[0]]
    assert {(e["action"], e["reason"], e["env"]) for e in mine} == {
        ("would expire", "retention", "dev")}
    assert len(ids(stack, canvas, t)) == 50, "dry runs remove nothing (a page of 50)"

    applied = engines_here(env, "gc", "--apply", "--output", str(listing))
    assert sorted(p["expired"] for p in plans(applied, t)) == [1, 104]
    expired = [json.loads(line) for line in listing.read_text().splitlines()]
    assert sorted(e["id"] for e in expired if e.get("tenant_id") == t) == sorted(
        [*expiring, replays[0]])
    assert ids(stack, canvas, t) == sorted([previews[-1], replays[1]])


def test_expiry_interrupted_midway_is_finished_by_the_next_run(
        make_stack, monkeypatch: pytest.MonkeyPatch) -> None:
    stack = make_stack("local-sqlite", retention_replay=timedelta(hours=1))
    canvas = new_canvas()
    replays = [created(create_replay(stack, canvas)) for _ in range(5)]
    later = datetime.now(UTC) + timedelta(hours=2)  # the clock seam: no waiting
    fail_third_deletion_in_batches_of_two(stack, monkeypatch)
    with pytest.raises(ServiceUnavailable):
        lifecycle.expire_all(stack.runtime, apply=True, now=later)
    assert ids(stack, canvas) == sorted(r["id"] for r in replays[2:]), \
        "the first batch is expired; the second rolled back whole"

    [done] = lifecycle.expire_all(stack.runtime, apply=True, now=later)
    assert done["expired"] == 2, "the next run expires the rest, the latest stays"
    assert ids(stack, canvas) == [replays[-1]["id"]]


def test_expired_ids_go_to_the_listing_batch_by_batch_and_are_not_kept(
        make_stack, monkeypatch: pytest.MonkeyPatch) -> None:
    """A million due ids are never held at once: each batch (dry run: each page) goes to
    the listing as it is done, the summary keeps only the ids it prints, and the
    returned plan carries the count, not the ids."""
    stack = make_stack("local-sqlite", retention_replay=timedelta(hours=1))
    canvas = new_canvas()
    replays = [created(create_replay(stack, canvas))["id"] for _ in range(6)]
    later = datetime.now(UTC) + timedelta(hours=2)
    monkeypatch.setattr(lifecycle, "DRY_RUN_PAGE", 2)
    monkeypatch.setattr(lifecycle, "BATCH", 2)
    for apply in (False, True):
        batches: list[list[str]] = []
        lines: list[str] = []

        def listing(_plan: object, batch: list[str], batches: list[list[str]] = batches) -> None:
            batches.append(batch)

        [plan] = lifecycle.expire_all(stack.runtime, apply=apply, now=later, shown_ids=3,
                                      progress=lines.append, listing=listing)
        assert [len(b) for b in batches] == [2, 2, 1], (apply, batches)
        assert sorted(i for b in batches for i in b) == sorted(replays[:-1])
        assert plan == {"tenant_id": "t_acme", "env": "dev", "kind": "replay",
                        "created_before": plan["created_before"],
                        "expired" if apply else "would_expire": 5}
        shown = [line.removeprefix("retention:   ") for line in lines
                 if line.startswith("retention:   ")]
        assert len(shown) == 4 and shown[-1].startswith("... and 2 more"), shown
    assert ids(stack, canvas) == [replays[-1]]


def test_without_keep_latest_everything_past_retention_goes(stack: Stack) -> None:
    t, canvas = new_tenant(), new_canvas()
    for rev in (1, 2):
        created(create_audit(stack, canvas, rev=rev, tenant=t))
    age(stack, t)
    env = cli_env(stack, retention_audit="1h", retention_keep_latest="false")
    engines(env, "gc", "--apply")
    assert ids(stack, canvas, t) == []


def test_a_tenant_override_wins_over_the_configured_retention(stack: Stack) -> None:
    kept, expiring, canvas = new_tenant(), new_tenant(), new_canvas()
    forever = [created(create_replay(stack, canvas, tenant=kept)) for _ in range(2)]
    configured = [created(create_replay(stack, canvas, tenant=expiring)) for _ in range(2)]
    prod = [created(create_replay(stack, canvas, tenant=expiring, env="prod"))
            for _ in range(2)]
    env = cli_env(stack, retention_replay="1h")
    engines_here(env, "retention", "set", "--tenant", kept, "--kind", "replay", "--keep",
                 "forever")
    engines_here(env, "retention", "set", "--tenant", expiring, "--env", "prod", "--kind",
                 "replay", "--keep", "30d")
    shown = engines_here(env, "retention", "show")
    assert "replay: 1h" in shown
    assert f"{kept} env=* replay: forever" in shown
    assert f"{expiring} env=prod replay: 30d" in shown
    engines_here(env, "retention", "set", "--tenant", kept, "--kind", "replay", "--keep", "3w",
                 expect=2)
    engines_here(env, "retention", "set", "--tenant", "acme", "--kind", "replay", "--keep",
                 "3d", expect=2)
    age(stack, kept)
    age(stack, expiring)

    engines(env, "gc", "--apply")

    assert ids(stack, canvas, kept) == sorted(r["id"] for r in forever), "override: forever"
    assert ids(stack, canvas, expiring) == [configured[1]["id"]], "configured 1s, latest kept"
    prod_left = stack.client.get(url(canvas), headers=stack.headers(expiring, "prod")).json()
    assert len(prod_left["items"]) == len(prod), "override: 30 days"


# ---- purge ----------------------------------------------------------------------


def table_counts(stack: Stack, tenant: str) -> dict[str, int]:
    with stack.runtime.engine.connect() as conn:
        return {name: conn.execute(select(func.count()).select_from(table).where(
            table.c.tenant_id == tenant)).scalar_one() for name, table in METADATA_TABLES.items()}


def purge_events(stack: Stack, tenant: str) -> list[tuple[str, dict[str, Any]]]:
    """The purge's feed events of a tenant: (env, lineage without its timestamp)."""
    with stack.runtime.engine.connect() as conn:
        rows = conn.execute(select(dataset_events.c.env, dataset_events.c.lineage).where(
            dataset_events.c.tenant_id == tenant, dataset_events.c.event_type == SCOPE_PURGED)
            .order_by(dataset_events.c.env, dataset_events.c.seq)).all()
    return [(env, {k: v for k, v in lineage.items() if k in ("tenant_id", "env")})
            for env, lineage in rows]


def populate(stack: Stack, tenant: str, canvas: str) -> None:
    for env in ("dev", "prod"):
        created(create_preview(stack, canvas, tenant=tenant, env=env, Idempotency_Key="k1"))
        created(create_replay(stack, canvas, tenant=tenant, env=env))
        created(create_audit(stack, canvas, tenant=tenant, env=env))
        upload = stack.client.post("/media-v2/assets", headers=stack.headers(tenant, env),
                                   files={"file": ("notes.txt", b"notes", "text/plain")})
        assert upload.status_code == 201, upload.text


def test_purge_removes_one_tenant_and_nothing_else(stack: Stack) -> None:
    canvas = new_canvas()  # both tenants use the same canvas id
    populate(stack, "t_gone", canvas)
    populate(stack, "t_stays", canvas)
    stays_rows, stays_blobs = table_counts(stack, "t_stays"), [
        k for k in blob_keys(stack) if k.startswith("tenants/t_stays/")]
    env = cli_env(stack)

    dry = summary(engines(env, "purge", "--tenant", "t_gone"))
    assert dry["applied"] is False and dry["envs"] == ["dev", "prod"]
    assert {name: dry["rows"][name] for name in METADATA_TABLES} == table_counts(stack, "t_gone")
    assert dry["rows"]["webhook_subscriptions"] == 0
    assert dry["blobs"] == len([k for k in blob_keys(stack) if k.startswith("tenants/t_gone/")])
    assert dry["blobs"] == 8 and dry["rows"]["canvas_artifacts"] == 6
    assert table_counts(stack, "t_gone")["canvas_artifacts"] == 6, "a dry run removes nothing"

    applied = summary(engines(env, "purge", "--tenant", "t_gone", "--apply"))
    assert applied["rows"] == dry["rows"] and applied["blobs"] == dry["blobs"]
    # all that is left: one `tenant.purged` event per env, for running servers' caches
    assert table_counts(stack, "t_gone") == {**dict.fromkeys(METADATA_TABLES, 0),
                                             "dataset_events": 2}
    assert purge_events(stack, "t_gone") == [("dev", {"tenant_id": "t_gone", "env": "dev"}),
                                             ("prod", {"tenant_id": "t_gone", "env": "prod"})]
    assert [k for k in blob_keys(stack) if k.startswith("tenants/t_gone/")] == []
    assert table_counts(stack, "t_stays") == stays_rows
    assert [k for k in blob_keys(stack) if k.startswith("tenants/t_stays/")] == stays_blobs
    assert len(ids(stack, canvas, "t_stays")) == 3

    again = summary(engines(env, "purge", "--tenant", "t_gone", "--apply"))
    assert again["blobs"] == 0 and set(again["rows"].values()) == {0}
    assert len(purge_events(stack, "t_gone")) == 4, "a purge keeps the earlier events"


def test_purge_of_one_env_keeps_the_tenants_other_envs(stack: Stack) -> None:
    canvas = new_canvas()
    populate(stack, "t_envs", canvas)
    env = cli_env(stack)
    applied = summary(engines(env, "purge", "--tenant", "t_envs", "--env", "prod", "--apply"))
    assert applied["envs"] == ["prod"] and applied["rows"]["canvas_artifacts"] == 3
    assert [env for env, _ in purge_events(stack, "t_envs")] == ["prod"]
    assert [k for k in blob_keys(stack) if k.startswith("tenants/t_envs/prod/")] == []
    assert len([k for k in blob_keys(stack) if k.startswith("tenants/t_envs/dev/")]) == 4
    assert len(ids(stack, canvas, "t_envs")) == 3
    engines(env, "purge", "--tenant", "T-bad", expect=2)


def test_purge_deletes_in_batches_that_each_commit(stack: Stack,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """A tenant with many rows goes BATCH rows per transaction, with progress lines: no
    transaction holds a million row locks while the other tenants keep writing."""
    from engines.lifecycle import purge as purge_module

    monkeypatch.setattr(purge_module, "BATCH", 2)
    monkeypatch.setattr(purge_module, "PROGRESS_EVERY", 2)
    canvas = new_canvas()
    populate(stack, "t_batched", canvas)
    populate(stack, "t_kept", canvas)
    kept = table_counts(stack, "t_kept")
    transactions: list[int] = []
    event.listen(stack.runtime.engine, "commit", lambda _conn: transactions.append(1))
    lines: list[str] = []
    report = purge_module.purge(stack.runtime.store, stack.runtime.engine, "t_batched", None,
                                apply=True, progress=lines.append)
    assert report.rows["canvas_artifacts"] == 6
    assert len(transactions) >= sum(n // 2 + 1 for n in report.rows.values())
    assert any(line.startswith("purge: canvas_artifacts:") and "so far" in line
               for line in lines), lines
    assert row_counts(stack, "t_batched") == dict.fromkeys(METADATA_TABLES, 0)  # the marker aside
    assert table_counts(stack, "t_kept") == kept
