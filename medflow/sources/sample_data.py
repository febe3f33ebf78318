"""Embedded sample datasets, written as real DICOM files on demand.

``materialize_sample("ct-phantom", dest)`` writes ``dest / "ct-phantom"``: a small,
deterministic, synthetic CT dataset (the numpy phantom of :mod:`medflow.sources.phantom`)
that exercises the parts of a real hospital export a pipeline must handle:

======  ========================  ======  ==========================================
folder  patient / study           slices  series
======  ========================  ======  ==========================================
P01     DOE^JANE^M, 2024-03-12    32      2 "Thorax 2.5 B30f": 256x256, 1.40625 mm, 2.5 mm,
        (chest CT)                        int16 signed, 16 bits stored
P01     same study, same FoR      16      3 "Thorax 5.0 B70f Lung": 192x192, 1.875 mm, 5 mm,
                                          uint16, 12 bits stored, two windows, noisier kernel
P01     DOE^JANE^M, 2024-09-17    24      2 "Thorax 3.0 B31f": follow-up study, other table position
P02     MUSTERMANN^MAX,           40      4 "Thorax-Abdomen 3.0 Br40": slim patient, off-centre
        2024-05-06                        reconstruction, instance numbers run cranio-caudal
======  ========================  ======  ==========================================

Every file: CT Image Storage, Explicit VR Little Endian, MONOCHROME2, RescaleIntercept
-1024 and RescaleSlope 1, ImageOrientationPatient ``1\\0\\0\\0\\1\\0``, HFS.

**All identifying data are fictitious.** Names, IDs, dates, institutions, addresses,
physicians, operators, serial numbers and the private "scan note" were made up so that
de-identification has something visible to remove; they describe no real person or
place. UIDs are ``2.25.`` UIDs (PS3.5 B.2) made from name-based UUIDs (RFC 4122
version 5) of fixed strings, identical on every machine and run.

Determinism and safety: the same versions of medflow, numpy and pydicom write
byte-identical files. A complete copy carries a ``.complete`` marker (JSON: generator
key, every file's size and sha256); a later call with the same key returns it without
writing. A new copy is written into a temp folder next to the destination and renamed
into place, so a killed run never leaves a half dataset that looks complete, and of two
concurrent calls the second rename loses and its copy is discarded.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import secrets
import shutil
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian

from medflow.errors import InputError
from medflow.hashing import file_digest
from medflow.sources.base import item_fingerprint
from medflow.sources.phantom import Anatomy, make_anatomy, phantom_slice

SAMPLE_NAMES: tuple[str, ...] = ("ct-phantom",)
GENERATOR_VERSION = 1  # bump whenever the written bytes change
MARKER_NAME = ".complete"
STALE_TEMP_SECONDS = 3600.0  # leftovers of killed runs older than this are removed

# Fixed: UIDs stay stable across generator versions (item ids derive from them).
_UID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "urn:medflow:sample:ct-phantom")
_NOISE_SEED = 20240312
_IMPLEMENTATION_UID = f"2.25.{uuid.uuid5(uuid.NAMESPACE_URL, 'urn:medflow:sample-generator').int}"


@dataclass(frozen=True)
class _Series:
    number: int
    description: str
    n_slices: int
    step_mm: float  # SliceThickness = SpacingBetweenSlices
    first_level_mm: float  # anatomical level of instance 1 (see phantom.py)
    direction: int  # +1: instance numbers run caudo-cranial (+z), -1: cranio-caudal
    matrix: int  # rows = columns
    pixel_mm: float
    recon_centre: tuple[float, float]  # LPS (x, y) of the field of view's centre, mm
    kernel: str
    noise_hu: float
    unsigned12: bool  # uint16 with 12 bits stored, else int16 with 16 bits stored
    windows: tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]  # centres, widths, names
    start_seconds: float  # offset of the series from the study time


@dataclass(frozen=True)
class _Study:
    folder: str
    date: str
    time: str  # HHMMSS
    description: str
    accession: str
    study_id: str
    patient_age: str
    table_offset_mm: float  # ImagePositionPatient z = anatomical level + offset
    referring: str
    operator: str
    institution: str
    address: str
    station: str
    serial: str
    series: tuple[_Series, ...]


@dataclass(frozen=True)
class _Patient:
    folder: str
    name: str
    patient_id: str
    birth_date: str
    sex: str
    size_m: str
    weight_kg: str
    anatomy_scale: float
    anatomy_seed: int
    studies: tuple[_Study, ...]


_HOSPITAL = {
    "institution": "Fictional General Hospital",
    "address": "1 Example Road, Springfield 00000, Nowhere",
    "referring": "HOUSE^GREGORY^^DR",
}
_PATIENTS = (
    _Patient(
        folder="P01",
        name="DOE^JANE^M",
        patient_id="MRN00012345",
        birth_date="19580704",
        sex="F",
        size_m="1.68",
        weight_kg="64",
        anatomy_scale=1.0,
        anatomy_seed=11,
        studies=(
            _Study(
                folder="ST01",
                date="20240312",
                time="093015",
                description="CT THORAX W/O CONTRAST",
                accession="ACC240312001",
                study_id="4711",
                patient_age="065Y",
                table_offset_mm=-400.0,
                operator="SMITH^ANNA",
                station="CTSCAN01",
                serial="SN-FAKE-0042",
                **_HOSPITAL,
                series=(
                    _Series(
                        number=2,
                        description="Thorax 2.5 B30f",
                        n_slices=32,
                        step_mm=2.5,
                        first_level_mm=-30.0,
                        direction=1,
                        matrix=256,
                        pixel_mm=1.40625,
                        recon_centre=(0.0, 0.0),
                        kernel="B30f",
                        noise_hu=12.0,
                        unsigned12=False,
                        windows=(("40",), ("400",), ("MEDIASTINUM",)),
                        start_seconds=95.0,
                    ),
                    _Series(
                        number=3,
                        description="Thorax 5.0 B70f Lung",
                        n_slices=16,
                        step_mm=5.0,
                        first_level_mm=-27.5,
                        direction=1,
                        matrix=192,
                        pixel_mm=1.875,
                        recon_centre=(0.0, 0.0),
                        kernel="B70f",
                        noise_hu=20.0,
                        unsigned12=True,
                        windows=(("-600", "40"), ("1500", "400"), ("LUNG", "MEDIASTINUM")),
                        start_seconds=97.0,
                    ),
                ),
            ),
            _Study(
                folder="ST02",
                date="20240917",
                time="141203",
                description="CT THORAX FOLLOW-UP",
                accession="ACC240917007",
                study_id="5120",
                patient_age="066Y",
                table_offset_mm=-372.0,
                operator="JONES^PAT",
                station="CTSCAN02",
                serial="SN-FAKE-0077",
                **_HOSPITAL,
                series=(
                    _Series(
                        number=2,
                        description="Thorax 3.0 B31f",
                        n_slices=24,
                        step_mm=3.0,
                        first_level_mm=-32.0,
                        direction=1,
                        matrix=192,
                        pixel_mm=1.875,
                        recon_centre=(0.0, 0.0),
                        kernel="B31f",
                        noise_hu=14.0,
                        unsigned12=False,
                        windows=(("40",), ("350",), ("MEDIASTINUM",)),
                        start_seconds=88.0,
                    ),
                ),
            ),
        ),
    ),
    _Patient(
        folder="P02",
        name="MUSTERMANN^MAX",
        patient_id="PID-0098765",
        birth_date="19710223",
        sex="M",
        size_m="1.82",
        weight_kg="71",
        anatomy_scale=0.82,
        anatomy_seed=23,
        studies=(
            _Study(
                folder="ST01",
                date="20240506",
                time="075944",
                description="CT THORAX ABDOMEN MIT KM",
                accession="ACC240506113",
                study_id="0815",
                patient_age="053Y",
                table_offset_mm=-250.0,
                referring="MÜLLER^ERIKA^^DR. MED.",
                operator="SCHULZ^JONAS",
                institution="Klinikum Musterstadt (fiktiv)",
                address="Musterstraße 1, 12345 Musterstadt",
                station="KLMCT1",
                serial="SN-FAKE-1234",
                series=(
                    _Series(
                        number=4,
                        description="Thorax-Abdomen 3.0 Br40",
                        n_slices=40,
                        step_mm=3.0,
                        first_level_mm=45.0,
                        direction=-1,
                        matrix=256,
                        pixel_mm=1.25,
                        recon_centre=(0.0, 10.0),  # off-centre reconstruction
                        kernel="Br40",
                        noise_hu=15.0,
                        unsigned12=False,
                        windows=(("50",), ("400",), ("ABDOMEN",)),
                        start_seconds=142.0,
                    ),
                ),
            ),
        ),
    ),
)


def materialize_sample(name: str, dest: Path) -> Path:
    """Write the embedded sample ``name`` as DICOM under ``dest / name`` and return that folder.

    Idempotent: a complete copy written by the same generator key (see module docstring)
    is returned untouched. Safe against kills and concurrent calls (temp folder + rename).

    Raises:
        ValueError: ``name`` is not one of :data:`SAMPLE_NAMES`.
        InputError: ``dest / name`` exists, is not empty and is not a medflow sample
            (no marker): it is never deleted.
    """
    if name not in SAMPLE_NAMES:
        raise ValueError(f"unknown sample dataset {name!r}; available: {', '.join(SAMPLE_NAMES)}")
    dest = Path(dest)
    target = dest / name
    key = generator_key(name)
    if is_complete(target, key):
        return target
    _refuse_foreign(target)
    dest.mkdir(parents=True, exist_ok=True)
    _sweep_stale(dest, name)
    tmp = dest / f".{name}.tmp-{os.getpid()}-{secrets.token_hex(6)}"
    tmp.mkdir()  # unlike mkdtemp, honours the umask (the folder is renamed into place)
    try:
        files = _write_ct_phantom(tmp)
        _write_marker(tmp, key, files)
        _install(tmp, target, key)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # gone after a successful rename
    return target


def generator_key(name: str) -> str:
    """Identity of the bytes the generator writes: sample name, generator and library versions."""
    text = f"{name}|generator={GENERATOR_VERSION}|numpy={np.__version__}|pydicom={pydicom.__version__}"
    return hashlib.sha256(text.encode()).hexdigest()


def is_complete(folder: Path, key: str) -> bool:
    """True when ``folder`` holds a marker with ``key`` and every listed file has its size."""
    try:
        marker = json.loads((Path(folder) / MARKER_NAME).read_text())
        if marker.get("key") != key:
            return False
        return all((Path(folder) / rel).stat().st_size == size for rel, size, _ in marker["files"])
    except (OSError, ValueError, KeyError, TypeError):
        return False


def _refuse_foreign(target: Path) -> None:
    """Never delete a folder medflow did not write."""
    if target.exists() and not (target / MARKER_NAME).exists():
        if not target.is_dir() or any(target.iterdir()):
            raise InputError(
                str(target),
                "exists and is not a medflow sample (no .complete marker); refusing to replace it",
            )


def _sweep_stale(dest: Path, name: str) -> None:
    """Remove temp/trash folders of killed runs, once clearly older than any live run."""
    now = time.time()
    for entry in dest.glob(f".{name}.*-*"):
        try:
            if entry.is_dir() and now - entry.stat().st_mtime > STALE_TEMP_SECONDS:
                shutil.rmtree(entry, ignore_errors=True)
        except OSError:
            pass


def _install(tmp: Path, target: Path, key: str) -> None:
    """Rename ``tmp`` to ``target``; if another run got there first, keep its copy."""
    for _ in range(5):
        try:
            os.rename(tmp, target)
            return
        except OSError as exc:
            if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST, errno.EISDIR, errno.ENOTDIR, errno.EACCES):
                raise
        if is_complete(target, key):
            return  # a concurrent call won the race
        _refuse_foreign(target)
        # An outdated or damaged copy of ours: move it aside (one call wins), then retry.
        trash = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
        try:
            os.rename(target, trash / "old")
            if is_complete(trash / "old", key):  # a concurrent call installed it meanwhile: put it back
                os.rename(trash / "old", target)
        except OSError:
            pass
        shutil.rmtree(trash, ignore_errors=True)
    raise InputError(str(target), "could not install the sample dataset (the folder keeps changing)")


def _write_marker(folder: Path, key: str, files: list[str]) -> None:
    # sha256, as the marker always said: it names the sample's bytes, nothing checks it against a build
    entries = [[rel, (folder / rel).stat().st_size, file_digest(folder / rel, "sha256")] for rel in sorted(files)]
    marker = {
        "key": key,
        "generator_version": GENERATOR_VERSION,
        "dataset_sha256": item_fingerprint([(rel, sha) for rel, _, sha in entries]),
        "files": entries,
    }
    (folder / MARKER_NAME).write_text(json.dumps(marker, indent=1, sort_keys=True) + "\n")


def _uid(*parts: object) -> str:
    """Deterministic ``2.25.<UUID as integer>`` UID (PS3.5 B.2) from a name-based UUID (RFC 4122 v5).

    Not :func:`pydicom.uid.generate_uid`: with ``prefix=None`` it ignores ``entropy_srcs``
    and returns a random UUID4 UID (pydicom 3.0).
    """
    return f"2.25.{uuid.uuid5(_UID_NAMESPACE, '|'.join(map(str, parts))).int}"


def _ds(value: float) -> str:
    """Decimal String without float noise (values here are exact binary fractions)."""
    text = f"{value:.6f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def _tm(hhmmss: str, offset_s: float) -> str:
    """``HHMMSS`` plus an offset in seconds, as ``HHMMSS.ffffff`` (same day)."""
    micro = (int(hhmmss[:2]) * 3600 + int(hhmmss[2:4]) * 60 + int(hhmmss[4:6])) * 10**6
    micro += round(offset_s * 10**6)
    sec, frac = divmod(micro, 10**6)
    return f"{sec // 3600:02d}{sec // 60 % 60:02d}{sec % 60:02d}.{frac:06d}"


def _write_ct_phantom(root: Path) -> list[str]:
    """Write every file of "ct-phantom" under ``root``; returns their POSIX relative paths."""
    written: list[str] = []
    for p_index, patient in enumerate(_PATIENTS):
        anatomy = make_anatomy(patient.anatomy_scale, patient.anatomy_seed)
        for s_index, study in enumerate(patient.studies):
            for series in study.series:
                folder = f"{patient.folder}/{study.folder}/SE{series.number:03d}"
                (root / folder).mkdir(parents=True)
                seed = (_NOISE_SEED, p_index, s_index, series.number)
                written += _write_series(root, folder, patient, study, series, anatomy, seed)
    return written


def _series_template(patient: _Patient, study: _Study, series: _Series, keys: tuple[str, ...]) -> Dataset:
    """Attributes shared by every instance of one series (patient, study, series, equipment, pixel format)."""
    study_uid = _uid(*keys[:2], "study")
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.SOPClassUID = CTImageStorage
    ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = study.date
    ds.StudyTime = study.time
    ds.SeriesTime = _tm(study.time, series.start_seconds)
    ds.AccessionNumber = study.accession
    ds.Modality = "CT"
    ds.Manufacturer = "MEDFLOW PHANTOM SYSTEMS"
    ds.InstitutionName = study.institution
    ds.InstitutionAddress = study.address
    ds.ReferringPhysicianName = study.referring
    ds.StationName = study.station
    ds.StudyDescription = study.description
    ds.SeriesDescription = series.description
    ds.InstitutionalDepartmentName = "Radiology"
    ds.OperatorsName = study.operator
    ds.ManufacturerModelName = "Synthetic CT 64"
    ds.PatientName = patient.name
    ds.PatientID = patient.patient_id
    ds.IssuerOfPatientID = "FICTIONAL-HIS"
    ds.PatientBirthDate = patient.birth_date
    ds.PatientSex = patient.sex
    ds.OtherPatientIDs = f"X{patient.patient_id[-5:]}"
    ds.PatientAge = study.patient_age
    ds.PatientSize = patient.size_m
    ds.PatientWeight = patient.weight_kg
    ds.BodyPartExamined = "CHEST" if series.number < 4 else "CHEST_ABDOMEN"
    ds.SliceThickness = _ds(series.step_mm)
    ds.KVP = "120"
    ds.SpacingBetweenSlices = _ds(series.step_mm)
    ds.DataCollectionDiameter = "500"
    ds.DeviceSerialNumber = study.serial
    ds.SoftwareVersions = f"medflow-sample {GENERATOR_VERSION}"
    ds.ProtocolName = study.description
    ds.ReconstructionDiameter = _ds(series.matrix * series.pixel_mm)
    ds.GantryDetectorTilt = "0"
    ds.TableHeight = "150"
    ds.RotationDirection = "CW"
    ds.ExposureTime = "500"
    ds.XRayTubeCurrent = "200"
    ds.Exposure = "100"
    ds.ConvolutionKernel = series.kernel
    ds.PatientPosition = "HFS"
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = _uid(*keys, "series")
    ds.StudyID = study.study_id
    ds.SeriesNumber = series.number
    ds.AcquisitionNumber = 1
    ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
    ds.FrameOfReferenceUID = _uid(*keys[:2], "frame-of-reference")
    ds.PositionReferenceIndicator = ""
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = ds.Columns = series.matrix
    ds.PixelSpacing = [_ds(series.pixel_mm)] * 2
    ds.BitsAllocated = 16
    ds.BitsStored = 12 if series.unsigned12 else 16
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = 0 if series.unsigned12 else 1
    centres, widths, names = series.windows
    ds.WindowCenter = list(centres) if len(centres) > 1 else centres[0]
    ds.WindowWidth = list(widths) if len(widths) > 1 else widths[0]
    ds.WindowCenterWidthExplanation = list(names) if len(names) > 1 else names[0]
    ds.RescaleIntercept = "-1024"
    ds.RescaleSlope = "1"
    ds.RescaleType = "HU"
    block = ds.private_block(0x0009, "MEDFLOW SAMPLE", create=True)
    block.add_new(0x01, "LO", f"Scan note: {patient.name} {patient.patient_id}")
    return ds


def _write_series(
    root: Path,
    folder: str,
    patient: _Patient,
    study: _Study,
    series: _Series,
    anatomy: Anatomy,
    seed: tuple[int, ...],
) -> list[str]:
    keys = (patient.folder, study.folder, f"series-{series.number}")
    ds = _series_template(patient, study, series, keys)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = _IMPLEMENTATION_UID
    meta.ImplementationVersionName = f"MEDFLOW_SMPL_{GENERATOR_VERSION}"
    ds.file_meta = meta

    half = (series.matrix / 2.0 - 0.5) * series.pixel_mm
    origin_xy = (series.recon_centre[0] - half, series.recon_centre[1] - half)
    out: list[str] = []
    for index in range(series.n_slices):
        instance = index + 1
        level = series.first_level_mm + series.direction * index * series.step_mm
        rng = np.random.default_rng([*seed, instance])
        hu = phantom_slice(
            anatomy,
            level,
            (series.matrix, series.matrix),
            (series.pixel_mm, series.pixel_mm),
            origin_xy,
            noise_hu=series.noise_hu,
            rng=rng,
        )
        stored = hu.astype(np.int32) + 1024  # RescaleIntercept -1024, slope 1
        dtype = "<u2" if series.unsigned12 else "<i2"
        z = level + study.table_offset_mm
        sop_uid = _uid(*keys, "instance", instance)
        ds.file_meta.MediaStorageSOPInstanceUID = sop_uid
        ds.SOPInstanceUID = sop_uid
        ds.AcquisitionTime = ds.ContentTime = _tm(study.time, series.start_seconds + 0.5 * index)
        ds.InstanceNumber = instance
        ds.ImagePositionPatient = [_ds(origin_xy[0]), _ds(origin_xy[1]), _ds(z)]
        ds.SliceLocation = _ds(z)
        ds.PixelData = stored.astype(dtype).tobytes()
        rel = f"{folder}/CT{instance:06d}.dcm"
        ds.save_as(root / rel, enforce_file_format=True)
        out.append(rel)
    return out
