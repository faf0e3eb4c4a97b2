"""A scratch database of a test's own on the session's Postgres server.

For tests that need state of their own (a keyring, an audit chain, a worker login) instead
of the session database every other test shares. Built on the product's own
``storage.scratch.temporary_database`` (what the benchmarks and the dump use), migrated here.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from storage import migrate
from storage.scratch import temporary_database
from tests.support.audit_signers import register_local_signers


@contextmanager
def scratch_database(
    server_url: str, prefix: str = "attest_scratch", revision: str | None = "head"
) -> Iterator[str]:
    """A new database on ``server_url``'s server, migrated to ``revision``, dropped after.

    Yields its libpq-style URL (what ``psql``, ``pg_dump`` and ``ATTEST_DATABASE_URL`` take;
    ``storage.db`` accepts it too). ``revision=None`` leaves it empty, unmigrated.
    """
    with temporary_database(server_url, prefix) as url:
        if revision is not None:
            migrate.upgrade(url, revision)
        if revision == "head" and (signers := os.environ.get("ATTEST_AUDIT_SIGNERS_DIR")):
            # The session's audit signers (tests/conftest.py): a worker started on this
            # database signs its audit messages with them.
            register_local_signers(url, Path(signers))
        yield url
