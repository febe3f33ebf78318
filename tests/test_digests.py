"""Content digests are BLAKE3, and a build of an older medflow (sha256 digests) is still read.

Golden values come from the blake3 library on the files' bytes (or b3sum, the reference CLI,
when installed) and from hashlib, never from medflow.hashing.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import struct
import subprocess
from pathlib import Path

import blake3
import numpy as np
import pytest

import medflow.dataset as mds
from medflow import hashing
from medflow.diff import diff_builds, format_report, is_identical
from medflow.engine.build import build
from medflow.recipe.loader import load_recipe
from medflow.sample import Sample
from medflow.writers.atomic import atomic_write_bytes
from medflow.writers.tensors import NpyParams, NpyStream

# BLAKE3 of the empty input, from the BLAKE3 team's test vectors (test_vectors.json, input_len 0)
EMPTY_BLAKE3 = "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262"


def _b3(data: bytes) -> str:
    return blake3.blake3(data).hexdigest()


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    """The embedded phantom built into ``out`` (npy: streamed slab by slab) and ``png`` (written whole,
    atomically), sharing one cache."""
    root = tmp_path_factory.mktemp("digests")
    streamed = []
    close = NpyStream.close

    def counted_close(self):
        files = close(self)
        streamed.extend(files)
        return files

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(NpyStream, "close", counted_close)
        for name, writers in (("out", "[{kind: npy}]"), ("png", "[{kind: png}]")):
            recipe = root / f"{name}.yaml"
            recipe.write_text(
                f"medflow: 1\nname: digests\nsource: {{sample: ct-phantom}}\n"
                "steps: [{step: window, level: -600, width: 1500}, {step: layout, layout: NCHW, dtype: float32}]\n"
                f"outputs: {{dir: {name}, writers: {writers}}}\nengine: {{workers: 1, cache_dir: cache}}\n"
            )
            assert build(load_recipe(recipe), show_progress=False).exit_code == 0
    assert len(streamed) == 4  # every item of the phantom went through the streamed writer
    return root


def test_the_digest_is_blake3_and_files_are_read_across_chunks(tmp_path):
    assert hashing.digest_bytes(b"") == EMPTY_BLAKE3
    data = np.random.default_rng(0).integers(0, 256, (3 << 20) + 17, dtype=np.uint8).tobytes()  # 3 chunks + 17 B
    path = tmp_path / "f.bin"
    path.write_bytes(data)
    assert hashing.file_digest(path) == _b3(data)
    assert hashing.file_digest(path, "sha256") == _sha256(data)
    (tmp_path / "empty.bin").write_bytes(b"")
    assert hashing.file_digest(tmp_path / "empty.bin") == EMPTY_BLAKE3
    with pytest.raises(ValueError, match="unknown content digest algorithm 'md5'"):
        hashing.new_hasher("md5")


def test_an_entry_names_its_algorithm_and_the_current_one_wins():
    assert hashing.recorded_digest({"path": "a", "blake3": "b" * 64, "size": 1}) == ("blake3", "b" * 64)
    assert hashing.recorded_digest({"path": "a", "sha256": "c" * 64, "size": 1}) == ("sha256", "c" * 64)
    assert hashing.recorded_digest({"path": "a", "sha256": "c" * 64, "blake3": "b" * 64}) == ("blake3", "b" * 64)
    assert hashing.recorded_digest({"path": "a", "size": 1}) is None
    assert hashing.manifest_input_algorithm({"manifest_version": 1}) == "sha256"
    assert hashing.manifest_input_algorithm({"manifest_version": 2}) == "blake3"


def test_a_streamed_npy_records_the_blake3_of_its_file(tmp_path):
    pixels = np.random.default_rng(1).normal(0, 100, (7, 5, 6)).astype(np.float32)
    skeleton = Sample("ct-x", np.empty((7, 5, 6), np.float32), "zyx")  # the item's shape, as the engine gives it
    stream = NpyStream(skeleton, NpyParams(kind="npy"), tmp_path)
    for start in range(0, 7, 3):  # slabs of 3, 3, 1: the header goes out with the first
        stream.write(Sample("ct-x", pixels[start:start + 3], "zyx"))
    [written] = stream.close()
    data = (tmp_path / written.path).read_bytes()
    np.save(tmp_path / "whole.npy", pixels)
    assert data == (tmp_path / "whole.npy").read_bytes()
    assert written.digest == _b3(data) and written.size == len(data)
    assert written.record() == {"path": "tensors/ct-x.npy", "blake3": _b3(data), "size": len(data)}


def test_an_atomic_write_returns_the_blake3_of_its_bytes(tmp_path):
    data = b"medflow" * 100_000
    assert atomic_write_bytes(tmp_path / "a.bin", data) == _b3(data)
    assert (tmp_path / "a.bin").read_bytes() == data


@pytest.mark.parametrize("folder, suffix", [("out", ".npy"), ("png", ".png")], ids=["streamed-npy", "atomic-png"])
def test_every_output_and_input_of_a_build_is_recorded_with_its_blake3(built, folder, suffix):
    out, samples = built / folder, built / "cache" / "samples" / "ct-phantom"
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["manifest_version"] == 2 and manifest["cache_format"] == 4
    kinds = set()
    for item in manifest["items"]:
        for output in item["outputs"]:
            assert set(output) == {"path", "blake3", "size"}
            data = (out / output["path"]).read_bytes()
            assert output["blake3"] == _b3(data) and output["size"] == len(data)
            kinds.add(Path(output["path"]).suffix)
        pairs = [(rel, _b3((samples / rel).read_bytes())) for rel in (rel for rel, _ in item["files"])]
        assert [list(p) for p in pairs] == item["files"]  # input fingerprints: BLAKE3 of each input file
        fingerprint = hashlib.sha256()  # the item's fingerprint: sha256 over the sorted (path, digest) pairs
        for rel, digest in sorted(pairs):
            fingerprint.update(rel.encode() + b"\0" + digest.encode() + b"\n")
        assert item["fingerprint"] == fingerprint.hexdigest()
    assert kinds == {suffix}


def test_cache_entries_are_checked_with_the_blake3_of_their_bytes(built):
    entries = sorted((built / "cache" / "objects").rglob("*.mfc"))
    assert entries  # the stored values of each item (a streamed build's only checkpoint)
    for path in entries:
        data = path.read_bytes()
        meta_len, magic = struct.unpack("<Q8s", data[-16:])
        stop = len(data) - 16 - meta_len
        info = json.loads(data[stop:-16])["_array"]
        assert magic == b"MFCACHE3" and info["blake3"] == _b3(data[8:stop])


@pytest.mark.skipif(shutil.which("b3sum") is None, reason="b3sum (the BLAKE3 reference CLI) is not installed")
def test_b3sum_checks_a_build(built):
    out = built / "png"
    manifest = json.loads((out / "manifest.json").read_text())
    lines = "".join(f"{o['blake3']}  {o['path']}\n" for item in manifest["items"] for o in item["outputs"])
    done = subprocess.run(["b3sum", "--check"], input=lines, cwd=out, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def _as_older_medflow(out: Path, samples: Path) -> None:
    """Rewrite ``out``'s manifest as medflow before BLAKE3 wrote it: version 1, sha256 digests (hashlib)."""
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["manifest_version"] = 1
    for item in manifest["items"]:
        item["files"] = [[rel, _sha256((samples / rel).read_bytes())] for rel, _ in item["files"]]
        item["outputs"] = [{"path": o["path"], "sha256": _sha256((out / o["path"]).read_bytes()), "size": o["size"]}
                           for o in item["outputs"]]
    (out / "manifest.json").write_text(json.dumps(manifest))


def test_an_older_manifest_is_verified_with_sha256(built, tmp_path):
    old = tmp_path / "old"
    shutil.copytree(built / "out", old)
    _as_older_medflow(old, built / "cache" / "samples" / "ct-phantom")
    mds.open(old, verify=True)
    target = mds.open(old)[0].npy_path
    data = bytearray(target.read_bytes())
    data[-1] ^= 0xFF
    target.write_bytes(bytes(data))
    with pytest.raises(mds.DatasetError, match="sha256 .* differs from the manifest's") as info:
        mds.open(old, verify=True)
    assert str(target) in str(info.value)


def test_diff_compares_an_older_build_by_its_files(built, tmp_path):
    old = tmp_path / "old"
    shutil.copytree(built / "out", old)
    _as_older_medflow(old, built / "cache" / "samples" / "ct-phantom")
    report = diff_builds(old, built / "out")
    assert is_identical(report) and report["items"]["changed"] == []
    assert report["digests"] == ["sha256", "blake3"]
    assert "digests: sha256 -> blake3" in format_report(report)
    changed = tmp_path / "changed"
    shutil.copytree(built / "out", changed)
    victim = mds.open(changed)[1].npy_path
    data = bytearray(victim.read_bytes())
    data[-1] ^= 0xFF  # B's file differs from what A recorded (with sha256)
    victim.write_bytes(bytes(data))
    report = diff_builds(old, changed)
    [item] = report["items"]["changed"]
    assert item["outputs"]["changed"] == [victim.relative_to(changed).as_posix()]
