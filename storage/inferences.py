"""Storing and reading inference results (idempotent per event, task and model version)."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert

from storage.db import engine_for, run_db
from storage.inference_models import InferenceRow


@dataclass(frozen=True, slots=True)
class InferenceResult:
    event_id: str
    task: str
    model_version: str
    label: str
    score: float


def store_inferences(url: str, results: list[InferenceResult]) -> int:
    """Insert results; one already stored for the same (event, task, model) is kept as is."""
    if not results:
        return 0
    rows = [
        {"event_id": r.event_id, "task": r.task, "model_version": r.model_version,
         "label": r.label, "score": r.score}
        for r in results
    ]

    def write() -> int:
        with engine_for(url).begin() as conn:
            stmt = (insert(InferenceRow).values(rows)
                    .on_conflict_do_nothing(index_elements=["event_id", "task", "model_version"])
                    .returning(InferenceRow.event_id))
            return len(conn.execute(stmt).all())

    return run_db(write)


def inferences_for(url: str, event_id: str) -> list[InferenceResult]:
    def read() -> list[InferenceResult]:
        with engine_for(url).connect() as conn:
            rows = conn.execute(
                select(InferenceRow).where(InferenceRow.event_id == event_id)
                .order_by(InferenceRow.created_at)
            ).all()
        return [InferenceResult(str(r.event_id), r.task, r.model_version, r.label, r.score)
                for r in rows]

    return run_db(read)
