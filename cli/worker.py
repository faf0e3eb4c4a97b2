"""``attest worker``: run the Faust worker (every agent, one process)."""

from __future__ import annotations

from cli.output import console
from config.settings import get_settings
from storage import migrate
from streams.admin import ensure_topics


def worker() -> None:
    """Run the Faust worker: verify, store, classify and audit every event.

    One process runs the intake agents for transactions, documents and approvals, the shared
    model pool, and the audit sink. Stop it with Ctrl-C (or SIGTERM); it finishes the batch
    in hand first. Serves GET /metrics on ATTEST_WORKER_WEB_PORT.

    Reads ATTEST_KAFKA_BOOTSTRAP and ATTEST_DATABASE_URL (or the embedded stack).
    """
    from faust.worker import Worker

    from streams.app import build_app

    settings = get_settings()
    current, head = migrate.current_revision(settings.database_url), None
    head = migrate.head_revision(settings.database_url)
    if current != head:
        from cli.output import fail

        fail(f"the database is at revision {current or '(empty)'}, not {head}; "
             "run 'attest db upgrade' first")
    if settings.model_dir is not None and not settings.model_dir.is_dir():
        from cli.output import fail

        fail(f"ATTEST_MODEL_DIR {settings.model_dir} is not a folder with a local model")
    ensure_topics(settings)
    console.print(f"worker starting: broker {settings.kafka_bootstrap}, "
                  f"batches of up to {settings.batch_size}")
    app = build_app(settings)
    Worker(app, loglevel=settings.log_level, quiet=True, redirect_stdouts=False).execute_from_commandline()
