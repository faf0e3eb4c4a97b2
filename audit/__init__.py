"""The audit trail: the hash chain and its signed checkpoints (pure), the append-only log and its reads."""
