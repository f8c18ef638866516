"""Bring the app database to the latest schema: `python -m storage.migrate` (or `make migrate`).

The schema comes only from the Alembic revisions in storage/migrations/versions/. Production runs
this once per deploy, before any API or worker starts (docker-compose's `migrate` job)."""

from __future__ import annotations

import contextlib
import fcntl
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import sqlalchemy
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from sqlalchemy.pool import NullPool
from sqlmodel import SQLModel

import storage.models  # noqa: F401  (registers the tables on SQLModel.metadata)

MIGRATIONS = Path(__file__).resolve().parent / "migrations"

log = logging.getLogger(__name__)


def migration_engine(database_url: str) -> sqlalchemy.Engine:
    """A plain engine for schema work. Unlike storage.db's, no SQLite foreign_keys pragma: batch
    mode drops and recreates tables. It waits for the API or worker to release the file."""
    if not database_url.startswith("sqlite"):
        return sqlalchemy.create_engine(database_url, poolclass=NullPool)
    path = database_url.split("///", 1)[-1]
    if path and path != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    return sqlalchemy.create_engine(database_url, poolclass=NullPool, connect_args={"timeout": 30})


def alembic_config(database_url: str) -> Config:
    # Built in code rather than read from alembic.ini, so an installed package finds its
    # revisions; the URL travels as an attribute (configparser would mangle a '%' in it).
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["database_url"] = database_url
    return config


# The schema `create_all` built before there were migrations: what revision 0001 creates.
BASELINE = "0001"


def upgrade(database_url: str, revision: str = "heads") -> None:
    config = alembic_config(database_url)
    with _one_migrator(database_url):
        if _unversioned_with_tables(database_url):
            log.warning(
                "database has tables but no migration history: recording it as %s", BASELINE
            )
            command.stamp(config, BASELINE)
        # "heads": revisions written in parallel on two branches both apply until they are merged.
        command.upgrade(config, revision)


# Any 64-bit number: the PostgreSQL advisory lock all drip migrators take.
MIGRATION_LOCK_KEY = 0x647269705F6D6967  # "drip_mig"


@contextlib.contextmanager
def _one_migrator(database_url: str) -> Iterator[None]:
    """One migrating process at a time (`drip api` and `drip worker` started together on a
    fresh database both migrate it; on SQLite, DDL is not transactional and the second one
    failed with "table already exists"). The next one then finds the schema at head."""
    if database_url.startswith("sqlite"):
        path = database_url.split("///", 1)[-1]
        if not path or path == ":memory:":
            yield
            return
        lock = Path(path + ".migrate-lock")
        lock.parent.mkdir(parents=True, exist_ok=True)
        with lock.open("a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
        return
    engine = migration_engine(database_url)
    try:
        with engine.connect() as conn:
            conn.execute(sqlalchemy.text("SELECT pg_advisory_lock(:k)"), {"k": MIGRATION_LOCK_KEY})
            try:
                yield
            finally:
                conn.execute(
                    sqlalchemy.text("SELECT pg_advisory_unlock(:k)"), {"k": MIGRATION_LOCK_KEY}
                )
    finally:
        engine.dispose()


def _unversioned_with_tables(database_url: str) -> bool:
    engine = migration_engine(database_url)
    try:
        tables = set(sqlalchemy.inspect(engine).get_table_names())
    finally:
        engine.dispose()
    return "alembic_version" not in tables and "campaign" in tables


def downgrade(database_url: str, revision: str) -> None:
    command.downgrade(alembic_config(database_url), revision)


def schema_drift(database_url: str) -> list[Any]:
    """What differs between the database's schema and storage/models.py ([] when nothing)."""
    engine = migration_engine(database_url)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            return list(compare_metadata(context, SQLModel.metadata))
    finally:
        engine.dispose()


def main() -> None:
    from observability.logs import configure_logging
    from settings import get_settings

    settings = get_settings()
    configure_logging(settings.log_level)
    log.info("migrating the database to the latest schema")
    upgrade(settings.database_url)
    log.info("database schema is up to date")


if __name__ == "__main__":
    main()
