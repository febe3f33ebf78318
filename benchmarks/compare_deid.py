"""Byte-for-byte comparison of two medflow checkouts' de-identified builds (speed work must not change output).

Run by hand (never a unit test)::

    python benchmarks/compare_deid.py --ref /work/main --new .            # all corpora, all configs
    python benchmarks/compare_deid.py --ref /work/main --new . --bench-files 2000 --bench-only

Each corpus is built with ``medflow run`` twice per configuration, once with ``PYTHONPATH=REF`` and
once with ``PYTHONPATH=NEW`` (same key, same interpreter, fresh output folders), and the two output
trees are compared: the same relative paths, every file byte-identical (de-identified DICOM, audit
JSON Lines, private tables), the manifest equal apart from the run's timings, the build log and the
console output equal apart from times. Corpora: the benchmark's CT files
(:func:`benchmarks.bench_deid.make_corpus`), the PHI corpus of ``tests/deid_corpus.py`` and the
hospital-style export of ``tests/phi_export.py``. Configurations: the protective defaults, the
shipped recipe's options with keep/replace rules, every text-cleaning and retain option, full dates,
and a pixel-reading chain (the series path, where the step de-identifies headers itself).

Exit status 0 when every pair is identical, 1 otherwise (the differing files are listed).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

KEY = "compare-key-0123456789abcdef-0123"
#: name -> (anonymize step fields, extra steps after it, extra writers)
CONFIGS: dict[str, tuple[dict, list[dict], list[dict]]] = {
    "protective": ({}, [], []),
    "shipped": ({"options": ["retain-longitudinal-modified-dates", "retain-patient-characteristics",
                             "clean-descriptors"],
                 "rules": {"keep": ["BodyPartExamined"], "replace": {"InstitutionName": "SITE-A"}}}, [], []),
    "text": ({"options": ["retain-longitudinal-modified-dates", "clean-descriptors", "clean-structured-content",
                          "clean-graphics", "retain-safe-private", "retain-device-identity",
                          "retain-institution-identity"], "burned_in": "allow"}, [], []),
    "full-dates": ({"options": ["retain-longitudinal-full-dates", "retain-uids", "clean-descriptors",
                                "retain-patient-characteristics"], "trust_burned_in_annotation": False,
                    "burned_in": "allow"}, [], []),
    "pixels": ({"options": ["retain-longitudinal-modified-dates", "clean-descriptors"]},
               [{"step": "window", "level": 40, "width": 400}], [{"kind": "npy"}]),
}
#: What differs between two runs of the same build: times, and object addresses in error messages.
_TIMES = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+\-]\d\d:\d\d|in \d+(\.\d+)? ?s\b|\d+(\.\d+)? s\b"
                    r"|0x[0-9a-f]{6,}")


def _corpora(work: Path, bench_files: int, bench_only: bool, bench_source: Path | None) -> dict[str, Path]:
    from benchmarks.bench_deid import make_corpus

    out: dict[str, Path] = {}
    if bench_source is not None:
        out["bench"] = bench_source
    elif bench_files:
        make_corpus(work / "bench", bench_files)
        out["bench"] = work / "bench" / "in"
    if not bench_only:
        from tests.deid_corpus import build_corpus
        from tests.phi_export import build_export

        build_corpus(work / "phi-corpus")
        out["phi-corpus"] = work / "phi-corpus"
        out["export"] = build_export(work / "export" / "EXPORT").root
    return out


def _recipe(folder: Path, source: Path, config: str) -> Path:
    step, more, writers = CONFIGS[config]
    recipe = folder / "recipe.yaml"
    recipe.write_text(json.dumps({
        "medflow": 1, "name": f"compare-{config}", "source": {"dicom": str(source)},
        "steps": [{"step": "anonymize", **step}, *more],
        "outputs": {"dir": "out", "writers": [{"kind": "dicom"}, *writers]},
    }), encoding="utf-8")
    return recipe


def _build(pythonpath: Path, folder: Path, source: Path, config: str, workers: int = 1) -> str:
    folder.mkdir(parents=True)
    recipe = _recipe(folder, source, config)
    env = dict(os.environ, PYTHONPATH=str(pythonpath), MEDFLOW_DEID_KEY=KEY, PYTHONWARNINGS="ignore")
    done = subprocess.run([sys.executable, "-m", "medflow", "run", str(recipe), "--workers", str(workers)],
                          cwd=folder, env=env, capture_output=True, text=True, check=False)
    return f"exit {done.returncode}\n{done.stdout}\n{done.stderr}".replace(str(folder), "<work>")


def _console(text: str, workers: int) -> object:
    lines = _TIMES.sub("<t>", text).splitlines()
    return sorted(lines) if workers > 1 else lines


def _normal_manifest(data: bytes) -> str:
    manifest = json.loads(data)
    for key in ("started", "finished", "seconds"):
        manifest.get("run", {}).pop(key, None)
    return _TIMES.sub("<t>", json.dumps(manifest, sort_keys=True))


def _differences(a: Path, b: Path) -> list[str]:
    files_a = {p.relative_to(a).as_posix() for p in a.rglob("*") if p.is_file()}
    files_b = {p.relative_to(b).as_posix() for p in b.rglob("*") if p.is_file()}
    diffs = [f"only in ref: {p}" for p in sorted(files_a - files_b)]
    diffs += [f"only in new: {p}" for p in sorted(files_b - files_a)]
    for rel in sorted(files_a & files_b):
        da, db = (a / rel).read_bytes(), (b / rel).read_bytes()
        if rel == "manifest.json":
            same = _normal_manifest(da) == _normal_manifest(db)
        elif rel == "build.log":  # times, and the output folder's path (the folders differ)
            same = (_TIMES.sub("<t>", da.decode()).replace(str(a), "<out>")
                    == _TIMES.sub("<t>", db.decode()).replace(str(b), "<out>"))
        else:
            same = da == db
        if not same:
            diffs.append(f"differs: {rel}")
    return diffs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ref", type=Path, required=True, help="checkout whose output is the reference")
    parser.add_argument("--new", type=Path, required=True, help="checkout under test")
    parser.add_argument("--bench-files", type=int, default=200, help="benchmark corpus size (0: none)")
    parser.add_argument("--bench-source", type=Path, help="an existing benchmark corpus folder instead")
    parser.add_argument("--bench-only", action="store_true", help="only the benchmark corpus")
    parser.add_argument("--configs", nargs="*", default=sorted(CONFIGS), choices=sorted(CONFIGS))
    parser.add_argument("--workers", type=int, default=1, help="medflow run --workers (results of several "
                        "workers come back unordered: then the console lines are compared as sets)")
    args = parser.parse_args(argv)
    failed = 0
    with tempfile.TemporaryDirectory(prefix="compare-deid-") as tmp:
        work = Path(tmp)
        corpora = _corpora(work, args.bench_files, args.bench_only, args.bench_source)
        for corpus, source in corpora.items():
            for config in args.configs:
                base = work / f"{corpus}-{config}"
                console_ref = _build(args.ref.resolve(), base / "ref", source, config, args.workers)
                console_new = _build(args.new.resolve(), base / "new", source, config, args.workers)
                diffs = _differences(base / "ref" / "out", base / "new" / "out")
                if _console(console_ref, args.workers) != _console(console_new, args.workers):
                    diffs.append("console output differs")
                n_files = sum(1 for p in (base / "ref" / "out").rglob("*") if p.is_file())
                status = "identical" if not diffs else f"{len(diffs)} DIFFERENCE(S)"
                print(f"{corpus:10s} {config:10s} {n_files:6d} files  {status}  ({console_ref.splitlines()[0]})")
                for line in diffs[:20]:
                    print(f"    {line}")
                failed += bool(diffs)
                shutil.rmtree(base)
    print("all identical" if not failed else f"{failed} build pair(s) differ")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
