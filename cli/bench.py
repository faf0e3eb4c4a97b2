"""``attest bench``: benchmarks that print numbers against a baseline measured in the same run."""

from __future__ import annotations

import typer

from bench import access, audit, crypto, e2e_command, inference, recon, soak, verify
from bench import replay as replay_bench

app = typer.Typer(
    help="Measure throughput and latency; each prints its target and whether it was met.",
    no_args_is_help=True,
)
app.command("verify")(verify.command)
app.command("e2e")(e2e_command.command)
app.command("audit")(audit.command)
app.command("crypto")(crypto.command)
app.command("inference")(inference.command)
app.command("access")(access.command)
app.command("recon")(recon.command)
app.command("replay")(replay_bench.command)
app.command("soak")(soak.command)
