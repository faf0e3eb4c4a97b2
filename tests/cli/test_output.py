"""The CLI's one way to fail: one literal sentence on one line, whatever the terminal width."""

from __future__ import annotations

import pytest
import typer

from cli.output import err_console, fail


def test_a_long_error_stays_on_one_line_and_brackets_are_printed_literally(
    capsys: pytest.CaptureFixture[str],
) -> None:
    message = "/tmp/" + "x" * 120 + "/keyring.json has no confidential v1 [it has v2]"
    with pytest.raises(typer.Exit) as raised:
        fail(message, code=13)
    assert raised.value.exit_code == 13
    printed = capsys.readouterr().err
    assert err_console.width < len(message)  # would wrap if the sentence were wrapped
    assert printed == f"error: {message}\n"
