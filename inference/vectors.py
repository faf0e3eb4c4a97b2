"""Pure numpy math of the tasks: pooling, normalizing, cosine, nearest prototype.

Kept free of torch and of the pool so every formula is unit tested on small hand-made
arrays; the encoder and the tasks call these same functions, so what is tested is what runs.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

EPS = 1e-12


def l2_normalize(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (a zero row stays zero instead of becoming NaN)."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.maximum(norms, EPS)


def mean_pool(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Mean of token vectors over the attention mask: (n, t, d), (n, t) -> (n, d).

    This is sentence-transformers' mean pooling for MiniLM: padding tokens do not count,
    and a row with no real token (cannot happen with a tokenizer) divides by EPS, not zero.
    """
    weights = np.asarray(mask, dtype=np.float32)[..., None]
    summed = (np.asarray(hidden, dtype=np.float32) * weights).sum(axis=1)
    return summed / np.maximum(weights.sum(axis=1), EPS)


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine similarity of two vectors, in [-1, 1]; 0.0 when either is zero."""
    a = np.asarray(a, dtype=np.float32).ravel()
    b = np.asarray(b, dtype=np.float32).ravel()
    denominator = max(float(np.linalg.norm(a) * np.linalg.norm(b)), EPS)
    return float(np.clip(np.dot(a, b) / denominator, -1.0, 1.0))


def cosine_matrix(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """All pairwise cosines: (n, d), (m, d) -> (n, m). For matching n items against m."""
    return np.clip(l2_normalize(left) @ l2_normalize(right).T, -1.0, 1.0)


def centroids(groups: Mapping[str, np.ndarray]) -> tuple[list[str], np.ndarray]:
    """(labels, unit centroid per label): the normalized mean of each label's unit vectors.

    Normalizing the examples first gives each example the same weight; normalizing the mean
    makes the dot product with a unit query its cosine.
    """
    labels = list(groups)
    if not labels:
        raise ValueError("no labels to build centroids from")
    means = []
    for label in labels:
        vectors = np.asarray(groups[label], dtype=np.float32)
        if vectors.ndim != 2 or len(vectors) == 0:
            raise ValueError(f"label {label!r} has no example vectors")
        means.append(l2_normalize(vectors).mean(axis=0))
    return labels, l2_normalize(np.stack(means))


def nearest(
    vectors: np.ndarray, labels: list[str], centroid_matrix: np.ndarray
) -> list[tuple[str, float]]:
    """For each row, the label of the most similar centroid and that cosine."""
    scores = cosine_matrix(vectors, centroid_matrix)
    best = scores.argmax(axis=1)
    return [(labels[int(i)], float(scores[row, i])) for row, i in enumerate(best)]
