"""Compare two .npy tensors bit for bit; print one JSON line.

    python benchmarks/compare.py A.npy B.npy [--flip AXIS] [--channel-axis AXIS]

``identical`` is true when shapes, dtypes and every byte agree; otherwise the JSON gives
the largest absolute difference, where it is and how many elements differ.
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np


def compare(a: np.ndarray, b: np.ndarray, channel_axis: int | None = None) -> dict:
    report = {"shape_a": list(a.shape), "shape_b": list(b.shape), "dtype_a": str(a.dtype), "dtype_b": str(b.dtype)}
    if a.shape != b.shape:
        return {**report, "identical": False, "why": "shapes differ"}
    identical = a.dtype == b.dtype and a.tobytes() == b.tobytes()
    diff = np.abs(a.astype(np.float64) - b.astype(np.float64))
    worst = np.unravel_index(int(np.argmax(diff)), diff.shape) if diff.size else ()
    return {
        **report,
        "identical": bool(identical),
        "max_abs_diff": float(diff.max()) if diff.size else 0.0,
        "n_different": int(np.count_nonzero(diff)),
        "n": int(diff.size),
        "worst_index": [int(i) for i in worst],
        "worst_values": [float(a[worst]), float(b[worst])] if diff.size else [],
        **({"max_abs_diff_per_channel": [float(d) for d in np.moveaxis(diff, channel_axis, 0).reshape(
            diff.shape[channel_axis], -1).max(axis=1)]} if channel_axis is not None and diff.size else {}),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("a")
    parser.add_argument("b")
    parser.add_argument("--flip", type=int, help="reverse B along this axis first (e.g. 0: opposite slice order)")
    parser.add_argument("--channel-axis", type=int, help="also report the largest difference per channel")
    args = parser.parse_args(argv)
    a, b = np.load(args.a, mmap_mode="r"), np.load(args.b, mmap_mode="r")
    if args.flip is not None:
        b = np.flip(b, axis=args.flip)
    print(json.dumps(compare(np.asarray(a), np.asarray(b), args.channel_axis)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
