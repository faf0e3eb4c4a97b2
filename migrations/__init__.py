"""Alembic migrations. Run them with ``attest db upgrade``."""
