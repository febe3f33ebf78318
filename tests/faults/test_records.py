"""Records that are true: a damaged cache record or an output changed in place never reaches the manifest."""

from __future__ import annotations

import json

import blake3

from tests.faults.helpers import QUICK, medflow, outputs_of


def _manifest_matches_disk(out) -> None:
    items, files = outputs_of(out)
    for _, status, outputs in items:
        assert status == "ok"
        for output in outputs:
            assert files[output["path"]] == output["blake3"], output["path"]


def test_a_damaged_record_is_rederived_not_believed(project, reference):
    assert medflow(project, "run", "recipe.yaml", "-q").returncode == 0
    records = sorted((project / "cache" / "records").rglob("*.json"))
    damaged = 0
    for path in records:  # valid JSON, wrong content: the checksum catches it
        data = json.loads(path.read_text())
        if "blake3" in data and data["record"].get("outputs"):
            for output in data["record"]["outputs"]:
                output["blake3"] = "0" * 64
            path.write_text(json.dumps(data))
            damaged += 1
    assert damaged
    done = medflow(project, "run", "recipe.yaml", "-q")
    assert done.returncode == 0, done.stderr
    _manifest_matches_disk(project / "out")
    assert outputs_of(project / "out") == reference(QUICK)


def test_an_output_changed_in_place_is_rebuilt(project, reference):
    assert medflow(project, "run", "recipe.yaml", "-q").returncode == 0
    manifest = json.loads((project / "out" / "manifest.json").read_text())
    victim = project / "out" / manifest["items"][0]["outputs"][0]["path"]
    data = bytearray(victim.read_bytes())
    data[-1] ^= 0xFF  # same size, other bytes
    victim.write_bytes(bytes(data))
    done = medflow(project, "run", "recipe.yaml", "-q")
    assert done.returncode == 0, done.stderr
    assert "1 computed" in done.stdout
    assert blake3.blake3(victim.read_bytes()).hexdigest() == manifest["items"][0]["outputs"][0]["blake3"]
    assert outputs_of(project / "out") == reference(QUICK)
