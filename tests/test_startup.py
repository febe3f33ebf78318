"""Start-up stays light: each command imports only what it needs (no timing here: see benchmarks/bench_startup.py).

Loading a recipe imports the modules of the steps and writers it names and no other (the
registries find them through ``medflow.steps.BUILTIN`` / ``medflow.writers.BUILTIN``), the DICOMweb
source's code only when its source names ``dicomweb``, and the error diagnostics only when it has
errors; a 1-worker run imports no joblib; start-up runs without the cyclic garbage collector
(:mod:`medflow.startup`). Each check runs in a fresh interpreter and reads ``sys.modules`` after the
command; a module bound by :func:`medflow._lazy.lazy_import` and never used does not count.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("pydicom", "cv2", "SimpleITK", "joblib", "loky", "highdicom", "pyarrow", "tqdm", "torch", "requests",
         "scipy", "dask", "medflow.deid.profile")

RUN_COMMAND = """
import io, json, sys, contextlib
import medflow.cli
out = io.StringIO()
with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
    code = medflow.cli.main(json.loads(sys.argv[1]))
heavy = json.loads(sys.argv[2])
loaded = [m for m in heavy if m in sys.modules and type(sys.modules[m]).__name__ != "_LazyModule"]
print(json.dumps({"code": code, "loaded": loaded, "out": out.getvalue(),
                  "modules": sorted(m for m in sys.modules if m.startswith("medflow."))}))
"""

RECIPE = """\
medflow: 1
name: light
source: {{dicom: {source}}}
steps:
  - {{step: window, level: -600, width: 1500}}
  - {{step: colormap, map: blue_red}}
  - {{step: layout, layout: NCHW, dtype: float32}}
outputs:
  dir: {out}
  writers: [{{kind: npy}}]
engine: {{workers: 1, cache_dir: {cache}}}
"""


def _command(*args: str) -> dict:
    done = subprocess.run([sys.executable, "-c", RUN_COMMAND, json.dumps(list(args)), json.dumps(HEAVY)],
                          capture_output=True, text=True, cwd=REPO, timeout=300)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.fixture()
def recipe(tmp_path: Path) -> Path:
    from dicom_factory import write_ct_series

    source = tmp_path / "dicom"
    write_ct_series(source, 1, n_slices=2)
    path = tmp_path / "light.yaml"
    path.write_text(RECIPE.format(source=source, out=tmp_path / "out", cache=tmp_path / "cache"))
    return path


@pytest.mark.parametrize("args", [["steps"], ["steps", "window"], ["schema"]], ids=" ".join)
def test_listing_commands_import_no_heavy_library(args):
    """``steps`` and ``schema`` import every step and writer module: all that is not theirs is lazy
    (the de-identification core and pydicom too: the anonymize step's and DICOM writers' models need
    neither)."""
    result = _command(*args)
    assert result["code"] == 0, result["out"]
    if args != ["steps", "window"]:  # one step's help imports its module only
        assert "medflow.steps.anonymize" in result["modules"]
    if args == ["schema"]:
        assert {"medflow.writers.dicom", "medflow.writers.dicomweb"} <= set(result["modules"])
    assert result["loaded"] == []


def test_validating_a_de_identifying_recipe_imports_no_pydicom(tmp_path):
    """The anonymize step and the dicom writer are validated from their models alone; pydicom (and the
    de-identification core) come when an item is de-identified. Named keywords are checked against
    pydicom's dictionary, so a recipe with ``rules:`` loads it, and only then."""
    recipe = tmp_path / "deid.yaml"
    recipe.write_text("medflow: 1\nname: d\nsource: {sample: ct-phantom}\n"
                      "steps: [{step: anonymize, options: [retain-uids]}]\n"
                      "outputs: {dir: o, writers: [{kind: dicom}]}\n")
    result = _command("validate", str(recipe))
    assert result["code"] == 0, result["out"]
    assert result["loaded"] == []
    assert {"medflow.steps.anonymize", "medflow.writers.dicom"} <= set(result["modules"])
    ruled = tmp_path / "ruled.yaml"
    ruled.write_text(recipe.read_text().replace("options: [retain-uids]", "rules: {keep: [PatientSex]}"))
    result = _command("validate", str(ruled))
    assert result["code"] == 0, result["out"]
    assert "pydicom" in result["loaded"] and "medflow.deid.profile" not in result["loaded"]


def test_validate_imports_only_the_steps_and_writers_the_recipe_names(recipe):
    result = _command("validate", str(recipe))
    assert result["code"] == 0, result["out"]
    assert result["loaded"] == []
    steps = {m for m in result["modules"] if m.startswith("medflow.steps.")}
    writers = {m for m in result["modules"] if m.startswith("medflow.writers.")}
    assert steps == {"medflow.steps.registry", "medflow.steps.intensity", "medflow.steps.color", "medflow.steps.layout"}
    assert writers == {"medflow.writers.registry", "medflow.writers.tensors", "medflow.writers.atomic"}


def test_validate_reports_unknown_steps_without_importing_every_step(tmp_path):
    path = tmp_path / "typo.yaml"
    path.write_text("medflow: 1\nname: t\nsource: {sample: ct-phantom}\nsteps: [{step: windw}]\noutputs: {dir: o}\n")
    result = _command("validate", str(path))
    assert result["code"] == 2
    assert "unknown step 'windw'; did you mean 'window'?" in result["out"]
    assert result["loaded"] == []
    assert not {m for m in result["modules"] if m.startswith("medflow.steps.")} - {"medflow.steps.registry"}


def test_plan_and_a_one_worker_run_import_no_joblib_and_no_unused_library(recipe):
    """A plain native series: discovery reads its headers without pydicom (medflow.sources.rawheader)
    and the reader streams its pixels from discovery's facts, so neither a cold plan nor a cold run
    (nor the no-op rebuild after it) imports pydicom, joblib or anything else heavy."""
    cold_plan = recipe.with_name("plan.yaml")  # its own cache: the plan's discovery is cold too
    cold_plan.write_text(recipe.read_text().replace(str(recipe.parent / "cache"), str(recipe.parent / "plan-cache")))
    assert cold_plan.read_text() != recipe.read_text()
    for args in (["plan", str(cold_plan)], ["run", "-q", str(recipe)], ["run", "-q", str(recipe)]):
        result = _command(*args)
        assert result["code"] == 0, result["out"]
        assert result["loaded"] == [], args[0]


def test_a_small_channels_last_run_imports_no_opencv(recipe):
    """A 3-channel NHWC gather pads its pixels only once OpenCV pays for its import (medflow.engine.gather)."""
    recipe.write_text(recipe.read_text().replace("layout: NCHW", "layout: NHWC"))
    result = _command("run", "-q", str(recipe))
    assert result["code"] == 0, result["out"]
    assert result["loaded"] == []


def test_text_files_beside_the_series_are_skipped_without_importing_pydicom(recipe):
    """Real exports carry a LICENSE, a citation or a JSON sidecar beside the images: judging them
    "not a DICOM file" reads their first bytes only, so the run still imports no pydicom."""
    source = recipe.parent / "dicom"
    (source / "LICENSE.txt").write_text("Creative Commons Attribution 4.0\n")
    (source / "series.json").write_text('{"PatientName": "x"}\n')
    result = _command("run", str(recipe))
    assert result["code"] == 0, result["out"]
    assert "2 skipped" in result["out"]
    assert result["loaded"] == []


def test_builtin_tables_name_every_registered_step_and_writer_and_its_module():
    """``medflow.steps.BUILTIN`` / ``medflow.writers.BUILTIN`` are how a name finds its module without
    importing the others: they must list exactly what the modules register, where they register it."""
    from medflow.steps import BUILTIN as STEPS
    from medflow.steps.registry import all_steps, step_names
    from medflow.writers import BUILTIN as WRITERS
    from medflow.writers.registry import all_writers, writer_kinds

    steps = {s.name: s.function.__module__.rsplit(".", 1)[1] for s in all_steps() if s.name in STEPS or
             s.function.__module__.startswith("medflow.steps.")}
    writers = {w.kind: w.function.__module__.rsplit(".", 1)[1] for w in all_writers() if w.kind in WRITERS or
               w.function.__module__.startswith("medflow.writers.")}
    assert steps == STEPS, "update medflow.steps.BUILTIN: step name -> the module registering it"
    assert writers == WRITERS, "update medflow.writers.BUILTIN: writer kind -> the module registering it"
    assert set(STEPS) <= set(step_names()) and set(WRITERS) <= set(writer_kinds())


def test_the_validating_model_and_the_schema_model_agree_outside_steps_writers_and_source():
    """recipe_model() dispatches steps and writers by name and imports the dicomweb source kind only
    for a recipe naming it; recipe_schema_model() spells the unions out. Both come from one builder:
    every other field is the same."""
    from medflow.recipe.model import recipe_model, recipe_schema_model

    lean, full = recipe_model(), recipe_schema_model()
    assert list(lean.model_fields) == list(full.model_fields)
    for name in lean.model_fields:
        if name not in ("steps", "outputs", "source"):
            assert lean.model_fields[name].annotation == full.model_fields[name].annotation, name
    data = {"medflow": 1, "name": "t", "source": {"sample": "ct-phantom"}, "outputs": {"dir": "o"},
            "steps": [{"step": "window", "level": 40, "width": 400}, {"step": "layout", "layout": "NCHW"}]}
    assert lean.model_validate(data).model_dump() == full.model_validate(data).model_dump()


SOURCES = {
    "folder": {"dicom": "d", "duplicates": "error"},
    "sample": {"sample": "ct-phantom"},
    "pacs": {"dicomweb": {"url": "http://pacs/dicom-web", "query": {"StudyDate": "20200101-"}}, "filter": {}},
    "pacs-typo": {"dicomweb": {"url": "http://pacs", "qeury": {}, "auth": {"usre": "U"}}},
    "pacs-bad-values": {"dicomweb": {"url": "http://pacs", "workers": 0, "query": {"StudyDate": "2020-01-01",
                                     "StudyInstanceUID": ["1.2.a"]}}, "duplicates": "all"},
    "pacs-no-url": {"dicomweb": {}},
    "pacs-not-a-mapping": {"dicomweb": "http://pacs"},
    "pacs-and-folder": {"dicomweb": {"url": "http://pacs"}, "dicom": "d"},
    "pacs-and-sample": {"dicomweb": {"url": "http://pacs"}, "sample": "ct-phantom"},
    "no-kind": {"filter": {}},
    "not-a-mapping": "d",
}


@pytest.mark.parametrize("source", SOURCES.values(), ids=SOURCES.keys())
def test_the_validating_model_and_the_schema_model_agree_on_every_source(source):
    """The lean model's dicomweb member is imported when taken (Deferred): same values, same errors
    (once member_errors has put its errors where the spelled-out union reports them)."""
    from pydantic import ValidationError

    from medflow.recipe.model import member_errors, recipe_model, recipe_schema_model

    data = {"medflow": 1, "name": "t", "source": source, "outputs": {"dir": "o"}}
    results = []
    for model in (recipe_model(), recipe_schema_model()):
        try:
            results.append(("ok", type(model.model_validate(data).source), model.model_validate(data).model_dump()))
        except ValidationError as error:
            errors = member_errors(error.errors(include_url=False))
            for e in errors:  # a validator's exception object: compare its text
                e["ctx"] = {k: repr(v) if isinstance(v, Exception) else v for k, v in e.get("ctx", {}).items()}
            results.append(("error", errors))
    assert results[0] == results[1]
    assert results[0][0] == ("ok" if source in (SOURCES["folder"], SOURCES["sample"], SOURCES["pacs"]) else "error")


def test_a_valid_folder_recipe_imports_no_dicomweb_code_and_no_error_diagnostics(recipe):
    """Only a recipe whose source names ``dicomweb`` imports the DICOMweb client and builds its models;
    only a recipe with errors imports medflow.recipe.diagnostics (pydantic errors -> located issues);
    only a recipe with ``splits:`` or an index writer imports medflow.splits."""
    for args in (["validate", str(recipe)], ["run", "-q", str(recipe)]):
        result = _command(*args)
        assert result["code"] == 0, result["out"]
        dicomweb = [m for m in result["modules"] if "dicomweb" in m]
        assert dicomweb == [], args[0]
        assert "medflow.recipe.diagnostics" not in result["modules"], args[0]
        assert "medflow.splits" not in result["modules"], args[0]  # no splits: and no index writer
    bad = recipe.with_name("bad.yaml")
    bad.write_text(recipe.read_text().replace("width: 1500", "width: -5"))
    result = _command("validate", str(bad))
    assert result["code"] == 2 and "steps[0].width: must be > 0 (got -5)" in result["out"]
    assert "medflow.recipe.diagnostics" in result["modules"]


GC_COMMAND = """
import gc, json, sys
import medflow.cli, medflow.engine.build as build
seen = {}
claimed = build._build_claimed
def spy(*args, **kwargs):  # the build itself: collected as usual, start-up's objects frozen
    seen.update(enabled=gc.isenabled(), frozen=gc.get_freeze_count())
    return claimed(*args, **kwargs)
build._build_claimed = spy
if sys.argv[1] == "caller-disabled":
    gc.disable()
args = ["run", "-q", sys.argv[2]]
if sys.argv[1] == "process":  # as `medflow ...` and `python -m medflow ...` call it
    sys.argv = ["medflow", *args]
    code = medflow.cli.main()
else:
    code = medflow.cli.main(args)
print(json.dumps({"code": code, "during": seen, "after": {"enabled": gc.isenabled(), "frozen": gc.get_freeze_count()}}))
"""


@pytest.mark.parametrize("caller", ["process", "caller", "caller-disabled"])
def test_startup_runs_without_the_cyclic_collector_and_the_build_with_it(recipe, caller):
    """medflow.startup: off while importing and loading; the build collects, start-up's objects frozen.
    Called with argv (a Python caller) main gives the collector back as it found it; as the process's
    own command line it leaves start-up frozen (nothing to collect that the process's end does not free)."""
    done = subprocess.run([sys.executable, "-c", GC_COMMAND, caller, str(recipe)], capture_output=True, text=True,
                          cwd=REPO, timeout=300)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["code"] == 0
    assert result["during"]["frozen"] > 10_000  # numpy, pydantic, the recipe's models...
    assert result["during"]["enabled"] is (caller != "caller-disabled")
    if caller == "process":
        assert result["after"]["enabled"] is True and result["after"]["frozen"] > 10_000
    else:
        assert result["after"] == {"enabled": caller == "caller", "frozen": 0}


@pytest.mark.parametrize("argv", [["run", "r.yaml", "-q", "--set", "a=1", "--workers", "2", "--no-wait"],
                                  ["validate", "a.yaml", "b.yaml"], ["plan", "r.yaml", "--verify"],
                                  ["preview", "r.yaml", "--items", "3"], ["steps"], ["steps", "window"],
                                  ["doctor", "r.yaml", "--source", "d"], ["schema", "--write", "s.json"],
                                  ["audit", "out", "--json"], ["diff", "a", "b"]], ids=lambda argv: argv[0])
def test_the_parser_of_one_command_parses_and_helps_like_the_whole_parser(argv):
    """main builds only the named command's arguments (argparse costs ms per argument at start-up)."""
    from medflow.cli import _command_named, _parser

    whole, one = _parser(), _parser(_command_named(argv))
    assert _command_named(argv) == argv[0]
    assert vars(one.parse_args(argv)) == vars(whole.parse_args(argv))
    assert one.format_help() == whole.format_help()
    assert _command_named(["--version"]) is None and _command_named(["nope"]) is None and _command_named([]) is None


BLAS_COMMAND = """
import contextlib, io, os, sys
sys.argv = ["medflow", "steps"]
import medflow.cli
with contextlib.redirect_stdout(io.StringIO()):
    medflow.cli.main()
import numpy
tasks = "/proc/self/task"
print(os.environ.get("OPENBLAS_NUM_THREADS"), len(os.listdir(tasks)) if os.path.isdir(tasks) else -1)
"""


def _blas_threads(env_value: str | None) -> tuple[str, int]:
    import os

    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
    if env_value is not None:
        env["OPENBLAS_NUM_THREADS"] = env_value
    done = subprocess.run([sys.executable, "-c", BLAS_COMMAND], capture_output=True, text=True, env=env, check=True)
    value, threads = done.stdout.split()
    return value, int(threads)


def test_a_medflow_process_starts_numpy_without_blas_helper_threads_unless_its_user_chose():
    """numpy's OpenBLAS helpers spin ~0.1 s of CPU each after the import (medflow.startup.one_blas_thread)."""
    value, threads = _blas_threads(None)
    assert value == "1"
    chosen, chosen_threads = _blas_threads("2")
    assert chosen == "2"  # the user's choice stands
    if chosen_threads > 1:  # this numpy's BLAS starts helper threads (Linux, OpenBLAS): the default starts none
        assert threads == 1


HEAP_COMMAND = """
import contextlib, io, os, resource, sys
import numpy as np
if sys.argv[1] == "medflow":
    sys.argv = ["medflow", "steps"]
    import medflow.cli
    from medflow import startup
    with contextlib.redirect_stdout(io.StringIO()):
        medflow.cli.main()
    state = startup.heap_settings
else:
    state = "plain"

def items(n):  # what items do to the heap: a few slice-sized arrays each, all freed when the item ends
    for _ in range(n):
        arrays = [np.ones((512, 512, 3), np.float32) for _ in range(4)]
        del arrays

items(3)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
items(20)
faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
print(state, faults, os.environ.get("MALLOC_MMAP_THRESHOLD_"), os.environ.get("MALLOC_TRIM_THRESHOLD_"))
"""


def _heap_run(kind: str, **env_values: str) -> tuple[str, int, str, str]:
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "GLIBC_TUNABLES"}
    env.update(env_values)
    done = subprocess.run([sys.executable, "-c", HEAP_COMMAND, kind], capture_output=True, text=True, env=env, check=True)
    state, faults, mmap_threshold, trim_threshold = done.stdout.split()
    return state, int(faults), mmap_threshold, trim_threshold


def _glibc() -> bool:
    import os

    try:
        return (os.confstr("CS_GNU_LIBC_VERSION") or "").startswith("glibc")
    except (AttributeError, ValueError, OSError):
        return False


@pytest.mark.skipif(not _glibc(), reason="the heap settings are glibc's (medflow.startup.steady_heap sets nothing elsewhere)")
def test_a_medflow_process_keeps_freed_memory_for_the_next_item():
    """An item's arrays freed together went back to the OS and the next item faulted them in again."""
    from medflow.startup import HEAP_SETTINGS

    plain = _heap_run("plain")
    state, faults, mmap_threshold, trim_threshold = _heap_run("medflow")
    assert state == "set"
    # the workers the process starts read the same settings from the environment
    assert (mmap_threshold, trim_threshold) == tuple(str(HEAP_SETTINGS[k]) for k in
                                                     ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_"))
    # 20 items x 12 MiB: ~61,000 page faults when each item's memory comes from the OS again
    assert plain[1] > 20 * 1000
    assert faults < plain[1] / 10


@pytest.mark.skipif(not _glibc(), reason="the heap settings are glibc's (medflow.startup.steady_heap sets nothing elsewhere)")
@pytest.mark.parametrize("chosen", [{"MALLOC_TRIM_THRESHOLD_": "131072"},
                                    {"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=131072"}], ids=["variable", "tunable"])
def test_a_users_own_malloc_settings_stand(chosen):
    state, faults, mmap_threshold, trim_threshold = _heap_run("medflow", **chosen)
    assert state == "chosen"
    assert mmap_threshold == "None"
    assert trim_threshold == chosen.get("MALLOC_TRIM_THRESHOLD_", "None")
    assert faults > 20 * 1000  # glibc trims as the user asked: the memory goes back and comes again
