"""The access service against the real embedded Postgres: a database, keys and people of its own.

``AccessWorld`` is the one place tests get tokens, signed decisions and an HTTP client from
(FastAPI's TestClient drives the real app in-process; nothing is mocked).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from access.app import create_app
from access.approvals import sign_decision
from access.identity import TokenVerifier, load_jwks
from access.issuer import add_person, jwks_path, load_person_key, mint_token
from access.keys import ensure_local_keys, load_attestor
from access.policy import load_policy
from access.service import AccessService
from config.settings import Settings
from protection.fields import writer_protector
from protection.keyring_sources import open_keyring
from scenarios.government import document_payloads, people
from schemas.catalog import DOCUMENT_V1
from storage.events import store_events
from tests.support.databases import scratch_database
from tests.support.events import stored_events
from tests.support.waiting import wait_for

#: subject -> (department, roles)
PEOPLE = {
    "tess": ("tax-bureau", ["tax-inspector"]),
    "sam": ("social-security-bureau", ["social-security-officer"]),
    "dana": ("data-protection-office", ["data-protection-officer"]),
    "dora": ("data-protection-office", ["data-protection-officer"]),
    # an inspector who is also an approver: may never approve her own request
    "tova": ("tax-bureau", ["tax-inspector", "data-protection-officer"]),
    "nora": ("tax-bureau", ["clerk"]),
}


@dataclass
class AccessWorld:
    settings: Settings
    state: Path
    url: str
    service: AccessService
    client: TestClient
    population: list[Any]
    docs: list[dict[str, Any]]
    offset: list[timedelta] = field(default_factory=lambda: [timedelta(0)])
    #: request id -> the identifier its requester bound it to (what an approver must name)
    subjects: dict[str, str] = field(default_factory=dict)

    def token(self, subject: str, ttl_s: int = 600, now: float | None = None) -> str:
        return mint_token(self.state, subject, audience=self.settings.oidc_audience,
                          issuer=self.settings.oidc_issuer, ttl_s=ttl_s, now=now)

    def auth(self, subject: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(subject)}"}

    def post(self, subject: str, path: str, body: dict[str, Any]) -> Any:
        return self.client.post(path, json=body, headers=self.auth(subject))

    def register(self, subject: str) -> None:
        key = load_person_key(self.state, subject)
        response = self.client.put("/v1/me/approval-key", headers=self.auth(subject),
                                   json={"jwk": key.as_dict(private=False)})
        assert response.status_code == 200, response.text

    def signed(self, subject: str, request: dict[str, Any], decision: str = "approve") -> str:
        return sign_decision(request["request_id"], request["digest"], decision, subject,
                             load_person_key(self.state, subject))

    def decide(self, subject: str, request: dict[str, Any], decision: str = "approve",
               target: str | None = None, person: str | None = None) -> Any:
        """``subject`` decides; the body names the request's person (``person`` overrides)."""
        named = person if person is not None else self.subjects[request["request_id"]]
        return self.post(subject, f"/v1/requests/{target or request['request_id']}/decisions",
                         {"jws": self.signed(subject, request, decision), "subject": named})

    def request(self, subject: str, person: int = 0, fields: tuple[str, ...] = ("income", "tax_paid"),
                hours: float = 24.0) -> dict[str, Any]:
        response = self.post(subject, "/v1/requests", {
            "purpose": f"case {uuid.uuid4().hex[:6]}", "typ": DOCUMENT_V1,
            "subject": self.population[person].national_id, "fields": list(fields),
            "valid_for_hours": hours})
        assert response.status_code == 201, response.text
        made = response.json()
        self.subjects[made["request_id"]] = self.population[person].national_id
        return made

    def read(self, who: str, **body: Any) -> Any:
        return self.post(who, "/v1/reads", {"purpose": "a stated purpose", **body})

    def doc(self, agency: str, person: int = 0) -> dict[str, Any]:
        nid = self.population[person].national_id
        return next(d for d in self.docs if d["agency"] == agency
                    and d["subject_id"].replace("-", "").replace(" ", "") == nid)


def build_world(stack_settings: Settings, state: Path, url: str) -> AccessWorld:
    settings = stack_settings.model_copy(update={"state_dir": state, "database_url": url})
    ensure_local_keys(state)
    for subject, (department, roles) in PEOPLE.items():
        add_person(state, subject, department, roles)
    population = people(3, seed=uuid.uuid4().int)
    docs = document_payloads(6, seed=uuid.uuid4().int, population=population)
    store_events(url, stored_events(docs, DOCUMENT_V1), protector=writer_protector(state, {}))
    offset = [timedelta(0)]
    service = AccessService(
        database_url=url, policies=[load_policy("government"), load_policy("finance")],
        keyring=open_keyring(state, {}), attestor=load_attestor(state),
        lookups_per_minute=1000, clock=lambda: datetime.now(UTC) + offset[0])
    verifier = TokenVerifier(settings.oidc_issuer, settings.oidc_audience,
                             load_jwks(jwks_path(state)))
    client = TestClient(create_app(service, verifier))
    return AccessWorld(settings, state, url, service, client, population, docs, offset)


@pytest.fixture(scope="module")
def world(stack_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AccessWorld]:
    with scratch_database(stack_settings.database_url, "attest_access") as url:
        built = build_world(stack_settings, tmp_path_factory.mktemp("access-state"), url)
        for approver in ("dana", "dora", "tova"):
            built.register(approver)
        yield built


@pytest.fixture(scope="module")
def served(world: AccessWorld) -> Iterator[str]:
    """The world's app under a real uvicorn on a free port (in a thread); yields its base URL."""
    import threading

    import uvicorn

    from devstack.processes import choose_port

    port = choose_port(0)
    server = uvicorn.Server(uvicorn.Config(world.client.app, host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_for(lambda: server.started or not thread.is_alive(), 20, "uvicorn to start")
    assert server.started, "uvicorn did not start"
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
