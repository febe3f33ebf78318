"""Start-up (issue 10): `medflow run` on a 2-slice series against the hand-written script, plus the
commands that read only the recipe. Run by hand; never part of the test suite.

    python benchmarks/bench_startup.py [--runs 9] [--work benchmarks/_work] [--keep-env]

Each contender is a whole child process, cold (output and cache deleted before every `run`), and
the contenders are interleaved run by run, so a noisy neighbour hurts them alike; each figure is
the median of ``--runs`` runs. The ratio is against ``benchmarks/handwritten_seed.py`` on the same
two slices (it imports pydicom, numpy and OpenCV); target: ``medflow run`` <= 1.2x.

Children run with bytecode caching on (``PYTHONPYCACHEPREFIX`` in the work folder, one untimed
warm-up run each), as an installed medflow runs: a shell with ``PYTHONDONTWRITEBYTECODE=1``
recompiles every medflow module on every start, which is not start-up a user sees.
``--keep-env`` measures with the environment as it is instead.

Last, one ``python -X importtime`` run of each medflow command names the heavy libraries it
imported (pydicom, OpenCV, SimpleITK, joblib, highdicom, pyarrow, tqdm, torch, requests).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import generate  # noqa: E402
import measure  # noqa: E402

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
PY = sys.executable
HEAVY = ("pydicom", "cv2", "SimpleITK", "joblib", "loky", "highdicom", "pyarrow", "tqdm", "torch", "requests",
         "scipy", "dask")


def _env(work: Path, keep: bool) -> dict[str, str]:
    env = dict(os.environ)
    if not keep:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(work / "pycache")
    return env


def contenders(data: Path, out: Path) -> dict[str, list[str]]:
    """label -> command; ``run`` and the hand-written script write under ``out``."""
    recipe = str(BENCH / "recipes" / "seed.yaml")
    sets = ["--set", f"source.dicom={data}", "--set", f"outputs.dir={out / 'o'}", "--set", f"engine.cache_dir={out / 'c'}"]
    medflow = [PY, "-m", "medflow"]
    return {
        "python -c pass": [PY, "-c", "pass"],
        "handwritten_seed.py": [PY, str(BENCH / "handwritten_seed.py"), str(data), str(out / "h")],
        "medflow run": [*medflow, "run", recipe, "-q", *sets],
        "medflow validate": [*medflow, "validate", recipe],
        "medflow plan": [*medflow, "plan", recipe, *sets],
        "medflow steps": [*medflow, "steps"],
        "medflow schema": [*medflow, "schema"],
    }


def heavy_imports(command: list[str], env: dict[str, str], out: Path) -> list[str]:
    """The libraries of HEAVY that ``command`` (a ``python -m medflow ...``) really imported."""
    _clean(out)
    done = subprocess.run([command[0], "-X", "importtime", *command[1:]], capture_output=True, text=True, env=env,
                          cwd=REPO)
    names = set()
    for line in done.stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            names.add(line.rsplit("|", 1)[1].strip().split(".")[0])
    return [name for name in HEAVY if name in names]


def _clean(out: Path) -> None:
    shutil.rmtree(out, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=9)
    parser.add_argument("--work", type=Path, default=BENCH / "_work")
    parser.add_argument("--keep-env", action="store_true", help="do not turn bytecode caching on for the children")
    args = parser.parse_args(argv)
    data, out, logs = args.work / "data" / "tiny2", args.work / "out" / "startup", args.work / "logs" / "startup"
    generate.generate(data, 1, 2)
    env = _env(args.work, args.keep_env)
    commands = contenders(data, out)
    walls: dict[str, list[float]] = {label: [] for label in commands}
    for round_ in range(args.runs + 1):  # round 0: warm-up (bytecode, page cache), not counted
        for label, command in commands.items():
            _clean(out)
            result = measure.run(command, logs / f"{label.replace(' ', '_')}.log", cwd=REPO, env=env)
            if result.returncode != 0:
                print(f"{label}: exit {result.returncode}\n{measure.tail(result.log)}", file=sys.stderr)
                return 1
            if round_:
                walls[label].append(result.wall_s)
    _clean(out)
    median = {label: statistics.median(values) for label, values in walls.items()}
    base, bare = median["handwritten_seed.py"], median["python -c pass"]
    print(f"start-up, median of {args.runs} interleaved runs, 2-slice 512x512 series"
          f"{' (environment as is)' if args.keep_env else ' (bytecode cached)'}:")
    print(f"  {'command':<22} {'wall':>8} {'vs hand-written':>16} {'minus python':>13}  heavy imports")
    for label, command in commands.items():
        heavy = heavy_imports(command, env, out) if label.startswith("medflow") else []
        print(f"  {label:<22} {median[label]:7.3f}s {median[label] / base:15.2f}x {median[label] - bare:12.3f}s  "
              f"{', '.join(heavy) if label.startswith('medflow') else ''}")
    _clean(out)
    ratio = median["medflow run"] / base
    print(f"medflow run / hand-written: {ratio:.2f}x (target <= 1.2x): {'ok' if ratio <= 1.2 else 'OVER'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
