"""Signatures and the key registry; later field encryption, access policy and the audit chain."""
