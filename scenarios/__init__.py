"""Generators of signed scenario events with known ground truth (finance, government)."""
