"""The Faust application: all wiring of topics to stages lives here and only here.

Every stage reads whole batches with a librdkafka consumer of its own (``BatchStage``,
streams/batch_consumer.py) and commits a batch's offsets only after its Postgres writes
committed and its dead letters and audit records were delivered. Faust publishes, serves
``/health`` and ``/metrics`` and runs the timers. ``ATTEST_INTAKE_CONSUMER=faust`` keeps intake
on a Faust agent consuming in batches (``take_events``, the first wave's path, kept as the
benchmark's baseline): Faust acknowledges a batch only after the loop body returns, under the
same rule. Offsets never run ahead of durable effects (at-least-once with idempotent effects;
see docs/architecture.md).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import faulthandler
import logging
import os
import socket
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from functools import partial
from typing import Any, NoReturn

import faust
from faust.types import EventT
from mode import Service

from agents.audit_sink import AuditSink
from agents.enrichment import TASK_FOR_TYPE, Enrichment, EnrichmentStage
from agents.intake import IntakeProcessor
from agents.messages import BatchOutput, IncomingMessage
from agents.retry import until_stored
from audit.signer_keys import WORKER, signer_key
from audit.signing import sign_audit_message
from config.settings import Settings, secret_environ
from inference.metrics import CONTENT_TYPE
from inference.pool import ModelPool
from inference.tasks import Tasks
from protection.fields import writer_protector
from schemas.audit import encode_batches
from storage.keys import key_snapshot
from streams.admin import kafka_config
from streams.batch_consumer import BatchConsumer, consumer_settings
from streams.fetch_wait import set_fetch_max_wait
from streams.kafka_security import faust_credentials, load_kafka_security
from streams.log_probe import LogProbe
from streams.log_reset import LogResetGuard
from streams.observability import exposition, install, observe_batch
from streams.offsets import CommittedOffsets
from streams.publishing import until_published
from streams.topics import (
    ALL_TOPICS,
    AUDIT,
    DEAD_LETTER,
    DOCUMENTS,
    INTAKE_TOPICS,
    RECONCILIATION,
    TRANSACTIONS,
    TopicSpec,
    group_id,
)

log = logging.getLogger("attest.worker")

BatchHandler = Callable[[list[IncomingMessage]], Awaitable[BatchOutput]]


WORKER_FAILED = 70

#: How often a stage checks that its partitions' logs did not start again (streams/log_reset.py).
LOG_RESET_CHECK_S = 10.0

#: Schemas the enrichment stage classifies; its app reads only the topics carrying them.
INFERRED_TYPES = frozenset(TASK_FOR_TYPE)


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


#: aiokafka's timestamp_type of a record stamped by the broker (0 is the producer's CreateTime).
LOG_APPEND_TIME = 1


def _broker_time(message: Any, trust_create_time: bool) -> datetime | None:
    """When the record reached the broker, if the record says so credibly; else None.

    The broker's own LogAppendTime always counts. A producer's CreateTime counts only where
    the operator said so (``ATTEST_FRESHNESS_FROM_CREATE_TIME``, on for the embedded Tansu,
    which stamps nothing itself): anyone who can write the topic chooses it. A timestamp
    that is no time at all (a producer can send 2**62) is None, never an exception: one
    record must not stop the stage.
    """
    stamp = getattr(message, "timestamp", None)
    if not stamp or stamp <= 0:
        return None
    if getattr(message, "timestamp_type", None) != LOG_APPEND_TIME and not trust_create_time:
        return None
    try:
        return datetime.fromtimestamp(stamp, UTC)
    except (OverflowError, ValueError, OSError):
        return None


def _incoming(event: EventT, trust_create_time: bool) -> IncomingMessage:
    message = event.message
    return IncomingMessage(
        topic=message.topic,
        partition=message.partition,
        offset=message.offset,
        key=message.key,
        value=message.value if isinstance(message.value, bytes) else bytes(message.value or b""),
        received_at=datetime.now(UTC),
        broker_time=_broker_time(message, trust_create_time),
    )


def _for_topic(output: BatchOutput, topic: str) -> BatchOutput:
    """The part of a mixed batch's output that one topic's metrics count."""
    return BatchOutput(
        dead_letters=[d for d in output.dead_letters if d.message.topic == topic],
        accepted=[(m, e) for m, e in output.accepted if m.topic == topic],
    )


def _decided(task: asyncio.Task[None]) -> bool:
    """Whether a batch's task ended with its effects durable (not cancelled, no error)."""
    return task.done() and not task.cancelled() and task.exception() is None


def _commit_and_close(consumer: BatchConsumer, finished: list[list[IncomingMessage]]) -> None:
    for batch in finished:
        consumer.commit(batch, wait=False)
    consumer.close()  # commits the last offsets synchronously


class BatchStage(Service):
    """A stage's consume loop on a ``BatchConsumer``: batch, decide, publish, then commit.

    Up to ``concurrency`` batches are decided at once (enrichment on a GPU host: the model
    classifies one while another is stored); offsets are committed in the order the batches
    were read, each only once its own effects and those of every batch before it are durable.
    librdkafka's threads fetch the next batch while one is decided.
    """

    def __init__(self, settings: Settings, stage: str, topics: list[str], handler: BatchHandler,
                 publish: Callable[[BatchOutput], Awaitable[None]], tracker: Any,
                 concurrency: int = 1) -> None:
        super().__init__()
        self._settings = settings
        self._stage = stage
        self._topics = topics
        self._handler = handler
        self._publish = publish
        self._tracker = tracker
        self._concurrency = concurrency
        self.guard: LogResetGuard | None = None
        #: What LogResetGuard reads (``consumer``): None until the consumer has subscribed.
        self.consumer: BatchConsumer | None = None
        #: Set when no batch is in hand any more (the loop ended): what ``on_stop`` waits for.
        self._idle = asyncio.Event()

    @property
    def label(self) -> str:
        return f"{type(self).__name__}({self._stage})"

    def _open(self) -> BatchConsumer:
        settings = self._settings
        return BatchConsumer(
            {**kafka_config(settings), **consumer_settings(settings)},
            group_id(settings, self._stage), self._topics, batch_size=settings.batch_size,
            wait_s=settings.batch_within_s,
            trust_create_time=settings.freshness_from_create_time, stage=self._stage)

    def _kafka_error(self, error: Any) -> None:
        if error.fatal():
            exit_worker(f"the {self._stage} consumer failed for good: {error.str()}")
        log.warning("%s consumer: %s", self._stage, error.str())

    async def on_stop(self) -> None:
        """Let the batches in hand finish (decided, published, committed) before the loop is
        cancelled, as a Faust agent does; what is still in hand after the wait is delivered
        again to the partitions' next owner."""
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._idle.wait(), self._settings.db_retry_max_s + 15)

    @Service.task
    async def _consume(self) -> None:
        in_flight: collections.deque[tuple[list[IncomingMessage], asyncio.Task[None]]] = \
            collections.deque()
        try:
            consumer = self.consumer = await asyncio.to_thread(self._open)
            while not self.should_stop:
                batch = await asyncio.to_thread(consumer.poll_batch, self._kafka_error)
                if batch:
                    in_flight.append((batch, asyncio.ensure_future(self._decide(batch))))
                while in_flight and (len(in_flight) >= self._concurrency or in_flight[0][1].done()):
                    await self._finish_oldest(consumer, in_flight)
            while in_flight:
                await self._finish_oldest(consumer, in_flight)
            self.consumer = None
            await asyncio.to_thread(consumer.close)
        except asyncio.CancelledError:
            # Stopped with a batch still in hand (a stage waiting on Postgres, enrichment on
            # intake): commit the batches decided ahead of it, in order, and leave the group
            # now, so the partitions' next owner gets the rest at once instead of after the
            # session timeout.
            finished = []
            while in_flight and _decided(in_flight[0][1]):
                finished.append(in_flight.popleft()[0])
            for _, task in in_flight:
                task.cancel()
            if self.consumer is not None:
                self.consumer, consumer = None, self.consumer
                await asyncio.to_thread(_commit_and_close, consumer, finished)
            raise
        except Exception as exc:  # noqa: BLE001 - bad events never get here (they are
            # dead-lettered); this is a bug, a broken database schema or a broken client.
            log.exception("unexpected failure in %s", self._stage)
            exit_worker(f"{type(exc).__name__} in the {self._stage} loop: {exc}")
        finally:
            self._idle.set()

    @staticmethod
    async def _finish_oldest(consumer: BatchConsumer, in_flight: collections.deque[
            tuple[list[IncomingMessage], asyncio.Task[None]]]) -> None:
        batch, decided = in_flight[0]
        await decided  # still the oldest in flight while it is waited for: a cancel sees it
        in_flight.popleft()
        # Not waited for: sent behind the earlier commits while the next batch is decided
        # (BatchConsumer.commit); close() commits the last ones.
        await asyncio.to_thread(partial(consumer.commit, batch, wait=False))

    async def _decide(self, batch: list[IncomingMessage]) -> None:
        """Everything a batch must make durable before its offsets may move."""
        if self.guard is not None:
            self.guard.saw(batch)
        output = await self._handler(batch)
        await until_published(partial(self._publish, output), self._settings.db_retry_max_s,
                              f"the {self._stage} batch's dead letters and audit records")
        for topic in sorted({m.topic for m in batch}):
            size = sum(1 for m in batch if m.topic == topic)
            observe_batch(self._stage, topic, size, _for_topic(output, topic))
            self._tracker.batch_done(topic)


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


#: The stages a worker process can run; ``attest worker`` runs one process per stage.
ROLES = ("intake", "audit", "enrichment", "reconciliation")



def build_app(settings: Settings, role: str = "intake") -> faust.App:
    """One stage's app. ``intake``: intake agents per signed topic and the key refresher.
    ``audit``: the audit sink, chaining the audit topic into ``audit_log``. ``enrichment``:
    the model pool, classifying what intake stored. ``reconciliation``: matching payments
    and cross-agency checks on what intake stored.

    Separate apps are separate consumer groups (and processes), so a slow model makes
    enrichment lag and never holds intake, and the audit chain's hashing runs on another
    core than verification (docs/architecture.md).
    """
    if role not in ROLES:
        raise ValueError(f"unknown worker role {role!r}")
    # A crash inside a C extension (librdkafka, psycopg2, torch) kills a stage with no Python
    # trace; the fault suite saw one (-11) at a broker restart. Print the stacks to the log.
    faulthandler.enable()
    set_fetch_max_wait(settings.fetch_max_wait_ms)
    # A stage reads with a consumer of its own (streams/batch_consumer.py) in its group; Faust
    # then only publishes, serves /health and /metrics and runs the timers, and must not join
    # that group with its own assignor. ATTEST_INTAKE_CONSUMER=faust: intake on Faust agents.
    batch_stage = not (role == "intake" and settings.intake_consumer == "faust")
    app = faust.App(
        group_id(settings, role),
        broker=[f"kafka://{host}" for host in settings.kafka_bootstrap.split(",")],
        # SASL_SSL login and CA from the one place the confluent clients use too (None: PLAINTEXT)
        broker_credentials=faust_credentials(load_kafka_security(settings)),
        store="memory://",
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication_factor,
        broker_session_timeout=settings.session_timeout_s,
        broker_heartbeat_interval=settings.heartbeat_interval_s,
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        web_enabled=settings.worker_web_enabled,
        web_port=settings.worker_web_port,
        web_bind=settings.worker_web_bind,  # loopback unless configured (Faust's default: all)
        datadir=str(settings.state_dir / f"worker-{role}"),
    )
    # No Faust consumer, no agents: web, producer and timers (faust.App reads producer_only
    # from the instance, not from its keyword options).
    app.producer_only = batch_stage
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
    # Every audit message this worker publishes is signed with its own key (docs/audit.md):
    # the sink chains nothing else. Created 0600 on first use; registered by an operator.
    audit_key = signer_key(settings, WORKER)
    trust_create_time = settings.freshness_from_create_time

    async def publish(output: BatchOutput) -> None:
        pending = []
        for letter in output.dead_letters:
            pending.append(await dead_letter.send(
                key=letter.message.key, value=letter.message.value, headers=letter.headers()
            ))
        for value in encode_batches(output.audit):
            pending.append(await audit.send(key=None, value=sign_audit_message(audit_key, value)))
        if pending:
            await asyncio.gather(*pending)

    # A log that starts again under the stage (a broker that forgot its topics) is read again;
    # the guard remembers each partition's last message to recognise a new log.
    guard = LogResetGuard(app, LogProbe(settings)) if not batch_stage else None

    def attach(spec: TopicSpec, handler: BatchHandler, concurrency: int = 1) -> None:
        async def agent(stream: faust.StreamT) -> None:
            async for events in stream.take_events(settings.batch_size, settings.batch_within_s):
                try:
                    batch = [_incoming(e, trust_create_time) for e in events]
                    if guard is not None:
                        guard.saw(batch)
                    output = await handler(batch)
                    await until_published(partial(publish, output), settings.db_retry_max_s,
                                          f"the {spec.suffix} batch's dead letters and audit records")
                    observe_batch(role, spec.name(settings), len(batch), output)
                    tracker.batch_done(spec.name(settings))
                except Exception as exc:  # noqa: BLE001 - bad events never get here (they
                    # are dead-lettered); this is a bug or a broken database schema.
                    log.exception("unexpected failure in %s", spec.suffix)
                    exit_worker(f"{type(exc).__name__} in the {spec.suffix} agent: {exc}")

        app.agent(topics[spec.suffix], name=f"attest.{role}.{spec.suffix}",
                  concurrency=concurrency)(agent)

    batch_specs: list[TopicSpec] = []
    batch_handler: list[tuple[BatchHandler, int]] = []

    def attach_batch(spec: TopicSpec, handler: BatchHandler, concurrency: int = 1) -> None:
        """One consumer reads all of a stage's topics, so every topic has the same handler."""
        if batch_handler and batch_handler[0] != (handler, concurrency):
            raise ValueError(f"the {role} stage attaches two handlers to one batch consumer")
        batch_specs.append(spec)
        batch_handler[:] = [(handler, concurrency)]

    stage_attach = attach_batch if batch_stage else attach
    actor = worker_actor()
    models = None
    if role == "enrichment":
        models = _attach_enrichment(app, settings, actor, stage_attach)
    elif role == "audit":
        stage_attach(AUDIT, AuditSink(settings, actor=actor, own_kid=audit_key.kid).process)
    elif role == "reconciliation":
        _attach_reconciliation(app, settings, actor, stage_attach, topics[RECONCILIATION.suffix])
    else:
        _attach_intake(app, settings, actor, stage_attach)
    # GET /health (and, on intake, a lag reading every 15 s); agents report each batch.
    tracker = install(app, settings, role, models)
    if batch_stage:
        handler, concurrency = batch_handler[0]
        stage_service = BatchStage(settings, role, [spec.name(settings) for spec in batch_specs],
                                   handler, publish, tracker, concurrency)
        app.service(stage_service)
        guard = stage_service.guard = LogResetGuard(stage_service, LogProbe(settings))
    assert guard is not None
    app.timer(LOG_RESET_CHECK_S, name=f"attest.{role}.log_reset")(guard.check)

    @app.page("/metrics")
    async def metrics(web: Any, request: Any) -> Any:
        """Prometheus exposition: lag, end-to-end latency, decisions, batch sizes, model pool."""
        # aiohttp refuses a charset inside content_type=, so the full header goes in as is.
        return web.bytes(exposition(), headers={"Content-Type": CONTENT_TYPE})

    return app


def _attach_intake(
    app: faust.App, settings: Settings, actor: str, attach: Callable[[TopicSpec, BatchHandler], None]
) -> None:
    """Verify, store, dead-letter and publish audit records; the key refresher. No model."""
    intake = IntakeProcessor(
        settings,
        actor=actor,
        accepted_types={spec.name(settings): spec.accepted_types for spec in INTAKE_TOPICS},
        # Public tier keys only: the worker can seal fields it can never read back.
        protector=writer_protector(settings.state_dir, secret_environ(),
                                   refresh_s=settings.keyring_refresh_s),
    )

    async def refresh_keys() -> None:
        url = settings.database_url
        snapshot = await until_stored(
            lambda: key_snapshot(url), settings.db_retry_max_s, "loading keys"
        )
        intake.replace_keys(snapshot)

    async def intake_stage(batch: list[IncomingMessage]) -> BatchOutput:
        if not intake.keys:
            await refresh_keys()
        return await intake.process(batch)

    for spec in INTAKE_TOPICS:
        # More than one batch in flight overlaps verifying with waiting on Postgres; effects
        # stay idempotent, but batches of one partition may then commit out of order.
        attach(spec, intake_stage, concurrency=settings.intake_concurrency)
    app.timer(settings.registry_refresh_s, name="attest.refresh_keys")(refresh_keys)


def _attach_enrichment(
    app: faust.App, settings: Settings, actor: str,
    attach: Callable[..., None],
) -> ModelService:
    """The model pool, classifying what intake stored; on its own consumer group."""
    models = ModelService(settings)
    app.service(models)
    progress = CommittedOffsets(settings, group_id(settings, "intake"))
    stage = EnrichmentStage(settings, Enrichment(settings, models.tasks, actor=actor),
                            progress.committed, log_check=LogProbe(settings).holds)

    async def enrichment_stage(batch: list[IncomingMessage]) -> BatchOutput:
        await models.ready.wait()
        return await stage.process(batch)

    for spec in INTAKE_TOPICS:
        if spec.accepted_types & INFERRED_TYPES:
            # Above 1, the model is not idle while a batch is looked up, sealed and stored.
            attach(spec, enrichment_stage, concurrency=settings.enrichment_concurrency)
    return models


def _attach_reconciliation(
    app: faust.App, settings: Settings, actor: str,
    attach: Callable[[TopicSpec, BatchHandler], None], out_topic: Any,
) -> None:
    """Matching and cross-agency checks behind intake, on a consumer group of their own.

    One process, one batch at a time: the matcher's pending state is ordered
    (docs/reconciliation.md). It sees only what intake stored from the same bytes.
    """
    from agents.reconciliation import ReconciliationWorker
    from protection.keyring_sources import open_writer_keyring

    keyring = open_writer_keyring(settings.state_dir, secret_environ())
    embed = None
    if settings.recon_fuzzy and settings.recon_model_similarity:
        models = ModelService(settings)
        app.service(models)

        async def model_embed(texts: Any) -> Any:
            await models.ready.wait()
            return await models.tasks.embed(list(texts))

        embed = model_embed
    stage = ReconciliationWorker(
        settings, actor, keyring.blind_index_key("account"), keyring.blind_index_key("national_id"),
        CommittedOffsets(settings, group_id(settings, "intake")).committed, embed=embed)

    async def reconciliation_stage(batch: list[IncomingMessage]) -> BatchOutput:
        result = await stage.process(batch)

        async def send_results() -> None:
            sent = [await out_topic.send(key=key, value=value) for key, value in result.messages]
            if sent:
                await asyncio.gather(*sent)

        await until_published(send_results, settings.db_retry_max_s, "reconciliation results")
        return BatchOutput(audit=result.audit)

    attach(TRANSACTIONS, reconciliation_stage)
    attach(DOCUMENTS, reconciliation_stage)
