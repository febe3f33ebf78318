"""Anonymization benchmark: medflow (anonymize + DICOM writer via ``medflow run``) vs dicognito and deid.

Run by hand (never a unit test), with the ``bench`` extra installed::

    pip install -e '.[bench]'
    python benchmarks/bench_deid.py                 # 2000 files, 3 repeats
    python benchmarks/bench_deid.py --files 500 --repeats 1

A corpus of small CT files (16x20 pixels, PHI in standard attributes, sequences to depth 2,
private blocks with a private sequence, overlays, free text: the generator of
``tests/deid_corpus.py``) is written to a temporary folder, 20 slices per series with new UIDs.
Each tool reads every file, de-identifies it and writes it to a fresh folder, in this process,
one core, same files, same run. The table gives the median of the repeats, files/s and each
tool's speed relative to medflow; it is printed and written to ``benchmarks/RESULTS-deid.md``.

What each tool does per file differs (see the coverage column): medflow's engine also reads and
decodes the pixels into its Sample (it builds training tensors too) and writes a per-file audit.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import shutil
import statistics
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
    "medflow": "PS3.15 Table E.1-1 basic profile (edition named), every element at any depth, file meta, "
               "keyed UIDs/pseudonyms, 0012,0062/63/64 + 0028,0303, per-file audit JSONL, pixel data as stored",
    "dicognito": "its own list: PN/UI/dates/identifying attributes replaced (seeded), private kept",
    "deid": "default deid.dicom recipe (its own list), private tags removed",
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


def run_medflow(files: list[Path], work: Path) -> None:
    from medflow.cli import main

    recipe = work / "recipe.yaml"
    recipe.write_text(
        f"medflow: 1\nname: bench-deid\nsource:\n  dicom: {files[0].parent}\nsteps:\n  - step: anonymize\n"
        "outputs:\n  dir: out\n  writers:\n    - kind: dicom\nengine:\n  workers: 1\n"
    )
    code = main(["run", str(recipe), "--workers", "1", "-q"])
    written = len(list((work / "out" / "dicom").rglob("*.dcm")))
    if code != 0 or written != len(files):
        raise RuntimeError(f"medflow run failed (exit {code}, {written} of {len(files)} files written)")


def run_dicognito(files: list[Path], work: Path) -> None:
    from dicognito.anonymizer import Anonymizer

    anonymizer = Anonymizer(seed="medflow-benchmark")
    out = work / "out"
    out.mkdir()
    for path in files:
        ds = pydicom.dcmread(path)
        anonymizer.anonymize(ds)
        ds.save_as(out / path.name)


def run_deid(files: list[Path], work: Path) -> None:
    from deid.config import DeidRecipe
    from deid.dicom import replace_identifiers

    out = work / "out"
    out.mkdir()
    replace_identifiers([str(p) for p in files], deid=DeidRecipe(), save=True, output_folder=str(out),
                        overwrite=True, remove_private=True)
    if len(list(out.iterdir())) != len(files):
        raise RuntimeError("deid did not write every file")


TOOLS = {"medflow": run_medflow, "dicognito": run_dicognito, "deid": run_deid}


def measure(files: list[Path], base: Path, repeats: int) -> dict[str, list[float]]:
    """Seconds per run of each tool; tools interleaved so that machine load affects them alike."""
    times: dict[str, list[float]] = {name: [] for name in TOOLS}
    for repeat in range(repeats):
        for name, tool in TOOLS.items():
            work = base / f"{name}-{repeat}"
            work.mkdir()
            started = time.perf_counter()
            tool(files, work)
            times[name].append(time.perf_counter() - started)
            shutil.rmtree(work)
            print(f"  run {repeat + 1}/{repeats} {name}: {times[name][-1]:.2f} s", file=sys.stderr)
    return times


def table(times: dict[str, list[float]], n_files: int, repeats: int) -> str:
    medflow = statistics.median(times["medflow"])
    lines = [
        f"Anonymization benchmark: {n_files} small CT files (16x20, PHI-laden headers), one core, in-process, "
        f"median of {repeats} run(s); {platform.python_implementation()} {platform.python_version()}, "
        f"pydicom {version('pydicom')}, dicognito {version('dicognito')}, deid {version('deid')}, "
        f"{os.cpu_count()} CPUs.",
        "",
        "| tool | median s | files/s | medflow speed / tool speed | what it does per file |",
        "| --- | ---: | ---: | ---: | --- |",
    ]
    for name in TOOLS:
        seconds = statistics.median(times[name])
        lines.append(
            f"| {name} | {seconds:.2f} | {n_files / seconds:.0f} | {seconds / medflow:.2f} | {COVERAGE[name]} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--results", type=Path, default=REPO / "benchmarks" / "RESULTS-deid.md")
    args = parser.parse_args(argv)
    os.environ.setdefault("MEDFLOW_DEID_KEY", "benchmark-key-0123456789abcdef")
    logging.disable(logging.WARNING)  # deid logs a warning per file
    warnings.simplefilter("ignore")
    with tempfile.TemporaryDirectory(prefix="bench-deid-") as tmp:
        base = Path(tmp)
        print(f"writing {args.files} files ...", file=sys.stderr)
        files = make_corpus(base, args.files)
        times = measure(files, base, args.repeats)
    text = table(times, args.files, args.repeats)
    print(text)
    args.results.write_text("# Anonymization benchmark results\n\n" + text
                            + "\nGenerated by `python benchmarks/bench_deid.py`.\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
