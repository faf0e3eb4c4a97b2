"""No audit record, no read: with INSERT on audit_log revoked, the service refuses and decrypts nothing.

The service here logs in as a role of its own that is a member of ``attest_access_service``
(migration 0006), not as the superuser, so the grants are the real ones: the first read shows
they suffice, the second that taking one away closes the door.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, pool, text
from sqlalchemy.engine import make_url

from access.app import create_app
from access.service import AccessService
from audit.queries import find_records
from config.settings import Settings
from scenarios.government import SOCIAL_SECURITY
from schemas.audit import AuditAction
from schemas.catalog import DOCUMENT_V1
from storage.db import engine_for, normalise_url
from tests.access.conftest import AccessWorld, build_world
from tests.support.databases import scratch_database


def _admin(url: str):  # noqa: ANN202 - a throwaway engine
    return create_engine(normalise_url(url), isolation_level="AUTOCOMMIT", poolclass=pool.NullPool)


@pytest.fixture(scope="module")
def closed_world(stack_settings: Settings, tmp_path_factory: pytest.TempPathFactory
                 ) -> Iterator[tuple[AccessWorld, TestClient, str]]:
    login = f"attest_svc_{uuid.uuid4().hex[:8]}"
    password = uuid.uuid4().hex  # the embedded Postgres asks for one (scram-sha-256)
    admin = _admin(stack_settings.database_url)
    with admin.connect() as conn:
        conn.execute(text(f"CREATE ROLE {login} LOGIN PASSWORD '{password}'"))
        conn.execute(text(f"GRANT attest_access_service TO {login}"))
    try:
        with scratch_database(stack_settings.database_url, "attest_closed") as url:
            world = build_world(stack_settings, tmp_path_factory.mktemp("closed-state"), url)
            world.register("dana")
            service_url = make_url(normalise_url(url)).set(
                username=login, password=password).render_as_string(hide_password=False)
            service = AccessService(
                database_url=service_url, policies=world.service._policies,
                keyring=world.service._keyring, attestor=world.service._attestor)
            client = TestClient(create_app(service, world.client.app.state.verifier))
            yield world, client, service_url
            engine_for(service_url).dispose()
    finally:
        with admin.connect() as conn:
            conn.execute(text(f"DROP ROLE IF EXISTS {login}"))
        admin.dispose()


def test_an_unwritable_audit_log_refuses_the_read_and_decrypts_nothing(
    closed_world: tuple[AccessWorld, TestClient, str],
) -> None:
    world, client, _ = closed_world
    person = world.population[0]
    doc = world.doc(SOCIAL_SECURITY)
    request = world.post("sam", "/v1/requests", {
        "purpose": "benefit claim", "typ": DOCUMENT_V1, "subject": person.national_id,
        "fields": ["insurance_status"]}).json()
    assert world.decide("dana", request, person=person.national_id).status_code == 201
    service = client.app.state.service
    body = {"purpose": "benefit claim", "request_id": request["request_id"]}

    allowed = client.post("/v1/reads", json=body, headers=world.auth("sam"))
    assert allowed.status_code == 200, allowed.text
    assert doc["insurance_status"] in allowed.text and service.fields_opened == 1

    with engine_for(world.url).begin() as conn:
        conn.execute(text("REVOKE INSERT ON audit_log FROM attest_access_service"))
    try:
        refused = client.post("/v1/reads", json=body, headers=world.auth("sam"))
    finally:
        with engine_for(world.url).begin() as conn:
            conn.execute(text("GRANT INSERT ON audit_log TO attest_access_service"))
    assert refused.status_code == 503
    assert "audit record could not be committed" in refused.json()["detail"]
    assert doc["insurance_status"] not in refused.text
    assert service.fields_opened == 1  # nothing was decrypted for the refused read
    reads = find_records(world.url, action=AuditAction.FIELDS_READ)
    assert [r.detail["request_id"] for r in reads if r.actor == "person:sam"] == [request["request_id"]]


def test_the_service_login_cannot_change_or_delete_audit_records(
    closed_world: tuple[AccessWorld, TestClient, str],
) -> None:
    _, _, service_url = closed_world
    for statement in ("UPDATE audit_log SET actor = 'x'", "DELETE FROM audit_log",
                      "SELECT subject_id FROM document_fields"):
        with pytest.raises(Exception, match="permission denied"):  # noqa: B017
            with engine_for(service_url).begin() as conn:
                conn.execute(text(statement))
