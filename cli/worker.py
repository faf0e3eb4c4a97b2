"""``attest worker``: run the pipeline's stages, one process per stage."""

from __future__ import annotations

import typer

from cli.output import console, fail
from config.settings import get_settings
from storage import migrate
from streams.admin import ensure_topics


def worker(
    role: str = typer.Option(
        "all", "--role",
        help="all: one process per stage, supervised; or one stage, or several joined by "
             "commas. intake: verify, store, dead-letter; audit: the audit sink (hash chain); "
             "enrichment: the model pool, classifying what intake stored (run it on a GPU "
             "host, or several); reconciliation: matching payments and cross-agency checks "
             "(one process).",
    ),
) -> None:
    """Run the Faust worker: verify, store, classify and audit every event.

    Intake (verification, encrypted storage, dead letters), the audit sink, enrichment (the
    shared model pool) and reconciliation are separate consumer groups, so a slow model
    makes enrichment lag and never holds intake. With --role all (the default) each runs
    here as its own process; if one stops, all stop, with its exit code. Stop with Ctrl-C or
    SIGTERM; each finishes the batch in hand first.

    Web endpoints (GET /metrics): intake on ATTEST_WORKER_WEB_PORT, enrichment on
    ATTEST_ENRICHMENT_WEB_PORT. Reads ATTEST_KAFKA_BOOTSTRAP and ATTEST_DATABASE_URL (or the
    embedded stack).
    """
    from streams.app import ROLES

    roles = list(ROLES) if role == "all" else [r.strip() for r in role.split(",") if r.strip()]
    unknown = [r for r in roles if r not in ROLES]
    if unknown or not roles:
        fail(f"unknown role {', '.join(unknown) or role!r}; use all or any of {', '.join(ROLES)}")
    settings = get_settings()
    current = migrate.current_revision(settings.database_url)
    head = migrate.head_revision(settings.database_url)
    if current != head:
        fail(f"the database is at revision {current or '(empty)'}, not {head}; "
             "run 'attest db upgrade' first")
    if settings.model_dir is not None and not settings.model_dir.is_dir():
        fail(f"ATTEST_MODEL_DIR {settings.model_dir} is not a folder with a local model")
    ensure_topics(settings)
    if len(roles) > 1:
        from streams.supervisor import run_stages

        console.print(f"worker starting: broker {settings.kafka_bootstrap}, "
                      f"batches of up to {settings.batch_size}; stages: {', '.join(roles)}")
        raise typer.Exit(run_stages(settings, roles))

    from faust.worker import Worker

    from inference.allocator import release_large_blocks_eagerly
    from streams.app import build_app

    release_large_blocks_eagerly()  # every stage: freed batches go back to the system

    app = build_app(settings, roles[0])
    Worker(app, loglevel=settings.log_level, quiet=True, redirect_stdouts=False).execute_from_commandline()
