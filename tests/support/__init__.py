"""The test support kit: one helper for each thing many tests need.

- ``waiting``: poll a condition until it holds, failing with what was awaited (no fixed sleeps).
- ``databases``: a scratch database of a test's own, migrated, dropped afterwards.
- ``events``: stored and verified events built from payloads.
- ``jws``: hand-built compact tokens for hostile cases (any header, any signature).
- ``topics``: every message of a topic, read to its end.
- ``workers``: launch ``attest worker`` (and other CLI servers) and wait until ready; wait
  until a running worker has refreshed its key registry.
"""
