"""The dicomweb source against a real Orthanc (DICOMweb plugin, authentication on, loopback only)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pydicom
import pytest
import yaml

from medflow.cli import main
from medflow.engine.build import build
from medflow.recipe.loader import load_recipe
from medflow.sources import dicomweb_http
from tests.conftest import shared_data_path
from tests.dicomweb_server import Orthanc

pytestmark = [pytest.mark.shared_data, pytest.mark.slow]


def _files(*parts: str) -> list[Path]:
    return sorted(p for p in shared_data_path(*parts).rglob("*") if p.is_file() and p.suffix in (".dcm", ""))


def _dicom(files: list[Path]) -> list[Path]:
    return [f for f in files if f.read_bytes()[128:132] == b"DICM"]


@pytest.fixture
def orthanc(tmp_path, monkeypatch):
    server = Orthanc(tmp_path / "orthanc").start()
    for name, value in server.env().items():
        monkeypatch.setenv(name, value)
    yield server
    server.stop()


def _recipe(tmp_path: Path, source: dict, name: str = "pacs", out: str = "out", **extra) -> Path:
    recipe = {
        "medflow": 1, "name": name, "source": source,
        "steps": [{"step": "window", "level": 40, "width": 400}],
        "outputs": {"dir": str(tmp_path / out), "writers": [{"kind": "npy"}]},
        "engine": {"workers": 1, "cache_dir": str(tmp_path / f"cache-{out}")},
        **extra,
    }
    path = tmp_path / f"{name}-{out}.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def _pacs(server: Orthanc, **query) -> dict:
    return {"dicomweb": {"url": server.url, "query": query, "retries": 1, "backoff_seconds": 0.05,
                         "auth": {"user_env": "PACS_USER", "password_env": "PACS_PASSWORD"}}}


def _layout(files: list[Path], folder: Path) -> Path:
    """The files as study/series/sop.dcm (the layout a dicomweb source presents to discovery)."""
    for f in files:
        ds = pydicom.dcmread(f, stop_before_pixels=True)
        target = folder / ds.StudyInstanceUID / ds.SeriesInstanceUID / f"{ds.SOPInstanceUID}.dcm"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(f, target)
    return folder


def _outputs(out: Path) -> dict[str, bytes]:
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*.npy"))}


def _items(out: Path) -> list[dict]:
    return json.loads((out / "manifest.json").read_text())["items"]


def test_build_from_the_pacs_equals_build_from_the_folder(orthanc, tmp_path):
    files = _dicom(_files("ct_missing_duplicate_slices"))
    orthanc.stow(files)
    pacs = build(load_recipe(_recipe(tmp_path, _pacs(orthanc), out="pacs")), show_progress=False)
    assert pacs.exit_code == 0 and pacs.ok >= 1
    folder = _layout(files, tmp_path / "export")
    local = build(load_recipe(_recipe(tmp_path, {"dicom": str(folder)}, out="folder")), show_progress=False)
    assert local.exit_code == 0
    assert _outputs(tmp_path / "pacs") == _outputs(tmp_path / "folder") != {}
    assert _items(tmp_path / "pacs") == _items(tmp_path / "folder")
    # any other folder layout of the same files: the same output bytes (paths differ in the manifest)
    other = tmp_path / "flat-export"
    other.mkdir()
    for f in files:
        shutil.copyfile(f, other / f.name)
    assert build(load_recipe(_recipe(tmp_path, {"dicom": str(other)}, out="flat")), show_progress=False).exit_code == 0
    assert _outputs(tmp_path / "flat") == _outputs(tmp_path / "pacs")


def test_rebuild_after_new_instances_fetches_only_those(orthanc, tmp_path, monkeypatch):
    first = _dicom(_files("ct_missing_duplicate_slices"))
    orthanc.stow(first)
    recipe = _recipe(tmp_path, _pacs(orthanc))
    assert build(load_recipe(recipe), show_progress=False).exit_code == 0

    fetched: list[str] = []
    original = dicomweb_http.DicomwebConnection.retrieve

    def counting(self, study, series, sop):
        fetched.append(sop)
        return original(self, study, series, sop)

    monkeypatch.setattr(dicomweb_http.DicomwebConnection, "retrieve", counting)
    again = build(load_recipe(recipe), show_progress=False)
    assert again.exit_code == 0 and fetched == [] and again.computed == 0

    added = _dicom(_files("labels_seg_dcmqi_ct_overlap", "CT"))
    orthanc.stow(added)
    third = build(load_recipe(recipe), show_progress=False)
    assert third.exit_code == 0
    assert sorted(fetched) == sorted(str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID) for f in added)
    assert third.from_cache >= 1  # the first series was not rebuilt


def test_query_selects_studies_and_wildcards_go_out_literally(orthanc, tmp_path):
    first = _dicom(_files("ct_missing_duplicate_slices"))
    added = _dicom(_files("labels_seg_dcmqi_ct_overlap", "CT"))
    orthanc.stow(first + added)
    header = pydicom.dcmread(added[0], stop_before_pixels=True)
    wildcard = str(header.PatientID)[:-1] + "*"
    report = build(load_recipe(_recipe(tmp_path, _pacs(orthanc, PatientID=wildcard))), show_progress=False)
    assert report.exit_code == 0 and report.total == 1
    by_uid = build(load_recipe(_recipe(tmp_path, _pacs(orthanc, StudyInstanceUID=[str(header.StudyInstanceUID)]),
                                       out="uid")), show_progress=False)
    assert by_uid.total == 1


def test_server_stopped_mid_fetch_fails_clearly_and_a_rerun_completes(orthanc, tmp_path, monkeypatch, capsys):
    files = _dicom(_files("ct_missing_duplicate_slices"))
    orthanc.stow(files)
    recipe = _recipe(tmp_path, {**_pacs(orthanc)})
    original = dicomweb_http.DicomwebConnection.retrieve
    calls = []

    def stopping(self, study, series, sop):
        calls.append(sop)
        if len(calls) == 3:
            orthanc.stop()
        return original(self, study, series, sop)

    monkeypatch.setattr(dicomweb_http.DicomwebConnection, "retrieve", stopping)
    code = main(["run", "--quiet", str(recipe)])
    out = capsys.readouterr().out
    assert code == 1
    assert "cannot reach DICOMweb server" in out and orthanc.url in out
    monkeypatch.setattr(dicomweb_http.DicomwebConnection, "retrieve", original)
    orthanc.start()
    assert main(["run", "--quiet", str(recipe)]) == 0


@pytest.mark.parametrize(
    "case, expected",
    [("password", "HTTP 401 unauthorised"), ("unset", "environment variable PACS_PASSWORD is not set"),
     ("port", "cannot reach DICOMweb server"), ("date", "pattern")],
    ids=["wrong-password", "unset-secret", "nothing-listening", "bad-date"],
)
def test_unusable_server_or_query_exits_2_in_one_line(orthanc, tmp_path, monkeypatch, capsys, case, expected):
    source = _pacs(orthanc)
    if case == "password":
        monkeypatch.setenv("PACS_PASSWORD", "wrong")
    elif case == "unset":
        monkeypatch.delenv("PACS_PASSWORD")
    elif case == "port":
        source["dicomweb"]["url"] = f"http://127.0.0.1:{orthanc.port + 1}/dicom-web"
    else:
        source["dicomweb"]["query"] = {"StudyDate": "2020-01-01"}
    assert main(["run", "--quiet", str(_recipe(tmp_path, source))]) == 2
    err = capsys.readouterr().err
    assert expected in err
    assert "wrong" not in err.replace("wrong-password", "")  # never a secret


def test_plan_lists_what_would_be_fetched_and_fetches_nothing(orthanc, tmp_path, monkeypatch, capsys):
    files = _dicom(_files("ct_missing_duplicate_slices"))
    orthanc.stow(files)
    recipe = _recipe(tmp_path, _pacs(orthanc))
    monkeypatch.setattr(dicomweb_http.DicomwebConnection, "retrieve",
                        lambda *a: pytest.fail("plan must not retrieve"))
    assert main(["plan", str(recipe)]) == 0
    out = capsys.readouterr().out
    assert f"would fetch {len(files)} instance(s) ({len(files)} new, 0 changed) of 1 series" in out
    assert "fetch CT series" in out


@pytest.mark.parametrize("error", ["connection", "cut-short body"])
def test_a_connection_lost_mid_response_is_retried_then_worded(error):
    """A server that dies while sending a body raises ChunkedEncodingError, not ConnectionError:
    it is retried like a refused connection, and after the last try worded in one line."""
    import requests

    from medflow.sources.dicomweb_http import DicomwebConnection, DicomwebEndpoint, DicomwebError

    exc_type = requests.ConnectionError if error == "connection" else requests.exceptions.ChunkedEncodingError
    connection = DicomwebConnection(DicomwebEndpoint(url="http://127.0.0.1:9/dicom-web", retries=2,
                                                     backoff_seconds=0.001))
    calls = []

    def flaky(client):
        calls.append(1)
        if len(calls) < 3:
            raise exc_type("Connection broken: IncompleteRead(100 bytes read, 400 more expected)")
        return "instance"

    assert connection.call("WADO-RS retrieve", flaky) == "instance" and len(calls) == 3

    def dead(client):
        raise exc_type("Connection broken")

    with pytest.raises(DicomwebError, match=r"cannot reach DICOMweb server http://127.0.0.1:9/dicom-web: "
                                            r"WADO-RS retrieve: connection .* after 3 tries"):
        connection.call("WADO-RS retrieve", dead)
