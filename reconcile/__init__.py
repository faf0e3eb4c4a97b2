"""Reconciliation: the finance matching cascade, windows, breaks and government rules.

Pure functions over plain values (no broker, no database, no model): the agent in
``agents/reconciliation.py`` feeds them verified payloads and persists what they return.
"""
