"""Physical limits of this machine for the seed pipeline, on one series folder; prints one JSON line.

    python benchmarks/limits.py SERIES_DIR SCRATCH_DIR

Measured after one warm-up read (the files are in the page cache), each the best of three
repetitions (these are limits, not typical times):

* ``read``: the files' bytes from the page cache (open + read into memory);
* ``memcpy_input`` / ``memcpy_output``: one copy of the stored volume (uint16) and of the
  seed's output volume (float32, 3 channels);
* ``header_parse``: pydicom header parse only (``stop_before_pixels``);
* ``parse_and_pixels``: full parse and a zero-copy view of the pixel bytes;
* ``gather``: the folded per-pixel chain, one lookup in a 65,536 x 3 float32 table;
* ``write``: the float32 NCHW output written to a file (page cache), slice by slice;
* ``streamed_floor``: parse + pixels + gather + write, slice by slice: the rate a
  perfect single-core implementation of the seed pipeline could reach.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import pydicom

REPEATS = 3


def _best(function, repeats: int = REPEATS) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    return min(times)


def measure(series_dir: Path, scratch: Path) -> dict:
    files = sorted(p for p in series_dir.rglob("*.dcm"))
    n = len(files)
    sizes = [p.stat().st_size for p in files]
    total = sum(sizes)
    for path in files:  # warm the page cache
        path.read_bytes()
    first = pydicom.dcmread(files[0])
    rows, cols = int(first.Rows), int(first.Columns)
    buffer = bytearray(max(sizes))

    def read_all():
        view = memoryview(buffer)
        for path in files:
            with open(path, "rb", buffering=0) as f:
                f.readinto(view)

    stored = np.zeros((n, rows, cols), dtype=np.uint16)
    stored_copy = np.empty_like(stored)
    output = np.ones((n, 3, rows, cols), dtype=np.float32)
    output_copy = np.empty_like(output)
    table = np.random.default_rng(0).random((65536, 3), dtype=np.float32)
    table_cf = np.ascontiguousarray(table.T)  # 3 x 65536: channel-first gather writes NCHW directly
    slice_out = np.empty((3, rows, cols), dtype=np.float32)

    def parse_headers():
        for path in files:
            pydicom.dcmread(path, stop_before_pixels=True)

    def parse_and_pixels():
        for path in files:
            ds = pydicom.dcmread(path)
            np.frombuffer(ds.PixelData, dtype=np.uint16)

    def gather():
        for z in range(n):
            for c in range(3):
                np.take(table_cf[c], stored[z], out=slice_out[c])

    target = scratch / "limits_output.bin"

    def write():
        target.unlink(missing_ok=True)  # a new file, as a build writes (truncating costs more)
        with open(target, "wb") as f:
            for z in range(n):
                f.write(output[z].data)

    def floor():
        target.unlink(missing_ok=True)
        with open(target, "wb") as f:
            for path in files:
                ds = pydicom.dcmread(path)
                pixels = np.frombuffer(ds.PixelData, dtype=np.uint16).reshape(rows, cols)
                for c in range(3):
                    np.take(table_cf[c], pixels, out=slice_out[c])
                f.write(slice_out.data)

    scratch.mkdir(parents=True, exist_ok=True)
    seconds = {
        "read": _best(read_all),
        "memcpy_input": _best(lambda: np.copyto(stored_copy, stored)),
        "memcpy_output": _best(lambda: np.copyto(output_copy, output)),
        "header_parse": _best(parse_headers),
        "parse_and_pixels": _best(parse_and_pixels),
        "gather": _best(gather),
        "write": _best(write),
        "streamed_floor": _best(floor),
    }
    target.unlink(missing_ok=True)
    volume_bytes = {"memcpy_input": stored.nbytes, "memcpy_output": output.nbytes, "write": output.nbytes}
    result = {"slices": n, "input_bytes": total, "output_bytes": output.nbytes, "seconds": seconds}
    result["slices_per_s"] = {k: n / v for k, v in seconds.items()}
    result["mb_per_s"] = {k: volume_bytes.get(k, total) / 1e6 / v for k, v in seconds.items()}
    return result


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    print(json.dumps(measure(Path(args[0]), Path(args[1]))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
