"""medflow's benchmark suite (issue 5): one command, every contender in the same run.

    pip install -e '.[bench]'            # after: pip install torch==2.13.0 (see README)
    python benchmarks/run.py             # full run, about 15 minutes on 2 cores
    python benchmarks/run.py --quick     # smoke run on small data, about 2 minutes

Every contender runs as a child process of this one (see ``measure.py`` for how time and
peak memory are taken), on the same files, interleaved run by run so a noisy neighbour
hurts them alike; each number is the median of ``--runs`` runs. Results go to
``benchmarks/RESULTS.md`` (``--quick``: ``_work/RESULTS-quick.md``), the raw numbers to
``_work/results.json``. Generated data, outputs and logs live in ``benchmarks/_work/``
(git-ignored; override with ``--work``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import measure  # noqa: E402
import report  # noqa: E402

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
PY = sys.executable
SHARED_CT = Path(os.environ.get("MEDFLOW_SHARED_DATA", REPO.parent / "shared" / "data")) / "ct_pancreas_tcia"

# name -> (series, slices); the 10x set is ten times the 200-slice series.
FULL = {"gen200": (1, 200), "gen20x60": (20, 60), "gen10x": (10, 200), "tiny2": (1, 2)}
QUICK = {"gen200": (1, 40), "gen20x60": (4, 20), "gen10x": (10, 40), "tiny2": (1, 2)}
SEED_LAST_STEP_CHANGE = "steps[3].layout=NHWC"  # one parameter of the last step; same bytes to write


class Bench:
    def __init__(self, work: Path, runs: int, monai: bool):
        self.work = work
        self.runs = runs
        self.monai = monai
        self.logs = work / "logs"
        self.counter = 0
        self.results: dict = {"runs": runs}

    # ---- running ---------------------------------------------------------------------------
    def run(self, label: str, command: list[str], env: dict | None = None) -> measure.Run:
        self.counter += 1
        log = self.logs / f"{self.counter:03d}-{label}.log"
        result = measure.run(command, log, cwd=REPO, env=env)
        status = "ok" if result.returncode == 0 else f"EXIT {result.returncode}"
        print(f"  {label:<34} {result.wall_s:7.2f} s  {result.peak_mb:7.0f} MiB  {status}", flush=True)
        if result.returncode != 0:
            print(measure.tail(log), file=sys.stderr)
        return result

    def medflow(self, label: str, recipe: str, data: Path, out: Path, cache: Path, *extra: str,
                workers: int = 1) -> dict:
        command = [*_medflow_command(), "run", str(BENCH / "recipes" / recipe), "-q", "--workers", str(workers),
                   "--set", f"source.dicom={data}", "--set", f"outputs.dir={out}", "--set", f"engine.cache_dir={cache}"]
        for override in extra:
            command += ["--set", override]
        result = self.run(label, command).as_dict()
        result["build_s"] = _manifest_seconds(out)
        return result

    # ---- sections --------------------------------------------------------------------------
    def contenders(self, name: str, data: Path, slices: int, input_bytes: int, with_cache: bool) -> None:
        """Seed recipe: medflow vs hand-written vs MONAI; ICH: medflow vs hand-written."""
        print(f"[seed + ICH] {name}: {slices} slices, {input_bytes / 1e6:.0f} MB", flush=True)
        runs: dict[str, list[dict]] = {}
        out = self.work / "out" / name
        for rep in range(self.runs):
            last = rep == self.runs - 1
            for key in ("medflow", "handwritten", "monai", "medflow_ich", "handwritten_ich"):
                if key == "monai" and not self.monai:
                    continue
                target = out / key
                _clean(target, out / f"{key}-cache")
                if key == "medflow":
                    runs.setdefault(key, []).append(
                        self.medflow(f"{name} medflow seed cold", "seed.yaml", data, target, out / f"{key}-cache"))
                    if with_cache:  # same cache; the change writes elsewhere so the cold output stays for checks
                        cache = out / f"{key}-cache"
                        runs.setdefault("noop", []).append(
                            self.medflow(f"{name} medflow seed no-op", "seed.yaml", data, target, cache))
                        runs.setdefault("change", []).append(
                            self.medflow(f"{name} medflow seed last-step change", "seed.yaml", data,
                                         out / "changed", cache, SEED_LAST_STEP_CHANGE))
                        _clean(out / "changed")
                elif key == "medflow_ich":
                    runs.setdefault(key, []).append(
                        self.medflow(f"{name} medflow ich cold", "ich.yaml", data, target, out / f"{key}-cache"))
                elif key == "handwritten":
                    runs.setdefault(key, []).append(
                        self.run(f"{name} handwritten seed", [PY, BENCH / "handwritten_seed.py", data, target]).as_dict())
                elif key == "handwritten_ich":
                    runs.setdefault(key, []).append(
                        self.run(f"{name} handwritten ich", [PY, BENCH / "handwritten_ich.py", data, target]).as_dict())
                else:
                    runs.setdefault(key, []).append(
                        self.run(f"{name} monai seed", [PY, BENCH / "monai_seed.py", *_series_dirs(data), target]).as_dict())
                if not last:
                    _clean(target)
        identity = self.identity(name, data, out)
        _clean(out)
        self.results.setdefault("contenders", {})[name] = {
            "slices": slices, "input_bytes": input_bytes, "runs": runs, "identity": identity,
        }

    def identity(self, name: str, data: Path, out: Path) -> dict:
        """Compare the last runs' outputs; add untimed variants that locate any difference."""
        checks = {}
        medflow_seed = _one_npy(out / "medflow")
        checks["seed: medflow vs hand-written (cv2 YCrCb -> Y,Cb,Cr)"] = _compare(medflow_seed, _one_npy(out / "handwritten"))
        if self.monai and (out / "monai").is_dir():
            straight = _compare(medflow_seed, _one_npy(out / "monai"))
            flipped = _compare(medflow_seed, _one_npy(out / "monai"), "--flip", "0")
            best = flipped if flipped.get("n_different", 1) < straight.get("n_different", 1) else straight
            best["monai_slice_order_reversed"] = best is flipped
            checks["seed: medflow vs MONAI"] = best
        checks["ich: medflow vs hand-written"] = _compare(_one_npy(out / "medflow_ich"), _one_npy(out / "handwritten_ich"),
                                                         channel_axis="3")
        variant = out / "hw-bt601"
        self.run(f"{name} handwritten seed bt601", [PY, BENCH / "handwritten_seed.py", data, variant, "--color", "bt601"])
        checks["seed: medflow vs hand-written with exact BT.601 instead of cv2"] = _compare(medflow_seed, _one_npy(variant))
        self.medflow(f"{name} medflow seed ycrcb", "seed.yaml", data, out / "mf-ycrcb", out / "mf-ycrcb-cache",
                     "steps[2].to=ycrcb")
        self.run(f"{name} handwritten seed ycrcb", [PY, BENCH / "handwritten_seed.py", data, out / "hw-ycrcb", "--color", "ycrcb"])
        checks["seed with to: ycrcb: medflow vs hand-written cv2 (same coefficients)"] = _compare(
            _one_npy(out / "mf-ycrcb"), _one_npy(out / "hw-ycrcb"))
        return checks

    def workers(self, data: Path, slices: int) -> None:
        print(f"[workers] {data.name}: {slices} slices", flush=True)
        runs: dict[str, list[dict]] = {"1": [], "2": []}
        out = self.work / "out" / "workers"
        for _ in range(self.runs):
            for n in (1, 2):
                _clean(out)
                runs[str(n)].append(self.medflow(f"{data.name} medflow seed {n} worker(s)", "seed.yaml", data,
                                                 out / "o", out / "c", workers=n))
        _clean(out)
        self.results["workers"] = {"dataset": data.name, "slices": slices, "runs": runs}

    def memory(self, data: Path, slices: int) -> None:
        """Peak RSS on 10x the data. Finished tensors are deleted while the build runs (the check needs
        the run, not 6 GB of float32 files on disk); medflow never reads an output back."""
        print(f"[memory 10x] {data.name}: {slices} slices", flush=True)
        out = self.work / "out" / "memory"
        runs = []
        for _ in range(self.runs):
            _clean(out)
            with _Reaper(out / "o"):
                runs.append(self.medflow(f"{data.name} medflow seed cold", "seed.yaml", data, out / "o", out / "c"))
        _clean(out)
        self.results["memory"] = {"dataset": data.name, "slices": slices, "runs": runs}

    def startup(self, data: Path) -> None:
        print(f"[start-up] {data.name}", flush=True)
        out = self.work / "out" / "startup"
        runs, python = [], []
        for _ in range(max(5, self.runs)):
            _clean(out)
            runs.append(self.medflow("medflow run, 2 slices", "seed.yaml", data, out / "o", out / "c"))
            python.append(self.run("python -c pass", [PY, "-c", "pass"]).as_dict())
        _clean(out)
        log = self.logs / "importtime.log"
        with open(log, "wb") as f:
            subprocess.run([PY, "-X", "importtime", "-m", "medflow", "run", str(BENCH / "recipes" / "seed.yaml"), "-q",
                            "--workers", "1", "--set", f"source.dicom={data}", "--set", f"outputs.dir={out / 'o'}",
                            "--set", f"engine.cache_dir={out / 'c'}"], stderr=f, stdout=subprocess.DEVNULL, cwd=REPO)
        _clean(out)
        self.results["startup"] = {"runs": runs, "python": python, "imports": _top_imports(log)}

    def profile(self, data: Path) -> None:
        print(f"[profile] {data.name}", flush=True)
        profiles = {}
        for recipe in ("seed.yaml", "ich.yaml"):
            out = self.work / "out" / "profile"
            _clean(out)
            stats = self.work / f"profile-{recipe}.pstats"
            command = [PY, "-m", "cProfile", "-o", stats, "-m", "medflow", "run", BENCH / "recipes" / recipe, "-q",
                       "--workers", "1", "--set", f"source.dicom={data}", "--set", f"outputs.dir={out / 'o'}",
                       "--set", f"engine.cache_dir={out / 'c'}"]
            run = self.run(f"cProfile medflow {recipe}", command)
            top = subprocess.run([PY, BENCH / "report.py", "--pstats", stats], capture_output=True, text=True, cwd=REPO)
            profiles[recipe] = {"wall_s": run.wall_s, "top": json.loads(top.stdout or "{}")}
            _clean(out)
        self.results["profile"] = {"dataset": data.name, "profiles": profiles}

    def limits(self, data: Path) -> None:
        print(f"[limits] {data.name}", flush=True)
        done = subprocess.run([PY, BENCH / "limits.py", data, self.work / "scratch"], capture_output=True, text=True,
                              cwd=REPO)
        self.results["limits"] = {"dataset": data.name, **(json.loads(done.stdout) if done.returncode == 0 else
                                                              {"error": done.stderr[-2000:]})}


class _Reaper(threading.Thread):
    """Deletes finished ``.npy`` outputs under ``folder`` (never the ``.*.tmp`` files being written)."""

    def __init__(self, folder: Path):
        super().__init__(daemon=True)
        self.folder = folder
        self.done = threading.Event()
        self.deleted = 0

    def run(self) -> None:
        while not self.done.wait(0.5):
            self.sweep()

    def sweep(self) -> None:
        for path in self.folder.rglob("*.npy"):
            if not path.name.startswith("."):
                path.unlink(missing_ok=True)
                self.deleted += 1

    def __enter__(self) -> _Reaper:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.done.set()
        self.join()
        self.sweep()


def _medflow_command() -> list[str]:
    script = Path(PY).with_name("medflow")
    return [str(script)] if script.is_file() else [PY, "-m", "medflow"]


def _manifest_seconds(out: Path) -> float | None:
    try:
        return float(json.loads((out / "manifest.json").read_text())["run"]["seconds"])
    except (OSError, KeyError, ValueError, TypeError):
        return None


def _clean(*paths: Path) -> None:
    for path in paths:
        if path.exists():
            shutil.rmtree(path)
    os.sync()  # the next run does not share the disk with this one's write-back


def _series_dirs(data: Path) -> list[Path]:
    """Folders that directly hold .dcm files (one series each in these datasets)."""
    return sorted({p.parent for p in data.rglob("*.dcm")})


def _one_npy(folder: Path) -> Path | None:
    files = sorted(folder.rglob("*.npy"))
    return files[0] if len(files) >= 1 else None


def _compare(a: Path | None, b: Path | None, *extra: str, channel_axis: str = "1") -> dict:
    if a is None or b is None:
        return {"error": f"missing output: {a} / {b}"}
    done = subprocess.run([PY, BENCH / "compare.py", a, b, "--channel-axis", channel_axis, *extra],
                          capture_output=True, text=True, cwd=REPO)
    return json.loads(done.stdout) if done.returncode == 0 else {"error": done.stderr[-1000:]}


def _top_imports(log: Path, n: int = 12) -> list[tuple[str, float]]:
    """Top-level imports and theirs (depth 1 and 2), by cumulative import time (ms), from ``python -X importtime``."""
    rows = []
    for line in log.read_text(errors="replace").splitlines():
        if not line.startswith("import time:") or "|" not in line:
            continue
        parts = line.split("|")
        try:
            cumulative = int(parts[1].strip())
        except ValueError:
            continue
        name = parts[2].rstrip()
        depth = (len(name) - len(name.lstrip()) - 1) // 2  # "   pkg" is a top-level import (depth 1)
        if depth > 2:
            continue
        rows.append((name.strip(), cumulative / 1000))
    return sorted(rows, key=lambda r: -r[1])[:n]


def _dataset_bytes(folder: Path) -> tuple[int, int]:
    files = list(folder.rglob("*.dcm"))
    return len(files), sum(p.stat().st_size for p in files)


def _warm(folder: Path) -> None:
    """Read every file once so all contenders start from the page cache."""
    for path in folder.rglob("*.dcm"):
        with open(path, "rb") as f:
            while f.read(1 << 20):
                pass


def _has_monai() -> bool:
    return subprocess.run([PY, "-c", "import monai, torch"], capture_output=True).returncode == 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="medflow benchmark suite (issue 5)")
    parser.add_argument("--quick", action="store_true", help="small data, one run each: a smoke test of the suite")
    parser.add_argument("--runs", type=int, help="runs per measurement (median); default 3, --quick 1")
    parser.add_argument("--work", type=Path, default=BENCH / "_work", help="scratch folder (data, outputs, logs)")
    parser.add_argument("--no-monai", action="store_true", help="skip MONAI even when installed")
    parser.add_argument("--results", type=Path, help="markdown file to write (default benchmarks/RESULTS.md)")
    args = parser.parse_args(argv)
    runs = args.runs or (1 if args.quick else 3)
    work = args.work.resolve()
    shutil.rmtree(work / "logs", ignore_errors=True)
    monai = not args.no_monai and _has_monai()
    if not monai:
        print("MONAI/torch not importable (pip install torch==2.13.0, then pip install monai): MONAI skipped",
              file=sys.stderr)
    bench = Bench(work, runs, monai)
    bench.results["machine"] = report.machine(PY, REPO)  # date and commit of the start
    started = time.perf_counter()

    sets = QUICK if args.quick else FULL
    data = {}
    for name, (series, slices) in sets.items():
        folder = work / "data" / (f"quick-{name}" if args.quick else name)  # a smoke run keeps the full data
        subprocess.run([PY, BENCH / "generate.py", folder, "--series", str(series), "--slices",
                        str(slices)], check=True, cwd=REPO)
        data[name] = folder
    real = SHARED_CT if SHARED_CT.is_dir() and not args.quick else None
    if real is None and not args.quick:
        print(f"real CT not found at {SHARED_CT}: skipped (set MEDFLOW_SHARED_DATA)", file=sys.stderr)

    for name, folder in ([("ct_pancreas_tcia", real)] if real else []) + [("gen200", data["gen200"])]:
        _warm(folder)
        n, size = _dataset_bytes(folder)
        bench.contenders(name, folder, n, size, with_cache=name == "gen200")
    for name, section in (("gen20x60", bench.workers), ("gen10x", bench.memory)):
        _warm(data[name])
        section(data[name], _dataset_bytes(data[name])[0])
    bench.startup(data["tiny2"])
    bench.profile(data["gen200"])
    bench.limits(data["gen200"])
    bench.results["total_s"] = time.perf_counter() - started
    bench.results["quick"] = args.quick
    bench.results["monai"] = monai

    (work / "results.json").write_text(json.dumps(bench.results, indent=1, default=str))
    text = report.markdown(bench.results, bench.results["machine"])
    target = args.results or (work / "RESULTS-quick.md" if args.quick else BENCH / "RESULTS.md")
    target.write_text(text)
    print()
    print(text)
    print(f"written: {target} (raw: {work / 'results.json'}); {bench.results['total_s'] / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
