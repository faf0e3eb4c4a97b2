"""Registering keys: the binding options of `attest keys`, and a JWK Set imported whole or not at all.

Issue 14, item 6 (``--typ``/``--department``, listed by ``keys list``) and the JWKS rule
"Key import registers a whole JWK Set in one database transaction or nothing".
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from config.settings import Settings
from schemas.catalog import DOCUMENT_V1, TRANSACTION_V1
from security.keyfiles import generate_key
from storage import keys as registry

ROOT = Path(__file__).resolve().parents[2]


def _env(settings: Settings) -> dict[str, str]:
    env = dict(os.environ)
    for name in Settings.model_fields:
        value = getattr(settings, name)
        if value is None:
            env.pop(f"ATTEST_{name.upper()}", None)
        else:
            env[f"ATTEST_{name.upper()}"] = (str(value).lower() if isinstance(value, bool)
                                             else str(value))
    env["COLUMNS"] = "250"
    return env


def attest(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cli.main", *args], cwd=ROOT, env=_env(settings),
                          capture_output=True, text=True, timeout=120, check=False)


def one_sentence_error(result: subprocess.CompletedProcess[str]) -> str:
    said = result.stdout + result.stderr
    assert result.returncode != 0, said
    assert "Traceback" not in said, said
    return said


def source() -> str:
    return f"importer-{uuid.uuid4().hex[:8]}"


def registered(settings: Settings, *kids: str) -> set[str]:
    return set(kids) & set(registry.key_snapshot(settings.database_url))


# -- the registry: several keys in one transaction -----------------------------------------------


def test_add_keys_registers_all_or_none(stack_settings: Settings) -> None:
    url, src = stack_settings.database_url, source()
    a, b, c = (generate_key(src) for _ in range(3))
    refused = registry.NewKey("x" * 10 + c.kid, "s" * 65, c.alg, c.public_jwk)  # source > 64
    with pytest.raises(registry.KeyRefused):
        registry.add_keys(url, [registry.NewKey(a.kid, src, a.alg, a.public_jwk),
                                registry.NewKey(b.kid, src, b.alg, b.public_jwk), refused])
    assert registered(stack_settings, a.kid, b.kid) == set()

    clash = registry.NewKey(a.kid, src, c.alg, c.public_jwk)  # a's kid, another key
    with pytest.raises(registry.KeyConflict):
        registry.add_keys(url, [registry.NewKey(a.kid, src, a.alg, a.public_jwk),
                                registry.NewKey(b.kid, src, b.alg, b.public_jwk), clash])
    assert registered(stack_settings, a.kid, b.kid) == set()

    assert registry.add_keys(url, [registry.NewKey(a.kid, src, a.alg, a.public_jwk),
                                   registry.NewKey(b.kid, src, b.alg, b.public_jwk)]) == [True, True]
    # Registering the identical keys again changes nothing; another binding is a conflict.
    assert registry.add_key(url, a.kid, src, a.alg, a.public_jwk) is False
    with pytest.raises(registry.KeyConflict, match="binding"):
        registry.add_key(url, a.kid, src, a.alg, a.public_jwk, typs=[TRANSACTION_V1])


def test_the_binding_round_trips_through_the_registry(stack_settings: Settings) -> None:
    url, src = stack_settings.database_url, source()
    bound, free = generate_key(src), generate_key(src)
    registry.add_key(url, bound.kid, src, bound.alg, bound.public_jwk,
                     typs=[TRANSACTION_V1, DOCUMENT_V1], department=src)
    registry.add_key(url, free.kid, src, free.alg, free.public_jwk)
    snapshot = registry.key_snapshot(url)
    assert snapshot[bound.kid].typs == frozenset({TRANSACTION_V1, DOCUMENT_V1})
    assert snapshot[bound.kid].department == src
    assert snapshot[free.kid].typs is None and snapshot[free.kid].department is None


# -- attest keys import ----------------------------------------------------------------------------


@pytest.mark.integration
def test_a_jwk_set_whose_third_key_clashes_registers_none(
    stack_settings: Settings, tmp_path: Path
) -> None:
    src = source()
    a, b, c = (generate_key(src) for _ in range(3))
    third = {**c.public_jwk, "kid": a.kid}  # the set's first kid again, with another key
    jwks = tmp_path / "set.jwks"
    jwks.write_text(json.dumps({"keys": [a.public_jwk, b.public_jwk, third]}))
    said = one_sentence_error(attest(stack_settings, "keys", "import", "--jwks", str(jwks),
                                     "--source", src))
    assert "nothing" in said, said
    assert registered(stack_settings, a.kid, b.kid) == set()


@pytest.mark.integration
def test_a_jwk_set_whose_third_key_the_database_refuses_registers_none(
    stack_settings: Settings, tmp_path: Path
) -> None:
    src = source()
    a, b, c = (generate_key(src) for _ in range(3))
    third = {**c.public_jwk, "kid": "k" * 250}  # a valid JWK; the registry holds 200 characters
    jwks = tmp_path / "set.jwks"
    jwks.write_text(json.dumps({"keys": [a.public_jwk, b.public_jwk, third]}))
    said = one_sentence_error(attest(stack_settings, "keys", "import", "--jwks", str(jwks),
                                     "--source", src))
    assert "nothing was registered" in said, said
    assert registered(stack_settings, a.kid, b.kid) == set()


@pytest.mark.integration
def test_keys_options_bind_schemas_and_department_and_list_shows_them(
    stack_settings: Settings, tmp_path: Path
) -> None:
    src = source()
    made = attest(stack_settings, "keys", "generate", "--source", src, "--typ", TRANSACTION_V1,
                  "--department", src)
    assert made.returncode == 0, made.stdout + made.stderr
    [kid] = [k for k, r in registry.key_snapshot(stack_settings.database_url).items()
             if r.source == src]
    record = registry.key_snapshot(stack_settings.database_url)[kid]
    assert (record.typs, record.department) == (frozenset({TRANSACTION_V1}), src)

    public = tmp_path / "agency.jwk"
    agency = generate_key(src)
    public.write_text(json.dumps(agency.public_jwk))
    added = attest(stack_settings, "keys", "add", "--jwk", str(public), "--source", src,
                   "--typ", DOCUMENT_V1, "--typ", TRANSACTION_V1, "--department", "tax-bureau")
    assert added.returncode == 0, added.stdout + added.stderr
    record = registry.key_snapshot(stack_settings.database_url)[agency.kid]
    assert (record.typs, record.department) == (frozenset({DOCUMENT_V1, TRANSACTION_V1}),
                                                "tax-bureau")

    one, two = generate_key(src), generate_key(src)
    jwks = tmp_path / "set.jwks"
    jwks.write_text(json.dumps({"keys": [one.public_jwk, two.public_jwk]}))
    imported = attest(stack_settings, "keys", "import", "--jwks", str(jwks), "--source", src,
                      "--typ", DOCUMENT_V1, "--department", "tax-bureau")
    assert imported.returncode == 0, imported.stdout + imported.stderr
    snapshot = registry.key_snapshot(stack_settings.database_url)
    for k in (one.kid, two.kid):
        assert (snapshot[k].typs, snapshot[k].department) == (frozenset({DOCUMENT_V1}), "tax-bureau")

    listed = attest(stack_settings, "keys", "list")
    assert listed.returncode == 0, listed.stderr
    line = next(row for row in listed.stdout.splitlines() if kid in row)
    assert TRANSACTION_V1 in line and src in line, listed.stdout
    assert "any" in listed.stdout  # keys registered without a binding

    bogus = attest(stack_settings, "keys", "generate", "--source", src, "--typ", "attest.bogus.v1")
    assert "attest.bogus.v1" in one_sentence_error(bogus)
