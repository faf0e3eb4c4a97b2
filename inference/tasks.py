"""What agents ask the model for: embeddings, classification by prototypes, similarity.

Classification needs no training: each label has a few example texts (``data/prototypes.json``);
a text gets the label whose mean example embedding is closest by cosine. Labels can be fixed
or added by editing the data file, and every result names the model version that produced it,
so results of a newer model sit beside older ones instead of overwriting them.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from inference.lanes import Priority
from inference.pool import ModelPool
from inference.vectors import centroids, cosine, cosine_matrix, nearest

DOCUMENT_TYPE = "document_type"
TRANSACTION_CATEGORY = "transaction_category"
EMBEDDING = "embedding"
SIMILARITY = "similarity"

Prototypes = Mapping[str, Mapping[str, Sequence[str]]]


@dataclass(frozen=True)
class Classification:
    """One text's label: what to store beside the event (with the model that decided it)."""

    label: str
    score: float  # cosine to the label's prototype centroid, in [-1, 1]
    model_version: str
    task: str


def load_prototypes(path: Path | None = None) -> dict[str, dict[str, list[str]]]:
    """The task -> label -> example texts map; the bundled file when ``path`` is None."""
    if path is None:
        text = resources.files("inference").joinpath("data/prototypes.json").read_text("utf-8")
    else:
        text = Path(path).read_text("utf-8")
    data = json.loads(text)
    return validate_prototypes(data)


def validate_prototypes(data: object) -> dict[str, dict[str, list[str]]]:
    """Check the shape (every label has at least one non-empty example); say what is wrong."""
    if not isinstance(data, Mapping) or not data:
        raise ValueError("prototypes must map task names to {label: [example texts]}")
    checked: dict[str, dict[str, list[str]]] = {}
    for task, labels in data.items():
        if not isinstance(labels, Mapping) or len(labels) < 2:
            raise ValueError(f"task {task!r} needs at least two labels")
        checked[task] = {}
        for label, examples in labels.items():
            if (not isinstance(examples, list) or not examples
                    or not all(isinstance(e, str) and e.strip() for e in examples)):
                raise ValueError(f"label {label!r} of task {task!r} needs non-empty example texts")
            checked[task][label] = list(examples)
    return checked


#: How long start-up may take to embed every task's prototypes (see ``Tasks.prepare``).
PREPARE_TIMEOUT_S = 600.0


class Tasks:
    """The model pool's tasks for agents. Cheap to create; share one per worker with the pool."""

    def __init__(self, pool: ModelPool, prototypes: Prototypes | None = None) -> None:
        self.pool = pool
        self.prototypes = validate_prototypes(prototypes) if prototypes is not None else load_prototypes()
        self._centroids: dict[str, tuple[list[str], np.ndarray]] = {}
        self._lock = asyncio.Lock()

    @property
    def model_version(self) -> str:
        return self.pool.model_version

    @property
    def classification_tasks(self) -> list[str]:
        return list(self.prototypes)

    def labels(self, task: str) -> list[str]:
        return list(self._task(task))

    async def embed(self, texts: Sequence[str], priority: Priority = Priority.LIVE) -> np.ndarray:
        """Unit sentence vectors, (len(texts), dim) float32; see ``ModelPool.embed``."""
        return await self.pool.embed(texts, priority)

    async def prepare(self, timeout_s: float = PREPARE_TIMEOUT_S) -> None:
        """Embed every task's prototypes now (at start-up) rather than on the first classify.

        Under its own timeout, not the pool's per-request one: on a loaded machine the first
        calls of a fresh model are slow, and a worker that exits because start-up took longer
        than a live request may was the fault suite's model-queue finding (exit 70).
        """
        for task in self.prototypes:
            await self._centroids_for(task, timeout_s)

    async def classify(
        self, task: str, texts: Sequence[str], priority: Priority = Priority.LIVE
    ) -> list[Classification]:
        """The nearest label for each text, in input order."""
        labels, matrix = await self._centroids_for(task)
        if not texts:
            return []
        vectors = await self.pool.embed(texts, priority)
        version = self.pool.model_version
        best = nearest(vectors, labels, matrix)
        return [Classification(label, score, version, task) for label, score in best]

    async def classify_one(self, task: str, text: str, priority: Priority = Priority.LIVE) -> Classification:
        return (await self.classify(task, [text], priority))[0]

    async def similarity(self, a: str, b: str, priority: Priority = Priority.LIVE) -> float:
        """Cosine similarity of two texts in [-1, 1] (fuzzy matching of names and memos)."""
        vectors = await self.pool.embed([a, b], priority)
        return cosine(vectors[0], vectors[1])

    async def similarity_matrix(
        self, left: Sequence[str], right: Sequence[str], priority: Priority = Priority.LIVE
    ) -> np.ndarray:
        """All pairwise cosines (len(left), len(right)): one call to match n items against m."""
        vectors = await self.pool.embed([*left, *right], priority)
        return cosine_matrix(vectors[: len(left)], vectors[len(left):])

    def _task(self, task: str) -> dict[str, list[str]]:
        try:
            return self.prototypes[task]
        except KeyError:
            raise ValueError(f"unknown task {task!r}; known: {', '.join(self.prototypes)}") from None

    async def _centroids_for(self, task: str, timeout_s: float | None = None) -> tuple[list[str], np.ndarray]:
        """Prototype centroids of a task, embedded once per Tasks object (the pool's model is fixed)."""
        examples = self._task(task)
        if task in self._centroids:
            return self._centroids[task]
        async with self._lock:
            if task not in self._centroids:
                flat = [text for texts in examples.values() for text in texts]
                vectors = await self.pool.embed(flat, Priority.LIVE, timeout_s=timeout_s)
                groups, offset = {}, 0
                for label, texts in examples.items():
                    groups[label] = vectors[offset:offset + len(texts)]
                    offset += len(texts)
                self._centroids[task] = centroids(groups)
        return self._centroids[task]
