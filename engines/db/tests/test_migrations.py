"""Alembic migrations from empty, on PostgreSQL and SQLite, against the models.

The migrations are the source of truth for the schema and the Table objects
in each repository describe it for queries; autogenerate's comparison must
find no difference between the two on either backend, so a model change
without a migration (or the reverse) fails here.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, inspect

import engines.canvas_artifacts.repository  # noqa: F401 - registers canvas_artifacts
import engines.db.idempotency  # noqa: F401 - registers idempotency_keys
import engines.events.webhooks.tables  # noqa: F401 - registers webhook_*
import engines.lifecycle.retention  # noqa: F401 - registers retention_overrides
import engines.lineage.nexus.backends.sql  # noqa: F401 - registers nexus_documents, dataset_events
import engines.media_v2.repository  # noqa: F401 - registers media_v2_*
import engines.storage.leases  # noqa: F401 - registers upload_leases
from conftest import create_pg_database, drop_pg_database
from engines.config import Settings
from engines.db.engine import build_engine
from engines.db.metadata import metadata
from engines.db.migrate import (
    alembic_config,
    current_revision,
    head_revision,
    pending,
    upgrade,
)

TABLES = {"media_v2_assets", "media_v2_artifacts", "nexus_documents", "dataset_events",
          "canvas_artifacts", "idempotency_keys"}
"""The tables the design names; later migrations may add more, never fewer."""
HEAD = ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()


@pytest.fixture(params=[pytest.param("postgresql", marks=pytest.mark.postgres), "sqlite"])
def fresh_engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    """An engine on a brand-new, empty database of each backend."""
    if request.param == "sqlite":
        engine = build_engine(Settings(database_url=f"sqlite:///{tmp_path / 'fresh.db'}"))
        yield engine
        engine.dispose()
        return
    admin_url = request.getfixturevalue("pg_admin_url")
    url = create_pg_database(admin_url)
    engine = build_engine(Settings(database_url=url))
    yield engine
    engine.dispose()
    drop_pg_database(admin_url, url)


def schema_diff(engine: Engine) -> list[object]:
    def on_this_backend(item: object, _name: str | None, type_: str, _reflected: bool,
                        _compare_to: object) -> bool:
        """Indexes declared for one dialect only (`ddl_if`) are not expected elsewhere."""
        only = getattr(item, "_ddl_if", None) if type_ == "index" else None
        return only is None or only.dialect in (None, engine.dialect.name)

    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={
            "compare_type": True, "compare_server_default": True,
            "include_object": on_this_backend})
        return compare_metadata(context, metadata)


def test_upgrade_from_empty_is_idempotent_and_matches_the_models(fresh_engine: Engine) -> None:
    assert set(inspect(fresh_engine).get_table_names()) == set()
    assert pending(fresh_engine) == (None, HEAD)

    upgrade(fresh_engine)

    assert pending(fresh_engine) == (HEAD, HEAD)
    assert set(metadata.tables) >= TABLES
    assert set(inspect(fresh_engine).get_table_names()) == set(metadata.tables) | {
        "alembic_version"}
    assert schema_diff(fresh_engine) == []

    upgrade(fresh_engine)  # a second run (another replica starting) changes nothing

    assert pending(fresh_engine) == (HEAD, HEAD)
    assert schema_diff(fresh_engine) == []


# Every query the routes make, and the index that serves it.
QUERY_INDEXES = {
    "canvas_artifacts": {
        "list newest first": ["tenant_id", "env", "canvas_id", "id"],
        "list by kind": ["tenant_id", "env", "canvas_id", "kind", "id"],
        "list by rev": ["tenant_id", "env", "canvas_id", "rev", "id"],
        "latest by kind": ["tenant_id", "env", "canvas_id", "kind", "rev", "id"],
        "gc lookup by uri": ["uri"],
        "tenant/env list newest first": ["tenant_id", "env", "id"],
        "tenant/env list by kind": ["tenant_id", "env", "kind", "id"],
    },
    "media_v2_assets": {"list and lookup in tenant/env": ["tenant_id", "env", "id"]},
    "media_v2_artifacts": {"artifacts of an asset": ["parent_asset_id", "id"]},
    "nexus_documents": {"lineage lookup": ["tenant_id", "env", "subject_id"]},
    "dataset_events": {"lineage lookup": ["tenant_id", "env", "subject_id"]},
}


def test_indexes_exist_for_every_route_query(fresh_engine: Engine) -> None:
    upgrade(fresh_engine)
    inspector = inspect(fresh_engine)
    for table, wanted in QUERY_INDEXES.items():
        have = [index["column_names"] for index in inspector.get_indexes(table)]
        for query, columns in wanted.items():
            assert columns in have, f"{table}: no index for {query} ({columns})"
    # Lookups by id and the idempotency key are served by the primary keys.
    for table in TABLES - {"idempotency_keys"}:
        assert inspector.get_pk_constraint(table)["constrained_columns"] == ["id"], table
    # The idempotency lookup is by (tenant_id, env, key): exactly the primary key.
    assert inspector.get_pk_constraint("idempotency_keys")["constrained_columns"] == [
        "tenant_id", "env", "key"]


def test_0003_rewrites_old_uris_into_the_canonical_root_relative_form(
        fresh_engine: Engine) -> None:
    """Rows written by earlier versions (absolute file:// paths, doubled slashes) are
    rewritten, so moving the media root or comparing keys never misses them."""
    from alembic import command
    from sqlalchemy import text

    config = alembic_config(fresh_engine.url.render_as_string(hide_password=False))
    with fresh_engine.begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, "0002")
    old = {
        "file:///srv/old-root/var/media/tenants/t_acme/dev/canvas/c_1/preview/art_1.png":
            "local:tenants/t_acme/dev/canvas/c_1/preview/art_1.png",
        "s3://bucket//tenants/t_acme/dev/r/a.png": "s3://bucket/tenants/t_acme/dev/r/a.png",
        "S3://bucket/tenants/t_acme/dev/r/b.png": "s3://bucket/tenants/t_acme/dev/r/b.png",
        "https://cdn.example.com/x.png": "https://cdn.example.com/x.png",
        "canvas://c_1": "canvas://c_1",
    }
    now = "2026-11-28 00:00:00+00:00"
    with fresh_engine.begin() as conn:
        for index, uri in enumerate(old):
            conn.execute(text(
                "INSERT INTO media_v2_assets (id, tenant_id, env, kind, source_uri, tags, "
                "created_at, meta) VALUES (:id, 't_acme', 'dev', 'other', :uri, '[]', :now, '{}')"),
                {"id": f"ma_{index}", "uri": uri, "now": now})
            conn.execute(text(
                "INSERT INTO media_v2_artifacts (id, parent_asset_id, tenant_id, env, kind, uri, "
                "created_at, meta) VALUES (:id, :parent, 't_acme', 'dev', 'render', :uri, :now, "
                "'{}')"), {"id": f"mda_{index}", "parent": f"ma_{index}", "uri": uri, "now": now})

    upgrade(fresh_engine)

    with fresh_engine.connect() as conn:
        for table, column, prefix in (("media_v2_assets", "source_uri", "ma"),
                                      ("media_v2_artifacts", "uri", "mda")):
            rows = dict(conn.execute(text(f"SELECT id, {column} FROM {table}")).all())
            assert rows == {f"{prefix}_{i}": new for i, new in enumerate(old.values())}


def test_the_revisions_readyz_compares_are_alembics_own(fresh_engine: Engine) -> None:
    """`/readyz` reads the head from the scripts and the current revision with one SELECT
    (no Alembic in a served worker): both must be what Alembic itself says."""
    assert head_revision() == HEAD
    for step in ("empty", "migrated"):
        with fresh_engine.connect() as conn:
            assert current_revision(conn) == MigrationContext.configure(
                conn).get_current_revision(), step
        upgrade(fresh_engine)
    with fresh_engine.connect() as conn:
        assert current_revision(conn) == HEAD


def test_a_served_app_answers_readyz_without_importing_alembic(tmp_path: Path) -> None:
    """Alembic and Mako stay out of the served workers (~12 MiB each with Pygments, which
    the test client's httpx imports itself, so it is not checked here)."""
    script = (
        "import sys\n"
        "from fastapi.testclient import TestClient\n"
        "from engines.app import create_app\n"
        "from engines.config import Settings\n"
        f"settings = Settings(database_url='sqlite:///{tmp_path}/r.db', "
        f"media_local_root='{tmp_path}/media')\n"
        "with TestClient(create_app(settings)) as client:\n"
        "    print(client.get('/readyz').status_code)\n"
        "print(sorted(m for m in ('alembic', 'mako') if m in sys.modules))\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    status, modules = done.stdout.strip().split("\n")[-2:]
    assert status == "503", "an empty database is not ready (and says so without Alembic)"
    assert modules == "[]", modules
