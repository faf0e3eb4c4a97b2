"""The ``attest`` command: thin Typer wiring over the layers below."""
