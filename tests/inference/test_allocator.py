"""inference/allocator.py: large freed blocks go back to the system (glibc only).

Checked in fresh interpreters: a block above 1 MiB is mapped on its own (outside the
``[heap]`` segment, so freeing it returns its pages) even after a bigger block was freed,
which raises glibc's default threshold and sends such blocks to the heap, where a model
process's RSS piled up (docs/performance.md, memory).
"""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")

PROBE = """
import ctypes, sys
from inference.allocator import release_large_blocks_eagerly
if sys.argv[1] == "eager":
    assert release_large_blocks_eagerly()
libc = ctypes.CDLL(None)
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
libc.free(libc.malloc(16 << 20))  # by default this raises the mmap threshold to 16 MiB
block = libc.malloc(2 << 20)
for line in open("/proc/self/maps"):
    if line.rstrip().endswith("[heap]"):
        low, high = (int(x, 16) for x in line.split()[0].split("-"))
        print("heap" if low <= block < high else "mapped")
        break
else:
    print("mapped")
"""


def where_a_2_mib_block_lands(mode: str) -> str:
    done = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True,
                          check=True)
    return done.stdout.strip()


def test_by_default_a_2_mib_block_lands_in_the_heap_after_a_bigger_one_was_freed() -> None:
    """The behaviour the module exists for: if this stops holding, so may its reason."""
    assert where_a_2_mib_block_lands("default") == "heap"


def test_after_the_call_it_is_mapped_on_its_own_and_returned_when_freed() -> None:
    assert where_a_2_mib_block_lands("eager") == "mapped"

