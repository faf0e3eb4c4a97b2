"""Signed events: strict JWS decoding, the signature primitive, the key registry, producer key files."""
