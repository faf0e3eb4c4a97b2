"""Field protection: tiers, envelope encryption, keyrings, blind indexes, the writer and the reader."""
