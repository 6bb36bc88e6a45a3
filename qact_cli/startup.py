"""What the `qact` command does before it imports torch: the allocator setting and the seed check
(a `--help` or a usage error never imports torch, so it answers at once)."""

from __future__ import annotations

import os
import platform

from .errors import UsageError


def tune_allocator() -> bool:
    """Let glibc keep freed memory for reuse instead of returning it to the system (what `qact` does at start;
    library users may call it too). Corruptions and activations allocate and free megabyte-sized temporaries
    batch after batch; by default glibc hands blocks of that size back with munmap/trim, so every batch
    page-faults its memory in again (~5 us per 4 KiB page on a VM: 10-15% of a corruption's time). The cost:
    the process keeps its peak heap. `QACT_MALLOC=default` leaves glibc alone. Returns True if applied."""
    if os.environ.get("QACT_MALLOC", "").lower() == "default" or not platform.system() == "Linux":
        return False
    import ctypes

    try:
        mallopt = ctypes.CDLL(None).mallopt  # glibc only (musl has none)
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3  # <malloc.h>
    return bool(mallopt(m_mmap_threshold, 32 << 20)) and bool(mallopt(m_trim_threshold, 1 << 30))


def check_seed(seed: int) -> int:
    """Seeds are derived (seed + 1, seed * 1000 + epoch) and fed to torch and numpy, which take 64 and 32
    bits: refuse what would overflow with one line, not an OverflowError."""
    if not 0 <= seed < 2**32:
        raise UsageError(f"--seed {seed} is out of range; use an integer in 0..{2**32 - 1}")
    return seed
