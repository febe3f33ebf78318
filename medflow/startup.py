"""How a medflow command sets up its process: the garbage collector, numpy's BLAS threads, the heap.

Start-up runs without the cyclic garbage collector looking at it (:func:`quiet`, :func:`started`).
Importing numpy, pydicom, pydantic and medflow and building the recipe's models allocate
about 10^5 objects that live as long as the process. The collector's passes over them find
nothing (a fresh ``medflow run`` holds under a thousand unreachable objects when its start-up
ends) yet cost a tenth of a 2-slice build's start-up: repeated young-generation passes, one
full collection midway, and the full collections of the interpreter's exit. So the command
line turns the collector off while it starts (:func:`quiet`), and when the real work begins
(:func:`started`) moves everything allocated so far out of its sight (``gc.freeze``) and turns
it back on: the work itself, whatever its size, is collected as usual. When the process is
about to end, everything is frozen again so that the interpreter's exit skips its full
collections.

What start-up left unreachable in cycles is not reclaimed while the command runs (nor, at the
end, the work's: Python does not promise to finalize objects alive at exit, and medflow closes
and flushes every file it writes explicitly); in a process that goes on after the command
(:func:`quiet`'s ``restore`` with ``process_ends=False``: tests, Python callers) the frozen
objects return to the collector's oldest generation.

The command line also starts numpy's OpenBLAS without helper threads (:func:`one_blas_thread`)
and keeps freed memory in the heap for the next item (:func:`steady_heap`), unless its user
chose otherwise.
"""

from __future__ import annotations

import gc
import os
from collections.abc import Callable

_resume = True  # collect after start-up? (False when the caller had the collector off)

#: The OpenBLAS thread count a medflow process sets when its user set none (:func:`one_blas_thread`).
BLAS_THREADS = "1"
#: Did this process's user choose ``OPENBLAS_NUM_THREADS`` (None: not asked, see :func:`one_blas_thread`)?
blas_threads_chosen: bool | None = None

#: glibc's malloc settings in a medflow process whose user set none (:func:`steady_heap`), by variable:
#: blocks up to 32 MiB come from the heap (larger ones are mapped, and unmapped when freed) and up
#: to 64 MiB of freed memory at its top stays for the next blocks.
HEAP_SETTINGS = {"MALLOC_MMAP_THRESHOLD_": 32 << 20, "MALLOC_TRIM_THRESHOLD_": 64 << 20}
# mallopt(3) parameters of those variables (malloc.h: M_MMAP_THRESHOLD, M_TRIM_THRESHOLD)
_MALLOPT = {"MALLOC_MMAP_THRESHOLD_": -3, "MALLOC_TRIM_THRESHOLD_": -1}
#: What :func:`steady_heap` found: "set" (medflow's settings), "chosen" (the user tuned malloc),
#: "not glibc" (nothing to set), "refused" (glibc's mallopt refused a setting), None (not asked).
heap_settings: str | None = None


def quiet() -> Callable[[bool], None]:
    """Turn the cyclic collector off until :func:`started`; returns ``restore(process_ends)``.

    ``restore`` puts the collector back as it was before and unfreezes the objects :func:`started`
    froze; when the process is about to end it freezes everything instead: the interpreter's exit
    runs full collections (tens of ms with numpy and pydicom loaded) that would free nothing the
    OS does not.
    """
    global _resume
    was_enabled = _resume = gc.isenabled()
    gc.disable()

    def restore(process_ends: bool) -> None:
        if process_ends:
            gc.freeze()  # the exit's collections would walk every object only to find them all alive
            return
        gc.unfreeze()
        if was_enabled:
            gc.enable()

    return restore


def started() -> None:
    """Start-up is over: freeze what it allocated (never scanned again), collect what comes next."""
    gc.freeze()
    if _resume:
        gc.enable()


def one_blas_thread() -> None:
    """Start numpy's OpenBLAS without helper threads in this process, unless its user set ``OPENBLAS_NUM_THREADS``.

    Importing numpy (its wheels bundle OpenBLAS) starts a BLAS thread per extra core, and each
    new thread spins about 0.1 s of CPU waiting for work before it sleeps. medflow's BLAS calls
    are 3 x 3 geometry, so the spin only takes a core from the start of the build (the files'
    digests, the first slabs' writes). Measured on the 2-core benchmark VM, whole processes,
    medians of 21 interleaved: seed recipe on 200 slices 0.903 -> 0.801 s (CPU 1.30 -> 1.09 s),
    on 2 slices 0.303 -> 0.285 s. Must run before numpy is imported; worker processes inherit it.
    """
    global blas_threads_chosen
    blas_threads_chosen = "OPENBLAS_NUM_THREADS" in os.environ
    os.environ.setdefault("OPENBLAS_NUM_THREADS", BLAS_THREADS)


def steady_heap() -> None:
    """Keep freed memory in this process's heap for the next item instead of handing it back at once.

    glibc gives the free memory at the top of its heap back to the OS once it exceeds a trim
    threshold that follows the largest block freed so far (twice it: 6 MiB after a slice of
    512 x 512 x 3 float32). An item's arrays (gather buffers, index arrays, a step's
    temporaries) are freed together when it ends, so every next item got its memory from the OS
    again, page by page and zeroed by the kernel: 200 one-slice series of 512 x 512 took 457,000
    page faults and 1.3 s of system time, more than their gathers, hashes and writes together.
    Blocks up to 32 MiB now come from the heap (bigger ones are still mapped, and unmapped when
    freed) and up to 64 MiB of free memory stays in it: 6,600 faults, 2.21 -> 1.35 s whole
    process (medians of 5 interleaved, the 2-core benchmark VM); a 200-slice series, whose
    slabs reuse their buffers, is unchanged.

    Nothing changes when the user tuned malloc (``MALLOC_MMAP_THRESHOLD_``,
    ``MALLOC_TRIM_THRESHOLD_`` or ``glibc.malloc`` in ``GLIBC_TUNABLES``) or the C library is not
    glibc. The variables are set for the processes this one starts (loky and Dask workers read
    them when they start), :manpage:`mallopt(3)` applies them to this one.
    """
    global heap_settings
    tunables = os.environ.get("GLIBC_TUNABLES", "")
    if any(name in os.environ for name in HEAP_SETTINGS) or "glibc.malloc." in tunables:
        heap_settings = "chosen"
        return
    try:
        libc_version = os.confstr("CS_GNU_LIBC_VERSION") or ""
    except (AttributeError, ValueError, OSError):  # not a glibc system (macOS, Windows, musl)
        libc_version = ""
    if not libc_version.startswith("glibc"):
        heap_settings = "not glibc"
        return
    import ctypes  # numpy imports it anyway

    mallopt = ctypes.CDLL(None).mallopt
    for name, value in HEAP_SETTINGS.items():
        if not mallopt(_MALLOPT[name], value):
            heap_settings = "refused"  # leave the children as they are too
            return
    for name, value in HEAP_SETTINGS.items():
        os.environ[name] = str(value)
    heap_settings = "set"
