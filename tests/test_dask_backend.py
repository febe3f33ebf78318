"""The dask backend: a real distributed.LocalCluster (2 worker processes on loopback).

Same recipe, same inputs: the dask build writes the same output bytes and the same
manifest (apart from its ``run`` record) as the local backend.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from medflow.engine.build import build
from medflow.errors import UsageError
from medflow.recipe.loader import load_recipe
from tests.dicom_factory import write_ct_series

try:
    import distributed
except ImportError:  # the tests that need a cluster skip; the missing-dependency test still runs
    distributed = None

needs_dask = pytest.mark.skipif(distributed is None, reason="dask backend tests need: pip install 'medflow[dask]'")

RECIPE = """\
medflow: 1
name: dask-test
source:
  dicom: data
steps:
  - step: window
    level: -600
    width: 1500
  - step: colormap
    map: blue_red
  - step: color_space
    to: ycbcr
  - step: layout
    layout: NCHW
    dtype: float32
outputs:
  dir: out
  writers:
    - kind: npy
engine:
  workers: 1
  cache_dir: cache
"""


@pytest.fixture(scope="module")
def cluster():
    if distributed is None:
        pytest.skip("needs dask[distributed]")
    with distributed.LocalCluster(
        n_workers=2, processes=True, threads_per_worker=1, host="127.0.0.1", dashboard_address=":0",
        worker_dashboard_address=":0",
    ) as cluster:
        yield cluster


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """Two identical project folders, ``local/`` and ``dask/`` (data, recipe.yaml), one per backend."""
    for name in ("local", "dask"):
        for series in range(4):
            write_ct_series(tmp_path / name / "data", series, n_slices=3, size=16)
        (tmp_path / name / "recipe.yaml").write_text(RECIPE)
    return tmp_path


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _tasks_run_on_cluster(cluster) -> int:
    """Tasks calling run_item that finished on the cluster (joblib names them batch_of_run_item_...)."""
    prefixes = cluster.scheduler.task_prefixes
    return sum(p.state_counts["memory"] for name, p in prefixes.items() if "run_item" in name)


def _stable(manifest: dict) -> dict:
    return {k: v for k, v in manifest.items() if k != "run"}


@needs_dask
def test_dask_build_writes_the_same_bytes_and_manifest_as_the_local_backend(project, cluster):
    local = build(load_recipe(project / "local" / "recipe.yaml"), show_progress=False)
    before = _tasks_run_on_cluster(cluster)
    remote = build(load_recipe(project / "dask" / "recipe.yaml"), show_progress=False, backend="dask", address=cluster.scheduler_address)
    assert local.exit_code == 0 and remote.exit_code == 0
    assert remote.ok == 4 and remote.computed == 4
    assert _tasks_run_on_cluster(cluster) - before == 4, "every item must run on the cluster's workers"
    local_files, remote_files = _files(project / "local" / "out"), _files(project / "dask" / "out")
    assert len([f for f in local_files if f.endswith(".npy")]) == 4
    manifest_local = json.loads(local_files.pop("manifest.json"))
    manifest_remote = json.loads(remote_files.pop("manifest.json"))
    assert remote_files == local_files
    assert _stable(manifest_remote) == _stable(manifest_local)
    assert sorted(manifest_remote["run"]["computed"]) == sorted(manifest_local["run"]["computed"])


@needs_dask
def test_dask_workers_write_cache_entries_so_a_rebuild_computes_nothing(project, cluster):
    address = cluster.scheduler_address
    first = build(load_recipe(project / "dask" / "recipe.yaml"), show_progress=False, backend="dask", address=address)
    assert first.computed == 4
    again = build(load_recipe(project / "dask" / "recipe.yaml"), show_progress=False, backend="dask", address=address)
    assert again.computed == 0 and again.from_cache == 4
    changed = build(load_recipe(project / "dask" / "recipe.yaml", overrides=["steps[3].dtype=float16"]),
                    show_progress=False, backend="dask", address=address)
    assert changed.computed == 4 and changed.exit_code == 0
    assert not list((project / "dask" / "cache").glob(".dask-probe*")), "the storage probe must be removed"


@needs_dask
def test_recipe_engine_backend_dask_reaches_the_cluster(project, cluster):
    text = (project / "dask" / "recipe.yaml").read_text() + f"  backend: dask\n  address: {cluster.scheduler_address}\n"
    (project / "dask" / "recipe.yaml").write_text(text)
    report = build(load_recipe(project / "dask" / "recipe.yaml"), show_progress=False)
    assert report.exit_code == 0 and report.computed == 4
    assert report.manifest["items"][0]["outputs"]


@needs_dask
def test_an_unreachable_scheduler_is_a_usage_error_naming_the_address(project, monkeypatch):
    import medflow.engine.dask_backend as backend

    monkeypatch.setattr(backend, "CONNECT_TIMEOUT_S", 1)
    with pytest.raises(UsageError, match="tcp://127.0.0.1:9"):
        build(load_recipe(project / "dask" / "recipe.yaml"), show_progress=False, backend="dask", address="tcp://127.0.0.1:9")


@needs_dask
def test_a_worker_that_does_not_see_the_source_folder_is_refused(project, cluster, tmp_path):
    from medflow.engine.dask_backend import check_workers
    from medflow.engine.prepare import make_task as _task
    from medflow.engine.prepare import prepare

    prepared = prepare(load_recipe(project / "local" / "recipe.yaml"))
    task = _task(prepared, prepared.plans[0])
    moved = replace(task, item=replace(task.item, root=str(tmp_path / "nowhere")))
    with distributed.Client(cluster.scheduler_address, set_as_default=False) as client:
        check_workers(client, [task])  # the real folders: accepted
        with pytest.raises(UsageError, match="cannot see the source folder .*nowhere"):
            check_workers(client, [moved])


def test_missing_distributed_is_a_usage_error_naming_the_extra(project, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "distributed", None)  # makes `import distributed` raise ImportError
    with pytest.raises(UsageError, match=r"pip install 'medflow\[dask\]'"):
        build(load_recipe(project / "dask" / "recipe.yaml"), show_progress=False, backend="dask", address="tcp://127.0.0.1:9")


@needs_dask
def test_many_quick_items_go_to_the_cluster_several_per_task_and_build_as_locally(tmp_path, cluster):
    """Tiny series take milliseconds, the scheduler's round trip about as long: joblib's auto-batching
    sends them several to a Dask task (fewer tasks than items), with the local backend's bytes."""
    for name in ("local", "dask"):
        for series in range(80):
            write_ct_series(tmp_path / name / "data", series, n_slices=2, size=8)
        (tmp_path / name / "recipe.yaml").write_text(RECIPE)
    local = build(load_recipe(tmp_path / "local" / "recipe.yaml"), show_progress=False)
    before = _tasks_run_on_cluster(cluster)
    remote = build(load_recipe(tmp_path / "dask" / "recipe.yaml"), show_progress=False, backend="dask",
                   address=cluster.scheduler_address)
    assert local.exit_code == 0 and remote.exit_code == 0 and remote.computed == 80
    tasks = _tasks_run_on_cluster(cluster) - before
    assert 0 < tasks < 80, f"{tasks} Dask tasks for 80 quick items"
    local_files, remote_files = _files(tmp_path / "local" / "out"), _files(tmp_path / "dask" / "out")
    assert _stable(json.loads(remote_files.pop("manifest.json"))) == _stable(json.loads(local_files.pop("manifest.json")))
    assert remote_files == local_files and len([f for f in remote_files if f.endswith(".npy")]) == 80
