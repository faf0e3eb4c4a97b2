"""Helpers for integration tests: read a topic to the end, wait for a condition."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from confluent_kafka import Consumer, KafkaError, Message

from config.settings import Settings
from streams.admin import kafka_config

T = TypeVar("T")


def read_topic(settings: Settings, topic: str, idle_s: float = 3.0, max_s: float = 30.0) -> list[Message]:
    """Every message of ``topic`` from the beginning, stopping after ``idle_s`` of silence."""
    consumer = Consumer({
        **kafka_config(settings),
        "group.id": f"test-read-{uuid.uuid4().hex[:8]}",
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
        "session.timeout.ms": 6000,
    })
    consumer.subscribe([topic])
    out: list[Message] = []
    start = last = time.monotonic()
    try:
        while time.monotonic() - start < max_s:
            msg = consumer.poll(0.3)
            if msg is None:
                if out and time.monotonic() - last > idle_s:
                    break
                if not out and time.monotonic() - start > idle_s * 3:
                    break
                continue
            if msg.error():
                if msg.error().code() != KafkaError._PARTITION_EOF:
                    raise RuntimeError(msg.error().str())
                continue
            out.append(msg)
            last = time.monotonic()
    finally:
        consumer.close()
    return out


def wait_until(probe: Callable[[], T], done: Callable[[T], bool], timeout_s: float = 60.0) -> T:
    """Call ``probe`` until ``done(result)``; return the last result (the caller asserts)."""
    deadline = time.monotonic() + timeout_s
    result = probe()
    while not done(result) and time.monotonic() < deadline:
        time.sleep(0.3)
        result = probe()
    return result


@contextmanager
def scratch_database(
    server_url: str, prefix: str = "attest_scratch", revision: str = "head"
) -> Iterator[str]:
    """A new database on the test server, migrated to ``revision``, dropped afterwards.

    For tests that need state of their own (a keyring of their own, a chain of their own)
    instead of the session database every other test shares.
    """
    from sqlalchemy import create_engine, pool, text
    from sqlalchemy.engine import make_url

    from storage import migrate
    from storage.db import engine_for, normalise_url

    admin = create_engine(normalise_url(server_url), isolation_level="AUTOCOMMIT",
                          poolclass=pool.NullPool)
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    url = make_url(normalise_url(server_url)).set(database=name).render_as_string(
        hide_password=False)
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        migrate.upgrade(url, revision)
        yield url
    finally:
        engine_for(url).dispose()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
