"""The interleaved gather: a 3-channel pixel gathered padded to 4 channels is the same bytes as gathered whole."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from medflow.engine import gather


def _table(dtype: str, rng: np.random.Generator, n_values: int = 65536) -> np.ndarray:
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        lut = rng.normal(0, 1e3, size=(n_values, 3)).astype(dtype)
        bits = lut.view(np.uint32)
        # bit patterns a float move must keep: quiet and signalling NaNs with payloads, -0.0, infinities
        bits[:6, 0] = [0x7FC00001, 0x7F800001, 0xFFBADBAD, 0x80000000, 0x7F800000, 0xFF800000]
        return lut
    info = np.iinfo(dtype)
    lut = rng.integers(info.min, info.max, size=(n_values, 3), endpoint=True, dtype=dtype)
    if dtype.itemsize == 4:  # int32 rows that read as NaNs when viewed as float32
        lut.view(np.uint32)[:3, 1] = [0x7F800001, 0xFFFFFFFF, 0x7FC0BEEF]
    return lut


@pytest.mark.parametrize("dtype", ["uint8", "int8", "uint16", "int16", "float32", "int32", "uint32"])
@pytest.mark.parametrize("padded_way", [True, False], ids=["padded", "whole-pixel"])
def test_a_three_channel_gather_copies_the_table_rows_bit_for_bit(dtype, padded_way, monkeypatch):
    monkeypatch.setattr(gather, "PADDED_AFTER_PIXELS", 0)
    rng = np.random.default_rng(7)
    lut = _table(dtype, rng)
    interleaved = lut.view(np.dtype((np.void, 3 * lut.dtype.itemsize))).reshape(-1)
    padded = gather.padded_table(lut)
    assert padded is not None and padded.itemsize == 4 * lut.dtype.itemsize
    index = rng.integers(0, 65536, size=(37, 53), dtype=np.uint16)
    index[0, :6] = np.arange(6)  # the special bit patterns are gathered
    out = np.full((37, 53, 3), 0x55, np.uint8).view(lut.dtype).reshape(37, 53, 3) if lut.dtype.itemsize == 1 \
        else np.empty((37, 53, 3), lut.dtype)
    gather.take_interleaved(interleaved, padded if padded_way else None, index, out)
    assert out.tobytes() == lut[index].tobytes()


def test_only_three_channels_of_one_two_or_four_bytes_are_padded():
    assert gather.padded_table(np.zeros((256, 3), np.float64)) is None  # 24 bytes: no single-move element
    assert gather.padded_table(np.zeros((256, 4), np.uint8)) is None  # 4 bytes: one move already
    assert gather.padded_table(np.zeros((256, 2), np.float32)) is None
    assert gather.padded_table(np.zeros(256, np.uint8)) is None


def test_the_padded_way_waits_until_the_process_has_gathered_enough_to_pay_for_opencv(monkeypatch):
    monkeypatch.setattr(gather, "_plain_pixels", 0)
    monkeypatch.setattr(gather, "PADDED_AFTER_PIXELS", 1000)
    monkeypatch.setattr(gather, "is_loaded", lambda name: False)
    assert not gather._padding_pays(600)
    assert not gather._padding_pays(600)  # 600 gathered before: still under 1000
    assert gather._padding_pays(600)


def test_gather_threads_each_use_their_own_scratch_slice(monkeypatch):
    monkeypatch.setattr(gather, "PADDED_AFTER_PIXELS", 0)
    rng = np.random.default_rng(3)
    lut = _table("uint8", rng)
    interleaved = lut.view(np.dtype((np.void, 3))).reshape(-1)
    padded = gather.padded_table(lut)
    indices = [rng.integers(0, 65536, size=(64, 64), dtype=np.uint16) for _ in range(4)]
    outs = [np.empty((64, 64, 3), np.uint8) for _ in indices]

    def work(k: int) -> None:
        for _ in range(200):
            gather.take_interleaved(interleaved, padded, indices[k], outs[k])

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for index, out in zip(indices, outs, strict=True):
        assert np.array_equal(out, lut[index])
