"""The seed pipeline as a fused-table script: the ceiling medflow is measured against (issue 10).

Everything from the stored 16-bit value to the three output channels is a per-pixel
function, so the script evaluates it once on all 65,536 stored values (one table per
channel and per distinct rescale slope/intercept), then streams the series slice by slice:
pydicom reads each file, the stored values are the Pixel Data bytes themselves (native
little-endian files only: the script checks the transfer syntax and the bit layout instead of
going through ``pixel_array``'s decoder machinery), ``np.take`` gathers the table with them
(viewed as uint16) as indices straight into a reused slice buffer, and the slice goes to the
.npy file.
Same math as ``handwritten_seed.py --color bt601`` (HU, LINEAR window, 8-bit index, blue->red,
BT.601 full-range YCbCr in float64 rounded once to float32), so its output is bit-identical to
medflow's ``seed.yaml``. No hashing, no cache, no manifest: only the work itself.

    python benchmarks/fused_seed.py DICOM_DIR OUT_DIR
"""

import fused_stream
import numpy as np

LEVEL, WIDTH = -600.0, 1500.0


def table(slope, intercept, signed):
    """(3, 65536) float32: Y, Cb, Cr of every stored value (indexed by its uint16 bit pattern)."""
    stored = np.arange(65536, dtype=np.uint16).view(np.int16 if signed else np.uint16)
    hu = (stored.astype(np.float64) * slope + intercept).astype(np.float32)
    win = np.clip((hu - (LEVEL - 0.5)) / (WIDTH - 1) + 0.5, 0.0, 1.0)
    index = np.rint(win * 255).astype(np.uint8)
    ramp = np.arange(256)
    lut = np.stack([ramp, np.zeros(256), 255 - ramp], axis=1).astype(np.float32) / 255
    rgb = lut[index].astype(np.float64)
    kr, kb = 0.299, 0.114
    kg = 1 - kr - kb
    matrix = np.array([[kr, kg, kb], [-kr / (2 - 2 * kb), -kg / (2 - 2 * kb), 0.5],
                       [0.5, -kg / (2 - 2 * kr), -kb / (2 - 2 * kr)]])
    return np.ascontiguousarray((rgb @ matrix.T + [0.0, 0.5, 0.5]).astype(np.float32).T)


def gather(lut, index, out):
    """One table per channel, gathered into the (3, rows, cols) float32 slice."""
    for c in range(3):
        np.take(lut[c], index, out=out[c])


if __name__ == "__main__":
    fused_stream.main(table, gather, "<f4", lambda rows, cols: (3, rows, cols))
