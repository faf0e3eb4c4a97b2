"""Postgres: SQLAlchemy 2.0 models and the repositories, the only code that speaks SQL."""
