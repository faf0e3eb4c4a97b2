"""Make the C allocator give large freed blocks back to the system at once.

Why: each forward pass allocates activations whose size follows the batch's shape (texts
times tokens), and frees them. glibc's malloc raises its mmap threshold after such a block
is freed (up to 32 MiB), so the next ones come from the heap, whose freed pages stay
resident. A model process's RSS then climbs with every new shape: in a 10-minute soak the
two model stages grew 12% and 19%, and a bare encoder fed 1,200 batches of 1-64 varied
texts grew from 859 to 1,855 MB. With the thresholds pinned at 1 MiB (blocks above it are
mapped and unmapped, the heap is trimmed above 1 MiB of free top) the same run stays at
578-609 MB and encodes as fast (docs/performance.md). ``malloc_trim`` after each batch did
as well for memory but cost ~1.5 ms a call, about 5% of throughput.

No library does this: it is one ``mallopt`` call, made through ctypes. Elsewhere than glibc
(musl has no effect, macOS has no ``mallopt``) it does nothing.
"""

from __future__ import annotations

import ctypes
import logging

log = logging.getLogger(__name__)

#: mallopt parameters (glibc's malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
#: Blocks above this are mapped on their own and unmapped when freed.
LARGE_BLOCK = 1 << 20

_done = False


def release_large_blocks_eagerly() -> bool:
    """Pin glibc's mmap and trim thresholds (once per process); ``True`` when it took effect."""
    global _done
    if _done:
        return True
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        log.debug("no mallopt here: the allocator keeps its defaults")
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    _done = bool(mallopt(_M_MMAP_THRESHOLD, LARGE_BLOCK)) and bool(mallopt(_M_TRIM_THRESHOLD, LARGE_BLOCK))
    return _done
