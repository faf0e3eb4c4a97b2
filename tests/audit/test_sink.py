"""The audit sink end to end on a real database: chained appends, checkpoints published as
records, its own checkpoint records read back without looping, bad records dead-lettered.

Every message fed to the sink is signed by a registered audit signer (the worker's, as the
wiring signs them); tests/audit/test_signed_records.py covers what happens to the others."""

from __future__ import annotations

import stat
from datetime import UTC, datetime
from pathlib import Path

import pytest

from agents.audit_sink import AuditSink
from agents.messages import IncomingMessage
from audit.chain import CHECKPOINT_ACTION
from audit.checkpoints import CheckpointSigner, load_or_create_service_key
from audit.log import chain_head, count_checkpoints, verify_stored_chain
from config.settings import Settings
from schemas.audit import AuditRecord
from tests.audit.conftest import make_records
from tests.support.audit_signers import new_signer

pytestmark = pytest.mark.integration


#: The worker's audit signer of these tests, registered in each test's database.
WORKER = new_signer()
#: An operator command's signer (a replay's records carry the operator as actor).
OPERATOR = new_signer("operator", ("operator:*",))


def messages(records: list[AuditRecord], first_offset: int = 0) -> list[IncomingMessage]:
    return WORKER.messages(records, first_offset)


def sink_settings(url: str, state: Path, **kw: object) -> Settings:
    WORKER.register(url)
    OPERATOR.register(url)
    values: dict[str, object] = {"audit_checkpoint_every": 5, "audit_checkpoint_interval_s": 3600.0}
    return Settings(database_url=url, state_dir=state, **{**values, **kw})  # type: ignore[arg-type]


async def test_sink_checkpoints_and_reads_its_own_checkpoints_back_without_looping(
    chain_db: str, tmp_path: Path
) -> None:
    settings = sink_settings(chain_db, tmp_path)
    sink = AuditSink(settings, actor="worker:test:1")
    out = await sink.process(messages(make_records(7)))
    assert out.stored == 7 and not out.dead_letters
    assert [r.action for r in out.audit] == [CHECKPOINT_ACTION]
    published = out.audit[0]
    assert published.detail["count"] == 7 and published.detail["head_hash"] == chain_head(chain_db)[1]
    assert stat.S_IMODE(settings.service_key_path.stat().st_mode) == 0o600

    # The wiring sends that record to the audit topic; the sink consumes it like any other.
    # Even with a tiny interval, a checkpoint record alone never causes another checkpoint.
    eager = AuditSink(sink_settings(chain_db, tmp_path, audit_checkpoint_interval_s=0.001))
    feedback = out.audit
    for round_ in range(3):
        again = await eager.process(messages(feedback, first_offset=100 + round_))
        assert not again.audit, f"round {round_}: a checkpoint record triggered a checkpoint"
        feedback = [published]  # a redelivery of the same record changes nothing either
    assert chain_head(chain_db)[0] == 8 and count_checkpoints(chain_db) == 1

    # New decisions after the interval do trigger one, which covers the checkpoint record.
    later = await eager.process(messages(make_records(1, start=50)))
    assert [r.detail["count"] for r in later.audit] == [9]
    key = CheckpointSigner(load_or_create_service_key(settings.service_key_path))
    verdict = verify_stored_chain(chain_db, [key.verifier()])
    assert (verdict.problem, verdict.records, verdict.checkpoints) == (None, 9, 2)


async def test_sink_redelivery_is_idempotent(chain_db: str, tmp_path: Path) -> None:
    sink = AuditSink(sink_settings(chain_db, tmp_path))
    batch = messages(make_records(4))
    assert (await sink.process(batch)).stored == 4
    head = chain_head(chain_db)
    assert (await sink.process(batch)).stored == 0
    assert chain_head(chain_db) == head


async def test_unparseable_and_unstorable_records_are_dead_lettered(
    chain_db: str, tmp_path: Path
) -> None:
    good = make_records(2)
    too_long = good[0].model_copy(update={"actor": "worker:" + "x" * 500,
                                          "audit_id": good[1].audit_id[:-1] + "f"})
    not_uuid = good[0].model_copy(update={"audit_id": "not-a-uuid"})
    nul = good[0].model_copy(update={"audit_id": "0" * 8 + good[0].audit_id[8:], "reason": "a\x00b"})
    batch = messages([good[0], too_long, not_uuid, nul, good[1]])
    batch.insert(1, IncomingMessage("t.audit", 0, 99, None, WORKER.sign(b"{not json"), datetime.now(UTC)))
    out = await AuditSink(sink_settings(chain_db, tmp_path)).process(batch)
    assert out.stored == 2
    found = sorted((d.reason, d.detail) for d in out.dead_letters)
    assert [reason for reason, _ in found] == ["malformed"] + ["schema_invalid"] * 3
    assert {detail.removeprefix("audit record cannot be stored: ")
            for reason, detail in found if reason == "schema_invalid"} == {
        "actor is longer than 200 characters", "audit_id is not a UUID",
        "a text field contains a NUL character"}
    assert verify_stored_chain(chain_db, []).problem is None


async def test_a_batch_message_is_stored_record_by_record_and_a_bad_record_dead_letters_it(
    chain_db: str, tmp_path: Path
) -> None:
    from schemas.audit import encode_batches, records_in

    good = make_records(5)
    nul = good[0].model_copy(update={"audit_id": "1" * 8 + good[0].audit_id[8:], "reason": "a\x00b"})
    values = encode_batches([*good, nul], size=4)
    assert len(values) == 2 and [len(records_in(v)) for v in values] == [4, 2]
    batch = [IncomingMessage("t.audit", 0, i, None, WORKER.sign(v), datetime.now(UTC))
             for i, v in enumerate(values)]
    sink = AuditSink(sink_settings(chain_db, tmp_path))
    out = await sink.process(batch)
    assert out.stored == 5
    assert [(d.reason, d.message.offset) for d in out.dead_letters] == [("schema_invalid", 1)]
    assert "1 of 2 audit records cannot be stored" in out.dead_letters[0].detail
    # Delivered again (a crash before the commit): nothing is stored twice.
    assert (await sink.process(batch)).stored == 0


@pytest.mark.parametrize("stamp", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"])
async def test_a_time_at_the_ends_of_the_calendar_is_dead_lettered_not_fatal(
    chain_db: str, tmp_path: Path, stamp: str
) -> None:
    """Review finding H2: such a time overflowed on conversion to UTC and stopped the sink."""
    from datetime import datetime as dt

    good = make_records(2)
    edge = good[0].model_copy(update={"audit_id": "2" * 8 + good[0].audit_id[8:],
                                      "time": dt.fromisoformat(stamp)})
    out = await AuditSink(sink_settings(chain_db, tmp_path)).process(messages([edge, *good]))
    assert out.stored == 2
    assert [(d.reason, d.detail) for d in out.dead_letters] == [
        ("schema_invalid", "audit record cannot be stored: time is out of range")]


async def test_an_audit_id_arriving_again_with_other_content_is_an_alarm_never_dropped(
    chain_db: str, tmp_path: Path
) -> None:
    """Issue 14 item 4 (review finding M2): a forged record with a real id pre-empted the
    real one, which the sink then dropped silently."""
    forged, = make_records(1)
    real = forged.model_copy(update={"actor": "worker:real", "outcome": "rejected",
                                     "reason": "bad_signature"})
    sink = AuditSink(sink_settings(chain_db, tmp_path))
    assert (await sink.process(messages([forged]))).stored == 1
    again = await sink.process(messages([forged]))  # a redelivery: same content, no alarm
    assert again.stored == 0 and again.audit == []
    out = await sink.process(messages([real]))
    assert out.stored == 0
    alarms = [r for r in out.audit if r.action == "audit.conflict"]
    assert len(alarms) == 1 and alarms[0].correlation_id == forged.audit_id
    assert alarms[0].detail["arrived"]["actor"] == "worker:real"
    assert alarms[0].detail["stored"]["actor"] == forged.actor
    # The alarm is itself stored like any record, once.
    assert (await sink.process(messages(alarms))).stored == 1
    assert (await sink.process(messages([real]))).audit == alarms
    # An honest copy of the same decision (another actor, time or detail, as a redelivery
    # or a replay writes it) is no conflict.
    copy = forged.model_copy(update={"actor": "operator:replay", "detail": {"redelivered": True}})
    assert (await sink.process(OPERATOR.messages([copy]))).audit == []


async def test_an_access_service_action_arriving_on_the_topic_is_dead_lettered_not_chained(
    chain_db: str, tmp_path: Path
) -> None:
    """Review finding: anyone with produce rights on the audit topic could have a forged
    ``fields.read`` or ``access.approved`` chained and signed as genuine. The access service
    appends those itself; on the topic they are forgeries."""
    from schemas.audit import AuditAction, audit_id_for

    genuine = make_records(2, start=700)
    forged = genuine[0].model_copy(update={
        "audit_id": audit_id_for("forged", 1), "action": AuditAction.ACCESS_APPROVED,
        "actor": "worker:mallory", "correlation_id": "request-1"})
    sink = AuditSink(sink_settings(chain_db, tmp_path), actor="worker:test:1")
    before = chain_head(chain_db)[0]
    out = await sink.process(messages([forged, *genuine], first_offset=700))
    assert out.stored == 2  # the genuine records are chained, the forgery is not
    assert chain_head(chain_db)[0] == before + 2
    (letter,) = out.dead_letters
    assert letter.reason == "schema_invalid" and "access service" in letter.detail


async def test_a_dead_letter_payload_record_arriving_on_the_topic_is_dead_lettered_not_chained(
    chain_db: str, tmp_path: Path
) -> None:
    """``dlq.payload_shown`` is the access service's own record (it is committed before the
    payload is returned); one on the topic would let anyone with produce rights make the log
    say a payload was shown under a purpose that nobody gave."""
    from schemas.audit import AuditAction, audit_id_for

    genuine = make_records(1, start=720)
    forged = genuine[0].model_copy(update={
        "audit_id": audit_id_for("forged-dlq", 1), "action": AuditAction.DLQ_PAYLOAD_SHOWN,
        "actor": "worker:mallory", "correlation_id": "letter-1"})
    sink = AuditSink(sink_settings(chain_db, tmp_path), actor="worker:test:1")
    before = chain_head(chain_db)[0]
    out = await sink.process(messages([forged, *genuine], first_offset=720))
    assert out.stored == 1
    assert chain_head(chain_db)[0] == before + 1
    (letter,) = out.dead_letters
    assert letter.reason == "schema_invalid" and "access service" in letter.detail
