"""The schema comes from the Alembic revisions: they build exactly what storage/models.py
declares, on SQLite and PostgreSQL, and they come down again."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlmodel import SQLModel

from storage.migrate import BASELINE, alembic_config, downgrade, schema_drift, upgrade
from tests.conftest import POSTGRES_URL, REQUIRE_POSTGRES

ROOT = Path(__file__).resolve().parents[2]
MODEL_TABLES = {table.name for table in SQLModel.metadata.sorted_tables}


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A brand-new, empty database (not the session's shared one: these tests drop tables)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'fresh.db'}"
        return
    admin = sqlalchemy.create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    name = f"drip_migrations_{uuid.uuid4().hex[:8]}"
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    except sqlalchemy.exc.OperationalError:
        admin.dispose()
        if REQUIRE_POSTGRES:
            raise
        pytest.skip("PostgreSQL not reachable (set DRIP_TEST_POSTGRES_URL)")
    try:
        yield POSTGRES_URL.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


def current_revision(url: str) -> str | None:
    engine = sqlalchemy.create_engine(url)
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    finally:
        engine.dispose()


def table_names(url: str) -> set[str]:
    engine = sqlalchemy.create_engine(url)
    try:
        return set(sqlalchemy.inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_one_head() -> None:
    """Two engineers adding revisions in parallel make two heads: merge them before release."""
    heads = ScriptDirectory.from_config(alembic_config("sqlite://")).get_heads()
    assert len(heads) == 1, f"several migration heads {heads}: run `alembic merge heads`"


def test_upgrade_builds_the_models_schema_and_downgrade_removes_it(
    empty_database_url: str,
) -> None:
    url = empty_database_url
    head = ScriptDirectory.from_config(alembic_config(url)).get_current_head()

    upgrade(url)
    assert current_revision(url) == head
    assert table_names(url) == MODEL_TABLES | {"alembic_version"}
    diffs = schema_drift(url)
    assert diffs == [], (
        "storage/models.py and the migrations disagree; write a revision with "
        f"`make migration m='...'` and check it by hand: {diffs}"
    )

    upgrade(url)  # at head: a no-op, as every API/worker start in development does it
    assert current_revision(url) == head

    downgrade(url, "base")
    assert current_revision(url) is None
    assert table_names(url) == {"alembic_version"}
    # The comparison sees real differences (so the empty diff above means something).
    missing = {diff[1].name for diff in schema_drift(url) if diff[0] == "add_table"}
    assert missing == MODEL_TABLES


def test_migrate_command_uses_the_settings_url(tmp_path: Path) -> None:
    """`python -m storage.migrate` (what docker-compose and `make migrate` run)."""
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    env = {**os.environ, "DRIP_DATABASE_URL": url, "DRIP_VAR_DIR": str(tmp_path / "var")}
    done = subprocess.run(
        [sys.executable, "-m", "storage.migrate"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert table_names(url) == MODEL_TABLES | {"alembic_version"}
    assert schema_drift(url) == []
    assert "database schema is up to date" in done.stderr


def test_a_database_made_before_migrations_is_adopted_not_recreated(
    empty_database_url: str,
) -> None:
    """`make run` on a var/drip.db that `create_all` built (the 0001 schema, no history): the
    rows stay, the history starts at 0001, and later revisions apply on top."""
    url = empty_database_url
    upgrade(url, BASELINE)
    engine = sqlalchemy.create_engine(url)
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql("DROP TABLE alembic_version")
            conn.exec_driver_sql(
                "INSERT INTO template (name, html, created_at, updated_at) "
                "VALUES ('kept', '<p>x</p>', '2026-01-01', '2026-01-01')"
            )
        assert current_revision(url) is None

        upgrade(url)

        assert (
            current_revision(url)
            == ScriptDirectory.from_config(alembic_config(url)).get_current_head()
        )
        assert schema_drift(url) == []
        with engine.connect() as conn:
            assert conn.exec_driver_sql("SELECT name FROM template").scalars().all() == ["kept"]
    finally:
        engine.dispose()


def test_processes_migrating_one_fresh_database_at_once_all_succeed(
    empty_database_url: str,
) -> None:
    """`drip api` and `drip worker` started together both migrate a fresh database."""
    code = "import sys; from storage.migrate import upgrade; upgrade(sys.argv[1])"
    env = {k: v for k, v in os.environ.items() if not k.startswith("DRIP_")}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, empty_database_url],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        for _ in range(4)
    ]
    outputs = [p.communicate(timeout=120)[0].decode() for p in procs]
    failed = [out for p, out in zip(procs, outputs, strict=True) if p.returncode != 0]
    assert not failed, failed[0][-2000:]
    heads = ScriptDirectory.from_config(alembic_config(empty_database_url)).get_heads()
    assert current_revision(empty_database_url) in heads
    assert schema_drift(empty_database_url) == []
