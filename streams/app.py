"""The Faust application: all wiring of topics to agents lives here and only here.

Agents consume in batches (``take_events``): Faust acknowledges a batch only after the
loop body returns, and the body returns only after the batch's Postgres writes committed
and its dead letters and audit records were delivered, so offsets never run ahead of
durable effects (at-least-once with idempotent effects; see docs/architecture.md).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, NoReturn

import faust
from faust.types import EventT
from mode import Service

from agents.audit_sink import AuditSink
from agents.enrichment import Enrichment
from agents.intake import IntakeProcessor
from agents.messages import BatchOutput, IncomingMessage
from agents.retry import until_stored
from config.settings import Settings, secret_environ
from inference.metrics import CONTENT_TYPE, metrics_text
from inference.pool import ModelPool
from inference.tasks import Tasks
from security.field_protection import writer_protector
from storage.keys import key_snapshot
from streams.topics import ALL_TOPICS, AUDIT, DEAD_LETTER, INTAKE_TOPICS, TopicSpec

log = logging.getLogger("attest.worker")

BatchHandler = Callable[[list[IncomingMessage]], Awaitable[BatchOutput]]


WORKER_FAILED = 70


def exit_worker(reason: str) -> NoReturn:
    """Stop the whole process now, without acknowledging the batch in hand.

    A Faust agent that raises stops consuming while the worker stays up, holding its
    partitions with no progress. Exiting instead lets a supervisor restart the worker and
    the group rebalance; the unacknowledged batch is delivered again, and every effect is
    idempotent, so nothing is skipped and nothing is stored twice.
    """
    log.critical("worker stopping: %s", reason)
    logging.shutdown()
    os._exit(WORKER_FAILED)


def worker_actor() -> str:
    return f"worker:{socket.gethostname()}:{os.getpid()}"


def _broker_time(message: Any) -> datetime | None:
    """The record's broker timestamp (seconds since the epoch in Faust), if it has one."""
    stamp = getattr(message, "timestamp", None)
    if not stamp or stamp <= 0:
        return None
    return datetime.fromtimestamp(stamp, UTC)


def _incoming(event: EventT) -> IncomingMessage:
    message = event.message
    return IncomingMessage(
        topic=message.topic,
        partition=message.partition,
        offset=message.offset,
        key=message.key,
        value=message.value if isinstance(message.value, bytes) else bytes(message.value or b""),
        received_at=datetime.now(UTC),
        broker_time=_broker_time(message),
    )


class ModelService(Service):
    """The worker's one model pool: loaded and warmed at start, drained at shutdown."""

    def __init__(self, settings: Settings) -> None:
        super().__init__()
        self.pool = ModelPool.from_settings(settings)
        self.tasks = Tasks(self.pool)
        self.ready = asyncio.Event()

    async def on_start(self) -> None:
        try:
            await self.pool.start()
            await self.tasks.prepare()
        except Exception as exc:  # noqa: BLE001
            # Without its model the worker would hold every partition forever.
            exit_worker(f"the model pool could not start: {exc}")
        self.ready.set()
        log.info("model pool ready: %s", self.pool.model_version)

    async def on_stop(self) -> None:
        await self.pool.close()


def build_app(settings: Settings) -> faust.App:
    """The worker's app: intake agents per signed topic, the audit sink, the key refresher."""
    app = faust.App(
        settings.app_id,
        broker=[f"kafka://{host}" for host in settings.kafka_bootstrap.split(",")],
        store="memory://",
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication_factor,
        broker_session_timeout=settings.session_timeout_s,
        broker_heartbeat_interval=settings.heartbeat_interval_s,
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        web_enabled=settings.worker_web_enabled,
        web_port=settings.worker_web_port,
        datadir=str(settings.state_dir / "worker"),
    )
    topics = {
        spec.suffix: app.topic(
            spec.name(settings),
            partitions=spec.partition_count(settings),
            key_serializer="raw",
            value_serializer="raw",
        )
        for spec in ALL_TOPICS
    }
    dead_letter, audit = topics[DEAD_LETTER.suffix], topics[AUDIT.suffix]

    async def publish(output: BatchOutput) -> None:
        pending = []
        for letter in output.dead_letters:
            pending.append(await dead_letter.send(
                key=letter.message.key, value=letter.message.value, headers=letter.headers()
            ))
        for record in output.audit:
            pending.append(await audit.send(
                key=(record.correlation_id or record.audit_id).encode(), value=record.to_bytes()
            ))
        if pending:
            await asyncio.gather(*pending)

    def attach(spec: TopicSpec, handler: BatchHandler) -> None:
        async def agent(stream: faust.StreamT) -> None:
            async for events in stream.take_events(settings.batch_size, settings.batch_within_s):
                try:
                    output = await handler([_incoming(e) for e in events])
                    await publish(output)
                except Exception as exc:  # noqa: BLE001 - bad events never get here (they
                    # are dead-lettered); this is a bug or a broken database schema.
                    log.exception("unexpected failure in %s", spec.suffix)
                    exit_worker(f"{type(exc).__name__} in the {spec.suffix} agent: {exc}")

        app.agent(topics[spec.suffix], name=f"attest.{spec.suffix}")(agent)

    actor = worker_actor()
    intake = IntakeProcessor(
        settings,
        actor=actor,
        accepted_types={spec.name(settings): spec.accepted_types for spec in INTAKE_TOPICS},
        # Public tier keys only: the worker can seal fields it can never read back.
        protector=writer_protector(settings.state_dir, secret_environ()),
    )

    async def refresh_keys() -> None:
        url = settings.database_url
        snapshot = await until_stored(
            lambda: key_snapshot(url), settings.db_retry_max_s, "loading keys"
        )
        intake.replace_keys(snapshot)

    models = ModelService(settings)
    app.service(models)
    enrichment = Enrichment(settings, models.tasks, actor=actor)

    async def intake_stage(batch: list[IncomingMessage]) -> BatchOutput:
        """Verify and store, then classify what was accepted (after it is durable)."""
        if not intake.keys:
            await refresh_keys()
        output = await intake.process(batch)
        if output.accepted:
            await models.ready.wait()
            output.audit.extend(await enrichment.process(output.accepted))
        return output

    for spec in INTAKE_TOPICS:
        attach(spec, intake_stage)
    attach(AUDIT, AuditSink(settings, actor=actor).process)

    @app.page("/metrics")
    async def metrics(web: Any, request: Any) -> Any:
        """Prometheus exposition: model pool batches, queue wait, inference time, cache."""
        # aiohttp refuses a charset inside content_type=, so the full header goes in as is.
        return web.bytes(metrics_text().encode(), headers={"Content-Type": CONTENT_TYPE})

    app.timer(settings.registry_refresh_s, name="attest.refresh_keys")(refresh_keys)
    return app
