"""Scale-out benchmark (issue 10, item 6): a dataset of many tiny series.

Run by hand (never a unit test)::

    python benchmarks/bench_scale.py                       # 10,000 series x 2 slices, 1,000 for the memory ratio
    python benchmarks/bench_scale.py --series 2000 --repeats 1

It writes ``--series`` CT series of ``--slices`` 16 x 16 slices (deterministic UIDs, ~1 KB per
file) and measures, as child processes, whole process, median of the repeats:

* discovery + planning (``medflow plan``) with 1 and 2 workers: files/s (new files' headers
  and digests are read on the workers, :mod:`medflow.sources.prescan`);
* a cold build (HU -> window -> NCHW float32 .npy) with 1 and 2 workers: files/s, and the
  parent's peak RSS at a tenth of the series and at all of them (flat in the number of files
  means the ratio stays near 1);
* a no-op rebuild (nothing changed) with 1 worker, at a tenth of the series and at all of them;
* the same build on the Dask backend against a LocalCluster of 2 single-threaded workers
  started by this script (needs ``pip install -e '.[dask]'``).

Numbers go to stdout as a Markdown table; the machine is shared, compare within one run.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian

sys.path.insert(0, str(Path(__file__).resolve().parent))
from measure import run  # noqa: E402

UID_ROOT = "1.2.826.0.1.3680043.10.1234.88."
SIZE = 16


def write_dataset(folder: Path, series: int, slices: int) -> int:
    """``series`` x ``slices`` tiny CT files under ``folder/<patient>/<series>/``; returns the file count."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    pixels = (np.arange(SIZE * SIZE, dtype=np.uint16).reshape(SIZE, SIZE) * 7 % 2000).tobytes()
    count = 0
    for s in range(series):
        patient = s // 10
        target = folder / f"p{patient:05d}" / f"s{s:05d}"
        target.mkdir(parents=True, exist_ok=True)
        for i in range(slices):
            ds = FileDataset(str(target / f"{i}.dcm"), {}, file_meta=meta, preamble=b"\0" * 128)
            ds.SOPClassUID = CTImageStorage
            ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID = f"{UID_ROOT}{s}.{i + 1}"
            ds.StudyInstanceUID = f"{UID_ROOT}{patient}"
            ds.SeriesInstanceUID = f"{UID_ROOT}{s}"
            ds.FrameOfReferenceUID = f"{UID_ROOT}{s}.0"
            ds.PatientID, ds.PatientName, ds.Modality = f"P{patient:05d}", f"Scale^{patient}", "CT"
            ds.SeriesNumber, ds.InstanceNumber = s % 1000, i + 1
            ds.ImagePositionPatient = [0.0, 0.0, 2.0 * i]
            ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
            ds.PixelSpacing = [0.8, 0.8]
            ds.SliceThickness = 2.0
            ds.Rows = ds.Columns = SIZE
            ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
            ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
            ds.RescaleIntercept, ds.RescaleSlope = -1024, 1
            ds.PixelData = pixels
            ds.save_as(target / f"{i}.dcm", enforce_file_format=True)
            count += 1
    return count


def recipe(folder: Path, source: Path, name: str) -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(
        f"medflow: 1\nname: scale-{name}\nsource:\n  dicom: {source}\n"
        "steps:\n  - step: window\n    level: 40\n    width: 400\n  - step: layout\n    layout: NCHW\n"
        "    dtype: float32\n"
        f"outputs:\n  dir: {folder / ('out-' + name)}\n  writers:\n    - kind: npy\n"
    )
    return path


def medflow(*args: str) -> list[str]:
    return [sys.executable, "-m", "medflow", *args]


def measure(label: str, command: list[str], work: Path, repeats: int, clean: tuple[Path, ...] = ()) -> dict:
    """Median of ``repeats`` runs of ``command``; ``clean`` (outputs and cache) is removed before each run."""
    runs = []
    for r in range(repeats):
        for folder in clean:
            shutil.rmtree(folder, ignore_errors=True)
        done = run(command, work / "logs" / f"{label.replace(' ', '_')}-{r}.log")
        if done.returncode != 0:
            raise SystemExit(f"{label} failed (exit {done.returncode}); see {done.log}")
        runs.append(done)
    return {
        "label": label,
        "wall": statistics.median(r.wall_s for r in runs),
        "rss": statistics.median(r.maxrss_mb for r in runs),
        "tree": statistics.median(r.tree_peak_mb or 0 for r in runs),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--series", type=int, default=10_000)
    parser.add_argument("--slices", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--no-dask", action="store_true")
    parser.add_argument("--work", type=Path, default=None, help="keep the data here (default: a temp folder)")
    args = parser.parse_args(argv)
    work = args.work or Path(tempfile.mkdtemp(prefix="medflow-scale-"))
    small, large = work / "small", work / "large"
    tenth = max(1, args.series // 10)
    if not large.exists():
        print(f"writing {args.series} series x {args.slices} slices to {large} ...", flush=True)
        write_dataset(large, args.series, args.slices)
        write_dataset(small, tenth, args.slices)
    files = args.series * args.slices
    rows = []
    small_recipe, large_recipe = recipe(work, small, "small"), recipe(work, large, "large")
    # both recipes keep their cache beside the outputs (work/.medflow/cache): a cold run starts without
    # it (else the second run restores every item from the first one's cache and reads no header)
    cache = work / ".medflow"
    cold = (work / "out-large", cache)
    for workers in (1, 2):  # plan writes no memo; without a cache every plan discovers from scratch
        rows.append(measure(f"plan (discovery + planning), {workers} worker(s)",
                            medflow("plan", str(large_recipe), "--workers", str(workers)), work, args.repeats,
                            clean=cold))
    for workers in (1, 2):
        rows.append(measure(f"run cold, {workers} worker(s)", medflow("run", str(large_recipe), "-q", "--workers",
                            str(workers)), work, args.repeats, clean=cold))
    # a rebuild that changes nothing, on the outputs and cache the last cold run left (it reads the previous manifest)
    rows.append(measure("run no-op, 1 worker", medflow("run", str(large_recipe), "-q", "--workers", "1"), work,
                        args.repeats))
    small_row = measure("run cold, 1 worker, a tenth of the series", medflow("run", str(small_recipe), "-q", "--workers", "1"),
                        work, args.repeats, clean=(work / "out-small", cache))
    small_noop = measure("run no-op, 1 worker, a tenth of the series",
                         medflow("run", str(small_recipe), "-q", "--workers", "1"), work, args.repeats)
    if not args.no_dask:
        try:
            from dask.distributed import LocalCluster
        except ImportError:
            print("dask.distributed not installed: the Dask row is left out")
        else:
            with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
                rows.append(measure("run cold, Dask LocalCluster 2 workers", medflow(
                    "run", str(large_recipe), "-q", "--backend", "dask", "--dask-address", cluster.scheduler_address),
                    work, args.repeats, clean=cold))
    print(f"\n{args.series} series x {args.slices} slices ({files} files, {SIZE}x{SIZE}); {os.cpu_count()} CPUs, "
          f"Python {platform.python_version()}, median of {args.repeats}; load {os.getloadavg()[0]:.2f}\n")
    print("| what | wall s | files/s | parent peak RSS MiB | tree peak MiB |\n| --- | ---: | ---: | ---: | ---: |")
    for row in rows:
        print(f"| {row['label']} | {row['wall']:.2f} | {files / row['wall']:.0f} | {row['rss']:.0f} | {row['tree']:.0f} |")
    ones = next(r for r in rows if r["label"] == "run cold, 1 worker(s)")
    twos = next(r for r in rows if r["label"] == "run cold, 2 worker(s)")
    plans = [r["wall"] for r in rows if r["label"].startswith("plan")]
    print(f"\nplan, 2 workers vs 1: {plans[0] / plans[1]:.2f}x")
    print(f"2 workers vs 1: {ones['wall'] / twos['wall']:.2f}x; parent peak RSS at {args.series} vs {tenth} series: "
          f"{ones['rss']:.0f} / {small_row['rss']:.0f} MiB = {ones['rss'] / small_row['rss']:.2f}x "
          "(flat in the number of files: ~1.0x)")
    noop = next(r for r in rows if r["label"] == "run no-op, 1 worker")
    print(f"no-op rebuild, parent peak RSS at {args.series} vs {tenth} series: {noop['rss']:.0f} / "
          f"{small_noop['rss']:.0f} MiB = {noop['rss'] / small_noop['rss']:.2f}x; wall {noop['wall']:.2f} / "
          f"{small_noop['wall']:.2f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
