"""The hostile corpus through a real worker: each message dead-lettered with its reason."""

from __future__ import annotations

import subprocess
from datetime import UTC, datetime, timedelta

import pytest

from audit.queries import find_records
from config.settings import Settings
from storage import keys as registry
from storage.db import engine_for
from streams.admin import ensure_topics
from streams.producer import OutgoingMessage, send_all
from streams.topics import DEAD_LETTER, TRANSACTIONS
from tests.security.hostile_corpus import BOUND_TYPS, build_corpus, make_keys
from tests.support.topics import read_topic
from tests.support.waiting import wait_until
from tests.support.workers import wait_for_key_refresh

pytestmark = pytest.mark.integration


def test_hostile_corpus_is_dead_lettered_and_never_stored(
    stack_settings: Settings, worker: subprocess.Popen[bytes]
) -> None:
    url = stack_settings.database_url
    now = datetime.now(UTC)
    keys = make_keys("hostile-ledger", now)
    for key in (keys.ed, keys.es, keys.revoked):
        registry.add_key(url, key.kid, key.source, key.alg, key.public_jwk)
    registry.add_key(url, keys.expired.kid, keys.expired.source, keys.expired.alg,
                     keys.expired.public_jwk, not_after=now - timedelta(days=1))
    registry.add_key(url, keys.bound.kid, keys.bound.source, keys.bound.alg, keys.bound.public_jwk,
                     typs=BOUND_TYPS, department=keys.bound.source)
    registry.revoke_key(url, keys.revoked.kid, "corpus", now - timedelta(hours=1))
    # One snapshot holds every key change; it is loaded once the last change (the revocation) shows.
    wait_for_key_refresh(stack_settings, keys.revoked, "revoked_key")
    corpus = build_corpus(keys)
    ensure_topics(stack_settings)
    started = datetime.now(UTC)
    send_all(stack_settings, TRANSACTIONS.name(stack_settings),
             [OutgoingMessage(key=case.name.encode(), value=case.raw) for case in corpus])

    rejected = wait_until(
        lambda: find_records(url, action="event.rejected", since=started, limit=10_000),
        lambda records: len(records) >= len(corpus), timeout_s=120,
    )
    assert worker.poll() is None, "the worker must survive the corpus"
    assert len(rejected) == len(corpus)

    letters = {m.value(): dict(m.headers() or [])
               for m in read_topic(stack_settings, DEAD_LETTER.name(stack_settings))}
    wrong = [
        (case.name, case.reason.value, letters.get(case.raw, {}).get("attest-reason"))
        for case in corpus
        if letters.get(case.raw, {}).get("attest-reason") != case.reason.value.encode()
    ]
    assert not wrong, f"missing or mis-reasoned dead letters: {wrong[:10]}"

    with engine_for(url).connect() as conn:
        from sqlalchemy import text

        stored = conn.execute(text("SELECT count(*) FROM events WHERE source = :s"),
                              {"s": keys.ed.source}).scalar_one()
    assert stored == 0
