"""A build never damages what is not its own: foreign folders, escaping writer folders, cleanup."""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

import pytest

from medflow.errors import WorkspaceError
from medflow.workspace import (
    CACHE_MARKER,
    ORPHAN_SECONDS,
    OUTPUT_MARKER,
    RUNS_FOLDER,
    claim_output,
    temp_name,
)
from tests.faults.helpers import QUICK, medflow, one_line, outputs_of, temp_files


def _listing(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_existing_foreign_folder_is_refused_and_left_untouched(project):
    user = project / "mine"
    user.mkdir()
    (user / ".keep.tmp").write_text("my own temp-looking file")
    (user / "notes.txt").write_text("notes")
    before = _listing(user)

    done = medflow(project, "run", "recipe.yaml", "-q", "--set", "outputs.dir=mine")

    assert done.returncode == 2, done.stdout + done.stderr
    line = one_line(done.stderr)
    assert str(user) in line and "--force" in line and OUTPUT_MARKER in line
    assert _listing(user) == before
    assert sorted(os.listdir(user)) == [".keep.tmp", "notes.txt"]  # no marker, no lock file


def test_force_adopts_a_folder_and_deletes_nothing_it_did_not_create(project, reference):
    user = project / "mine"
    user.mkdir()
    (user / ".keep.tmp").write_text("mine")
    (user / ".scan.npy.k3j2.tmp").write_text("looks like an old medflow temp file, but is not medflow's")

    done = medflow(project, "run", "recipe.yaml", "-q", "--force", "--set", "outputs.dir=mine")

    assert done.returncode == 0, done.stdout + done.stderr
    assert (user / ".keep.tmp").read_text() == "mine"
    assert (user / ".scan.npy.k3j2.tmp").exists()
    assert (user / OUTPUT_MARKER).is_file()
    items, files = outputs_of(user)
    assert (items, files) == reference(QUICK)
    again = medflow(project, "run", "recipe.yaml", "-q", "--set", "outputs.dir=mine")  # now marked: no --force
    assert again.returncode == 0, again.stdout + again.stderr
    assert (user / ".keep.tmp").read_text() == "mine"


def _as_older_medflow(project: Path) -> None:
    """Make ``out`` and the cache what medflow before BLAKE3 left: a version 1 manifest whose digests are
    sha256 (computed here with hashlib), no ownership marker, cache records checked with sha256."""
    out, samples = project / "out", project / "cache" / "samples" / "ct-phantom"
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["manifest_version"] = 1
    for item in manifest["items"]:
        item["files"] = [[rel, hashlib.sha256((samples / rel).read_bytes()).hexdigest()] for rel, _ in item["files"]]
        item["outputs"] = [{"path": o["path"], "sha256": hashlib.sha256((out / o["path"]).read_bytes()).hexdigest(),
                            "size": o["size"]} for o in item["outputs"]]
    (out / "manifest.json").write_text(json.dumps(manifest))
    (out / OUTPUT_MARKER).unlink()
    for path in (project / "cache" / "records").rglob("*.json"):
        wrapped = json.loads(path.read_text())
        body = json.dumps(wrapped["record"], sort_keys=True, separators=(",", ":")).encode()
        path.write_text(json.dumps({"record": wrapped["record"], "sha256": hashlib.sha256(body).hexdigest()}))


def test_a_build_of_an_older_medflow_is_recognised_and_a_foreign_folder_still_refused(project, reference):
    assert medflow(project, "run", "recipe.yaml", "-q").returncode == 0
    _as_older_medflow(project)
    out = project / "out"
    (out / "notes.txt").write_text("mine")
    before = _listing(out)

    plan = medflow(project, "plan", "recipe.yaml")
    assert plan.returncode == 0, plan.stdout + plan.stderr
    assert plan.stdout.count("the previous build recorded sha256 digests (an older medflow)") == 4, plan.stdout
    assert _listing(out) == before  # plan writes nothing

    done = medflow(project, "run", "recipe.yaml", "-q")  # no --force: its manifest says the folder is medflow's
    assert done.returncode == 0, done.stdout + done.stderr
    assert outputs_of(out) == reference(QUICK)  # the same outputs, recorded with blake3 again
    after = _listing(out)
    rewritten = {"manifest.json", "build.log"}  # the build's own record of this run
    assert {p: d for p, d in after.items() if p not in rewritten | {OUTPUT_MARKER}} == {
        p: d for p, d in before.items() if p not in rewritten}  # every output the same bytes, the user's file kept
    assert after["notes.txt"] == b"mine" and (out / OUTPUT_MARKER).is_file()
    assert json.loads(after["manifest.json"])["manifest_version"] == 2

    user = project / "mine"  # a manifest.json that is not medflow's does not make a folder medflow's
    user.mkdir()
    (user / "manifest.json").write_text('{"name": "my own", "sha256": "' + "0" * 64 + '"}')
    (user / "scan.npy").write_bytes(b"my own array")
    mine = _listing(user)
    refused = medflow(project, "run", "recipe.yaml", "-q", "--set", "outputs.dir=mine")
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert str(user) in one_line(refused.stderr) and "--force" in refused.stderr
    assert _listing(user) == mine and sorted(os.listdir(user)) == ["manifest.json", "scan.npy"]


def test_writer_folder_leaving_the_output_folder_is_refused_naming_the_line(project):
    (project / "recipe.yaml").write_text(QUICK.replace("  dir: out\n", "  dir: out\n  writers:\n    - kind: npy\n"
                                                                        "      folder: ../escaped\n"))
    done = medflow(project, "run", "recipe.yaml", "-q")

    assert done.returncode == 2
    assert "recipe.yaml:11:15: outputs.writers[0].folder: must be a relative folder inside the output folder" \
        in done.stderr
    assert "Traceback" not in done.stderr
    assert not (project / "escaped").exists() and not (project / "out").exists()


@pytest.mark.parametrize(
    "override, where",
    [
        ("outputs.dir=cache/samples/ct-phantom", None),  # inside the sample source (cache inside output is not it)
        ("engine.cache_dir=out/cache", "engine.cache_dir: is inside the output folder"),
    ],
    ids=["output-inside-sample-cache", "cache-inside-output"],
)
def test_folders_inside_each_other_are_refused(project, override, where):
    before = _listing(project / "cache")
    done = medflow(project, "run", "recipe.yaml", "-q", "--set", override)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    if where:
        assert where in done.stderr
    assert _listing(project / "cache") == before  # the sample files were not touched


def test_output_folder_equal_to_the_dicom_source_is_refused(project):
    (project / "recipe.yaml").write_text(QUICK.replace("source: {sample: ct-phantom}", "source: {dicom: scans}")
                                         .replace("  dir: out", "  dir: scans/"))
    (project / "scans").mkdir()
    done = medflow(project, "run", "recipe.yaml", "-q")
    assert done.returncode == 2
    assert "recipe.yaml:8:8: outputs.dir: is the source folder (source.dicom: 'scans')" in done.stderr


def test_cleanup_removes_only_dead_runs_medflow_temp_files(tmp_path):
    out, cache = tmp_path / "out", tmp_path / "cache"
    out.mkdir()
    cache.mkdir()
    with claim_output(out, cache_dir=cache, force=False, wait=False) as first:
        live = cache / "objects" / "ab" / temp_name("ab12.mfc")  # named for the first (live) run
        live.parent.mkdir(parents=True)
        live.write_bytes(b"in flight")
    # A dead run: its run lock file exists but nobody holds it.
    dead_id = "0123456789ab"
    (cache / RUNS_FOLDER / f"{dead_id}.lock").write_bytes(b"")
    dead = cache / "records" / "cd" / f".medflow-tmp-{dead_id}-00000000-cd34.json"
    dead.parent.mkdir(parents=True)
    dead.write_bytes(b"partial")
    # A process that held no run lock: kept while young, removed once old.
    young = cache / f".medflow-tmp-{'f' * 12}-00000000-fingerprints.json"
    old = cache / f".medflow-tmp-{'e' * 12}-00000000-fingerprints.json"
    for path in (young, old):
        path.write_bytes(b"x")
    stale = time.time() - ORPHAN_SECONDS - 60
    os.utime(old, (stale, stale))
    user = [out / ".keep.tmp", cache / ".medflow-tmpnotes", out / "tensors" / ".a.npy.x1y2.tmp"]
    for path in user:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"user")
    leftover_out = out / "tensors" / f".medflow-tmp-{dead_id}-00000000-a.npy"
    leftover_out.write_bytes(b"partial")

    with claim_output(out, cache_dir=cache, force=False, wait=False) as second:
        assert second.run_id != first.run_id
        assert not dead.exists() and not old.exists() and not leftover_out.exists()
        assert not (cache / RUNS_FOLDER / f"{dead_id}.lock").exists()
        assert young.exists()
        assert all(path.read_bytes() == b"user" for path in user)
    assert (cache / CACHE_MARKER).is_file() and (out / OUTPUT_MARKER).is_file()


def test_a_live_runs_cache_temp_files_survive_another_build(tmp_path):
    cache = tmp_path / "cache"
    with claim_output(tmp_path / "a", cache_dir=cache, force=False, wait=False) as running:
        in_flight = cache / "objects" / "ab" / temp_name("ab12.mfc")
        in_flight.parent.mkdir(parents=True)
        in_flight.write_bytes(b"in flight")
        with claim_output(tmp_path / "b", cache_dir=cache, force=False, wait=False) as other:
            assert other.run_id != running.run_id
            assert in_flight.exists()
        assert in_flight.exists()
    assert not in_flight.exists()  # the run removes its own leftovers when it ends


def test_second_claim_without_wait_is_refused(tmp_path):
    with claim_output(tmp_path / "out", force=False, wait=False):
        with pytest.raises(WorkspaceError, match="another medflow build is writing to this folder"):
            claim_output(tmp_path / "out", force=False, wait=False)


def test_killed_builds_leftovers_are_not_in_the_way(tmp_path):
    """A folder holding only medflow's lock and temp files of a dead run counts as empty."""
    out = tmp_path / "out"
    out.mkdir()
    (out / ".medflow-lock").write_bytes(b"")
    (out / f".medflow-tmp-{'1' * 12}-00000000-manifest.json").write_bytes(b"{")
    with claim_output(out, force=False, wait=False):
        pass
    assert sorted(os.listdir(out)) == [".medflow-lock", OUTPUT_MARKER]
    assert temp_files(out) == []


def test_a_claim_that_built_nothing_leaves_no_folder_behind(tmp_path):
    out, cache = tmp_path / "new" / "out", tmp_path / ".medflow" / "cache"
    with claim_output(out, cache_dir=cache, force=False, wait=False):
        assert (out / OUTPUT_MARKER).is_file() and (cache / CACHE_MARKER).is_file()
    assert os.listdir(tmp_path) == []
    with claim_output(out, cache_dir=cache, force=False, wait=False):
        (out / "manifest.json").write_text("{}")
    assert (out / OUTPUT_MARKER).is_file() and (out / "manifest.json").is_file()
    assert not cache.exists()


def test_temp_names_never_carry_the_target_extension():
    from medflow.workspace import temp_name, temp_run_id

    name = temp_name("ct-0123456789abcdef.npy")
    assert name.startswith(".medflow-tmp-") and name.endswith(".npy.tmp")
    assert temp_run_id(name) is not None
    assert not Path(name).match("*.npy")  # a training script's glob never sees a partial file
