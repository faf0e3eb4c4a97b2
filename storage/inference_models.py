"""Inference results: one row per event, task and model version.

Keyed by the model version (name plus weights hash) so a replay through a new model adds
its result beside the old one instead of overwriting it.

The label and its score are sealed (migration 0016): AES-256-GCM under the event subject's
data key of the tier of the text the model read (``inference.labels``), bound to the row and
its department. Nothing in this table names what a text was classified as.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import DateTime, LargeBinary, String, func
from sqlalchemy.dialects.postgresql import UUID
from sqlalchemy.orm import Mapped, mapped_column

from storage.models import Base


class InferenceRow(Base):
    __tablename__ = "inferences"

    event_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    task: Mapped[str] = mapped_column(String(64), primary_key=True)
    model_version: Mapped[str] = mapped_column(String(200), primary_key=True)
    #: The event's department (public in ``events``), bound into both ciphertexts.
    department: Mapped[str] = mapped_column(String(64))
    label_sealed: Mapped[bytes] = mapped_column(LargeBinary)
    score_sealed: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
