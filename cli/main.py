"""The ``attest`` command line. Each subcommand is a thin call into the layers below.

Errors that an operator can cause or fix (a stack that is down, a bad key file, an
unreachable broker) all derive from ``config.errors.AttestError``; ``main()`` catches that
root once and prints one sentence (``error: <message>``), exiting 1 or the error's own
documented code (docs/operations.md). Tracebacks are for bugs only.
"""

from __future__ import annotations

import sys

import typer

from cli import access as access_cli
from cli import audit, bench, db, dev, dlq, imports, keys, recon
from cli import identity as identity_cli
from cli.crypto_keys import init as keys_init
from cli.crypto_keys import retire_kek, rotate_kek
from cli.demo import demo
from cli.forget import forget
from cli.output import err_console, print_error
from cli.produce import produce
from cli.query import query
from cli.replay import replay
from cli.serve import serve
from cli.status import status
from cli.worker import worker

app = typer.Typer(
    name="attest",
    help=(
        "Attest: verify signed events from Kafka, store them encrypted, audit every decision.\n\n"
        "Start here: `attest demo` runs everything on an embedded broker and Postgres. "
        "Settings are ATTEST_* environment variables (see README)."
    ),
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(dev.app, name="dev")
app.add_typer(db.app, name="db")
keys.app.command("init")(keys_init)
keys.app.command("rotate-kek")(rotate_kek)
keys.app.command("retire-kek")(retire_kek)
app.add_typer(keys.app, name="keys")
app.add_typer(audit.app, name="audit")
app.add_typer(bench.app, name="bench")
app.add_typer(dlq.app, name="dlq")
app.add_typer(imports.app, name="import")
app.add_typer(recon.app, name="recon")
app.command()(produce)
app.command()(worker)
app.command()(demo)
app.command()(query)
app.command()(forget)
app.command()(replay)
app.command()(status)
app.add_typer(identity_cli.app, name="identity")
app.add_typer(access_cli.app, name="access")
app.command()(serve)


def main() -> None:
    from pydantic import ValidationError

    from cli.exit_codes import exit_code_of
    from config.errors import AttestError

    try:
        app()
    except ValidationError as exc:  # an ATTEST_* variable with a value Settings refuses
        first = exc.errors()[0]
        name = "ATTEST_" + "_".join(str(p) for p in first["loc"]).upper()
        print_error(f"{name}: {first['msg']}")
        sys.exit(2)
    except AttestError as exc:  # the one root: any deliberate error is one sentence
        print_error(str(exc))
        sys.exit(int(exit_code_of(exc)))
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(130)
    except Exception as exc:  # noqa: BLE001 - a bug still gets one sentence, not a traceback
        import os

        # Not get_settings(): the settings themselves may be what failed.
        if os.environ.get("ATTEST_LOG_LEVEL") == "debug":
            raise
        print_error(
            f"{type(exc).__name__}: {exc} (set ATTEST_LOG_LEVEL=debug for the traceback)",
            label="unexpected error",
        )
        sys.exit(1)


if __name__ == "__main__":
    main()
