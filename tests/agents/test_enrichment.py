"""Enrichment with the real model pool and the real Postgres."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest

from agents.enrichment import Enrichment, inference_text
from agents.messages import IncomingMessage
from config.settings import Settings
from inference.errors import InferenceTimeout
from inference.pool import ModelPool
from inference.tasks import Classification, Tasks
from protection.fields import writer_protector
from schemas.catalog import APPROVAL_V1, TRANSACTION_V1
from security.verification import VerifiedEvent
from storage.events import store_events
from storage.inferences import inferences_for
from tests.support.events import stored_event, verified_event
from tests.support.labels import opened_labels

pytestmark = pytest.mark.integration


def _event(memo: str, counterparty: str = "Contoso Ltd", typ: str = TRANSACTION_V1) -> VerifiedEvent:
    # The subject (account) and department (source) pick the key the label is sealed under.
    return verified_event({"counterparty": counterparty, "memo": memo,
                           "account": "DE89370400440532013000", "source": "core-ledger"}, typ)


def _message(offset: int) -> IncomingMessage:
    return IncomingMessage("t.transactions", 0, offset, None, b"", datetime.now(UTC))


@pytest.fixture()
async def tasks(stack_settings: Settings) -> AsyncIterator[Tasks]:
    async with ModelPool.from_settings(stack_settings) as pool:
        yield Tasks(pool)


def test_inference_text_per_schema() -> None:
    assert inference_text(_event("rent March 2026")) == "Contoso Ltd: rent March 2026"
    assert inference_text(_event("x", typ=APPROVAL_V1)) is None


@pytest.mark.slow  # loads the MiniLM model
async def test_transactions_are_categorized_and_stored_by_model_version(
    stack_settings: Settings, tasks: Tasks
) -> None:
    rent, salary = _event("monthly office rent for March"), _event("salary payment November")
    # Stored first, as intake does: a label is read back beside its event.
    store_events(stack_settings.database_url,
                 [stored_event(e.payload, e.typ, offset=i) for i, e in enumerate((rent, salary))],
                 protector=writer_protector(stack_settings.state_dir, {}))
    enrichment = Enrichment(stack_settings, tasks, actor="test")
    audit = await enrichment.process([(_message(1), rent), (_message(2), salary)])
    assert [r.action for r in audit] == ["event.inferred", "event.inferred"]
    assert all(r.outcome == "ok" for r in audit)
    stored = {r.event_id: r for e in (rent, salary)
              for r in opened_labels(stack_settings, e.event_id)}
    assert stored[rent.event_id].label == "rent"
    assert stored[salary.event_id].label == "salary"
    assert stored[rent.event_id].model_version == tasks.model_version
    assert "@" in tasks.model_version

    # Running again with the same model changes nothing (idempotent per model version).
    await enrichment.process([(_message(1), rent)])
    assert len(inferences_for(stack_settings.database_url, rent.event_id)) == 1


class _OtherModel:
    """A second 'model' answering differently: its result must sit beside the first."""

    async def classify(self, task: str, texts: list[str], priority: object = None) -> list[Classification]:
        return [Classification("other", 0.5, "other-model@0000", task) for _ in texts]


class _TimingOut:
    async def classify(self, task: str, texts: list[str], priority: object = None) -> list[Classification]:
        raise InferenceTimeout("inference took longer than 0.01s")


@pytest.mark.slow  # loads the MiniLM model
async def test_another_model_adds_beside_and_failures_are_audited(
    stack_settings: Settings, tasks: Tasks
) -> None:
    event = _event("refund for order 4711")
    await Enrichment(stack_settings, tasks, actor="test").process([(_message(3), event)])
    await Enrichment(stack_settings, _OtherModel(), actor="test").process([(_message(3), event)])
    versions = {r.model_version for r in inferences_for(stack_settings.database_url, event.event_id)}
    assert versions == {tasks.model_version, "other-model@0000"}

    failed = _event("insurance premium")
    audit = await Enrichment(stack_settings, _TimingOut(), actor="test").process([(_message(4), failed)])
    assert [(r.outcome, r.reason) for r in audit] == [("error", "inference_failed")]
    assert inferences_for(stack_settings.database_url, failed.event_id) == []
