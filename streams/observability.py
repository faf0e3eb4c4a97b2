"""What a worker tells its operators: ``/health`` and the pipeline's Prometheus metrics.

The model pool's metrics live in ``inference.metrics``; these are the pipeline's own:
consumer lag, end-to-end latency (``issued_at`` to the batch's durable commit), decisions
by outcome and reason, and batch sizes. Both registries are served together by
``exposition()``. The functions here take plain values (a ``BatchOutput``, a lag table), so
tests need no running worker; ``streams/app.py`` calls them.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from agents.messages import BatchOutput
from inference import metrics as pool_metrics

REGISTRY = CollectorRegistry(auto_describe=True)
CONTENT_TYPE = pool_metrics.CONTENT_TYPE

LAG = Gauge(
    "attest_consumer_lag_messages",
    "End offset minus the group's committed offset, per group, topic and partition.",
    ["group", "topic", "partition"],
    registry=REGISTRY,
)
END_TO_END = Histogram(
    "attest_end_to_end_seconds",
    "From an event's issued_at to the commit of the batch that decided it, by topic and outcome.",
    ["topic", "outcome"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800, 3600),
    registry=REGISTRY,
)
DECISIONS = Counter(
    "attest_decisions_total",
    "Messages decided by intake, by topic, outcome (accepted, rejected) and reason.",
    ["topic", "outcome", "reason"],
    registry=REGISTRY,
)
BATCH_SIZE = Histogram(
    "attest_batch_messages",
    "Messages per agent batch, by stage and topic.",
    ["stage", "topic"],
    buckets=(1, 2, 5, 10, 25, 50, 100, 250, 500, 1000),
    registry=REGISTRY,
)
AUDIT_ALARMS = Counter(
    "attest_audit_alarms_total",
    "Audit alarms raised by the audit sink, by action (audit.forged: a message on the audit "
    "topic that is not a verified record of its signer; audit.conflict: an audit_id again with "
    "other content) and reason.",
    ["action", "reason"],
    registry=REGISTRY,
)
#: The sink's alarm actions, counted in ``attest_audit_alarms_total``.
ALARM_ACTIONS = frozenset({"audit.forged", "audit.conflict"})
LAST_BATCH = Gauge(
    "attest_last_batch_timestamp_seconds",
    "Unix time the stage last finished a batch on a topic.",
    ["stage", "topic"],
    registry=REGISTRY,
)


def exposition() -> bytes:
    """Prometheus text of the pipeline's metrics followed by the model pool's."""
    return generate_latest(REGISTRY) + generate_latest(pool_metrics.REGISTRY)


def observe_batch(stage: str, topic: str, size: int, output: BatchOutput,
                  committed_at: datetime | None = None) -> None:
    """Record one batch after its effects are durable (its offsets are about to move).

    Latency is measured to ``committed_at`` from each accepted event's ``issued_at``, the
    producer's clock: skew shows up here, which is what an operator wants to see.
    """
    now = committed_at or datetime.now(UTC)
    BATCH_SIZE.labels(stage, topic).observe(size)
    LAST_BATCH.labels(stage, topic).set(now.timestamp())
    if stage == "audit":
        count_alarms(output)
    if stage != "intake":
        return
    for _message, event in output.accepted:
        DECISIONS.labels(topic, "accepted", "").inc()
        END_TO_END.labels(topic, "accepted").observe(max(0.0, (now - event.issued_at).total_seconds()))
    for letter in output.dead_letters:
        DECISIONS.labels(topic, "rejected", letter.reason).inc()


def count_alarms(output: BatchOutput) -> None:
    """Count the alarms of one audit-sink batch, after they were published (audited)."""
    for record in output.audit:
        if record.action in ALARM_ACTIONS:
            AUDIT_ALARMS.labels(record.action, record.reason or "").inc()


@dataclass(frozen=True)
class LagRow:
    group: str
    topic: str
    partition: int
    lag: int


def set_lag(rows: Iterable[LagRow]) -> None:
    """Replace the lag gauges with a fresh reading (see ``refresh_lag``)."""
    for row in rows:
        LAG.labels(row.group, row.topic, str(row.partition)).set(row.lag)


def refresh_lag(settings: Any) -> None:
    """Read every group's lag from the broker and publish it (blocking: run in a thread)."""
    from operations.status import StatusReport, collect_broker

    report = StatusReport(checked_at=datetime.now(UTC))
    collect_broker(settings, report, dead_letters=False)
    set_lag(LagRow(r.group, r.topic, r.partition, r.lag) for r in report.lag)


@dataclass
class HealthTracker:
    """The facts behind ``GET /health``: up since when, which stage, how recent each batch."""

    stage: str
    app_id: str
    started: float = field(default_factory=time.monotonic)
    last_batch: dict[str, float] = field(default_factory=dict)

    def batch_done(self, topic: str) -> None:
        self.last_batch[topic] = time.monotonic()

    def payload(self, *, model_ready: bool | None = None, pool: Any = None) -> tuple[int, dict[str, Any]]:
        """(HTTP status, body). 200 with ``ok`` when serving; 503 with ``starting`` while a
        stage that needs the model is still loading it.

        ``model_ready`` is None for a stage without a model pool.
        """
        now = time.monotonic()
        body: dict[str, Any] = {
            "status": "ok" if model_ready in (None, True) else "starting",
            "stage": self.stage,
            "app_id": self.app_id,
            "pid": os.getpid(),
            "uptime_s": round(now - self.started, 1),
            "last_batch_age_s": {t: round(now - at, 1) for t, at in sorted(self.last_batch.items())},
        }
        if model_ready is not None:
            body["model_pool"] = pool_facts(pool, model_ready)
        return (200 if body["status"] == "ok" else 503), body


def pool_facts(pool: Any, ready: bool) -> dict[str, Any]:
    """Queue depth and model of the pool, read from its process-wide gauges."""
    facts: dict[str, Any] = {
        "ready": ready,
        "queue_texts": int(pool_metrics.REGISTRY.get_sample_value("attest_inference_queue_texts") or 0),
        "waiting_callers": int(
            pool_metrics.REGISTRY.get_sample_value("attest_inference_waiting_callers") or 0),
    }
    if ready and pool is not None:
        # A closed pool has no version; health still answers.
        with contextlib.suppress(Exception):
            facts["model_version"] = pool.model_version
    return facts


#: How often the intake process reads every group's lag for ``attest_consumer_lag_messages``.
LAG_REFRESH_S = 15.0


def install(app: Any, settings: Any, stage: str, model_service: Any = None) -> HealthTracker:
    """Serve ``GET /health`` on a stage's Faust app and, on intake, refresh lag on a timer.

    ``model_service`` is the stage's ``ModelService`` (with ``ready`` and ``pool``), or None
    for a stage without a model. Returns the tracker the agents tell about each batch
    (``tracker.batch_done(topic)`` next to ``observe_batch``).
    """
    import asyncio
    import logging

    tracker = HealthTracker(stage=stage, app_id=str(app.conf.id))

    @app.page("/health")
    async def health(web: Any, request: Any) -> Any:
        ready = None if model_service is None else model_service.ready.is_set()
        code, body = tracker.payload(model_ready=ready,
                                     pool=None if model_service is None else model_service.pool)
        return web.json(body, status=code)

    if stage == "intake":
        log = logging.getLogger("attest.observability")

        async def refresh() -> None:
            try:
                await asyncio.to_thread(refresh_lag, settings)
            except Exception as exc:  # noqa: BLE001 - a lag reading must never stop a worker
                log.warning("could not read consumer lag: %s", exc)

        app.timer(LAG_REFRESH_S, name="attest.lag")(refresh)
    return tracker
