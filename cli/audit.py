"""``attest audit``: follow the audit trail."""

from __future__ import annotations

import uuid

import typer
from confluent_kafka import Consumer, KafkaError
from pydantic import ValidationError

from cli.output import console
from config.settings import get_settings
from schemas.audit import AuditRecord
from streams.admin import ensure_topics, kafka_config
from streams.topics import AUDIT

app = typer.Typer(help="Follow and inspect the audit trail.", no_args_is_help=True)


def format_record(record: AuditRecord) -> str:
    where = (f" {record.source_topic}/{record.source_partition}/{record.source_offset}"
             if record.source_topic else "")
    reason = f" [red]{record.reason}[/]" if record.reason else ""
    return (f"{record.time:%H:%M:%S.%f}"[:-3] + f" {record.action:<15}{reason} "
            f"{record.correlation_id or '-'}{where} [dim]{record.actor}[/]")


@app.command()
def tail(
    from_beginning: bool = typer.Option(False, "--from-beginning", help="Start at the oldest record."),
    count: int | None = typer.Option(None, "--count", "-n", min=1, help="Stop after N records."),
    idle_exit: float | None = typer.Option(
        None, "--idle-exit", help="Stop after this many seconds without a record."
    ),
) -> None:
    """Show audit records as they arrive on the audit topic (Ctrl-C to stop)."""
    import time

    settings = get_settings()
    ensure_topics(settings)
    consumer = Consumer({
        **kafka_config(settings),
        "group.id": f"attest-tail-{uuid.uuid4().hex[:8]}",
        "auto.offset.reset": "earliest" if from_beginning else "latest",
        "enable.auto.commit": False,
        "session.timeout.ms": int(settings.session_timeout_s * 1000),
    })
    consumer.subscribe([AUDIT.name(settings)])
    seen, last = 0, time.monotonic()
    try:
        while count is None or seen < count:
            msg = consumer.poll(0.5)
            if msg is None:
                if idle_exit is not None and time.monotonic() - last > idle_exit:
                    break
                continue
            if msg.error():
                if msg.error().code() != KafkaError._PARTITION_EOF:
                    console.print(f"[yellow]{msg.error().str()}[/]")
                continue
            last = time.monotonic()
            seen += 1
            try:
                console.print(format_record(AuditRecord.from_bytes(msg.value())))
            except ValidationError:
                console.print(f"[red]unparseable audit record at offset {msg.offset()}[/]")
    except KeyboardInterrupt:
        pass
    finally:
        consumer.close()
