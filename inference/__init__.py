"""The shared model pool: one per worker process, batched, prioritized, cached."""
