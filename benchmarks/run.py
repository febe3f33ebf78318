"""medflow's benchmark suite (issue 10's targets): one command, every contender in the same run.

    pip install -e '.[bench]'            # after: pip install torch==2.13.0 (see README)
    python benchmarks/run.py             # full run on 2 cores (see README for the time)
    python benchmarks/run.py --quick     # smoke run on small data, one run each, a few minutes

Every contender runs as a child process of this one (see ``measure.py`` for how time and
peak memory are taken), on the same files, interleaved run by run so a noisy neighbour
hurts them alike; each number is the median of ``--runs`` runs and every target is a ratio
of two numbers from this run. Contenders: medflow (1 and 2 workers), the hand-written
scripts, the fused-table script (the ceiling), MONAI and TorchIO when installed, and for the
radiomics recipe a straightforward SimpleITK script. Children run with bytecode caching on
(``PYTHONPYCACHEPREFIX`` under the work folder, after one untimed warm-up of each contender),
as an installed program runs; ``--keep-env`` runs them in this shell's environment as it is.

Results go to ``benchmarks/RESULTS.md`` (``--quick``: ``_work/RESULTS-quick.md``), the raw
numbers to ``_work/results.json``. Generated data, outputs and logs live in
``benchmarks/_work/`` (git-ignored; override with ``--work``).
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
RADIOMICS_RECIPE = REPO / "pipelines" / "radiomics.yaml"
# Radiomics hook: the two contenders of bench_radiomics.py (another engineer's); the section runs
# only when both files exist, and invokes them as that script does (no import of its internals).
RADIOMICS_FILES = (BENCH / "bench_radiomics.py", BENCH / "sitk_radiomics.py")
TORCHIO_SCRIPT = BENCH / "torchio_seed.py"  # `torchio_seed.py SERIES_DIR [SERIES_DIR ...] OUT_DIR`, as MONAI's

# name -> (series, slices); the 10x set is ten times the 200-slice series.
FULL = {"gen200": (1, 200), "gen20x60": (20, 60), "gen10x": (10, 200), "tiny2": (1, 2)}
QUICK = {"gen200": (1, 40), "gen20x60": (4, 20), "gen10x": (10, 40), "tiny2": (1, 2)}
SEED_LAST_STEP_CHANGE = "steps[3].layout=NHWC"  # one parameter of the last step; same bytes to write
SEED_FIRST_STEP_CHANGE = "steps[0].level=-550"  # the window level (HU) of seed.yaml's first pointwise step

# Which contenders run on which data set (in this order, round by round).
SEED = ("medflow", "handwritten", "fused", "monai", "torchio")
ICH = ("medflow_ich", "handwritten_ich", "fused_ich")
PLAN = {
    "ct_pancreas_tcia": (*SEED, *ICH),
    "gen200": ("medflow", "medflow_2w", "handwritten", "fused", "monai", "torchio", *ICH),
    "gen20x60": ("medflow", "medflow_2w", "handwritten", "fused", "monai", "torchio"),
}


class Bench:
    def __init__(self, work: Path, runs: int, monai: bool, torchio: bool, env: dict[str, str] | None):
        self.work = work
        self.runs = runs
        self.monai = monai
        self.torchio = torchio
        self.env = env
        self.logs = work / "logs"
        self.counter = 0
        self.results: dict = {"runs": runs}

    # ---- running ---------------------------------------------------------------------------
    def run(self, label: str, command: list, quiet: bool = False) -> measure.Run:
        self.counter += 1
        log = self.logs / f"{self.counter:03d}-{label.replace(' ', '_').replace('/', '_')}.log"
        result = measure.run([str(c) for c in command], log, cwd=REPO, env=self.env)
        status = "ok" if result.returncode == 0 else f"EXIT {result.returncode}"
        if not quiet or result.returncode != 0:
            print(f"  {label:<40} {result.wall_s:7.2f} s  {result.peak_mb:7.0f} MiB  {status}", flush=True)
        if result.returncode != 0:
            print(measure.tail(log), file=sys.stderr)
        return result

    def medflow(self, label: str, recipe: str, data: Path, out: Path, cache: Path, *extra: str,
                workers: int = 1, quiet: bool = False) -> dict:
        command = [*_medflow_command(), "run", BENCH / "recipes" / recipe, "-q", "--workers", str(workers),
                   "--set", f"source.dicom={data}", "--set", f"outputs.dir={out}", "--set", f"engine.cache_dir={cache}"]
        for override in extra:
            command += ["--set", override]
        result = self.run(label, command, quiet).as_dict()
        result["build_s"] = _manifest_seconds(out)
        return result

    def contender(self, key: str, name: str, data: Path, out: Path, quiet: bool = False) -> dict:
        """One cold run of contender ``key`` on ``data``, writing to ``out / key``."""
        target, cache = out / key, out / f"{key}-cache"
        _clean(target, cache)
        if key in ("medflow", "medflow_2w"):
            workers = 2 if key == "medflow_2w" else 1
            return self.medflow(f"{name} medflow seed {workers}w", "seed.yaml", data, target, cache, workers=workers,
                                quiet=quiet)
        if key == "medflow_ich":
            return self.medflow(f"{name} medflow ich", "ich.yaml", data, target, cache, quiet=quiet)
        scripts = {"handwritten": [BENCH / "handwritten_seed.py", data], "fused": [BENCH / "fused_seed.py", data],
                   "handwritten_ich": [BENCH / "handwritten_ich.py", data], "fused_ich": [BENCH / "fused_ich.py", data],
                   "monai": [BENCH / "monai_seed.py", *_series_dirs(data)], "torchio": [TORCHIO_SCRIPT, *_series_dirs(data)]}
        return self.run(f"{name} {key.replace('_', ' ')}", [PY, *scripts[key], target], quiet).as_dict()

    def enabled(self, key: str) -> bool:
        return {"monai": self.monai, "torchio": self.torchio}.get(key, True)

    def warm_up(self, tiny: Path) -> None:
        """One untimed run of every contender on 2 slices: bytecode compiled, libraries in the page cache."""
        print(f"[warm-up] {tiny.name} (untimed)", flush=True)
        out = self.work / "out" / "warmup"
        for key in dict.fromkeys(key for keys in PLAN.values() for key in keys):
            if self.enabled(key):
                self.contender(key, "warm-up", tiny, out, quiet=True)
        if self.radiomics_enabled():
            for label, command, paths in _radiomics_commands(_series_dirs(tiny)[0], out / "radiomics"):
                _clean(*paths)
                self.run(f"warm-up {label}", command, quiet=True)
        _clean(out)

    # ---- sections --------------------------------------------------------------------------
    def contenders(self, name: str, data: Path, slices: int, input_bytes: int, single_series: bool) -> None:
        """Every contender of PLAN[name], round by round; on gen200 also the rebuilds on the cold cache."""
        keys = [key for key in PLAN[name] if self.enabled(key)]
        print(f"[contenders] {name}: {slices} slices, {input_bytes / 1e6:.0f} MB: {', '.join(keys)}", flush=True)
        runs: dict[str, list[dict]] = {}
        out = self.work / "out" / name
        for rep in range(self.runs):
            last = rep == self.runs - 1
            for key in keys:
                runs.setdefault(key, []).append(self.contender(key, name, data, out))
                if key == "medflow" and name == "gen200":
                    self.rebuilds(name, data, out, runs)
                keep = last and single_series and key != "medflow_2w"  # the last outputs stay for the identity checks
                _clean(out / f"{key}-cache", *([] if keep else [out / key]))
        identity = self.identity(name, data, out) if single_series else {}
        _clean(out)
        self.results.setdefault("contenders", {})[name] = {
            "slices": slices, "input_bytes": input_bytes, "runs": runs, "identity": identity,
        }

    def rebuilds(self, name: str, data: Path, out: Path, runs: dict[str, list[dict]]) -> None:
        """No-op, last-step change and first-step change, each on the cache the cold build just filled.

        The changes write to other folders so the cold output stays for the checks."""
        target, cache = out / "medflow", out / "medflow-cache"
        runs.setdefault("noop", []).append(self.medflow(f"{name} medflow seed no-op", "seed.yaml", data, target, cache))
        for key, change in (("change", SEED_LAST_STEP_CHANGE), ("first_change", SEED_FIRST_STEP_CHANGE)):
            label = "last-step" if key == "change" else "first-step"
            runs.setdefault(key, []).append(
                self.medflow(f"{name} medflow seed {label} change", "seed.yaml", data, out / key, cache, change))
            _clean(out / key)

    def identity(self, name: str, data: Path, out: Path) -> dict:
        """Compare the last round's outputs; add untimed variants that locate any difference."""
        checks = {}
        medflow_seed = _one_npy(out / "medflow")
        checks["seed: medflow vs fused-table script (same math)"] = _compare(medflow_seed, _one_npy(out / "fused"))
        checks["seed: medflow vs hand-written (cv2 YCrCb -> Y,Cb,Cr)"] = _compare(medflow_seed, _one_npy(out / "handwritten"))
        if self.monai and (out / "monai").is_dir():
            straight = _compare(medflow_seed, _one_npy(out / "monai"))
            flipped = _compare(medflow_seed, _one_npy(out / "monai"), "--flip", "0")
            best = flipped if flipped.get("n_different", 1) < straight.get("n_different", 1) else straight
            best["monai_slice_order_reversed"] = best is flipped
            checks["seed: medflow vs MONAI"] = best
        if self.torchio and (out / "torchio").is_dir():
            checks["seed: medflow vs TorchIO"] = _compare(medflow_seed, _one_npy(out / "torchio"))
        if (out / "medflow_ich").is_dir():
            checks["ich: medflow vs hand-written"] = _compare(_one_npy(out / "medflow_ich"),
                                                             _one_npy(out / "handwritten_ich"), channel_axis="3")
            checks["ich: medflow vs fused-table script (same math)"] = _compare(
                _one_npy(out / "medflow_ich"), _one_npy(out / "fused_ich"), channel_axis="3")
        variant = out / "hw-bt601"
        self.run(f"{name} handwritten seed bt601", [PY, BENCH / "handwritten_seed.py", data, variant, "--color", "bt601"])
        checks["seed: medflow vs hand-written with exact BT.601 instead of cv2"] = _compare(medflow_seed, _one_npy(variant))
        self.medflow(f"{name} medflow seed ycrcb", "seed.yaml", data, out / "mf-ycrcb", out / "mf-ycrcb-cache",
                     "steps[2].to=ycrcb")
        self.run(f"{name} handwritten seed ycrcb", [PY, BENCH / "handwritten_seed.py", data, out / "hw-ycrcb", "--color", "ycrcb"])
        checks["seed with to: ycrcb: medflow vs hand-written cv2 (same coefficients)"] = _compare(
            _one_npy(out / "mf-ycrcb"), _one_npy(out / "hw-ycrcb"))
        return checks

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
        """Whole-process time on a 2-slice series: medflow run vs the hand-written and fused scripts."""
        print(f"[start-up] {data.name}", flush=True)
        out = self.work / "out" / "startup"
        runs: dict[str, list[dict]] = {}
        for _ in range(max(5, self.runs)):
            for key in ("medflow", "handwritten", "fused"):
                runs.setdefault(key, []).append(self.contender(key, "2 slices", data, out))
            runs.setdefault("python", []).append(self.run("python -c pass", [PY, "-c", "pass"]).as_dict())
        _clean(out)
        log = self.logs / "importtime.log"
        with open(log, "wb") as f:
            subprocess.run([PY, "-X", "importtime", "-m", "medflow", "run", str(BENCH / "recipes" / "seed.yaml"), "-q",
                            "--workers", "1", "--set", f"source.dicom={data}", "--set", f"outputs.dir={out / 'o'}",
                            "--set", f"engine.cache_dir={out / 'c'}"], stderr=f, stdout=subprocess.DEVNULL, cwd=REPO,
                           env=self.env)
        _clean(out)
        self.results["startup"] = {"dataset": data.name, "runs": runs["medflow"], "handwritten": runs["handwritten"],
                                   "fused": runs["fused"], "python": runs["python"], "imports": _top_imports(log)}

    def radiomics_enabled(self) -> bool:
        return all(path.is_file() for path in RADIOMICS_FILES) and RADIOMICS_RECIPE.is_file()

    def radiomics(self, sets: list[tuple[str, Path]]) -> None:
        """radiomics.yaml (HU -> 1 mm -> .nii.gz) vs ``sitk_radiomics.py``, as ``bench_radiomics.py`` runs them."""
        if not self.radiomics_enabled():
            missing = [str(p.relative_to(REPO)) for p in (*RADIOMICS_FILES, RADIOMICS_RECIPE) if not p.is_file()]
            print(f"[radiomics] skipped: {', '.join(missing)} not found", file=sys.stderr)
            self.results["radiomics"] = {"skipped": f"{', '.join(missing)} not found"}
            return
        done = {}
        for name, series in sets:
            n, size = _dataset_bytes(series)
            print(f"[radiomics] {name}: {n} slices", flush=True)
            out = self.work / "out" / "radiomics" / name
            runs: dict[str, list[dict]] = {}
            for _ in range(self.runs):
                for label, command, paths in _radiomics_commands(series, out):
                    _clean(*paths)
                    result = self.run(f"{name} radiomics {label}", command).as_dict()
                    output = paths[0] if label == "sitk" else next((paths[0] / "nifti").glob("*.nii.gz"), None)
                    result["output_mb"] = output.stat().st_size / 1e6 if output and output.exists() else None
                    runs.setdefault(label, []).append(result)
            _clean(out)
            done[name] = {"slices": n, "input_bytes": size, "runs": runs}
        self.results["radiomics"] = {"sets": done}

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
                              cwd=REPO, env=self.env)
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


def _radiomics_commands(series: Path, out: Path) -> list[tuple[str, list, list[Path]]]:
    """(label, command, paths to delete before the run; the first is the output) for the two contenders.

    The same invocations as ``bench_radiomics.py``: the shipped ``pipelines/radiomics.yaml`` with
    its own ``engine.workers`` (auto) and ``--source``, and ``sitk_radiomics.py SERIES_DIR OUT.nii.gz``
    (SimpleITK reads one folder of one series)."""
    medflow = [*_medflow_command(), "run", RADIOMICS_RECIPE, "-q", "--source", series,
               "--set", f"outputs.dir={out / 'o'}", "--set", f"engine.cache_dir={out / 'c'}"]
    return [("medflow", medflow, [out / "o", out / "c"]),
            ("sitk", [PY, BENCH / "sitk_radiomics.py", series, out / "sitk.nii.gz"], [out / "sitk.nii.gz"])]


def _manifest_seconds(out: Path) -> float | None:
    try:
        return float(json.loads((out / "manifest.json").read_text())["run"]["seconds"])
    except (OSError, KeyError, ValueError, TypeError):
        return None


def _clean(*paths: Path) -> None:
    for path in paths:
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
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


def _importable(*modules: str) -> bool:
    return subprocess.run([PY, "-c", f"import {', '.join(modules)}"], capture_output=True).returncode == 0


def _child_env(work: Path, keep: bool) -> dict[str, str] | None:
    """Bytecode caching on for the children, in a prefix under ``work`` (the repo stays clean).

    With ``PYTHONDONTWRITEBYTECODE=1`` (as in some shells) every child would recompile every
    module it imports that has no ``.pyc`` yet, medflow's own included: start-up a user of an
    installed package never sees."""
    if keep:
        return None
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(work / "pycache")
    return env


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="medflow benchmark suite (issue 10's targets)")
    parser.add_argument("--quick", action="store_true", help="small data, one run each: a smoke test of the suite")
    parser.add_argument("--runs", type=int, help="runs per measurement (median); default 3, --quick 1")
    parser.add_argument("--work", type=Path, default=BENCH / "_work", help="scratch folder (data, outputs, logs)")
    parser.add_argument("--no-monai", action="store_true", help="skip MONAI even when installed")
    parser.add_argument("--keep-env", action="store_true",
                        help="run the children in this environment as it is (no bytecode-cache prefix)")
    parser.add_argument("--results", type=Path, help="markdown file to write (default benchmarks/RESULTS.md)")
    args = parser.parse_args(argv)
    runs = args.runs or (1 if args.quick else 3)
    work = args.work.resolve()
    shutil.rmtree(work / "logs", ignore_errors=True)
    monai = not args.no_monai and _importable("monai", "torch")
    if not monai:
        print("MONAI/torch not importable (pip install torch==2.13.0, then pip install monai) or --no-monai: "
              "MONAI skipped", file=sys.stderr)
    torchio = _importable("torchio", "torch") and TORCHIO_SCRIPT.is_file()
    if not torchio:
        why = "no benchmarks/torchio_seed.py" if _importable("torchio") else "torchio not importable"
        print(f"TorchIO skipped ({why})", file=sys.stderr)
    bench = Bench(work, runs, monai, torchio, _child_env(work, args.keep_env))
    bench.results["machine"] = report.machine(PY, REPO)  # date and commit of the start
    started = time.perf_counter()

    sets = QUICK if args.quick else FULL
    data = {}
    for name, (series, slices) in sets.items():
        folder = work / "data" / (f"quick-{name}" if args.quick else name)  # a smoke run keeps the full data
        subprocess.run([PY, BENCH / "generate.py", folder, "--series", str(series), "--slices",
                        str(slices)], check=True, cwd=REPO)
        data[name] = folder
    real = SHARED_CT if SHARED_CT.is_dir() else None  # 134 slices: cheap enough for --quick too
    if real is None:
        print(f"real CT not found at {SHARED_CT}: skipped (set MEDFLOW_SHARED_DATA)", file=sys.stderr)

    bench.warm_up(data["tiny2"])
    for name, folder in ([("ct_pancreas_tcia", real)] if real else []) + [("gen200", data["gen200"]),
                                                                          ("gen20x60", data["gen20x60"])]:
        _warm(folder)
        n, size = _dataset_bytes(folder)
        bench.contenders(name, folder, n, size, single_series=len(_series_dirs(folder)) == 1)
    _warm(data["gen10x"])
    bench.memory(data["gen10x"], _dataset_bytes(data["gen10x"])[0])
    bench.startup(data["tiny2"])
    # radiomics: the real CT in the full run (its figure of the issue); --quick: the small series only
    radiomics_sets = [("ct_pancreas_tcia", real)] if real and not args.quick else []
    radiomics_sets.append(("gen200", _series_dirs(data["gen200"])[0]))
    bench.radiomics(radiomics_sets)
    bench.profile(data["gen200"])
    bench.limits(data["gen200"])
    bench.results["total_s"] = time.perf_counter() - started
    bench.results["quick"] = args.quick
    bench.results["monai"] = monai
    bench.results["torchio"] = torchio
    bench.results["bytecode_cached"] = not args.keep_env

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
