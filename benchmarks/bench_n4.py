"""N4 bias-field correction (issue 10, item 5): what each effort setting costs and how far it lands
from a high-effort reference. Run by hand; never part of the test suite.

    python benchmarks/bench_n4.py [--runs 3] [--cases hitachi,sts_t2] [--threads 1]

For every MR series it finds in the shared data (``$MEDFLOW_SHARED_DATA`` or ``../shared/data``):

* ``hitachi``: ``dicom2nifti_cases/hitachi/anatomical`` (the source of ``pipelines/mr.yaml``;
  4 slices of 64 x 64, **synthetic noise** pixels: timings are real, accuracy means little);
* ``generic``: ``dicom2nifti_cases/generic/anatomical`` (Siemens, 256 x 256, synthetic noise too);
* ``sts_t2``: ``labels_rtstruct_sts_mr_t2/MR_T2`` (a real T2 fat-sat MR, 40 slices of
  384 x 384, 0.52 x 0.52 x 5.2 mm: the meaningful accuracy figures).

it runs :func:`medflow.ops.correction.n4_bias_correction` (what the ``n4_bias_correction`` step
runs) with each setting, in this process (no start-up), median of ``--runs`` timed runs with the
settings interleaved, then compares with the reference setting (shrink 1, 4 levels of up to 100
iterations, convergence threshold 1e-5, run once):

* **field err**: the shape of the bias field, scale removed (N4's field is defined up to a
  constant factor, which a z-score removes anyway): ``d = log(b) - log(b_ref)``, minus its mean
  over the object (Otsu foreground of the full-resolution volume); mean and 99th percentile of
  ``|d|`` in %, i.e. the relative error of the multiplicative field.
* **z err**: what ``pipelines/mr.yaml`` outputs: both corrected volumes z-scored over the whole
  volume, mean absolute difference over the object, in standard deviations.

Prints Markdown tables.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))

from medflow.ops.correction import n4_bias_correction  # noqa: E402

CASES = {
    "hitachi": "dicom2nifti_cases/hitachi/anatomical/001",
    "generic": "dicom2nifti_cases/generic/anatomical/001",
    "sts_t2": "labels_rtstruct_sts_mr_t2/MR_T2",
}

#: label -> (shrink_factor, iterations, convergence_threshold, control_points)
SETTINGS: dict[str, tuple[int, tuple[int, ...], float, int]] = {
    "default: shrink 4, 4x50, 1e-3, 4 cp": (4, (50, 50, 50, 50), 1e-3, 4),
    "shrink 2": (2, (50, 50, 50, 50), 1e-3, 4),
    "shrink 8": (8, (50, 50, 50, 50), 1e-3, 4),
    "3 levels (3x50)": (4, (50, 50, 50), 1e-3, 4),
    "2 levels (2x50)": (4, (50, 50), 1e-3, 4),
    "4x20 iterations": (4, (20, 20, 20, 20), 1e-3, 4),
    "threshold 1e-4": (4, (50, 50, 50, 50), 1e-4, 4),
    "8 control points": (4, (50, 50, 50, 50), 1e-3, 8),
    "shrink 2, 3 levels": (2, (50, 50, 50), 1e-3, 4),
}
REFERENCE = (1, (100, 100, 100, 100), 1e-5, 4)


def shared_data() -> Path:
    env = os.environ.get("MEDFLOW_SHARED_DATA")
    return Path(env) if env else BENCH.parent.parent / "shared" / "data"


def read_series(folder: Path) -> tuple[np.ndarray, tuple[float, float, float]]:
    """The series as a float32 ``zyx`` volume and its spacing ``(sz, sy, sx)`` mm (SimpleITK + GDCM order)."""
    import SimpleITK as sitk

    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder)))
    image = reader.Execute()
    sx, sy, sz = image.GetSpacing()
    return sitk.GetArrayFromImage(image).astype(np.float32), (sz, sy, sx)


def foreground(volume: np.ndarray) -> np.ndarray:
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(volume)
    return sitk.GetArrayFromImage(sitk.OtsuThreshold(image, 0, 1, 200)).astype(bool)


def run(volume, spacing, setting, threads):
    shrink, iterations, threshold, points = setting
    started = time.perf_counter()
    corrected, bias = n4_bias_correction(
        volume, spacing, shrink_factor=shrink, iterations=iterations, convergence_threshold=threshold,
        control_points=points, mask="otsu", threads=threads,
    )
    return time.perf_counter() - started, corrected, bias


def zscore(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    return (x - x.mean()) / x.std()


def errors(corrected, bias, ref_corrected, ref_bias, mask) -> tuple[float, float, float]:
    d = np.log(bias.astype(np.float64)) - np.log(ref_bias.astype(np.float64))
    d = np.abs(d - d[mask].mean())[mask]
    z = np.abs(zscore(corrected) - zscore(ref_corrected))[mask]
    return 100 * float(d.mean()), 100 * float(np.percentile(d, 99)), float(z.mean())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--threads", type=int, default=None, help="N4 threads (default: SimpleITK's, every core)")
    parser.add_argument("--no-reference", action="store_true", help="timings only")
    parser.add_argument(
        "--reference", default=None, metavar="SHRINK,ITERxLEVELS,THRESHOLD",
        help="reference setting, e.g. 2,100x4,1e-4 (default 1,100x4,1e-5; shrink 1 takes minutes on a "
        "256 x 256 slice stack and far longer on a 384 x 384 x 40 volume)",
    )
    args = parser.parse_args(argv)
    data = shared_data()
    global REFERENCE
    if args.reference:
        shrink, iters, threshold = args.reference.split(",")
        per_level, levels = (int(v) for v in iters.split("x"))
        REFERENCE = (int(shrink), (per_level,) * levels, float(threshold), 4)
    print(f"# N4 effort vs accuracy (load: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f}, "
          f"{os.cpu_count()} cores, threads {args.threads or 'default'}, median of {args.runs})\n")
    for name in args.cases.split(","):
        folder = data / CASES[name]
        if not folder.is_dir():
            print(f"{name}: {folder} not found, skipped\n")
            continue
        volume, spacing = read_series(folder)
        mask = foreground(volume)
        print(f"## {name}: {CASES[name]} — {volume.shape[::-1]} voxels (x, y, z), spacing (x, y, z) "
              f"{tuple(round(v, 3) for v in spacing[::-1])} mm\n")
        reference = None
        if not args.no_reference:
            ref_time, ref_corrected, ref_bias = run(volume, spacing, REFERENCE, args.threads)
            reference = (ref_corrected, ref_bias)
        times: dict[str, list[float]] = {label: [] for label in SETTINGS}
        outputs = {}
        for _ in range(args.runs):  # interleaved: a noisy neighbour hurts every setting alike
            for label, setting in SETTINGS.items():
                seconds, corrected, bias = run(volume, spacing, setting, args.threads)
                times[label].append(seconds)
                outputs[label] = (corrected, bias)
        default = statistics.median(times[next(iter(SETTINGS))])
        print("| setting | shrink | iterations | threshold | control points | time (s) | vs default "
              "| field err mean (%) | field err p99 (%) | z err mean (SD) |")
        print("| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        rows = list(SETTINGS.items())
        for label, (shrink, iterations, threshold, points) in rows:
            median = statistics.median(times[label])
            if reference is not None:
                mean, p99, z = errors(*outputs[label], *reference, mask)
                acc = f"{mean:.2f} | {p99:.2f} | {z:.4f}"
            else:
                acc = "- | - | -"
            print(f"| {label} | {shrink} | {'x'.join(map(str, iterations))} | {threshold:g} | {points} "
                  f"| {median:.2f} | {median / default:.2f}x | {acc} |")
        if reference is not None:
            shrink, iterations, threshold, points = REFERENCE
            print(f"| reference (run once) | {shrink} | {'x'.join(map(str, iterations))} | {threshold:g} | {points} "
                  f"| {ref_time:.2f} | {ref_time / default:.2f}x | 0 | 0 | 0 |")
        print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
