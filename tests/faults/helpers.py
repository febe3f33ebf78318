"""Helpers of the fault-injection suite: the real ``medflow`` command in subprocesses.

Every test builds the embedded ``ct-phantom`` sample in its own folder (``recipe.yaml``,
``out/``, ``cache/``); the sample's DICOM files are generated once per session and copied
into each test's cache. Reference builds (undisturbed) are made once per session too.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import blake3

REPO = Path(__file__).resolve().parents[2]

QUICK = """\
medflow: 1
name: faults-quick
source: {sample: ct-phantom}
steps:
  - {step: window, level: -600, width: 1500}
  - {step: layout, layout: NCHW, dtype: float32}
outputs:
  dir: out
engine:
  workers: 2
  cache_dir: cache
"""

# ~1 s per item on one core: long enough to land a signal mid-build, and for a 2-worker build to
# start its worker process (medflow.threads.WORKER_START_SECONDS)
SLOW = QUICK.replace("name: faults-quick", "name: faults-slow").replace(
    "steps:\n", "steps:\n  - {step: denoise, method: curvature_flow, iterations: 8}\n"
)


def medflow(cwd: Path, *args: str, timeout: float = 120, **popen) -> subprocess.CompletedProcess:
    """Run ``python -m medflow ARGS`` in ``cwd``; returns the completed process (text output)."""
    return subprocess.run([sys.executable, "-m", "medflow", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=_env(), **popen)


def start_medflow(cwd: Path, *args: str, **popen) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "medflow", *args], cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=_env(), **popen)


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    env.pop("MEDFLOW_DEBUG", None)
    return env


def temp_files(*roots: Path) -> list[Path]:
    """medflow temp files and folders under ``roots``."""
    return [p for root in roots if root.exists() for p in root.rglob(".medflow-tmp-*")]


def outputs_of(out: Path) -> tuple[list, dict[str, str]]:
    """The manifest's items (id, status, outputs) and the BLAKE3 of every output file on disk (blake3 library)."""
    manifest = json.loads((out / "manifest.json").read_text())
    items = [(item["id"], item["status"], item["outputs"]) for item in manifest["items"]]
    files = {o["path"]: blake3.blake3((out / o["path"]).read_bytes()).hexdigest()
             for item in manifest["items"] for o in item["outputs"]}
    return items, files


def make_project(folder: Path, samples: Path, recipe: str = QUICK) -> Path:
    """``folder`` with recipe.yaml and a cache holding the sample files (no cache entries)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "recipe.yaml").write_text(recipe)
    shutil.copytree(samples, folder / "cache" / "samples")
    return folder


def one_line(text: str) -> str:
    """The only non-empty line of ``text`` (fails when there are more, or a traceback)."""
    lines = [line for line in text.splitlines() if line.strip()]
    assert "Traceback" not in text, text
    assert len(lines) == 1, text
    return lines[0]
