"""Operator work on the running pipeline: replays, dead-letter retries, status.

Pure logic lives in small modules (selection, time parsing, resume state, outcome
counting, dead-letter identity, health assessment); the modules that touch the broker or
the database (``broker_reads``, ``replay``, ``status``) only gather facts and hand them on.
"""
