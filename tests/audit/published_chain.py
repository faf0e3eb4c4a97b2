"""A chain as the sink leaves it: stored rows, stored checkpoints, and each checkpoint also
published to an audit topic of the test's own (its own topic prefix), plus CLI helpers."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

from typer.testing import CliRunner, Result

from agents.audit_sink import checkpoint_record
from audit.checkpoints import CheckpointSigner, load_or_create_service_key
from audit.log import CheckpointPolicy, append_chained
from bench.ledger import child_env
from cli.audit import app
from config.settings import Settings, get_settings
from streams.admin import ensure_topics
from streams.audit_publisher import publish_audit
from tests.audit.conftest import make_records


def own_settings(stack_settings: Settings, chain_db: str, state_dir: Path) -> Settings:
    """The test stack's broker with a topic prefix of its own, a fresh database and state."""
    settings = stack_settings.model_copy(update={
        "database_url": chain_db, "state_dir": state_dir,
        "topic_prefix": f"t{uuid.uuid4().hex[:8]}.", "audit_public_key": None,
    })
    ensure_topics(settings)
    return settings


def build_chain(settings: Settings, records: int = 30, every: int = 10) -> CheckpointSigner:
    """``records`` rows in batches of ``every``, a checkpoint after each batch, signed by the
    service key in the state folder (as the sink does) and published to the audit topic."""
    signer = CheckpointSigner(load_or_create_service_key(settings.service_key_path))
    policy = CheckpointPolicy(every=every, interval_s=3600, signer=signer)
    for start in range(0, records, every):
        result = append_chained(settings.database_url, make_records(every, start=start), policy)
        if result.checkpoint is not None:
            publish_audit(settings, [checkpoint_record(result.checkpoint, "worker:test:1")])
    return signer


def public_key_file(signer: CheckpointSigner, path: Path) -> Path:
    path.write_text(json.dumps(signer.public_jwk))
    return path


def cli(settings: Settings, *args: str, **extra: str) -> Result:
    """``attest audit ARGS`` with exactly these settings (and ``extra`` variables)."""
    env = {k: v for k, v in child_env(settings, extra).items() if k.startswith("ATTEST_")}
    if settings.audit_public_key is None and "ATTEST_AUDIT_PUBLIC_KEY" not in extra:
        env["ATTEST_AUDIT_PUBLIC_KEY"] = ""
    get_settings.cache_clear()
    try:
        return CliRunner().invoke(app, list(args), env=env)
    finally:
        get_settings.cache_clear()
