"""Kafka wiring: the Faust app, the topic declarations (one place), admin and producer helpers."""
