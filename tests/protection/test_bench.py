"""`attest bench crypto` runs end to end (small sizes) and prints what the issue asks for."""

from __future__ import annotations

import pytest
import typer
from typer.testing import CliRunner

from bench import crypto
from config.settings import Settings

pytestmark = pytest.mark.integration


def test_bench_crypto_prints_field_and_storage_rates(
    stack_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(crypto, "get_settings", lambda: stack_settings)
    monkeypatch.setenv("COLUMNS", "200")  # one table row per line
    app = typer.Typer()
    app.command()(crypto.command)
    result = CliRunner().invoke(app, ["--rows", "500", "--batch", "250", "--fields", "1000",
                                      "--repeats", "1"])
    assert result.exit_code == 0, result.output
    out = result.output
    assert "fields encrypt+decrypt" in out
    for name in ("transactions", "documents"):
        assert f"{name}: storage without encryption" in out
        assert f"{name}: storage with encryption" in out
        assert f"{name}: encryption cost" in out
    assert "target < 15%" in out
