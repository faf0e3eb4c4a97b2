"""The worker's /health payload and pipeline metrics, from plain values."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from agents.messages import BatchOutput, DeadLetter, IncomingMessage
from streams import observability as obs

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


class Event:
    def __init__(self, issued_at: datetime) -> None:
        self.issued_at = issued_at


def sample(name: str, **labels: str) -> float:
    return obs.REGISTRY.get_sample_value(name, labels) or 0.0


def test_a_batch_feeds_decisions_latency_and_batch_size() -> None:
    topic = "t-metrics.transactions"
    message = IncomingMessage(topic, 0, 1, None, b"x", NOW)
    output = BatchOutput(stored=2)
    output.accepted = [(message, Event(NOW - timedelta(seconds=3))),  # type: ignore[list-item]
                       (message, Event(NOW - timedelta(seconds=0.2)))]  # type: ignore[list-item]
    output.dead_letters = [DeadLetter(message, "unknown_key", "", NOW)]
    obs.observe_batch("intake", topic, 3, output, committed_at=NOW)
    assert sample("attest_decisions_total", topic=topic, outcome="accepted", reason="") == 2
    assert sample("attest_decisions_total", topic=topic, outcome="rejected", reason="unknown_key") == 1
    assert sample("attest_end_to_end_seconds_count", topic=topic, outcome="accepted") == 2
    assert sample("attest_end_to_end_seconds_sum", topic=topic, outcome="accepted") == 3.2
    assert sample("attest_end_to_end_seconds_bucket", topic=topic, outcome="accepted", le="0.25") == 1
    assert sample("attest_batch_messages_sum", stage="intake", topic=topic) == 3
    text = obs.exposition().decode()
    assert "attest_end_to_end_seconds_bucket" in text and "attest_inference_batch_size" in text


def test_lag_gauges_take_the_latest_reading() -> None:
    obs.set_lag([obs.LagRow("g", "t-lag", 0, 40), obs.LagRow("g", "t-lag", 1, 0)])
    obs.set_lag([obs.LagRow("g", "t-lag", 0, 7)])
    assert sample("attest_consumer_lag_messages", group="g", topic="t-lag", partition="0") == 7


def test_health_is_starting_until_the_model_is_ready() -> None:
    tracker = obs.HealthTracker(stage="enrichment", app_id="attest-enrichment")
    code, body = tracker.payload(model_ready=False)
    assert code == 503 and body["status"] == "starting" and body["model_pool"]["ready"] is False
    tracker.batch_done("attest.transactions")
    code, body = tracker.payload(model_ready=True)
    assert code == 200 and body["status"] == "ok"
    assert set(body["last_batch_age_s"]) == {"attest.transactions"}
    assert isinstance(body["model_pool"]["queue_texts"], int)
    code, body = obs.HealthTracker(stage="intake", app_id="attest").payload()
    assert code == 200 and "model_pool" not in body


def test_install_serves_health_on_the_stage_app() -> None:
    import faust

    app = faust.App("t-observability", broker="kafka://127.0.0.1:1", web_enabled=False)
    tracker = obs.install(app, settings=None, stage="enrichment")
    assert "/health" in app.web.views
    assert tracker.stage == "enrichment" and tracker.app_id == "t-observability"


def test_refresh_lag_reads_every_group_from_the_broker(stack_settings) -> None:  # noqa: ANN001
    from streams.admin import ensure_topics
    from streams.producer import OutgoingMessage, send_all
    from streams.topics import TRANSACTIONS

    settings = stack_settings.model_copy(update={"topic_prefix": "t-lag-obs.",
                                                 "app_id": "t-lag-obs-group"})
    ensure_topics(settings)
    send_all(settings, TRANSACTIONS.name(settings), [OutgoingMessage(None, b"x")] * 3)
    obs.refresh_lag(settings)
    lags = [sample("attest_consumer_lag_messages", group=group, topic=TRANSACTIONS.name(settings),
                   partition=str(p))
            for group in ("t-lag-obs-group", "t-lag-obs-group-enrichment") for p in (0, 1)]
    # Nothing committed by either group: each sees all three messages as lag.
    assert sum(lags[:2]) == 3 and sum(lags[2:]) == 3
