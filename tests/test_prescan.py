"""Discovery's prescan on worker processes (:mod:`medflow.sources.prescan`).

Many new files are read (header facts, content digest) on real loky worker processes; whatever
they read, the discovery must be the one a serial scan makes: the same items, fingerprints and
skip reasons, on every file of ../shared/data and pydicom's test files (broken, non-image,
multi-frame, odd encodings included). What a worker read of a file that changed is not taken.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydicom.data import get_testdata_file

from medflow.cli import main
from medflow.engine.execute import map_on_workers
from medflow.recipe.model import SeriesFilter
from medflow.sources import discovery, fingerprint, prescan
from medflow.sources.discovery import discover_dicom
from medflow.sources.fingerprint import FingerprintMemo
from medflow.sources.instances import discover_instances
from tests.conftest import shared_data_path
from tests.dicom_factory import write_ct_slice

PYDICOM_FILES = Path(get_testdata_file("CT_small.dcm")).parent


def _on_two_workers(function, chunks):
    return map_on_workers(function, chunks, 2)


def _found(found) -> tuple[list, list]:
    items = [
        (i.item_id, i.kind, i.files, i.fingerprint, i.notes, i.modality, i.series_description) for i in found.items
    ]
    return items, sorted(found.skipped)


@pytest.fixture
def every_file_prescanned(monkeypatch):
    monkeypatch.setattr(prescan, "MIN_FILES", 1)


@pytest.fixture
def parent_reads(monkeypatch):
    """Counts the header scans and file digests this process (not a worker) makes."""
    counts = {"headers": 0, "digests": 0}
    real_facts, real_digest = discovery.header_facts, fingerprint.file_digest

    def counted_facts(path):
        counts["headers"] += 1
        return real_facts(path)

    def counted_digest(path, *args):
        counts["digests"] += 1
        return real_digest(path, *args)

    monkeypatch.setattr(discovery, "header_facts", counted_facts)
    monkeypatch.setattr(fingerprint, "file_digest", counted_digest)
    return counts


def _corpora() -> list:
    return [pytest.param(lambda: shared_data_path(), id="shared-data"), pytest.param(lambda: PYDICOM_FILES, id="pydicom")]


@pytest.mark.parametrize("corpus", _corpora())
def test_workers_find_what_a_serial_discovery_finds(corpus, every_file_prescanned, parent_reads, tmp_path):
    root = corpus()
    parallel = discover_dicom(root, SeriesFilter(), FingerprintMemo(tmp_path / "memo.json"), "fail", _on_two_workers)
    assert parent_reads == {"headers": 0, "digests": 0}  # the workers read every file
    serial = discover_dicom(root, SeriesFilter(), FingerprintMemo(None))
    assert parent_reads["headers"] > 0 and parent_reads["digests"] > 0
    assert _found(parallel) == _found(serial)
    assert parallel.items and parallel.skipped  # the corpora have both


def test_what_workers_read_is_memoized_for_the_next_build(every_file_prescanned, parent_reads, tmp_path):
    root = shared_data_path("dcm_qa_ct")
    memo = FingerprintMemo(tmp_path / "memo.json")
    first = discover_dicom(root, SeriesFilter(), memo, "fail", _on_two_workers)
    memo.save()
    again = discover_dicom(root, SeriesFilter(), FingerprintMemo(tmp_path / "memo.json"))  # one worker: serial
    assert parent_reads == {"headers": 0, "digests": 0}
    assert _found(again) == _found(first)


def test_a_de_identifying_build_keeps_no_header_facts_from_workers(every_file_prescanned, tmp_path):
    root = shared_data_path("deid_data_phi")
    memo = FingerprintMemo(tmp_path / "memo.json", secret=b"k" * 32)
    parallel = discover_dicom(root, SeriesFilter(), memo, "fail", _on_two_workers)
    memo.save()
    assert _found(parallel) == _found(discover_dicom(root, SeriesFilter(), FingerprintMemo(None)))
    saved = (tmp_path / "memo.json").read_text()
    assert discovery._HEADER_MEMO not in saved and str(root) not in saved


def test_a_worker_that_dies_leaves_its_files_to_the_parent(every_file_prescanned, tmp_path):
    root = shared_data_path("dcm_qa_ts")

    def dies_after_one_chunk(function, chunks):
        yield function(chunks[0])
        raise RuntimeError("worker killed")

    memo = FingerprintMemo(tmp_path / "memo.json")
    found = discover_dicom(root, SeriesFilter(), memo, "fail", dies_after_one_chunk)
    assert _found(found) == _found(discover_dicom(root, SeriesFilter(), FingerprintMemo(None)))


def test_instance_discovery_on_workers_is_the_serial_one(every_file_prescanned, parent_reads, tmp_path):
    root = shared_data_path("deid_data_phi")
    parallel = discover_instances(root, SeriesFilter(), FingerprintMemo(tmp_path / "memo.json"), _on_two_workers)
    assert parent_reads["digests"] == 0
    serial = discover_instances(root, SeriesFilter(), FingerprintMemo(None))
    assert _found(parallel) == _found(serial) and parallel.items


def test_few_new_files_are_read_by_the_parent(tmp_path, parent_reads):
    for i in range(3):
        write_ct_slice(tmp_path / "s" / f"{i}.dcm", series=1, index=i, z=float(i))

    def no_workers(function, chunks):
        raise AssertionError("workers woken for 3 files")

    found = discover_dicom(tmp_path / "s", SeriesFilter(), FingerprintMemo(None), "fail", no_workers)
    assert len(found.items) == 1 and parent_reads["headers"] == 3


def test_a_file_changed_since_a_worker_read_it_is_not_taken(tmp_path):
    path = tmp_path / "a.dcm"
    write_ct_slice(path, series=1, index=0, z=0.0)
    seen = os.stat(path)
    with open(path, "ab") as f:
        f.write(b"\0\0")  # changed after the worker's read
    memo = FingerprintMemo(None)
    assert not memo.prime(str(path), seen.st_size, seen.st_mtime_ns, "0" * 64, {"facts": {"x": 1}})
    assert memo.known_digest(str(path)) is None and memo.get_extra(str(path), "facts") is None
    now = os.stat(path)
    assert memo.prime(str(path), now.st_size, now.st_mtime_ns, "0" * 64, {"facts": {"x": 1}})
    assert memo.digest(path) == "0" * 64 and memo.get_extra(str(path), "facts") == {"x": 1}


def test_a_worker_drops_a_file_that_changes_while_it_reads(tmp_path):
    path = tmp_path / "a.dcm"
    write_ct_slice(path, series=1, index=0, z=0.0)

    def read_while_written(name):
        with open(name, "ab") as f:
            f.write(b"\0\0")
        return {}, "digest"

    assert prescan._scan([str(path)], read_while_written) == []
    assert prescan._scan([str(path)], lambda name: ({}, "digest"))[0][4] == "digest"


def test_a_worker_never_opens_a_fifo(tmp_path):
    fifo = tmp_path / "pipe.dcm"
    os.mkfifo(fifo)

    def read(name):
        raise AssertionError("opened a FIFO: a read would block forever")

    assert prescan._scan([str(fifo)], read) == []


def test_plan_reads_new_files_on_workers(every_file_prescanned, tmp_path, capsys, parent_reads):
    for i in range(4):
        write_ct_slice(tmp_path / "data" / f"{i}.dcm", series=1, index=i, z=float(i))
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        "medflow: 1\nname: r\nsource:\n  dicom: data\nsteps:\n  - step: window\n    level: 40\n    width: 400\n"
        "outputs:\n  dir: out\n  writers:\n    - kind: npy\n"
    )
    assert main(["plan", str(recipe), "--workers", "2"]) == 0
    on_workers = capsys.readouterr().out
    assert parent_reads == {"headers": 0, "digests": 0}
    assert main(["plan", str(recipe), "--workers", "1"]) == 0
    assert capsys.readouterr().out == on_workers and "1 items" in on_workers
    assert main(["plan", str(recipe), "--workers", "0"]) == 2
    assert "--workers must be an integer >= 1" in capsys.readouterr().err
