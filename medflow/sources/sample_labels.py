"""Organ labels of the embedded phantom, written as a real DICOM SEG and a real RTSTRUCT per series.

``materialize_sample_labels("ct-phantom", dest)`` writes ``dest / "ct-phantom-labels"`` beside
the image sample (:func:`medflow.sources.sample_data.materialize_sample`, whose files are
unchanged), one folder per image series (``P01/ST01/SE002/``) holding:

* ``seg.dcm``: Segmentation Storage written by highdicom, BINARY, one segment per organ of
  :data:`medflow.sources.phantom.ORGANS` present in the series (liver, kidney, lung, heart,
  aorta, vertebra; SNOMED CT codes), drawn by :func:`medflow.sources.phantom.phantom_labels`
  on the series' own pixel grid: the label of a pixel is the organ whose HU it holds.
  Frames reference their CT slices (SourceImageSequence) and the series.
* ``rtstruct.dcm``: RT Structure Set Storage (pydicom), ROIs ``liver``, ``kidney`` (two
  islands per slice), ``aorta`` and ``vertebral_cortex`` (a ring: the inner contour is a
  hole), 72-vertex polygons of the phantom's ellipses on every slice
  (:func:`medflow.sources.phantom.phantom_contours`).

Kept outside the image sample's folder so that every recipe on the sample finds the same
items as before; ``source: {sample: ct-phantom, labels: {from: seg}}`` pairs them.
Deterministic for the same versions of medflow, numpy, pydicom and highdicom (fixed UIDs
and dates); complete copies carry a ``.complete`` marker like the image sample.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import shutil
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian

from medflow.sources import sample_data as images
from medflow.sources.phantom import ORGANS, make_anatomy, phantom_contours, phantom_labels

LABELS_VERSION = 1  # bump whenever the written bytes change
RTSTRUCT_STORAGE = "1.2.840.10008.5.1.4.1.1.481.3"


def materialize_sample_labels(name: str, dest: Path) -> Path:
    """Write the organ labels of sample ``name`` under ``dest / f"{name}-labels"``; returns that folder.

    Materializes the image sample first (``dest / name``), whose headers the label objects copy.
    """
    import highdicom

    image_root = images.materialize_sample(name, dest)
    target = Path(dest) / f"{name}-labels"
    text = (f"{name}-labels|labels={LABELS_VERSION}|images={images.generator_key(name)}|"
            f"highdicom={highdicom.__version__}|pydicom={pydicom.__version__}|numpy={np.__version__}")
    key = hashlib.sha256(text.encode()).hexdigest()
    if images.is_complete(target, key):
        return target
    images._refuse_foreign(target)
    images._sweep_stale(Path(dest), target.name)
    tmp = Path(dest) / f".{target.name}.tmp-{os.getpid()}-{secrets.token_hex(6)}"
    tmp.mkdir()
    try:
        files = _write_labels(image_root, tmp)
        images._write_marker(tmp, key, files)
        images._install(tmp, target, key)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _write_labels(image_root: Path, out: Path) -> list[str]:
    written = []
    for patient in images._PATIENTS:
        anatomy = make_anatomy(patient.anatomy_scale, patient.anatomy_seed)
        for study in patient.studies:
            for series in study.series:
                rel = f"{patient.folder}/{study.folder}/SE{series.number:03d}"
                slices = [pydicom.dcmread(p) for p in sorted((image_root / rel).glob("*.dcm"))]
                slices.sort(key=lambda ds: float(ds.ImagePositionPatient[2]))
                (out / rel).mkdir(parents=True)
                keys = (patient.folder, study.folder, series.number)
                levels = [float(ds.ImagePositionPatient[2]) - study.table_offset_mm for ds in slices]
                written.append(_write_seg(out, rel, slices, anatomy, levels, keys, study))
                written.append(_write_rtstruct(out, rel, slices, anatomy, levels, keys, study))
    return written


def _write_seg(out: Path, rel: str, slices: list[Dataset], anatomy, levels, keys, study) -> str:
    import highdicom as hd
    from pydicom.sr.codedict import codes

    first = slices[0]
    rows, cols = int(first.Rows), int(first.Columns)
    dy, dx = (float(v) for v in first.PixelSpacing)
    x0, y0 = float(first.ImagePositionPatient[0]), float(first.ImagePositionPatient[1])
    x = x0 + dx * np.arange(cols, dtype=np.float64)
    y = y0 + dy * np.arange(rows, dtype=np.float64)
    label = np.stack([phantom_labels(anatomy, level, x, y) for level in levels])
    present = [organ for organ in ORGANS if (label == organ[0]).any()]
    # highdicom numbers segments 1..n in the order given: relabel to the present organs' order
    relabelled = np.zeros_like(label)
    descriptions = []
    for number, (value, name, code, meaning) in enumerate(present, start=1):
        relabelled[label == value] = number
        descriptions.append(hd.seg.SegmentDescription(
            segment_number=number, segment_label=name,
            segmented_property_category=codes.SCT.Organ if name != "vertebra" else codes.SCT.AnatomicalStructure,
            segmented_property_type=hd.sr.CodedConcept(code, "SCT", meaning),
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL,
        ))
    seg = hd.seg.Segmentation(
        source_images=slices,
        pixel_array=relabelled,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        series_instance_uid=images._uid(*keys, "seg-series"),
        series_number=100 + int(first.SeriesNumber),
        sop_instance_uid=images._uid(*keys, "seg-instance"),
        instance_number=1,
        manufacturer="MEDFLOW PHANTOM SYSTEMS",
        manufacturer_model_name="medflow sample labels",
        software_versions=f"medflow-sample-labels {LABELS_VERSION}",
        device_serial_number="SN-FAKE-LABELS",
        content_label="ORGANS",
        content_description="Phantom organ labels",
    )
    _fix_dates(seg, study)
    for item in seg.get("ContributingEquipmentSequence", []):
        if "ContributionDateTime" in item:
            item.ContributionDateTime = study.date + study.time
    organization = images._uid(*keys, "seg-dimension-organization")  # highdicom draws a random one
    for item in [*seg.get("DimensionOrganizationSequence", []), *seg.get("DimensionIndexSequence", [])]:
        item.DimensionOrganizationUID = organization
    path = out / rel / "seg.dcm"
    seg.save_as(path, enforce_file_format=True)
    return f"{rel}/seg.dcm"


def _fix_dates(ds: Dataset, study) -> None:
    """Dates and times of creation set to the study's (the same bytes on every run)."""
    for keyword in ("ContentDate", "SeriesDate", "InstanceCreationDate", "StructureSetDate"):
        if keyword in ds:
            setattr(ds, keyword, study.date)
    for keyword in ("ContentTime", "SeriesTime", "InstanceCreationTime", "StructureSetTime"):
        if keyword in ds:
            setattr(ds, keyword, study.time)


def _write_rtstruct(out: Path, rel: str, slices: list[Dataset], anatomy, levels, keys, study) -> str:
    first = slices[0]
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = RTSTRUCT_STORAGE
    ds.file_meta.MediaStorageSOPInstanceUID = images._uid(*keys, "rtstruct-instance")
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.ImplementationClassUID = images._IMPLEMENTATION_UID
    ds.SpecificCharacterSet = first.get("SpecificCharacterSet", "ISO_IR 100")
    ds.SOPClassUID = RTSTRUCT_STORAGE
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    for keyword in ("StudyDate", "StudyTime", "AccessionNumber", "ReferringPhysicianName", "StudyDescription",
                    "PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyInstanceUID", "StudyID"):
        if keyword in first:
            setattr(ds, keyword, first.data_element(keyword).value)
    ds.Modality = "RTSTRUCT"
    ds.Manufacturer = "MEDFLOW PHANTOM SYSTEMS"
    ds.SeriesInstanceUID = images._uid(*keys, "rtstruct-series")
    ds.SeriesNumber = 200 + int(first.SeriesNumber)
    ds.InstanceNumber = 1
    ds.StructureSetLabel = "PHANTOM_ORGANS"
    ds.StructureSetDate, ds.StructureSetTime = study.date, study.time
    ds.OperatorsName = ""
    ds.SeriesDate, ds.SeriesTime = study.date, study.time
    contour_images = Sequence([_ref(s) for s in slices])
    series_ref = Dataset()
    series_ref.SeriesInstanceUID = first.SeriesInstanceUID
    series_ref.ContourImageSequence = contour_images
    study_ref = Dataset()
    study_ref.ReferencedSOPClassUID = "1.2.840.10008.3.1.2.3.1"  # Detached Study Management (retired), as TPS write
    study_ref.ReferencedSOPInstanceUID = first.StudyInstanceUID
    study_ref.RTReferencedSeriesSequence = Sequence([series_ref])
    frame = Dataset()
    frame.FrameOfReferenceUID = first.FrameOfReferenceUID
    frame.RTReferencedStudySequence = Sequence([study_ref])
    ds.ReferencedFrameOfReferenceSequence = Sequence([frame])
    per_level = [phantom_contours(anatomy, level) for level in levels]
    names = list(per_level[0])
    ds.StructureSetROISequence = Sequence()
    ds.ROIContourSequence = Sequence()
    ds.RTROIObservationsSequence = Sequence()
    for number, name in enumerate(names, start=1):
        roi = Dataset()
        roi.ROINumber = number
        roi.ReferencedFrameOfReferenceUID = first.FrameOfReferenceUID
        roi.ROIName = name
        roi.ROIGenerationAlgorithm = "MANUAL"
        ds.StructureSetROISequence.append(roi)
        contour_roi = Dataset()
        contour_roi.ReferencedROINumber = number
        contour_roi.ROIDisplayColor = [255, 64 * number % 256, 0]
        contour_roi.ContourSequence = Sequence()
        for s, contours in zip(slices, per_level, strict=True):
            z = float(s.ImagePositionPatient[2])
            for polygon in contours[name]:
                item = Dataset()
                item.ContourImageSequence = Sequence([_ref(s)])
                item.ContourGeometricType = "CLOSED_PLANAR"
                item.NumberOfContourPoints = len(polygon)
                item.ContourData = [f"{v:.4f}" for point in polygon for v in (point[0], point[1], z)]
                contour_roi.ContourSequence.append(item)
        ds.ROIContourSequence.append(contour_roi)
        observation = Dataset()
        observation.ObservationNumber = number
        observation.ReferencedROINumber = number
        observation.RTROIInterpretedType = "ORGAN"
        observation.ROIInterpreter = ""
        ds.RTROIObservationsSequence.append(observation)
    path = out / rel / "rtstruct.dcm"
    ds.save_as(path, enforce_file_format=True)
    return f"{rel}/rtstruct.dcm"


def _ref(image: Dataset) -> Dataset:
    ref = Dataset()
    ref.ReferencedSOPClassUID = image.SOPClassUID
    ref.ReferencedSOPInstanceUID = image.SOPInstanceUID
    return ref
