"""Alembic environment: the app's tables (SQLModel.metadata) on the URL from settings.

`storage.migrate.upgrade(url)` passes its URL in `config.attributes`; the `alembic` command line
falls back to DRIP_DATABASE_URL. SQLite cannot ALTER most things, so there every change runs in
batch mode (copy the table, swap it in)."""

from __future__ import annotations

from typing import Any

from alembic import context
from sqlmodel import SQLModel
from sqlmodel.sql.sqltypes import AutoString

from storage.migrate import migration_engine  # also registers the tables on SQLModel.metadata

config = context.config
target_metadata = SQLModel.metadata


def database_url() -> str:
    url = config.attributes.get("database_url")
    if url:
        return str(url)
    from settings import Settings

    return Settings().database_url


def render_item(type_: str, obj: Any, _autogen_context: Any) -> str | bool:
    # Write SQLModel's AutoString as plain sa.String, so revisions do not import sqlmodel.
    if type_ == "type" and isinstance(obj, AutoString):
        return f"sa.String(length={obj.length})" if obj.length else "sa.String()"
    return False


def options(url: str) -> dict[str, Any]:
    return {
        "target_metadata": target_metadata,
        "render_as_batch": url.startswith("sqlite"),
        "compare_type": True,
        "render_item": render_item,
    }


def run_offline() -> None:
    url = database_url()
    context.configure(url=url, literal_binds=True, **options(url))
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    url = database_url()
    engine = migration_engine(url)
    try:
        with engine.connect() as connection:
            context.configure(connection=connection, **options(url))
            with context.begin_transaction():
                context.run_migrations()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
