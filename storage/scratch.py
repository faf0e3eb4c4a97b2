"""A scratch database on the configured server, dropped afterwards (benchmarks, the dump test)."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import make_url

from storage.db import engine_for, normalise_url, run_db

# -- a scratch database (benchmarks, the dump test) -----------------------------------------


@contextlib.contextmanager
def temporary_database(url: str, prefix: str = "attest_scratch") -> Iterator[str]:
    """Create an empty database on ``url``'s server, yield its (libpq-style) URL, drop it after."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    admin = engine_for(url).execution_options(isolation_level="AUTOCOMMIT")
    run_db(lambda: _ddl(admin, f'CREATE DATABASE "{name}"'))
    scratch = make_url(normalise_url(url)).set(drivername="postgresql", database=name)
    scratch_url = scratch.render_as_string(hide_password=False)
    try:
        yield scratch_url
    finally:
        engine_for(scratch_url).dispose()
        run_db(lambda: _ddl(admin, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def _ddl(engine: Any, statement: str) -> None:
    with engine.connect() as conn:
        conn.execute(text(statement))
