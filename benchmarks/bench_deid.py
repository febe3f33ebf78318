"""De-identification benchmark: ``medflow run`` (anonymize -> dicom) vs dicognito, deid and dicom-anonymizer.

Run by hand (never a unit test), with the ``bench`` extra installed::

    pip install -e '.[bench]'
    python benchmarks/bench_deid.py                 # 2000 files, 3 repeats
    python benchmarks/bench_deid.py --files 500 --repeats 1

A corpus of small CT files (16x20 pixels, PHI in standard attributes, sequences to depth 2,
private blocks with a private sequence, overlays, free text: the generator of
``tests/deid_corpus.py``) is written to a temporary folder, 20 slices per series with new UIDs.
Each tool's own command line reads every file, de-identifies it and writes it to a fresh folder
(whole process, start-up included, as a user runs it); tools are interleaved repeat by repeat so
machine load hits them alike. The table gives the median of the repeats, files/s and each tool's
speed relative to dicognito; it is printed and written to ``benchmarks/RESULTS-deid.md``.
Tools that are not installed are left out with a message.

What each tool does per file differs (see the coverage column). medflow's de-identify -> DICOM
chain never decodes pixels: each file is parsed once, de-identified once and written once, with
its per-file audit and the build manifest.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from importlib.metadata import version
from pathlib import Path

import pydicom

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.deid_corpus import ORG_ROOT, build_corpus  # noqa: E402

SLICES_PER_SERIES = 20
COVERAGE = {
    "medflow": "PS3.15 Table E.1-1 basic profile (edition named), every element at any depth, text scrubbed of "
               "identity and patterns, file meta, keyed UIDs/pseudonyms, 0012,0062/63/64 + 0028,0303, per-file "
               "audit JSONL, manifest with accounting, pixel data as stored",
    "dicognito": "its own list: PN/UI/dates/identifying attributes replaced (seeded), private kept",
    "deid": "default deid.dicom recipe (its own list), private tags removed",
    "dicom-anonymizer": "its own list (PS3.15-derived), private tags removed",
}


def make_corpus(folder: Path, n_files: int) -> list[Path]:
    """``n_files`` CT files derived from the test corpus's CT slices, new UIDs per series and instance."""
    seed = build_corpus(folder / "_seed")
    templates = [f for f in seed.files if f.modality == "CT"]
    out = folder / "in"
    out.mkdir()
    paths = []
    for index in range(n_files):
        series, instance = divmod(index, SLICES_PER_SERIES)
        template = templates[series % len(templates)]
        ds = pydicom.dcmread(template.path)
        pid = template.patient.patient_id
        ds.SeriesInstanceUID = f"{ORG_ROOT}.{pid}.7.{series}"
        ds.SOPInstanceUID = f"{ORG_ROOT}.{pid}.7.{series}.{instance + 1}"
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.InstanceNumber = instance + 1
        ds.ImagePositionPatient = [-100.0, -120.0, 2.5 * instance]
        if "ReferencedImageSequence" in ds:
            ds.ReferencedImageSequence[0].ReferencedSOPInstanceUID = f"{ORG_ROOT}.{pid}.7.{series}.1"
        path = out / f"f{index:05d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    shutil.rmtree(folder / "_seed")
    return paths


def _medflow(workers: int):
    def run(files: list[Path], work: Path) -> list[str]:
        recipe = work / "recipe.yaml"
        recipe.write_text(
            f"medflow: 1\nname: bench-deid\nsource:\n  dicom: {files[0].parent}\nsteps:\n  - step: anonymize\n"
            "outputs:\n  dir: out\n  writers:\n    - kind: dicom\n"
        )
        return [sys.executable, "-m", "medflow", "run", str(recipe), "--workers", str(workers), "-q"]

    return run


def _dicognito(files: list[Path], work: Path) -> list[str]:
    # dicognito 0.19's console script is broken (main() needs an argument); its module entry point works
    return [sys.executable, "-m", "dicognito", "--quiet", "--output-directory", str(work / "out"), str(files[0].parent)]


def _dicom_anonymizer(files: list[Path], work: Path) -> list[str]:
    (work / "out").mkdir()  # it writes nothing into a folder that does not exist yet
    return [shutil.which("dicom-anonymizer") or "dicom-anonymizer", str(files[0].parent), str(work / "out")]


def _deid(files: list[Path], work: Path) -> list[str]:
    # deid's command line has no de-identify action: the same process, its documented API
    code = (
        "import logging,sys,pathlib; logging.disable(logging.WARNING)\n"
        "from deid.config import DeidRecipe\nfrom deid.dicom import replace_identifiers\n"
        f"files=[str(p) for p in sorted(pathlib.Path({str(files[0].parent)!r}).iterdir())]\n"
        f"out={str(work / 'out')!r}; pathlib.Path(out).mkdir()\n"
        "replace_identifiers(files, deid=DeidRecipe(), save=True, output_folder=out, overwrite=True, remove_private=True)\n"
    )
    return [sys.executable, "-c", code]


TOOLS = {
    "medflow (1 worker)": _medflow(1),
    "medflow (2 workers)": _medflow(2),
    "dicognito": _dicognito,
    "deid": _deid,
    "dicom-anonymizer": _dicom_anonymizer,
}
BASELINE = "dicognito"


def _available(name: str) -> bool:
    module = {"dicognito": "dicognito", "deid": "deid", "dicom-anonymizer": "dicomanonymizer"}.get(name)
    if module is None:
        return True
    try:
        __import__(module)
    except ImportError:
        print(f"  {name} is not installed: left out", file=sys.stderr)
        return False
    return True


def measure(files: list[Path], base: Path, repeats: int, tools: dict) -> dict[str, list[float]]:
    """Wall seconds of each tool's whole command (start-up included); tools interleaved so load hits them alike."""
    times: dict[str, list[float]] = {name: [] for name in tools}
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    for repeat in range(repeats):
        for name, command in tools.items():
            work = base / f"{name.replace(' ', '_')}-{repeat}"
            work.mkdir()
            argv = command(files, work)
            started = time.perf_counter()
            done = subprocess.run(argv, cwd=work, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            seconds = time.perf_counter() - started
            written = sum(1 for p in (work / "out").rglob("*") if p.is_file() and p.suffix != ".jsonl"
                          and p.name != "manifest.json") if (work / "out").exists() else 0
            if done.returncode != 0 or written < len(files):
                tail = done.stderr.decode(errors="replace").strip().splitlines()[-3:]
                raise RuntimeError(f"{name}: exit {done.returncode}, {written} of {len(files)} files written: {tail}")
            times[name].append(seconds)
            shutil.rmtree(work)
            print(f"  run {repeat + 1}/{repeats} {name}: {seconds:.2f} s", file=sys.stderr)
    return times


def table(times: dict[str, list[float]], n_files: int, repeats: int) -> str:
    baseline = statistics.median(times[BASELINE]) if BASELINE in times else None
    versions = ", ".join(f"{m} {version(m)}" for m in ("pydicom", "dicognito", "deid", "dicom-anonymizer")
                         if _installed(m))
    lines = [
        f"{n_files} small CT files (16x20, PHI-laden headers, nested sequences, private blocks, overlays); each tool's "
        f"whole command line (start-up included), interleaved, median of {repeats} run(s); "
        f"{platform.python_implementation()} {platform.python_version()}, {versions}, {os.cpu_count()} CPUs.",
        "",
        f"| tool | median s | files/s | speed / {BASELINE} | what it does per file |",
        "| --- | ---: | ---: | ---: | --- |",
    ]
    for name in times:
        seconds = statistics.median(times[name])
        ratio = f"{baseline / seconds:.2f}" if baseline else "-"
        lines.append(f"| {name} | {seconds:.2f} | {n_files / seconds:.0f} | {ratio} | {COVERAGE[name.split(' (')[0]]} |")
    return "\n".join(lines) + "\n"


def _installed(distribution: str) -> bool:
    try:
        version(distribution)
    except Exception:  # noqa: BLE001 - PackageNotFoundError
        return False
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--results", type=Path, default=REPO / "benchmarks" / "RESULTS-deid.md")
    args = parser.parse_args(argv)
    os.environ.setdefault("MEDFLOW_DEID_KEY", "benchmark-key-0123456789abcdef")
    warnings.simplefilter("ignore")
    with tempfile.TemporaryDirectory(prefix="bench-deid-") as tmp:
        base = Path(tmp)
        print(f"writing {args.files} files ...", file=sys.stderr)
        files = make_corpus(base, args.files)
        tools = {name: command for name, command in TOOLS.items() if _available(name.split(" (")[0])}
        times = measure(files, base, args.repeats, tools)
    text = table(times, args.files, args.repeats)
    print(text)
    args.results.write_text("# Anonymization benchmark results\n\n" + text
                            + "\nGenerated by `python benchmarks/bench_deid.py`.\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
