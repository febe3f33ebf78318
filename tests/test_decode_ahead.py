"""A compressed series decoded here and on worker processes at once: same values, same errors.

The scheduling (take in order, steal what no worker started, never wait on workers that are
not up, a worker's failure is decoded again here) is driven with real executors whose
workers the test holds back or lets go; the decoding on a worker runs in a real loky worker
process; whole builds with 1 and 2 workers give the same bytes.
"""

from __future__ import annotations

import os
import subprocess
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pydicom
import pytest

from medflow import threads
from medflow.engine.build import build
from medflow.recipe.loader import load_recipe
from medflow.sources.decode_ahead import DecodeAhead
from medflow.sources.series import decode_stored_slice
from tests.dicom_factory import write_ct_series
from tests.test_transfer_syntax_builds import RECIPE, _tool


def _value(index: int) -> np.ndarray:
    return np.full((2, 2), index, dtype=np.int16)


class _Gate:
    """A thread pool whose workers start only once ``open()`` is called (as loky's before they are up)."""

    def __init__(self, workers: int = 1):
        self.pool = ThreadPoolExecutor(workers)
        self.opened = threading.Event()
        self.ran: list[int] = []

    def open(self) -> None:
        self.opened.set()

    def submit(self, function, argument):
        def run():
            self.opened.wait(10)
            self.ran.append(argument)
            return function(argument)

        return self.pool.submit(run)


def _here(log: list[int], fail: set[int] = frozenset()):
    def decode(index: int) -> np.ndarray:
        log.append(index)
        if index in fail:
            raise ValueError(f"slice {index} is broken")
        return _value(index)

    return decode


def _ahead(count: int, here, submit, window: int, remote=_value, **kwargs) -> DecodeAhead:
    """A DecodeAhead whose workers are woken at the first slice taken (unless ``start_after`` says otherwise)."""
    kwargs.setdefault("start_after", 0)
    return DecodeAhead(count, here, lambda: submit, remote, lambda index: index, window=window, **kwargs)


def _wait_for(condition, seconds: float = 10) -> None:
    for _ in range(int(seconds / 0.01)):
        if condition():
            return
        threading.Event().wait(0.01)
    raise AssertionError("timed out")


def test_slices_come_in_order_with_their_own_values_whoever_decodes_them():
    gate = _Gate()
    here: list[int] = []
    ahead = _ahead(30, _here(here), gate.submit, window=6)
    taken = []
    for index in range(30):
        if index == 3:
            gate.open()  # the worker comes up while the reader is at slice 3: it decodes the probe ...
            _wait_for(lambda: 29 in gate.ran)
            threading.Event().wait(0.05)  # (the probe's future is done a moment after it ran)
        if index == 8:  # ... and then what was submitted ahead of the reader
            _wait_for(lambda: 13 in gate.ran)
        taken.append(ahead.take(index))
    ahead.close()
    assert all(np.array_equal(array, _value(i)) for i, array in enumerate(taken))
    assert here[:3] == [0, 1, 2]  # workers not up: the reader did not wait for them
    assert gate.ran[0] == 29, "the probe is the last slice"
    assert 29 not in here and set(range(9, 14)) - set(here), "no slice came from the worker"
    assert set(here) | set(gate.ran) >= set(range(30))
    assert ahead.workers_used


def test_until_a_probe_answers_the_reader_submits_nothing_more_and_decodes_every_slice_itself():
    gate = _Gate()  # never opened: loky queues calls as "running" before its workers are up
    here: list[int] = []
    submitted: list[int] = []

    def submit(function, argument):
        submitted.append(argument)
        return gate.submit(function, argument)

    ahead = _ahead(12, _here(here), submit, window=4)
    assert [int(ahead.take(i)[0, 0]) for i in range(12)] == list(range(12))
    ahead.close()
    assert submitted == [11], "only the probe went to the workers"
    assert sorted(here) == list(range(12)) and not gate.ran and not ahead.workers_used
    gate.open()


def test_the_reader_wakes_workers_only_when_its_pace_says_the_slices_left_are_worth_it():
    woken: list[int] = []

    def start():
        woken.append(1)
        return None  # no workers to be had: the reader decodes on

    def slow(index: int) -> np.ndarray:
        threading.Event().wait(0.004)
        return _value(index)

    quick = DecodeAhead(200, _value, start, _value, lambda index: index, window=4, start_after=1.0)
    assert [int(quick.take(i)[0, 0]) for i in range(200)] == list(range(200))
    assert not woken, "200 slices of microseconds do not pay for a worker"
    long = DecodeAhead(300, slow, start, _value, lambda index: index, window=4, start_after=0.3)
    for index in range(300):
        assert int(long.take(index)[0, 0]) == index
        if woken:
            break
    # judged after PACE_SECONDS of decoding (~25 slices of 4 ms), while > 0.3 s of slices were left
    assert woken == [1] and 20 <= index < 225, index


def test_errors_surface_at_their_slice_in_order_even_when_decoded_ahead():
    gate = _Gate()
    gate.open()
    slow_remote = _here([], fail={6})  # the worker fails on the broken file too, slowly
    here: list[int] = []
    ahead = _ahead(12, _here(here, fail={6}), gate.submit, window=8,
                   remote=lambda index: threading.Event().wait(0.03) or slow_remote(index))
    for index in range(6):  # slice 6 may be decoded here early (stolen): its error waits for it
        assert int(ahead.take(index)[0, 0]) == index
        if index == 0:
            _wait_for(lambda: 11 in gate.ran)  # the probe answered: the next slices go to the worker
    with pytest.raises(ValueError, match="slice 6 is broken"):
        ahead.take(6)
    ahead.close()


def test_a_worker_failure_is_decoded_again_here_and_the_files_own_error_counts():
    def remote(index: int) -> np.ndarray:
        raise RuntimeError("worker lost its way")

    pool = ThreadPoolExecutor(1)
    futures = []

    def submit(function, argument):
        futures.append(pool.submit(function, argument))
        return futures[-1]

    here: list[int] = []
    ahead = _ahead(5, _here(here, fail={4}), submit, window=3, remote=remote)
    taken = [int(ahead.take(0)[0, 0])]
    _wait_for(lambda: futures and all(future.done() for future in futures))  # the probe (slice 4) failed
    taken += [int(ahead.take(i)[0, 0]) for i in range(1, 4)]
    assert taken == [0, 1, 2, 3] and ahead.workers_used
    with pytest.raises(ValueError, match="slice 4 is broken"):  # not the worker's RuntimeError
        ahead.take(4)
    assert sorted(set(here)) == [0, 1, 2, 3, 4]


def test_a_pool_that_cannot_take_work_leaves_every_slice_to_the_reader():
    def refuse(function, argument):
        raise RuntimeError("cannot schedule new futures after shutdown")

    here: list[int] = []
    ahead = _ahead(4, _here(here), refuse, window=3)
    assert [int(ahead.take(i)[0, 0]) for i in range(4)] == [0, 1, 2, 3] and here == [0, 1, 2, 3]


@pytest.fixture(scope="module")
def jpeg_series(tmp_path_factory) -> Path:
    """A 24-slice CT series in JPEG Lossless (dcmtk), 64 x 64."""
    folder = tmp_path_factory.mktemp("jpeg")
    plain = folder / "plain"
    rng = np.random.default_rng(3)
    for path in write_ct_series(plain, 1, n_slices=24, size=64):
        ds = pydicom.dcmread(path)
        ds.PixelData = rng.integers(-1024, 3000, size=(64, 64)).astype(np.int16).tobytes()
        pydicom.dcmwrite(path, ds, enforce_file_format=True)
        target = folder / "data" / path.relative_to(plain)
        target.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([_tool("dcmcjpeg"), "--encode-lossless-sv1", str(path), str(target)], check=True,
                       capture_output=True)
    return folder / "data"


def test_a_slice_decoded_on_a_real_worker_process_equals_the_decoding_here(jpeg_series):
    from medflow.engine.execute import WorkerSubmit
    from medflow.sources.pixels import decode_file

    path = sorted(jpeg_series.rglob("*.dcm"))[5]
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    submit = WorkerSubmit(1)
    remote = submit(decode_stored_slice, (str(path), str(ds.file_meta.TransferSyntaxUID), 64, 64, "<i2")).result(120)
    assert remote.dtype == np.int16 and np.array_equal(remote, decode_file(path, ds))
    assert np.array_equal(remote, pydicom.dcmread(path).pixel_array)


def test_decoding_workers_are_the_cores_the_item_leaves(monkeypatch):
    import medflow.engine.execute as execute

    def cores(n):
        monkeypatch.setattr(execute, "usable_cores", lambda: n)

    cores(2)
    assert execute.decode_workers(2) == 0  # measured no faster (JPEG) or slower (RLE) on 2 cores
    cores(8)
    assert execute.decode_workers(8) == 6 and execute.decode_workers(2) == 1 and execute.decode_workers(1) == 0


def test_one_compressed_series_builds_to_the_same_bytes_with_one_and_two_workers(jpeg_series, tmp_path, monkeypatch):
    import medflow.engine.execute as execute
    import medflow.sources.series as series

    monkeypatch.setattr(execute, "usable_cores", lambda: 8)  # decoding workers even on a 2-core machine
    made = []
    original = series._decode_ahead
    monkeypatch.setattr(series, "_decode_ahead", lambda *a: made.append(a[3] is not None) or original(*a))
    # the slices take 50 ms each here, so a worker is worth waking (and, warm, answers before the end)
    monkeypatch.setattr(threads, "WORKER_START_SECONDS", 0.2)
    slow_here = series._decoded_from_facts
    monkeypatch.setattr(series, "_decoded_from_facts", lambda *a: threading.Event().wait(0.05) or slow_here(*a))
    used = []
    close = DecodeAhead.close
    monkeypatch.setattr(DecodeAhead, "close", lambda self: used.append(self.workers_used) or close(self))
    execute.worker_processes(1).submit(os.getpid).result(120)
    outputs = {}
    for workers in (1, 2):
        work = tmp_path / f"w{workers}"
        work.mkdir()
        (work / "recipe.yaml").write_text(RECIPE.format(data=jpeg_series, out=work / "out", cache=work / "cache"))
        report = build(load_recipe(work / "recipe.yaml"), workers=workers, show_progress=False)
        assert report.exit_code == 0 and report.ok == 1, report.failed
        (tensor,) = sorted((work / "out" / "tensors").glob("*.npy"))
        outputs[workers] = tensor.read_bytes()
    assert outputs[1] == outputs[2]
    assert made == [False, True]  # 2 workers: the one item had decoding workers ...
    assert used == [True]  # ... and used them
