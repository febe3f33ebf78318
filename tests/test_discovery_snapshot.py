"""Discovery snapshots: an unchanged folder is found again without asking the memo about its files,
and any change a discovery could see makes a full discovery, whose result is then what a
discovery without snapshots finds (`medflow.sources.discovery_snapshot`)."""

from __future__ import annotations

import os
import random
import shutil
from pathlib import Path

import numpy as np

from medflow.engine.build import build, prepare
from medflow.recipe.loader import load_recipe
from medflow.recipe.model import SeriesFilter
from medflow.sources.discovery import discover_dicom
from medflow.sources.fingerprint import FingerprintMemo
from tests.dicom_factory import write_ct_series, write_ct_slice


def _fresh(root: Path, flt: SeriesFilter | None = None, mismatched_size: str = "fail"):
    """What discovery finds with nothing remembered (the reference)."""
    found = discover_dicom(root, flt or SeriesFilter(), FingerprintMemo(None), mismatched_size)
    return found.items, found.skipped


def _remembering(root: Path, state: Path, flt: SeriesFilter | None = None, mismatched_size: str = "fail"):
    """A build's discovery: the memo file and the snapshots of ``state``, kept for the next one."""
    memo = FingerprintMemo(state / "fingerprints.json")
    found = discover_dicom(root, flt or SeriesFilter(), memo, mismatched_size, snapshots=state / "discovery")
    memo.save()
    return found


def _later(path: Path) -> None:
    """Move the file's mtime on (a change within the file system's clock tick could keep it)."""
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 2_000_000_000))


def test_an_unchanged_folder_is_found_again_without_a_memo_look_up(tmp_path, monkeypatch):
    root = tmp_path / "data"
    for series in range(3):
        write_ct_series(root, series, n_slices=3)
    (root / ".hidden").write_bytes(b"x")
    (root / "notes.txt").write_text("not DICOM")
    first = _remembering(root, tmp_path / "state")
    assert first.digests is None and (first.items, first.skipped) == _fresh(root)
    assert len(list((tmp_path / "state" / "discovery").iterdir())) == 1

    def asked(*args, **kwargs):
        raise AssertionError("the memo was asked about a file")

    for name in ("get_extra", "digest", "digest_many", "known_digest"):
        monkeypatch.setattr(FingerprintMemo, name, asked)
    again = _remembering(root, tmp_path / "state")
    assert (again.items, again.skipped) == (first.items, first.skipped)
    assert again.digests == {rel: blake3_of(root / rel) for item in first.items for rel in item.files}


def blake3_of(path: Path) -> str:
    import blake3

    return blake3.blake3(path.read_bytes()).hexdigest()


def _change(root: Path, rng: random.Random, step: int) -> str:
    """One random change to the folder; returns what it was."""
    files = sorted(p for p in root.rglob("*") if p.is_file())
    kind = rng.choice(["pixels", "add slice", "add series", "remove", "rename", "hidden", "junk", "odd size",
                       "touch", "same bytes"])
    victim = rng.choice(files) if files else None
    slices = [p for p in files if p.stem.startswith("slice") and p.parent.name.startswith("s")]
    if kind == "pixels" and slices:
        victim = rng.choice(slices)
        series, index = int(victim.parent.name[1:]), int(victim.stem[5:])
        write_ct_slice(victim, series=series, index=index, z=2.0 * index,
                       pixels=np.full((16, 16), step, np.int16))
        _later(victim)
    elif kind == "add slice":
        write_ct_slice(root / "s0" / f"slice{100 + step:03d}.dcm", series=0, index=100 + step, z=200.0 + step)
    elif kind == "add series":
        write_ct_series(root, 10 + step, n_slices=2)
    elif kind == "remove" and victim is not None:
        victim.unlink()
    elif kind == "rename" and victim is not None:
        victim.rename(victim.with_name(f"renamed{step}{victim.suffix}"))
    elif kind == "hidden":
        (root / f".hidden{step}").write_bytes(b"x")
    elif kind == "junk":
        (root / "s0" / f"junk{step}.dcm").write_bytes(b"not DICOM at all")
    elif kind == "odd size":
        write_ct_slice(root / "s1" / f"odd{step}.dcm", series=1, index=200 + step, z=400.0 + step, size=8)
    elif kind == "touch" and victim is not None:
        _later(victim)  # same bytes, new mtime: the memo rehashes, the result is the same
    elif kind == "same bytes" and victim is not None:
        victim.write_bytes(victim.read_bytes())  # rewritten as it was
        _later(victim)
    return kind


def test_every_change_a_discovery_could_see_gives_a_full_discovery(tmp_path):
    """A random walk of changes: after each, the remembered discovery equals a discovery from nothing."""
    root = tmp_path / "data"
    for series in range(3):
        write_ct_series(root, series, n_slices=3)
    rng = random.Random(7)
    seen = []
    for step in range(30):
        found = _remembering(root, tmp_path / "state")
        assert (found.items, found.skipped) == _fresh(root), f"after {seen}"
        again = _remembering(root, tmp_path / "state")  # unchanged: from the snapshot
        assert again.digests is not None and (again.items, again.skipped) == (found.items, found.skipped)
        seen.append(_change(root, rng, step))
    assert {"pixels", "add slice", "remove", "rename", "hidden", "junk", "odd size"} <= set(seen)


def test_another_filter_or_size_rule_is_another_discovery(tmp_path):
    root = tmp_path / "data"
    write_ct_series(root, 0, n_slices=3)
    write_ct_series(root, 1, n_slices=3)
    write_ct_slice(root / "s1" / "odd.dcm", series=1, index=9, z=20.0, size=8)
    state = tmp_path / "state"
    for flt, rule in [(SeriesFilter(), "fail"), (SeriesFilter(exclude=["s0/**"]), "fail"), (SeriesFilter(), "split"),
                      (SeriesFilter(), "fail")]:
        found = _remembering(root, state, flt, rule)
        assert (found.items, found.skipped) == _fresh(root, flt, rule)
        again = _remembering(root, state, flt, rule)
        assert (again.items, again.skipped) == (found.items, found.skipped)


def test_a_symbolic_link_or_a_damaged_snapshot_means_a_full_discovery(tmp_path):
    root = tmp_path / "data"
    write_ct_series(root, 0, n_slices=2)
    other = write_ct_series(tmp_path / "elsewhere", 5, n_slices=1)[0]
    (root / "link.dcm").symlink_to(other)
    state = tmp_path / "state"
    found = _remembering(root, state)
    assert not (state / "discovery").exists()  # a target can change behind its link: nothing kept
    assert (found.items, found.skipped) == _fresh(root)

    (root / "link.dcm").unlink()
    _remembering(root, state)
    (snapshot,) = (state / "discovery").iterdir()
    good = snapshot.read_bytes()
    for damaged in (good[:-10], good.replace(b'"series"', b'"SERIES"', 1), b"", b"{}\n"):
        snapshot.write_bytes(damaged)
        again = _remembering(root, state)
        assert again.digests is None and (again.items, again.skipped) == _fresh(root)
        assert snapshot.read_bytes() == good  # written again


def _recipe(tmp_path: Path, steps: str = "") -> Path:
    path = tmp_path / "r.yaml"
    path.write_text("medflow: 1\nname: r\nsource:\n  dicom: data\n" + steps
                    + "outputs:\n  dir: out\nengine:\n  workers: 1\n")
    return path


def test_builds_keep_snapshots_but_plan_verify_and_keyed_recipes_do_not(tmp_path, monkeypatch):
    write_ct_series(tmp_path / "data", 0, n_slices=2)
    snapshots = tmp_path / ".medflow" / "cache" / "discovery"
    prepare(load_recipe(_recipe(tmp_path)), record=False)  # plan, --dry-run: nothing written
    assert not snapshots.exists()
    assert build(load_recipe(_recipe(tmp_path)), verify=True, show_progress=False).exit_code == 0
    assert not snapshots.exists()
    monkeypatch.setenv("MEDFLOW_TEST_KEY", "k" * 32)
    keyed = _recipe(tmp_path, "steps:\n  - step: anonymize\n    profile: basic\n    key_env: MEDFLOW_TEST_KEY\n")
    report = build(load_recipe(keyed), show_progress=False)
    assert report.exit_code == 0 and not snapshots.exists()
    report = build(load_recipe(_recipe(tmp_path)), show_progress=False)
    assert report.exit_code == 0 and len(list(snapshots.iterdir())) == 1
    assert oct(next(snapshots.iterdir()).stat().st_mode & 0o777) == "0o600"  # paths and descriptions: owner only
    again = build(load_recipe(_recipe(tmp_path)), show_progress=False)
    assert again.from_cache == 1 and again.manifest["items"] == report.manifest["items"]


def test_a_rebuild_after_a_file_changed_rebuilds_that_item(tmp_path):
    write_ct_series(tmp_path / "data", 0, n_slices=2)
    write_ct_series(tmp_path / "data", 1, n_slices=2)
    first = build(load_recipe(_recipe(tmp_path)), show_progress=False)
    assert build(load_recipe(_recipe(tmp_path)), show_progress=False).from_cache == 2
    changed = write_ct_series(tmp_path / "data", 1, n_slices=2, pixels=np.full((16, 16), 7, np.int16))
    for path in changed:
        _later(path)
    again = build(load_recipe(_recipe(tmp_path)), show_progress=False)
    assert again.exit_code == 0 and again.computed == 1 and again.from_cache == 1
    before = {i["id"]: i["fingerprint"] for i in first.manifest["items"]}
    after = {i["id"]: i["fingerprint"] for i in again.manifest["items"]}
    assert sum(before[k] != after[k] for k in before) == 1
    shutil.rmtree(tmp_path / "data" / "s0")
    gone = build(load_recipe(_recipe(tmp_path)), show_progress=False)
    assert gone.exit_code == 0 and gone.total == 1
