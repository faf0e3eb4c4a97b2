"""Engine creation, one place: pool settings and the translation of outages into one error."""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from typing import TypeVar

from sqlalchemy import Engine, create_engine
from sqlalchemy.exc import DBAPIError, OperationalError

from storage.errors import DatabaseUnavailable

T = TypeVar("T")


def normalise_url(url: str) -> str:
    """Accept libpq-style URLs (what ``psql`` takes) and pin the psycopg2 driver.

    SQLAlchemy 2.1 maps a bare ``postgresql://`` to psycopg 3; we ship psycopg2.
    """
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg2://" + url[len(prefix):]
    return url


@lru_cache(maxsize=8)
def engine_for(url: str) -> Engine:
    """One pooled engine per URL per process."""
    return create_engine(
        normalise_url(url),
        pool_pre_ping=True,
        pool_size=5,
        max_overflow=5,
        connect_args={"connect_timeout": 5, "application_name": "attest"},
    )


def run_db(fn: Callable[[], T]) -> T:
    """Run ``fn``; a lost or refused connection becomes ``DatabaseUnavailable``."""
    try:
        return fn()
    except OperationalError as exc:
        raise DatabaseUnavailable(str(exc.orig).strip().splitlines()[0]) from exc
    except DBAPIError as exc:
        if exc.connection_invalidated:
            raise DatabaseUnavailable("the database connection was lost") from exc
        raise
