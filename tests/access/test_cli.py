"""`attest identity`, `attest access` and `attest query` as clients of a real uvicorn-served service."""

from __future__ import annotations

import json
import re
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from cli import access as access_cli
from cli import identity as identity_cli
from cli import query as query_cli
from config.settings import Settings
from scenarios.government import TAX_BUREAU
from tests.access.conftest import AccessWorld

RUNNER = CliRunner()
REQUEST_ID = re.compile(r"request ([0-9a-f-]{36})")


@pytest.fixture(scope="module")
def cli(world: AccessWorld, served: str) -> Iterator[typer.Typer]:
    settings: Settings = world.settings.model_copy(update={"access_url": served})
    app = typer.Typer()
    app.add_typer(identity_cli.app, name="identity")
    app.add_typer(access_cli.app, name="access")
    app.command("query")(query_cli.query)
    with pytest.MonkeyPatch.context() as patch:
        for module in (query_cli, access_cli, identity_cli):
            patch.setattr(module, "get_settings", lambda: settings)
        yield app


def _token(cli: typer.Typer, tmp_path: Path, who: str) -> Path:
    out = tmp_path / f"{who}.token"
    result = RUNNER.invoke(cli, ["identity", "token", who, "--ttl", "300", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    return out


def _flat(output: str) -> str:
    return " ".join(output.split())


def test_request_approve_twice_and_read_from_the_command_line(
    cli: typer.Typer, world: AccessWorld, tmp_path: Path
) -> None:
    doc = world.doc(TAX_BUREAU, person=2)
    tess, dana, dora = (_token(cli, tmp_path, who) for who in ("tess", "dana", "dora"))
    made = RUNNER.invoke(cli, ["access", "request", "-t", str(tess), "--purpose", "case 881",
                               "--subject", world.population[2].national_id,
                               "-f", "income", "-f", "tax_paid"])
    assert made.exit_code == 0, made.output
    request_id = REQUEST_ID.search(made.output).group(1)
    assert "level 3, 0/2 approvals, pending" in _flat(made.output)

    masked = RUNNER.invoke(cli, ["access", "read", request_id, "-t", str(tess), "--purpose", "x",
                                 "--json"])
    assert masked.exit_code == 0, masked.output
    assert json.loads(masked.stdout.splitlines()[0])["masked"]["income"] == "approval_missing"

    person = world.population[2].national_id
    declined = RUNNER.invoke(cli, ["access", "approve", request_id, "-t", str(dana),
                                   "--subject", person], input="n\n")
    assert declined.exit_code == 1 and "nothing was signed" in _flat(declined.output)
    assert "purpose: case 881" in declined.output  # the approver sees what they would sign
    for approver in (dana, dora):
        done = RUNNER.invoke(cli, ["access", "approve", request_id, "-t", str(approver),
                                   "--subject", person], input="y\n")
        assert done.exit_code == 0, done.output
    assert "2/2 approvals, approved" in _flat(done.output)
    again = RUNNER.invoke(cli, ["access", "approve", request_id, "-t", str(dora), "--yes",
                                "--subject", person])
    assert again.exit_code != 0 and "already decided" in _flat(again.output)

    listed = RUNNER.invoke(cli, ["access", "list", "-t", str(tess)])
    assert request_id[:8] in listed.output

    read = RUNNER.invoke(cli, ["access", "read", request_id, "-t", str(tess), "--purpose", "case 881",
                               "--json"])
    (line,) = [json.loads(x) for x in read.stdout.splitlines() if x.startswith("{")]
    assert line["fields"]["income"] == doc["income"] and line["fields"]["tax_paid"] == doc["tax_paid"]
    plain = RUNNER.invoke(cli, ["query", "-t", str(tess), "--purpose", "case 881",
                                "--request", request_id])
    assert plain.exit_code == 0 and doc["income"] in plain.output and "masked (not_granted)" in plain.output


def test_query_has_no_role_or_policy_flag_and_needs_a_purpose(
    cli: typer.Typer, tmp_path: Path
) -> None:
    tess = _token(cli, tmp_path, "tess")
    for flag in (["--as", "social-security-officer"], ["--policy", "/tmp/mine.yaml"]):
        result = RUNNER.invoke(cli, ["query", "-t", str(tess), "--purpose", "p", *flag])
        assert result.exit_code == 2  # no such option
    no_purpose = RUNNER.invoke(cli, ["query", "-t", str(tess)])
    assert no_purpose.exit_code == 1 and "purpose" in _flat(no_purpose.output)
    narrowed = RUNNER.invoke(cli, ["query", "-t", str(tess), "--purpose", "p",
                                   "--role", "social-security-officer"])
    assert narrowed.exit_code == 1 and "does not give you" in _flat(narrowed.output)


def test_a_bad_token_file_or_no_service_is_one_sentence(
    cli: typer.Typer, world: AccessWorld, tmp_path: Path
) -> None:
    junk = tmp_path / "junk.token"
    junk.write_text("hello")
    result = RUNNER.invoke(cli, ["query", "-t", str(junk), "--purpose", "p"])
    assert result.exit_code == 1 and "does not hold a JWT" in _flat(result.output)
    forged = tmp_path / "forged.token"
    forged.write_text("a.b.c")
    result = RUNNER.invoke(cli, ["query", "-t", str(forged), "--purpose", "p"])
    assert result.exit_code == 1 and "not valid" in _flat(result.output)
    assert "Traceback" not in result.output
    unknown = RUNNER.invoke(cli, ["identity", "token", "mallory"])
    assert unknown.exit_code == 1 and "not registered" in _flat(unknown.output)
