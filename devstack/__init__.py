"""The embedded stack: a Tansu broker and a Postgres server, both from wheels, no Docker."""
