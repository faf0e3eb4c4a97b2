"""``attest status``: gather the pipeline's vital signs, then judge them.

Gathering talks to the broker, the database and the worker's web endpoint, each on its
own, so one that is down still leaves the others reported. Judging (``assess``) is a pure
function of the report: what is a problem (non-zero exit), what is only a warning.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from pydantic import BaseModel, Field

from config.settings import Settings
from operations.broker_reads import BrokerReader
from operations.errors import ExitCode, OperationsError
from operations.letters import LetterFilter, summarize
from storage.errors import DatabaseUnavailable
from streams.dead_letters import read_letters
from streams.errors import BrokerUnavailable
from streams.topics import group_id, stage_topics

#: Keys whose validity ends within this many days are listed.
EXPIRY_HORIZON = timedelta(days=30)


class PartitionLag(BaseModel):
    group: str
    topic: str
    partition: int
    committed: int | None
    end: int
    lag: int


class ExpiringKey(BaseModel):
    kid: str
    source: str
    not_after: datetime
    days_left: float


class Checkpoint(BaseModel):
    last_seq: int
    created_at: datetime
    age_s: float
    audit_rows: int


class WorkerHealth(BaseModel):
    stage: str = "intake"
    url: str
    reachable: bool
    status: str | None = None
    detail: dict[str, object] = Field(default_factory=dict)
    error: str | None = None

    @property
    def pool_queue_texts(self) -> int | None:
        pool = self.detail.get("model_pool")
        value = pool.get("queue_texts") if isinstance(pool, dict) else None
        return value if isinstance(value, int) else None


class StatusReport(BaseModel):
    checked_at: datetime
    broker_error: str | None = None
    database_error: str | None = None
    lag: list[PartitionLag] = Field(default_factory=list)
    dead_letters_last_hour: dict[str, int] = Field(default_factory=dict)
    repeated_dead_letters_last_hour: int = 0
    events_per_s_last_minute: float | None = None
    expiring_keys: list[ExpiringKey] = Field(default_factory=list)
    checkpoint: Checkpoint | None = None
    audit_rows: int | None = None
    workers: list[WorkerHealth] = Field(default_factory=list)
    problems: list[str] = Field(default_factory=list)
    warnings: list[str] = Field(default_factory=list)
    exit_code: int = 0


def lag_rows(group: str, topic: str, ends: dict[int, tuple[int, int]],
             committed: dict[int, int | None]) -> list[PartitionLag]:
    """Lag per partition: end minus committed (from the log's start when nothing is committed)."""
    rows = []
    for partition, (low, high) in sorted(ends.items()):
        position = committed.get(partition)
        lag = high - (position if position is not None else low)
        rows.append(PartitionLag(group=group, topic=topic, partition=partition,
                                 committed=position, end=high, lag=max(0, lag)))
    return rows


def consumer_groups(settings: Settings) -> dict[str, list[str]]:
    """Which group reads which topics: one group per worker stage (docs/architecture.md)."""
    return {group_id(settings, stage): topics for stage, topics in stage_topics(settings).items()}


def collect_broker(settings: Settings, report: StatusReport, *, dead_letters: bool = True) -> None:
    """Lag of every group on its topics and, unless told not to, the last hour's dead letters."""
    since = report.checked_at - timedelta(hours=1)
    try:
        with BrokerReader(settings, timeout_s=5.0) as reader:
            for group, topics in consumer_groups(settings).items():
                for topic in topics:
                    try:
                        ends = reader.watermarks(topic)
                    except OperationsError:  # a topic not created yet: nothing to lag on
                        continue
                    report.lag.extend(lag_rows(group, topic, ends,
                                               reader.committed(group, topic, sorted(ends))))
        if not dead_letters:
            return
        summary = summarize(read_letters(settings, since=since), LetterFilter(since=since))
        report.dead_letters_last_hour = dict(summary.by_reason)
        report.repeated_dead_letters_last_hour = summary.duplicates
    except BrokerUnavailable as exc:
        report.broker_error = str(exc)


def collect_database(settings: Settings, report: StatusReport) -> None:
    from storage.events import count_events
    from storage.keys import list_keys
    from storage.operations import audit_rows, newest_checkpoint

    url, now = settings.database_url, report.checked_at
    try:
        report.events_per_s_last_minute = count_events(url, since=now - timedelta(minutes=1)) / 60.0
        for key in list_keys(url):
            if key.revoked_at is None and key.not_after is not None and key.not_after - now < EXPIRY_HORIZON:
                report.expiring_keys.append(ExpiringKey(
                    kid=key.kid, source=key.source, not_after=key.not_after,
                    days_left=round((key.not_after - now).total_seconds() / 86400, 1)))
        report.audit_rows = audit_rows(url)
        newest = newest_checkpoint(url)
        if newest is not None:
            last_seq, created = newest
            report.checkpoint = Checkpoint(last_seq=last_seq, created_at=created,
                                           age_s=round((now - created).total_seconds(), 1),
                                           audit_rows=report.audit_rows)
    except DatabaseUnavailable as exc:
        report.database_error = str(exc)


def worker_urls(settings: Settings) -> dict[str, str]:
    """Each stage's web endpoint: intake (and the audit sink) and enrichment run apart."""
    host = settings.worker_web_host
    urls = {"intake": f"http://{host}:{settings.worker_web_port}"}
    enrichment_port = getattr(settings, "enrichment_web_port", None)
    if enrichment_port:
        urls["enrichment"] = f"http://{host}:{enrichment_port}"
    return urls


def collect_workers(settings: Settings, report: StatusReport, timeout_s: float = 3.0) -> None:
    for stage, url in worker_urls(settings).items():
        report.workers.append(probe_health(stage, url, timeout_s))


def probe_health(stage: str, base_url: str, timeout_s: float = 3.0) -> WorkerHealth:
    """GET /health (200: its status; 503: not ok, with a body saying why)."""
    import httpx

    health = WorkerHealth(stage=stage, url=f"{base_url}/health", reachable=False)
    try:
        response = httpx.get(health.url, timeout=timeout_s)
    except httpx.HTTPError as exc:
        health.error = str(exc) or type(exc).__name__
        return health
    health.reachable = True
    try:
        body = response.json()
    except ValueError:
        body = {}
    health.detail = body if isinstance(body, dict) else {}
    if response.status_code in (200, 503):
        fallback = "ok" if response.status_code == 200 else "unavailable"
        health.status = str(health.detail.get("status", fallback))
    else:
        health.status = "unknown"
        health.error = f"GET /health answered {response.status_code}"
    return health


def assess(report: StatusReport, *, max_lag: int, checkpoint_interval_s: float) -> StatusReport:
    """Fill ``problems``, ``warnings`` and ``exit_code`` from the facts in the report."""
    problems, warnings = [], []
    code = ExitCode.OK
    if report.broker_error:
        problems.append(f"broker unreachable: {report.broker_error}")
        code = ExitCode.BROKER_UNREACHABLE
    if report.database_error:
        problems.append(f"database unreachable: {report.database_error}")
        code = code or ExitCode.DATABASE_UNREACHABLE
    for worker in report.workers:
        if not worker.reachable:
            problems.append(f"{worker.stage} worker not reachable at {worker.url} ({worker.error})")
        elif worker.status == "unknown":
            warnings.append(f"{worker.stage} worker health unknown "
                            f"({worker.error or 'no status in /health'})")
        elif worker.status != "ok":
            problems.append(f"{worker.stage} worker reports {worker.status}")
    for row in report.lag:
        if row.lag > max_lag:
            problems.append(f"{row.group} lags {row.lag:,} messages on {row.topic}/{row.partition} "
                            f"(more than {max_lag:,})")
    cp = report.checkpoint
    unchecked = (report.audit_rows or 0) - (cp.last_seq if cp else 0)
    if unchecked > 0:
        if cp is None:
            warnings.append(f"{unchecked:,} audit records and no signed checkpoint yet")
        elif cp.age_s > 3 * checkpoint_interval_s:
            problems.append(f"{unchecked:,} audit records are not covered by a checkpoint; the newest "
                            f"is {cp.age_s:,.0f}s old (the sink signs every {checkpoint_interval_s:g}s)")
    for key in report.expiring_keys:
        warnings.append(f"key {key.kid} ({key.source}) expires in {key.days_left:g} days")
    if problems and code == ExitCode.OK:
        code = ExitCode.UNHEALTHY
    report.problems, report.warnings, report.exit_code = problems, warnings, int(code)
    return report


def collect_status(settings: Settings, *, include_worker: bool = True) -> StatusReport:
    report = StatusReport(checked_at=datetime.now(UTC))
    collect_broker(settings, report)
    collect_database(settings, report)
    if include_worker:
        collect_workers(settings, report)
    return assess(report, max_lag=settings.status_max_lag,
                  checkpoint_interval_s=settings.audit_checkpoint_interval_s)
