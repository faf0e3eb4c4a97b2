"""Benchmarks behind `attest bench`: each prints numbers and a ratio against a baseline measured in the same run."""
