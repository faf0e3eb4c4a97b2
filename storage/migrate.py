"""Run Alembic programmatically, so ``attest db upgrade`` needs no alembic.ini or cwd."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

import migrations
from storage.db import engine_for, run_db


def alembic_config(database_url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(Path(migrations.__file__).parent))
    # '%' is ConfigParser interpolation; escape it so URLs with encoded characters survive.
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return config


def upgrade(database_url: str, revision: str = "head") -> None:
    """Bring the schema to ``revision``; safe to run again."""
    run_db(lambda: command.upgrade(alembic_config(database_url), revision))


def current_revision(database_url: str) -> str | None:
    def read() -> str | None:
        with engine_for(database_url).connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()

    return run_db(read)


def head_revision(database_url: str) -> str | None:
    return ScriptDirectory.from_config(alembic_config(database_url)).get_current_head()
