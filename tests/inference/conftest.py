"""The real model, loaded once per test session (about three seconds on the 2-core machine)."""

from __future__ import annotations

import pytest

from inference.encoder import Encoder


@pytest.fixture(scope="session")
def minilm() -> Encoder:
    """The bundled all-MiniLM-L6-v2 in fp32 on CPU (the pool tests wrap it in fresh pools)."""
    return Encoder(device="cpu", precision="fp32")
