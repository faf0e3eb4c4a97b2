"""Settings: environment names, the dev-stack fallback, and the README's settings table."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from config.settings import Settings, _with_dev_stack, setting_env_names

README = Path(__file__).resolve().parents[2] / "README.md"


def test_every_setting_is_documented_in_the_readme() -> None:
    text = README.read_text()
    missing = sorted(name for name in setting_env_names() if f"`{name}`" not in text)
    assert not missing, f"settings missing from README: {missing}"


def test_environment_variables_set_fields(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ATTEST_PARTITIONS", "7")
    monkeypatch.setenv("ATTEST_TOPIC_PREFIX", "x.")
    settings = Settings()
    assert settings.partitions == 7
    assert settings.topic("audit") == "x.audit"


def test_invalid_values_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ATTEST_PARTITIONS", "0")
    with pytest.raises(ValidationError):
        Settings()


def test_dev_stack_fills_only_unset_addresses(tmp_path: Path) -> None:
    (tmp_path / "stack.json").write_text(json.dumps({
        "kafka_bootstrap": "127.0.0.1:1111", "database_url": "postgresql://x@127.0.0.1:2/a",
    }))
    filled = _with_dev_stack(Settings(state_dir=tmp_path))
    assert filled.kafka_bootstrap == "127.0.0.1:1111"
    assert filled.database_url == "postgresql://x@127.0.0.1:2/a"
    explicit = _with_dev_stack(Settings(state_dir=tmp_path, database_url="postgresql://y@h/b"))
    assert explicit.database_url == "postgresql://y@h/b"
    assert explicit.kafka_bootstrap == "127.0.0.1:1111"
