"""`attest serve` as deployed: a subprocess built from ATTEST_* settings, reached over HTTP."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from devstack.processes import choose_port, terminate_tree
from tests.access.conftest import AccessWorld
from tests.support.workers import launch, settings_env, wait_for_http


@pytest.fixture(scope="module")
def serve_process(world: AccessWorld) -> Iterator[str]:
    port = choose_port(0)
    env = settings_env(world.settings)
    env["ATTEST_ACCESS_POLICIES"] = "government"
    log = world.state / "serve.log"
    proc = launch(["serve", "--port", str(port)], env, log)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(proc, f"{base}/healthz", log, timeout_s=60)
        yield base
    finally:
        terminate_tree(proc.pid, timeout_s=10)


def test_attest_serve_authenticates_and_reads_with_the_policies_it_loaded(
    serve_process: str, world: AccessWorld
) -> None:
    assert httpx.get(f"{serve_process}/v1/me").status_code == 401
    me = httpx.get(f"{serve_process}/v1/me", headers=world.auth("tess"))
    assert me.status_code == 200 and me.json()["roles"] == ["tax-inspector"]
    spec = httpx.get(f"{serve_process}/openapi.json").json()
    assert spec["info"]["title"] == "Attest access service"
    read = httpx.post(f"{serve_process}/v1/reads", headers=world.auth("tess"),
                      json={"purpose": "serve check", "subject": world.population[0].national_id})
    assert read.status_code == 200, read.text
    assert read.json()["records"] and read.json()["role"] == "tax-inspector"
    # Only the government policy was loaded at start: a finance role reads nothing here,
    # and nothing in a request can load another policy.
    finance = httpx.post(f"{serve_process}/v1/reads", headers=world.auth("tess"),
                         json={"purpose": "p", "role": "payments-analyst"})
    assert finance.status_code == 403
    smuggled = httpx.post(f"{serve_process}/v1/reads", headers=world.auth("tess"),
                          json={"purpose": "p", "policy": "finance"})
    assert smuggled.status_code == 422  # unknown fields are refused, not ignored
