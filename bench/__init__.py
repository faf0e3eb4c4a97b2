"""Benchmarks behind `attest bench`.

Each prints numbers and a ratio against a baseline measured in the same run.
"""
