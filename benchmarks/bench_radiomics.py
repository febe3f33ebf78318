"""The radiomics recipe (HU -> 1 mm linear resample -> .nii.gz) against a straightforward SimpleITK
script (issue 10, item 5; target >= 2x). Run by hand; never part of the test suite.

    python benchmarks/bench_radiomics.py [--runs 3] [--work benchmarks/_work] [--slices 200] [--no-sweep]

Contenders, each a whole child process, cold (output and cache deleted before every run),
interleaved run by run so a noisy neighbour hurts them alike; each figure is the median of
``--runs`` runs and the ratio is taken within this run:

* ``sitk_radiomics.py``: ``ImageSeriesReader`` + GDCM order, ``sitk.Resample`` to 1 mm (linear,
  origin and direction kept, float32), ``sitk.WriteImage`` to ``.nii.gz`` (default compression);
* ``medflow run pipelines/radiomics.yaml`` (``engine.workers: auto``: one item, so SimpleITK
  and ISA-L use every core);
* the same with ``--workers 1`` (every core still: the item runs alone in the parent process).

Data: the real pancreas CT (``ct_pancreas_tcia``, 134 x 512 x 512, 3 mm slices: 550 x 550 x 402
voxels of 1 mm, 486 MB of float32) from ``$MEDFLOW_SHARED_DATA`` or ``../shared/data``, and a
synthetic series from ``generate.py`` (``--slices`` x 512 x 512, 0.8 mm pixels, 1.5 mm steps).

Then a sweep of the NIfTI compression on the 1 mm pancreas volume (the bytes medflow writes,
header included): time and size per compressor and level, SimpleITK's own ``WriteImage`` first.
Prints Markdown tables.
"""

from __future__ import annotations

import argparse
import gzip
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import generate  # noqa: E402
import measure  # noqa: E402

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
PY = sys.executable
RECIPE = REPO / "pipelines" / "radiomics.yaml"


def shared_data() -> Path:
    env = os.environ.get("MEDFLOW_SHARED_DATA")
    return Path(env) if env else REPO.parent / "shared" / "data"


def contenders(data: Path, out: Path) -> dict[str, tuple[list[str], list[Path]]]:
    """label -> (command, paths to delete before each run)."""
    sets = ["--set", f"outputs.dir={out / 'o'}", "--set", f"engine.cache_dir={out / 'c'}"]
    medflow = [PY, "-m", "medflow", "run", str(RECIPE), "-q", "--source", str(data), *sets]
    return {
        "sitk_radiomics.py": ([PY, str(BENCH / "sitk_radiomics.py"), str(data), str(out / "sitk.nii.gz")],
                              [out / "sitk.nii.gz"]),
        "medflow run (workers auto)": (medflow, [out / "o", out / "c"]),
        "medflow run --workers 1": ([*medflow, "--workers", "1"], [out / "o", out / "c"]),
    }


def clean(paths: list[Path]) -> None:
    for path in paths:
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


def load() -> str:
    one, five, _ = os.getloadavg()
    return f"load {one:.2f} / {five:.2f} (1 / 5 min) on {os.cpu_count()} cores"


def compare(name: str, data: Path, work: Path, runs: int) -> None:
    out = work / "radiomics" / name
    out.mkdir(parents=True, exist_ok=True)
    runs_by: dict[str, list[measure.Run]] = {}
    for k in range(runs):
        for label, (command, paths) in contenders(data, out).items():
            clean(paths)
            result = measure.run(command, out / "logs" / f"{label.split()[0]}-{k}.log", cwd=REPO)
            if result.returncode != 0:
                raise SystemExit(f"{label} failed:\n{measure.tail(result.log)}")
            runs_by.setdefault(label, []).append(result)
    base = statistics.median(r.wall_s for r in runs_by["sitk_radiomics.py"])
    print(f"### {name} ({load()}, median of {runs}, interleaved)\n")
    print("| contender | wall (s) | vs sitk script | CPU (s) | peak RSS (MB) | output (MB) |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    sizes = {"sitk_radiomics.py": out / "sitk.nii.gz"}
    for label, results in runs_by.items():
        wall = statistics.median(r.wall_s for r in results)
        cpu = statistics.median(r.cpu_s for r in results)
        peak = statistics.median(r.peak_mb for r in results)
        target = sizes.get(label) or next((out / "o" / "nifti").glob("*.nii.gz"), None)
        size = f"{target.stat().st_size / 1e6:.0f}" if target and target.exists() else "-"
        print(f"| {label} | {wall:.2f} | {base / wall:.2f}x | {cpu:.2f} | {peak:.0f} | {size} |")
    print()


def sweep(data: Path, work: Path) -> None:
    """Compression of the 1 mm pancreas volume as medflow writes it (header + float32 pixels)."""
    import SimpleITK as sitk

    from medflow.writers.nifti import gzip_bytes

    out = work / "radiomics" / "sweep"
    clean([out / "o", out / "c"])
    command = [PY, "-m", "medflow", "run", str(RECIPE), "-q", "--source", str(data),
               "--set", f"outputs.dir={out / 'o'}", "--set", f"engine.cache_dir={out / 'c'}"]
    subprocess.run(command, check=True, cwd=REPO, stdout=subprocess.DEVNULL)
    nifti = next((out / "o" / "nifti").glob("*.nii.gz"))
    raw = gzip.decompress(nifti.read_bytes())
    image = sitk.ReadImage(str(nifti))
    cores = len(os.sched_getaffinity(0))
    print(f"### NIfTI compression of the 1 mm pancreas CT ({len(raw) / 1e6:.0f} MB raw, {load()})\n")
    print("| writer | level | threads | time (s) | size (MB) | size / raw |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    with tempfile.TemporaryDirectory(dir=work) as tmp:
        started = time.perf_counter()
        sitk.WriteImage(image, str(Path(tmp) / "x.nii.gz"))
        seconds = time.perf_counter() - started
        size = (Path(tmp) / "x.nii.gz").stat().st_size
    print(f"| SimpleITK WriteImage (compression_level: null) | default | 1 | {seconds:.2f} | {size / 1e6:.0f} "
          f"| {size / len(raw):.1%} |")
    rows = [("isal", level, threads) for level in (0, 1, 2, 3) for threads in sorted({1, cores})]
    rows += [("zlib", level, 1) for level in (0, 1, 6)]
    for compressor, level, threads in rows:
        started = time.perf_counter()
        data_gz = gzip_bytes(raw, level, compressor, threads)
        seconds = time.perf_counter() - started
        print(f"| medflow {compressor} | {level} | {threads} | {seconds:.2f} | {len(data_gz) / 1e6:.0f} "
              f"| {len(data_gz) / len(raw):.1%} |")
    print()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--work", type=Path, default=BENCH / "_work")
    parser.add_argument("--slices", type=int, default=200, help="slices of the synthetic series")
    parser.add_argument("--no-sweep", action="store_true")
    parser.add_argument("--only", choices=["real", "synthetic"], default=None)
    args = parser.parse_args(argv)
    args.work = args.work.resolve()
    args.work.mkdir(parents=True, exist_ok=True)
    print(f"## radiomics recipe vs SimpleITK script ({load()})\n")
    pancreas = shared_data() / "ct_pancreas_tcia"
    if args.only != "synthetic":
        if pancreas.is_dir():
            compare("real CT, 134 x 512 x 512 (ct_pancreas_tcia)", pancreas, args.work, args.runs)
        else:
            print(f"{pancreas} not found: real CT skipped\n")
    if args.only != "real":
        synthetic = args.work / "data" / f"radiomics-1x{args.slices}"
        generate.generate(synthetic, 1, args.slices)
        series = synthetic / "series_000"  # the SimpleITK script reads one folder of one series
        compare(f"synthetic CT, {args.slices} x 512 x 512 (generate.py)", series, args.work, args.runs)
    if not args.no_sweep and pancreas.is_dir():
        sweep(pancreas, args.work)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
