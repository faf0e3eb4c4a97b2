"""The shared model pool: one per worker process, batched, prioritized, cached.

Importing this package puts the process in Hugging Face offline mode before anything can
import ``transformers``: models come from local folders only, never from a hub, so a
worker behaves the same on an air-gapped host as on a laptop. Torch itself is imported only
when a real model is loaded (``inference.encoder``), so importing the pool stays cheap.

Public API (what the agents call)::

    pool = ModelPool.from_settings(settings)
    await pool.start()                      # loads the model in the worker thread, warms up
    tasks = Tasks(pool)
    vectors = await pool.embed(texts, priority=Priority.LIVE)        # (n, dim) float32
    results = await tasks.classify(DOCUMENT_TYPE, texts)             # list[Classification]
    score = await tasks.similarity(a, b)                             # cosine in [-1, 1]
    await pool.close()                      # drains queued work, then refuses new work
"""

from __future__ import annotations

import os

# Set, not setdefault: an inherited HF_HUB_OFFLINE=0 must not let a worker reach a hub.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"

from inference.errors import InferenceError, InferenceTimeout, ModelLoadError, PoolClosed  # noqa: E402
from inference.metrics import metrics_text  # noqa: E402
from inference.pool import ModelPool, PoolStats, Priority  # noqa: E402
from inference.tasks import DOCUMENT_TYPE, TRANSACTION_CATEGORY, Classification, Tasks  # noqa: E402

__all__ = [
    "DOCUMENT_TYPE",
    "TRANSACTION_CATEGORY",
    "Classification",
    "InferenceError",
    "InferenceTimeout",
    "ModelLoadError",
    "ModelPool",
    "PoolClosed",
    "PoolStats",
    "Priority",
    "Tasks",
    "metrics_text",
]
