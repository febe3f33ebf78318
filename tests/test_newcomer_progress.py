"""What a build shows and keeps: progress inside items, build.log / --log, honest words, closed pipes."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from medflow.cli import main, split_skipped
from medflow.engine import progress as progress_module
from medflow.engine import stream as stream_module
from medflow.engine.build import build
from medflow.engine.progress import Progress, SlabReporter
from medflow.recipe.loader import load_recipe
from tests.dicom_factory import write_ct_series

REPO = Path(__file__).resolve().parents[1]
SLICES = 40  # more than two slabs of SLAB_SLICES


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("export") / "export"
    write_ct_series(root / "ct", 1, n_slices=SLICES, size=32)
    write_ct_series(root / "mr", 2, n_slices=2)
    mr = sorted((root / "mr").rglob("*.dcm"))
    for path in mr:  # an MR series: left out by a CT filter
        import pydicom

        ds = pydicom.dcmread(path)
        ds.Modality = "MR"
        ds.save_as(path)
    (root / "notes.txt").write_text("not DICOM\n")
    return root


def _recipe(folder: Path, source: Path, *, modality: str = "[CT]") -> Path:
    path = folder / "recipe.yaml"
    path.write_text(
        "medflow: 1\nname: progress\n"
        f"source: {{dicom: '{source}', filter: {{modality: {modality}}}}}\n"
        "steps: [{step: window, level: 40, width: 400}, {step: layout, layout: NCHW, dtype: float32}]\n"
        f"outputs: {{dir: '{folder / 'out'}'}}\nengine: {{workers: 1, cache_dir: '{folder / 'cache'}'}}\n"
    )
    return path


def test_a_streamed_series_reports_every_slab_with_slices_and_bytes(tmp_path, source, monkeypatch):
    calls: list[tuple[str, int, int, int]] = []

    class Recorder(SlabReporter):
        def __call__(self, *args):
            calls.append(args)
            super().__call__(*args)

    monkeypatch.setattr(progress_module, "SlabReporter", Recorder)
    shown = Progress(stream=FakeTerminal())
    report = build(load_recipe(_recipe(tmp_path, source)), progress=shown)
    assert report.ok == 1
    slab = stream_module.SLAB_SLICES
    assert [c[1] for c in calls] == [*range(slab, SLICES, slab), SLICES]  # slices read, slab by slab
    assert {c[2] for c in calls} == {SLICES}
    assert calls[-1][3] == SLICES * 32 * 32 * 2  # int16 stored values


def test_the_bar_shows_bytes_items_and_slices_of_a_running_series(tmp_path, monkeypatch):
    monkeypatch.setenv("COLUMNS", "160")
    item = type("Item", (), {"item_id": "ct-1", "files": ("a.dcm",), "root": str(tmp_path)})()
    (tmp_path / "a.dcm").write_bytes(b"x" * 4_000_000)
    stream = FakeTerminal()
    shown = Progress(stream=stream)
    with shown.run([type("Task", (), {"item": item})()]) as channel:
        SlabReporter(channel)("ct-1", 16, 64, 16 * 512 * 512 * 2)
        deadline = time.monotonic() + 5
        while "16/64 slices" not in stream.getvalue() and time.monotonic() < deadline:
            time.sleep(0.05)
        text = stream.getvalue()
        shown.update(True, "ct-1")
    assert "16/64 slices" in text and "1.00MB/4.00MB read" in text  # a quarter of the item's bytes
    assert "4.00MB/4.00MB read" in stream.getvalue() and "1/1 items" in stream.getvalue()
    assert not Path(channel).exists()  # the report folder is removed


def test_the_bar_is_quiet_when_stderr_is_not_a_terminal():
    stream = io.StringIO()
    shown = Progress(stream=stream)
    item = type("Item", (), {"item_id": "x", "files": (), "root": "/"})()
    with shown.run([type("Task", (), {"item": item})()]) as channel:
        shown.update(True, "x")
    assert channel is None and stream.getvalue() == ""


def test_four_words_each_with_its_count_in_the_console_and_the_log(tmp_path, source, capsys):
    log = tmp_path / "logs" / "mine.log"
    assert main(["run", str(_recipe(tmp_path, source)), "-q", "--log", str(log)]) == 0
    out = capsys.readouterr().out
    assert ("not built: 2 filtered (left out by the recipe's filter), 1 skipped (not DICOM, hidden, or no pixel "
            "data), 0 unreadable") in out
    assert "inputs: " in out and " withheld" in out
    build_log = (tmp_path / "out" / "build.log").read_text()
    assert build_log == log.read_text()
    assert all(line in build_log.splitlines() for line in out.splitlines())  # everything the console showed
    assert "filtered files (the recipe's filter): 2" in build_log
    assert "modality MR not selected by the filter" in build_log
    assert "notes.txt: not a DICOM file" in build_log
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert f"  {manifest['items'][0]['id']}: ok (computed: " in build_log


def test_split_skipped_tells_the_filter_from_what_a_file_is():
    filtered, skipped = split_skipped([("a", "localizer"), ("b", "modality MR not selected by the filter"),
                                       ("c", "not a DICOM file"), ("d", "no pixel data (Basic Text SR)")])
    assert [f for f, _ in filtered] == ["a", "b"] and [f for f, _ in skipped] == ["c", "d"]


def test_a_failed_start_leaves_its_error_in_the_log(tmp_path, capsys):
    log = tmp_path / "fail.log"
    recipe = tmp_path / "r.yaml"
    recipe.write_text("medflow: 1\nname: x\nsource: {dicom: nowhere}\noutputs: {dir: out}\n")
    assert main(["run", str(recipe), "-q", "--log", str(log)]) == 2
    assert "nowhere" in log.read_text() and log.read_text().strip() == capsys.readouterr().err.strip()


def test_a_deidentifying_build_logs_the_same_redacted_lines(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MEDFLOW_DEID_KEY", "0123456789abcdef0123456789abcdef")
    export = tmp_path / "DOE^JOHN_12345678"
    write_ct_series(export / "ct", 3, n_slices=2, patient="DOE^JOHN")
    (export / "JOHN_DOE_notes.txt").write_text("not DICOM\n")
    recipe = tmp_path / "deid.yaml"
    recipe.write_text(f"medflow: 1\nname: deid\nsource: {{dicom: '{export}'}}\nsteps: [{{step: anonymize}}]\n"
                      "outputs: {dir: out, writers: [{kind: dicom}]}\nengine: {workers: 1}\n")
    assert main(["run", str(recipe), "-q"]) == 0
    out = capsys.readouterr().out
    log = (tmp_path / "out" / "build.log").read_text()
    assert all(line in log.splitlines() for line in out.splitlines())
    assert "<file:" in log  # the skipped file, by token
    for identifying in ("JOHN", "DOE", "12345678", str(export)):
        assert identifying not in log and identifying not in out


def test_a_closed_pipe_ends_quietly_with_the_builds_exit_code(tmp_path, source):
    recipe = _recipe(tmp_path, source)
    proc = subprocess.Popen([sys.executable, "-m", "medflow", "run", str(recipe), "-q"], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # the reader left before the first line (medflow run ... | head -0)
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=300) == 0
    assert "Traceback" not in err and "BrokenPipe" not in err, err
    assert (tmp_path / "out" / "build.log").is_file()  # written before the console lines


def test_a_closed_pipe_on_a_long_listing_ends_quietly():
    proc = subprocess.Popen([sys.executable, "-m", "medflow", "steps"], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 0 and err == ""
