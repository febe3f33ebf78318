"""The seed recipe on series the main benchmark does not cover: encodings, rescales, sizes, multi-frame.

    python benchmarks/bench_variants.py [--rounds 2] [--variants NAME ...] [--no-handwritten]

Each variant but one is made from ``gen200`` (1 x 200 slices of 512 x 512, generated under ``--work``):
by dcmtk (transfer syntaxes: ``jpeg-lossless`` SV1, ``rle``, ``deflated``, ``big-endian``,
``jpeg-ls`` lossless), by GDCM (``jpeg-2000``: JPEG 2000 Lossless Only), by pydicom (``rescale-per-slice``: every slice its own slope and intercept, as PET; ``small128``:
128 x 128 slices, a rescale per slice; ``signed``: int16 values with intercept 0;
``big1024``: 50 slices of 1024 x 1024) and by highdicom (``enhanced``: the 200 slices as one
Legacy Converted Enhanced CT Image, frames in z order). ``one-slice-series`` is generated
apart: 200 series of one 512 x 512 slice each (each its own item, as a dataset of 2-D images).
Round by round: medflow with 1 worker (cold), the hand-written script (``handwritten_seed.py``),
the fused-table script (``fused_seed.py``, native little-endian 16-bit files only), medflow with
2 workers. Printed: whole-process wall time and peak RSS (the process tree, :mod:`measure`),
medflow's in-build seconds, medians, and the same-round ratios hand-written / medflow and fused /
medflow (how many times faster medflow is). ``--markdown FILE`` writes the table
(``benchmarks/RESULTS-variants.md``).

The hand-written script reads single-frame files only: on ``enhanced`` it finds no series and
its time is only its start-up (marked n/a); the fused script runs on the native variants only.
"""

from __future__ import annotations

import argparse
import datetime
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import measure  # noqa: E402
from run import PY, REPO, _clean, _manifest_seconds, _medflow_command, _warm  # noqa: E402

BENCH = Path(__file__).resolve().parent
VARIANTS = ("jpeg-lossless", "rle", "deflated", "big-endian", "jpeg-ls", "jpeg-2000", "rescale-per-slice", "small128",
            "signed", "big1024", "enhanced", "one-slice-series")
#: The variants the fused-table script reads (native little-endian 16-bit single-frame files).
FUSED_READS = ("rescale-per-slice", "small128", "signed", "big1024", "one-slice-series")
DCMTK = {"jpeg-lossless": ["dcmcjpeg", "--encode-lossless-sv1"], "rle": ["dcmcrle"], "deflated": ["dcmconv", "+td"],
         "big-endian": ["dcmconv", "+tb"], "jpeg-ls": ["dcmcjpls", "--encode-lossless"]}


def _make(source: Path, target: Path, name: str) -> None:
    """Write variant ``name`` of the series in ``source`` into ``target`` (once; a marker says it is complete)."""
    marker = target.parent / f".{target.name}.complete"
    if marker.is_file():
        return
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    files = sorted(source.rglob("*.dcm"))
    if name == "one-slice-series":
        subprocess.run([PY, BENCH / "generate.py", target, "--series", "200", "--slices", "1"], check=True, cwd=REPO,
                       capture_output=True)
    elif name in DCMTK:
        for path in files:
            subprocess.run([*DCMTK[name], str(path), str(target / path.name)], check=True, capture_output=True)
    else:
        subprocess.run([PY, "-c", _PYDICOM_VARIANTS, name, str(source), str(target)], check=True, cwd=REPO)
    marker.write_text(name)


_PYDICOM_VARIANTS = r'''
import sys
from pathlib import Path
import numpy as np, pydicom
name, source, target = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
files = sorted(source.rglob("*.dcm"))
datasets = []
for index, path in enumerate(files):
    if name == "jpeg-2000":
        import gdcm
        reader = gdcm.ImageReader()
        reader.SetFileName(str(path))
        change = gdcm.ImageChangeTransferSyntax()
        change.SetTransferSyntax(gdcm.TransferSyntax(gdcm.TransferSyntax.JPEG2000Lossless))
        assert reader.Read() and (change.SetInput(reader.GetImage()) or change.Change())
        writer = gdcm.ImageWriter()
        writer.SetFileName(str(target / path.name))
        writer.SetFile(reader.GetFile())
        writer.SetImage(change.GetOutput())
        assert writer.Write()
        continue
    ds = pydicom.dcmread(path)
    stored = ds.pixel_array.astype(np.int32)
    if name == "rescale-per-slice":
        ds.RescaleSlope, ds.RescaleIntercept = f"{1 + index * 0.001:.4f}", -1024 - index
    elif name == "signed":
        ds.PixelRepresentation, ds.BitsStored, ds.HighBit, ds.RescaleIntercept = 1, 16, 15, 0
        ds.PixelData = (stored - 1024).astype(np.int16).tobytes()
    elif name == "small128":
        ds.Rows = ds.Columns = 128
        ds.PixelData = stored[::4, ::4].astype(np.uint16).tobytes()
        ds.PixelSpacing = [2.8, 2.8]
        ds.RescaleSlope, ds.RescaleIntercept = f"{0.5 + index * 0.003:.4f}", -512
    elif name == "big1024":
        if index >= 50:
            break
        ds.Rows = ds.Columns = 1024
        ds.PixelData = np.kron(stored, np.ones((2, 2), np.int32)).astype(np.uint16).tobytes()
        ds.PixelSpacing = [0.35, 0.35]
    elif name == "enhanced":
        ds.Manufacturer, ds.PatientSex, ds.PatientBirthDate, ds.KVP = "bench", "O", "", 120
        ds.StudyTime, ds.ContentDate, ds.ContentTime, ds.AcquisitionNumber = "120000", "20200101", "120000", 1
        ds.ReferringPhysicianName, ds.StudyID, ds.AccessionNumber = "", "1", ""
        datasets.append(ds)
        continue
    ds.save_as(target / path.name, enforce_file_format=True)
if name == "enhanced":
    import highdicom as hd
    from pydicom.uid import generate_uid
    image = hd.legacy.LegacyConvertedEnhancedCTImage(
        legacy_datasets=datasets, series_instance_uid=generate_uid(), series_number=99,
        sop_instance_uid=generate_uid(), instance_number=1)
    image.save_as(target / "enhanced.dcm")
'''


def _run(label: str, command: list, work: Path, counter: list[int]) -> dict:
    counter[0] += 1
    log = work / "logs" / f"variants-{counter[0]:03d}-{label.replace(' ', '_')}.log"
    result = measure.run([str(c) for c in command], log, cwd=REPO).as_dict()
    status = "ok" if result["returncode"] == 0 else f"EXIT {result['returncode']}"
    print(f"  {label:<36} {result['wall_s']:6.2f} s  {result['peak_mb']:6.0f} MiB  {status}", flush=True)
    if result["returncode"] != 0:
        print(measure.tail(log), file=sys.stderr)
    return result


def _medflow(label: str, data: Path, out: Path, workers: int, work: Path, counter: list[int]) -> dict:
    _clean(out)
    command = [*_medflow_command(), "run", BENCH / "recipes" / "seed.yaml", "-q", "--workers", str(workers),
               "--set", f"source.dicom={data}", "--set", f"outputs.dir={out / 'o'}",
               "--set", f"engine.cache_dir={out / 'c'}"]
    result = _run(label, command, work, counter)
    result["build_s"] = _manifest_seconds(out / "o")
    return result


def _median(runs: list[dict], key: str) -> float | None:
    values = [r[key] for r in runs if r.get(key) is not None and r.get("returncode") == 0]
    return statistics.median(values) if values else None


def _ratio(others: list[dict], medflow: list[dict]) -> float | None:
    """Median over rounds of the other contender's wall time / medflow's (same round), None without both."""
    ratios = [o["wall_s"] / m["wall_s"] for o, m in zip(others, medflow, strict=False)
              if o["returncode"] == 0 and m["returncode"] == 0]
    return statistics.median(ratios) if ratios else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, default=BENCH / "_work")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--variants", nargs="*", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--no-handwritten", action="store_true")
    parser.add_argument("--markdown", type=Path)
    args = parser.parse_args(argv)
    work = args.work
    (work / "logs").mkdir(parents=True, exist_ok=True)
    gen200 = work / "data" / "gen200"
    subprocess.run([PY, BENCH / "generate.py", gen200, "--series", "1", "--slices", "200"], check=True, cwd=REPO,
                   capture_output=True)
    counter = [0]
    rows = []
    for name in args.variants:
        data = work / "variants" / name
        _make(gen200, data, name)
        _warm(data)
        print(f"{name}:", flush=True)
        runs: dict[str, list[dict]] = {"1w": [], "hw": [], "fused": [], "2w": []}
        for _ in range(args.rounds):
            runs["1w"].append(_medflow(f"{name} medflow 1w", data, work / "out" / "variant", 1, work, counter))
            if not args.no_handwritten:
                runs["hw"].append(_run(f"{name} hand-written", [PY, BENCH / "handwritten_seed.py", data,
                                                                 work / "out" / "variant-hw"], work, counter))
                shutil.rmtree(work / "out" / "variant-hw", ignore_errors=True)
            if name in FUSED_READS:
                runs["fused"].append(_run(f"{name} fused-table", [PY, BENCH / "fused_seed.py", data,
                                                                   work / "out" / "variant-fused"], work, counter))
                shutil.rmtree(work / "out" / "variant-fused", ignore_errors=True)
            runs["2w"].append(_medflow(f"{name} medflow 2w", data, work / "out" / "variant", 2, work, counter))
        ratios = {other: _ratio(runs[other], runs["1w"]) for other in ("hw", "fused")}
        rows.append((name, runs, None if name == "enhanced" else ratios["hw"], ratios["fused"]))
    lines = [
        "| variant | medflow 1w wall s | in-build s | peak RSS MiB | hand-written wall s | hand-written RSS MiB"
        " | hand-written / medflow | fused-table wall s | fused / medflow | medflow 2w wall s | 2w RSS MiB |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]

    def cell(value, fmt="{:.2f}"):
        return "n/a" if value is None else fmt.format(value)

    for name, runs, ratio, fused_ratio in rows:
        hand = None if name == "enhanced" else _median(runs["hw"], "wall_s")
        hand_rss = None if name == "enhanced" else _median(runs["hw"], "peak_mb")
        lines.append(
            f"| {name} | {cell(_median(runs['1w'], 'wall_s'))} | {cell(_median(runs['1w'], 'build_s'))}"
            f" | {cell(_median(runs['1w'], 'peak_mb'), '{:.0f}')} | {cell(hand)} | {cell(hand_rss, '{:.0f}')}"
            f" | {cell(ratio, '{:.2f}x')} | {cell(_median(runs['fused'], 'wall_s'))} | {cell(fused_ratio, '{:.2f}x')}"
            f" | {cell(_median(runs['2w'], 'wall_s'))} | {cell(_median(runs['2w'], 'peak_mb'), '{:.0f}')} |")
    table = "\n".join(lines)
    print(table)
    if args.markdown:
        commit = subprocess.run(["git", "log", "-1", "--format=%h %s"], capture_output=True, text=True, cwd=REPO)
        args.markdown.write_text(
            "# The seed recipe on other series (benchmarks/bench_variants.py)\n\n"
            f"Generated {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC at "
            f"{commit.stdout.strip()[:80]}; medians of {args.rounds} round(s), whole processes, files in the page"
            " cache, a 2-core shared VM (compare within the table only). Variants are described in the"
            " script's docstring.\n\n" + table + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
