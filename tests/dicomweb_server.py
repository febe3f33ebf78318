"""A real Orthanc with its DICOMweb plugin for the tests (Debian: ``orthanc``, ``orthanc-dicomweb``).

Started on a free loopback port with a temporary storage folder, authentication on and
``RemoteAccessAllowed: false``; tests only ever talk to 127.0.0.1. Without the binary the
tests skip, or fail under ``MEDFLOW_REQUIRE_SHARED_DATA=1`` (CI installs it).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests

PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
USER, PASSWORD = "medflow", "orthanc-test-" + uuid.uuid4().hex[:12]


def orthanc_binary() -> str:
    """Path of Orthanc; skips (or fails when CI requires it) when Orthanc or its DICOMweb plugin is absent."""
    binary = shutil.which("Orthanc")
    if binary is None or not PLUGIN.is_file():
        message = "Orthanc with its DICOMweb plugin is not installed (apt-get install -y orthanc orthanc-dicomweb)"
        if os.environ.get("MEDFLOW_REQUIRE_SHARED_DATA") == "1":
            pytest.fail(message + "; MEDFLOW_REQUIRE_SHARED_DATA=1 makes it mandatory")
        pytest.skip(message)
    return binary


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Orthanc:
    """One Orthanc process; ``stop()`` and ``start()`` keep the port and the storage."""

    folder: Path
    port: int = field(default_factory=_free_port)
    process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/dicom-web"

    @property
    def rest(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self, prefix: str = "PACS") -> dict[str, str]:
        return {f"{prefix}_USER": USER, f"{prefix}_PASSWORD": PASSWORD}

    def start(self) -> Orthanc:
        binary = orthanc_binary()
        storage = self.folder / "storage"
        storage.mkdir(parents=True, exist_ok=True)
        config = {
            "Name": f"medflow-test-{self.port}",
            "StorageDirectory": str(storage), "IndexDirectory": str(storage),
            "HttpPort": self.port, "DicomServerEnabled": False,
            "RemoteAccessAllowed": False, "AuthenticationEnabled": True,
            "RegisteredUsers": {USER: PASSWORD},
            "Plugins": [str(PLUGIN)],
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "Host": f"127.0.0.1:{self.port}", "Ssl": False},
            "OverwriteInstances": False,
        }
        (self.folder / "orthanc.json").write_text(json.dumps(config))
        log = open(self.folder / "orthanc.log", "ab")  # noqa: SIM115 - kept open by the process
        self.process = subprocess.Popen([binary, str(self.folder / "orthanc.json")], stdout=log, stderr=log,
                                        stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"Orthanc exited: {(self.folder / 'orthanc.log').read_text()[-2000:]}")
            try:
                if requests.get(self.rest + "/system", auth=(USER, PASSWORD), timeout=2).ok:
                    return self
            except requests.ConnectionError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError("Orthanc did not answer within 30 s")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def stow(self, files: list[Path]) -> None:
        """STOW-RS the files' bytes unchanged (one multipart request)."""
        boundary = "medflow-" + uuid.uuid4().hex
        parts = [b"--" + boundary.encode() + b"\r\nContent-Type: application/dicom\r\n\r\n" + Path(f).read_bytes()
                 + b"\r\n" for f in files]
        body = b"".join(parts) + b"--" + boundary.encode() + b"--\r\n"
        response = requests.post(
            self.url + "/studies", data=body, auth=(USER, PASSWORD), timeout=120,
            headers={"Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
                     "Accept": "application/dicom+json"},
        )
        response.raise_for_status()

    def get(self, path: str):
        response = requests.get(self.rest + path, auth=(USER, PASSWORD), timeout=60)
        response.raise_for_status()
        return response

    def instance_files(self) -> list[bytes]:
        """Every stored instance's file, as stored."""
        return [self.get(f"/instances/{i}/file").content for i in self.get("/instances").json()]
