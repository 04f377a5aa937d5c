"""The server's heap: the startup objects kept out of the garbage collector's passes, and memory handed back
after a burst.

Loaded, a server holds some 430,000 objects that live as long as it does (torch, transformers, the models, the
app). Python's collector walks every one of them in each full collection, and under load it runs one every few
seconds: each took 250–510 ms on two busy cores, holding the GIL, so the event loop, the model worker and any
probe waited that long. :func:`freeze_startup_heap` collects once and then moves everything alive into the
collector's permanent generation (``gc.freeze``), so a full collection walks only what serving allocated:
40–60 ms on the same machine. Cycles that become garbage among the frozen objects are found again after
:func:`thaw_startup_heap`.

Under load the server's threads (the model worker, the traffic log's writers, the event loop) allocate in glibc
arenas of their own, and freed memory stays in them, so the process's RSS stays near its peak long after the
load. Once the server is idle again, ``malloc_trim(0)`` returns the free pages to the system; it costs a few
milliseconds, and runs off the event loop.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import gc
from collections.abc import Callable


def freeze_startup_heap() -> int:
    """Collect, then keep every object alive now out of later collections; how many objects are frozen."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


def thaw_startup_heap() -> None:
    """Hand the frozen objects back to the collector (its oldest generation), as when the server stops."""
    gc.unfreeze()


def _libc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim``; None on a C library without it (musl, macOS)."""
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):
        return None


MALLOC_TRIM = _libc_trim()


def release_free_memory() -> bool:
    """Return the allocator's free pages to the system; False where the C library cannot."""
    if MALLOC_TRIM is None:
        return False
    MALLOC_TRIM(0)
    return True


async def trim_after_bursts(
    work_done: Callable[[], int],
    busy: Callable[[], bool],
    every_s: float = 1.0,
    release: Callable[[], object] = release_free_memory,
) -> None:
    """Forever: every ``every_s``, when work was done since the last release and none is going on, ``release`` free
    memory. ``work_done`` is a count that grows with the work (passes run); ``busy`` says whether any is going on."""
    trimmed_at = work_done()
    while True:
        await asyncio.sleep(every_s)
        done = work_done()
        if done != trimmed_at and not busy():
            trimmed_at = done
            await asyncio.to_thread(release)
