"""With several workers the building process runs items too, and starts worker processes only when
the build is long enough to pay for them (medflow.engine.execute._alongside_workers)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

import medflow.engine.execute as execute_module
import medflow.threads as threads_module
from medflow.engine.build import build
from medflow.recipe.loader import load_recipe
from tests.dicom_factory import write_ct_series

RECIPE = """\
medflow: 1
name: alongside
source:
  dicom: data
steps:
  - step: window
    level: 40
    width: 400
  - step: layout
    layout: NCHW
    dtype: float32
outputs:
  dir: OUT
engine:
  workers: 1
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    for series in range(8):
        write_ct_series(tmp_path / "data", series, n_slices=2, size=32)
    return tmp_path


def _build(project: Path, name: str, workers: int):
    recipe = project / f"{name}.yaml"
    recipe.write_text(RECIPE.replace("OUT", f"out-{name}"))
    overrides = [f"engine.cache_dir={project / ('cache-' + name)}"]
    return build(load_recipe(recipe, overrides=overrides), workers=workers, show_progress=False)


def _outputs(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.rglob("*.npy"))}


def _loky_workers() -> list:
    import psutil

    workers = []
    for process in psutil.Process().children(recursive=True):
        try:
            if process.status() != psutil.STATUS_ZOMBIE and "popen_loky_posix" in " ".join(process.cmdline()):
                workers.append(process)  # not loky's resource trackers
        except (psutil.NoSuchProcess, psutil.ZombieProcess):  # ended meanwhile
            continue
    return workers


def _slow_here(monkeypatch, seconds: float, fail_at: int | None = None) -> list[str]:
    """Items run in this process take ``seconds`` longer (worker processes import the real run_item)."""
    ran_here = []
    original = execute_module.run_item

    def slow(task):
        ran_here.append(task.item.item_id)
        time.sleep(seconds)
        if fail_at is not None and len(ran_here) == fail_at:
            raise RuntimeError("this process failed")
        return original(task)

    monkeypatch.setattr(execute_module, "run_item", slow)
    return ran_here


def test_a_short_build_with_two_workers_starts_no_worker_process(project, monkeypatch):
    import joblib.externals.loky as loky

    def forbidden(*args, **kwargs):
        raise AssertionError("a worker process was started for a build shorter than its start")

    monkeypatch.setattr(loky, "get_reusable_executor", forbidden)
    ran_here = _slow_here(monkeypatch, 0.0)
    two = _build(project, "two", workers=2)
    one = _build(project, "one", workers=1)
    assert two.exit_code == one.exit_code == 0 and two.ok == 8 and len(ran_here) == 16  # both builds ran every item here
    assert _outputs(project / "out-two") == _outputs(project / "out-one")


@pytest.mark.parametrize("batch_seconds", [0.0, 10.0], ids=["one-unit-a-submission", "batches"])
def test_a_long_build_shares_its_items_with_a_worker_process_and_gives_the_bytes_of_one_worker(project, monkeypatch,
                                                                                                 batch_seconds):
    monkeypatch.setattr(threads_module, "WORKER_START_SECONDS", 0.0)
    monkeypatch.setattr(execute_module, "BATCH_SECONDS", batch_seconds)  # 10 s: every unit left in one batch
    submitted = []  # items per submission to the worker process
    original_pool = execute_module.worker_processes

    class Spy:
        def __init__(self, executor):
            self.executor = executor

        def submit(self, function, *args):
            if function is execute_module._supervised_run_items:
                submitted.append(len(args[0]))
            elif function is execute_module._supervised_run_item:
                submitted.append(1)
            return self.executor.submit(function, *args)

        def shutdown(self, *args, **kwargs):
            return self.executor.shutdown(*args, **kwargs)

    monkeypatch.setattr(execute_module, "worker_processes", lambda n: Spy(original_pool(n)))
    ran_here = _slow_here(monkeypatch, 0.3)  # this process is slow: the worker, once started, takes items
    two = _build(project, "two", workers=2)
    assert two.exit_code == 0 and two.ok == 8
    assert 1 <= len(ran_here) < 8  # this process ran some (from the end), the worker process the others
    assert sum(submitted) == 8 - len(ran_here)
    assert (max(submitted) > 1) == (batch_seconds > 0)
    ran_here.clear()
    one = _build(project, "one", workers=1)
    assert len(ran_here) == 8
    assert _outputs(project / "out-two") == _outputs(project / "out-one")
    strip = [{k: v for k, v in item.items() if k != "seconds"} for item in two.manifest["items"]]
    assert strip == [{k: v for k, v in item.items() if k != "seconds"} for item in one.manifest["items"]]


def test_a_failure_in_this_process_kills_the_worker_processes_before_it_propagates(project, monkeypatch):
    monkeypatch.setattr(threads_module, "WORKER_START_SECONDS", 0.0)
    _slow_here(monkeypatch, 0.6, fail_at=1)  # while the worker process starts or runs items
    with pytest.raises(RuntimeError, match="this process failed"):
        _build(project, "two", workers=2)
    assert not _loky_workers()
    assert not list(project.rglob(".medflow-tmp-*"))


def test_workers_are_worth_waking_only_for_work_left_beyond_their_start_at_the_pace_so_far():
    from medflow.threads import PACE_SECONDS, WORKER_START_SECONDS, worth_waking_workers

    per_unit = 0.01
    enough = int(WORKER_START_SECONDS / per_unit) + 1
    assert worth_waking_workers(PACE_SECONDS, int(PACE_SECONDS / per_unit), enough)
    assert not worth_waking_workers(PACE_SECONDS, int(PACE_SECONDS / per_unit), enough - 2)
    assert not worth_waking_workers(PACE_SECONDS / 2, 0, 10**6)  # not judged before PACE_SECONDS of work
    assert worth_waking_workers(PACE_SECONDS, 0, 11)  # the unit still running counts as the whole pace so far
    assert worth_waking_workers(0.0, 0, 1, start_seconds=0)  # a limit of 0: always
