"""Issue 12: each government discrepancy names the rule that fired and is visible only to the
departments the policy allows, read through the real access service (and `attest recon breaks`).

The discrepancies are made by the real consistency stage (agents/reconciliation.py) from a
seeded scenario, stored in the access world's own database; the service serves them.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from access.issuer import mint_token
from agents.reconciliation import ConsistencyStage
from audit.queries import find_records
from cli import query as query_cli
from cli import recon as recon_cli
from protection.keyring_sources import open_keyring
from reconcile.government import RULES, SOCIAL_SECURITY, TAX_BUREAU, readable_from_policy, rule_fields
from scenarios.government import consistency_scenario
from schemas.catalog import DOCUMENT_V1
from tests.access.conftest import AccessWorld
from tests.support.events import verified_event

pytestmark = pytest.mark.integration

TAX_FIELDS, SSB_FIELDS = frozenset({"income", "tax_paid"}), frozenset({"subject_id", "insurance_status"})
BASE_RULE = "income_differs_from_contribution_base"  # longer than the stored reason column


@pytest.fixture(scope="module")
def found(world: AccessWorld) -> Counter[str]:
    """Run the consistency stage over a scenario (plus one contribution-base case); the rules
    it stored, counted."""
    documents, _ = consistency_scenario(60, seed=31, rate=0.4)
    nid = "9999-0000-1111"
    documents += [
        {"event_id": "00000000-0000-4000-8000-0000000000b1", "source": TAX_BUREAU, "agency": TAX_BUREAU,
         "subject_id": nid, "income": "50000.00", "tax_paid": "9000.00"},
        {"event_id": "00000000-0000-4000-8000-0000000000b2", "source": SOCIAL_SECURITY,
         "agency": SOCIAL_SECURITY, "subject_id": nid, "insurance_status": "insured",
         "contribution_base": "20000.00"},
    ]
    keyring = open_keyring(world.state, {})
    stage = ConsistencyStage(world.settings, "test", keyring.blind_index_key("national_id"),
                             readable_from_policy("government"))

    async def run() -> list:
        events = [(None, verified_event(d, DOCUMENT_V1, source=d["source"])) for d in documents]
        out = await stage.process(events)
        end = await stage.flush()
        return [*out.discrepancies, *end.discrepancies]

    discrepancies = asyncio.run(run())
    counts = Counter(d.rule for d in discrepancies)
    assert counts[BASE_RULE] == 1 and counts["tax_exceeds_income"] and counts["missing_at_agency"]
    return counts


def _expected(counts: Counter[str], fields: frozenset[str]) -> Counter[str]:
    return Counter({rule: n for rule, n in counts.items() if rule_fields(rule) & fields})


def _get(world: AccessWorld, who: str | None, **params: object):
    headers = world.auth(who) if who else {}
    return world.client.get("/v1/recon/breaks", params={"purpose": "consistency review", **params},
                            headers=headers)


def test_each_department_sees_exactly_the_rules_it_may_read_and_every_read_is_audited(
        world: AccessWorld, found: Counter[str]) -> None:
    seen = {}
    for who, fields, department in (("tess", TAX_FIELDS, TAX_BUREAU), ("sam", SSB_FIELDS, SOCIAL_SECURITY)):
        response = _get(world, who)
        assert response.status_code == 200, response.text
        body = response.json()
        got = Counter(d["rule"] for d in body["discrepancies"])
        assert got == _expected(found, fields), (who, got)
        assert all(department in d["visible_to"] for d in body["discrepancies"])
        assert all(len(d["event_ids"]) in (1, 2) and "income" not in d for d in body["discrepancies"])
        records = find_records(world.url, correlation_ids=[body["read_id"]])
        assert [r.action for r in records] == ["fields.read"]
        assert records[0].detail["kind"] == "recon.breaks" and records[0].detail["role"] == body["role"]
        assert sorted(records[0].subject_ids) == sorted(d["break_id"] for d in body["discrepancies"])
        seen[who] = got
    # The rule that compares income with the contribution base is named in full (stored cut to
    # 32 characters), and only the tax bureau reads income; a missing document only the bureau
    # that reads national ids; tax above income only the tax bureau.
    assert seen["tess"][BASE_RULE] == 1 and BASE_RULE not in seen["sam"]
    assert "missing_at_agency" in seen["sam"] and "missing_at_agency" not in seen["tess"]
    assert "tax_exceeds_income" in seen["tess"] and "tax_exceeds_income" not in seen["sam"]
    assert set(RULES) | {"missing_at_agency"} >= set(seen["tess"]) | set(seen["sam"])


def test_a_department_outside_the_policy_is_refused_and_the_refusal_audited(
        world: AccessWorld, found: Counter[str]) -> None:
    for who in ("nora", "dana"):  # a tax-bureau clerk; the data protection office
        response = _get(world, who)
        assert response.status_code == 403, response.text
    assert _get(world, None).status_code == 401
    assert _get(world, "tess", purpose="  ").status_code == 400
    refused = [r for r in find_records(world.url, action="fields.read", limit=10_000)
               if r.detail.get("kind") == "recon.breaks" and r.outcome == "rejected"]
    assert {r.detail["person"] for r in refused} >= {"nora", "dana"}


def test_attest_recon_breaks_from_the_command_line(world: AccessWorld, served: str, found: Counter[str],
                                                   tmp_path: Path) -> None:
    settings = world.settings.model_copy(update={"access_url": served})
    app = typer.Typer()
    app.add_typer(recon_cli.app, name="recon")
    token = tmp_path / "sam.token"
    token.write_text(mint_token(world.state, "sam", audience=settings.oidc_audience,
                                issuer=settings.oidc_issuer, ttl_s=300))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(query_cli, "get_settings", lambda: settings)
        result = CliRunner().invoke(app, ["recon", "breaks", "-t", str(token), "--purpose", "review",
                                          "--json"])
        assert result.exit_code == 0, result.output
        body = json.loads(result.output)
        assert Counter(d["rule"] for d in body["discrepancies"]) == _expected(found, SSB_FIELDS)
        nora = tmp_path / "nora.token"
        nora.write_text(mint_token(world.state, "nora", audience=settings.oidc_audience,
                                   issuer=settings.oidc_issuer, ttl_s=300))
        refused = CliRunner().invoke(app, ["recon", "breaks", "-t", str(nora), "--purpose", "review"])
        assert refused.exit_code != 0 and "tax-bureau" in refused.output


def test_the_service_login_reads_discrepancies_but_no_sealed_column(
        world: AccessWorld, found: Counter[str]) -> None:
    """As ``attest serve`` runs on the embedded stack: a login that is a member of
    ``attest_access_service`` only (migration 0011 grants it the public columns)."""
    import uuid

    from fastapi.testclient import TestClient
    from sqlalchemy import create_engine, make_url, pool, text

    from access.app import create_app
    from access.service import AccessService
    from storage.db import engine_for, normalise_url

    login, password = f"attest_svc_{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    admin = create_engine(normalise_url(world.url), isolation_level="AUTOCOMMIT", poolclass=pool.NullPool)
    with admin.connect() as conn:
        conn.execute(text(f"CREATE ROLE {login} LOGIN PASSWORD '{password}'"))
        conn.execute(text(f"GRANT attest_access_service TO {login}"))
    service_url = make_url(normalise_url(world.url)).set(
        username=login, password=password).render_as_string(hide_password=False)
    try:
        service = AccessService(database_url=service_url, policies=world.service._policies,
                                keyring=world.service._keyring, attestor=world.service._attestor)
        client = TestClient(create_app(service, world.client.app.state.verifier))
        response = client.get("/v1/recon/breaks", params={"purpose": "review"}, headers=world.auth("tess"))
        assert response.status_code == 200, response.text
        assert Counter(d["rule"] for d in response.json()["discrepancies"]) == _expected(found, TAX_FIELDS)
        with engine_for(service_url).connect() as conn, pytest.raises(Exception, match="permission denied"):
            conn.execute(text("SELECT amount_sealed FROM recon_breaks"))
    finally:
        engine_for(service_url).dispose()
        with admin.connect() as conn:
            conn.execute(text(f"DROP OWNED BY {login}"))
            conn.execute(text(f"DROP ROLE IF EXISTS {login}"))
        admin.dispose()
