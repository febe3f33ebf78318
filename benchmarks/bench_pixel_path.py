"""The pixel path and parallelism targets of issue 10, in one short interleaved run.

    python benchmarks/bench_pixel_path.py [--rounds 3] [--no-handwritten] [--workers] [--many] [--ten]

On ``gen200`` (1 x 200 slices, generated under ``--work``), round by round in turn: medflow's
seed build with 1 worker (cold: fresh output and cache), the fused-table script
(``fused_seed.py``, the ceiling), the hand-written script, and with ``--workers`` medflow with
2 workers. ``--many`` adds 1 vs 2 workers on ``gen20x60``; ``--ten`` the peak RSS on
``gen10x`` (10 x 200 slices, outputs deleted as they appear). Each contender is a whole process
(:mod:`measure`: wall, peak RSS); medflow's in-build time is its manifest's ``run.seconds``.
Printed: per-round figures, then medians and same-run ratios (the median of the per-round
ratios, so a noisy neighbour hurts both sides of a ratio alike). ``uptime`` is printed before
and after: say how loaded the machine was. The outputs of the last round are compared bit for
bit (``compare.py``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import measure  # noqa: E402
from run import PY, REPO, _clean, _manifest_seconds, _medflow_command, _Reaper, _warm  # noqa: E402

BENCH = Path(__file__).resolve().parent


def _uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


class Runner:
    def __init__(self, work: Path):
        self.work = work
        self.counter = 0

    def run(self, label: str, command: list) -> dict:
        self.counter += 1
        log = self.work / "logs" / f"{self.counter:03d}-{label.replace(' ', '_')}.log"
        result = measure.run([str(c) for c in command], log, cwd=REPO).as_dict()
        status = "ok" if result["returncode"] == 0 else f"EXIT {result['returncode']}"
        print(f"  {label:<28} {result['wall_s']:6.2f} s  cpu {result['cpu_s']:6.2f} s  {result['peak_mb']:6.0f} MiB  {status}",
              flush=True)
        if result["returncode"] != 0:
            print(measure.tail(log), file=sys.stderr)
        return result

    def medflow(self, label: str, data: Path, out: Path, workers: int = 1, recipe: str = "seed.yaml") -> dict:
        _clean(out)
        command = [*_medflow_command(), "run", BENCH / "recipes" / recipe, "-q", "--workers", str(workers),
                   "--set", f"source.dicom={data}", "--set", f"outputs.dir={out / 'o'}",
                   "--set", f"engine.cache_dir={out / 'c'}"]
        result = self.run(label, command)
        result["build_s"] = _manifest_seconds(out / "o")
        if result["build_s"] is not None:
            print(f"  {'':<28} in-build {result['build_s']:.2f} s")
        return result


def _generate(work: Path, name: str, series: int, slices: int) -> Path:
    folder = work / "data" / name
    subprocess.run([PY, BENCH / "generate.py", folder, "--series", str(series), "--slices", str(slices)],
                   check=True, cwd=REPO, capture_output=True)
    _warm(folder)
    return folder


def _median(runs: list[dict], key: str = "wall_s") -> float:
    values = [r[key] for r in runs if r.get(key) is not None]
    return statistics.median(values) if values else float("nan")


def _ratio(slow: list[dict], fast: list[dict], key: str = "wall_s") -> float:
    """Median of the per-round ratios slow / fast (same round, same load)."""
    ratios = [a[key] / b[key] for a, b in zip(slow, fast, strict=False) if a.get(key) and b.get(key)]
    return statistics.median(ratios) if ratios else float("nan")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--work", type=Path, default=BENCH / "_work")
    parser.add_argument("--no-handwritten", action="store_true", help="skip the (slow) hand-written script")
    parser.add_argument("--workers", action="store_true", help="add medflow with 2 workers on gen200")
    parser.add_argument("--many", action="store_true", help="add 1 vs 2 workers on gen20x60")
    parser.add_argument("--ten", action="store_true", help="add peak RSS on gen10x (10 x 200 slices)")
    args = parser.parse_args(argv)
    work = args.work.resolve()
    runner = Runner(work)
    print("load before:", _uptime(), flush=True)
    gen200 = _generate(work, "gen200", 1, 200)
    out = work / "out" / "pixel_path"
    runs: dict[str, list[dict]] = {}
    for round_ in range(args.rounds):
        print(f"round {round_ + 1}/{args.rounds}", flush=True)
        runs.setdefault("medflow1", []).append(runner.medflow("gen200 medflow 1 worker", gen200, out / "mf1"))
        _clean(out / "fused")
        runs.setdefault("fused", []).append(
            runner.run("gen200 fused script", [PY, BENCH / "fused_seed.py", gen200, out / "fused"]))
        if not args.no_handwritten:
            _clean(out / "hw")
            runs.setdefault("hand", []).append(
                runner.run("gen200 hand-written", [PY, BENCH / "handwritten_seed.py", gen200, out / "hw"]))
            _clean(out / "hw")
        if args.workers:
            runs.setdefault("medflow2", []).append(
                runner.medflow("gen200 medflow 2 workers", gen200, out / "mf2", workers=2))
    if args.many:
        many = _generate(work, "gen20x60", 20, 60)
        for _ in range(args.rounds):
            for n in (1, 2):
                runs.setdefault(f"many{n}", []).append(
                    runner.medflow(f"gen20x60 medflow {n} worker(s)", many, out / f"many{n}", workers=n))
                _clean(out / f"many{n}")
    if args.ten:
        ten = _generate(work, "gen10x", 10, 200)
        for _ in range(args.rounds):
            with _Reaper(out / "ten" / "o"):
                runs.setdefault("ten", []).append(runner.medflow("gen10x medflow 1 worker", ten, out / "ten"))
            _clean(out / "ten")
    print("load after:", _uptime())

    mf = next((out / "mf1" / "o").rglob("*.npy"))
    fused = next((out / "fused").rglob("*.npy"))
    same = subprocess.run([PY, BENCH / "compare.py", mf, fused], capture_output=True, text=True, cwd=REPO)
    print("medflow vs fused output:", same.stdout.strip() or same.stderr.strip()[-300:])

    print()
    print(f"{'contender':<26} {'median wall s':>13} {'cpu s':>7} {'in-build s':>10} {'peak MiB':>9}")
    for key, runs_ in runs.items():
        print(f"{key:<26} {_median(runs_):13.2f} {_median(runs_, 'cpu_s'):7.2f} {_median(runs_, 'build_s'):10.2f} "
              f"{_median(runs_, 'peak_mb'):9.0f}")
    ratios = {"medflow 1w vs fused (fused/medflow, >= 0.9)": _ratio(runs["fused"], runs["medflow1"]),
              "  same, CPU time (user + sys)": _ratio(runs["fused"], runs["medflow1"], "cpu_s")}
    if "hand" in runs:
        ratios["medflow 1w vs hand-written (>= 8)"] = _ratio(runs["hand"], runs["medflow1"])
        ratios["fused vs hand-written (the ceiling)"] = _ratio(runs["hand"], runs["fused"])
    if "medflow2" in runs:
        ratios["gen200 2 workers vs 1, wall (>= 1.5)"] = _ratio(runs["medflow1"], runs["medflow2"])
        ratios["gen200 2 workers vs 1, in-build"] = _ratio(runs["medflow1"], runs["medflow2"], "build_s")
    if "many1" in runs:
        ratios["gen20x60 2 workers vs 1, wall (>= 1.7)"] = _ratio(runs["many1"], runs["many2"])
        ratios["gen20x60 2 workers vs 1, in-build"] = _ratio(runs["many1"], runs["many2"], "build_s")
    if "ten" in runs:
        ratios["peak RSS gen10x / gen200 (<= 1.1)"] = _median(runs["ten"], "peak_mb") / _median(runs["medflow1"], "peak_mb")
    print()
    for name, value in ratios.items():
        print(f"{name:<48} {value:6.2f}")
    (work / "pixel_path.json").write_text(json.dumps({"runs": runs, "ratios": ratios}, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
