"""A generated PHI corpus for de-identification tests (pydicom only, no real data).

:func:`build_corpus` writes 3 patients x 2 studies with CT, MR and CR series and one enhanced
multi-frame CT, and returns the files plus every planted identifying string. PHI sits in
standard attributes, in nested sequences (depth up to 3), in private blocks (including a private
sequence), in overlays and curves, in the file meta information, in free-text descriptions (which
repeat the name and MRN) and inside UIDs built from an identifying org root + MRN.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pydicom import Dataset, Sequence
from pydicom.dataset import FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, JPEGBaseline8Bit, MRImageStorage

CR_STORAGE = "1.2.840.10008.5.1.4.1.1.1"
ENHANCED_CT_STORAGE = "1.2.840.10008.5.1.4.1.1.2.1"
ORG_ROOT = "1.2.826.0.1.3680043.2.1125"


@dataclass(frozen=True)
class Patient:
    name: str
    patient_id: str  # the MRN
    birth_date: str
    charset: str
    sex: str
    age: str
    institution: str
    address: str
    phone: str
    physician: str
    operator: str
    station: str
    serial: str
    other_id: str


PATIENTS = (
    Patient("QUIXOTERRA^ZEBEDIAH^M", "98765432", "19610427", "ISO_IR 100", "M", "063Y",
            "SAINT ULRICHSBURG INFIRMARY", "17 Vellichor Lane Brumsworth", "555-0187-4411",
            "PLOVERWICK^ARABELLA", "FENWHISTLE^OSKAR", "STN-QX-HOSPITAL", "SN-ZX-778812", "OPID-44120987"),
    Patient("MÜLLERSTRAND^JÖRGINA", "55501234", "19790102", "ISO_IR 100", "F", "045Y",
            "KLINIKUM GROSSENWALDHEIM", "Sonnenblumenweg 88 Trollhausen", "0049-301-778899",
            "DRAXLMAYR^BENEDIKTA", "HUBERTSTEIN^KLAUS", "STN-GW-CT01", "SN-GW-551199", "OPID-99887766"),
    Patient("ÇELİKKAYA^NİLÜFER", "31415926", "19881231", "ISO_IR 192", "F", "036Y",
            "ANATOLIA VAKIF HASTANESI", "Gulbahce Sokak 12 Karsiyakapolis", "90-232-5550199",
            "YILDIRIMOGLU^EMRE", "KARAHANLI^SELIN", "STN-AV-MR02", "SN-AV-300917", "OPID-27182818"),
)
STUDY_DATES = ("20190314", "20200611")


@dataclass
class CorpusFile:
    path: Path
    patient: Patient
    study_index: int
    modality: str
    sop_instance_uid: str
    study_uid: str
    frame_of_reference_uid: str
    referenced_sop_instance_uid: str | None = None


@dataclass
class Corpus:
    files: list[CorpusFile] = field(default_factory=list)
    planted: set[str] = field(default_factory=set)


def _uid(patient: Patient, *parts: int) -> str:
    return ".".join([ORG_ROOT, patient.patient_id, *map(str, parts)])


def _person_seq(patient: Patient) -> Sequence:
    """Depth-2 nesting: OtherPatientIDsSequence > IssuerOfPatientIDQualifiersSequence."""
    qualifier = Dataset()
    qualifier.UniversalEntityID = f"{patient.institution} MPI"
    qualifier.AssigningFacilitySequence = Sequence([Dataset()])
    qualifier.AssigningFacilitySequence[0].LocalNamespaceEntityID = patient.institution
    item = Dataset()
    item.PatientID = patient.other_id
    item.TypeOfPatientID = "TEXT"
    item.IssuerOfPatientIDQualifiersSequence = Sequence([qualifier])
    return Sequence([item])


def _base(patient: Patient, modality: str, study: int, series: int, instance: int, sop_class: str) -> Dataset:
    ds = Dataset()
    ds.SpecificCharacterSet = patient.charset
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = _uid(patient, study, series, instance)
    ds.StudyInstanceUID = _uid(patient, study)
    ds.SeriesInstanceUID = _uid(patient, study, series)
    ds.FrameOfReferenceUID = _uid(patient, study, 999)
    ds.Modality = modality
    ds.PatientName = patient.name
    ds.PatientID = patient.patient_id
    ds.PatientBirthDate = patient.birth_date
    ds.PatientSex = patient.sex
    ds.PatientAge = patient.age
    ds.PatientWeight = "71.5"
    ds.PatientSize = "1.74"
    ds.PatientAddress = patient.address
    ds.PatientTelephoneNumbers = patient.phone
    ds.OtherPatientIDsSequence = _person_seq(patient)
    ds.IssuerOfPatientID = patient.institution
    ds.StudyDate = STUDY_DATES[study]
    ds.SeriesDate = STUDY_DATES[study]
    ds.AcquisitionDate = STUDY_DATES[study]
    ds.ContentDate = STUDY_DATES[study]
    ds.StudyTime = "081522"
    ds.AcquisitionDateTime = STUDY_DATES[study] + "081530.250000"
    ds.AccessionNumber = f"ACC{patient.patient_id[-5:]}{study}"
    ds.StudyID = f"ST{patient.patient_id[:4]}{study}"
    ds.InstitutionName = patient.institution
    ds.InstitutionAddress = patient.address
    ds.ReferringPhysicianName = patient.physician
    ds.OperatorsName = patient.operator
    ds.PerformingPhysicianName = patient.physician
    ds.StationName = patient.station
    ds.DeviceSerialNumber = patient.serial
    ds.Manufacturer = "ACME MEDICAL"
    ds.StudyDescription = f"{modality} follow-up for {patient.name} MRN {patient.patient_id}"
    ds.SeriesDescription = f"AXIAL {patient.name.split('^')[0]} {patient.patient_id}"
    ds.ImageComments = f"Patient {patient.name} ({patient.patient_id}) born {patient.birth_date}"
    ds.ProtocolName = f"PROTO {patient.patient_id}"
    ds.SeriesNumber = series
    ds.InstanceNumber = instance
    # Depth 2 with a name inside: RequestAttributesSequence > ScheduledProtocolCodeSequence
    request = Dataset()
    request.RequestedProcedureID = f"RP{patient.patient_id}"
    request.ScheduledProcedureStepID = f"SPS{patient.patient_id}"
    request.ScheduledProtocolCodeSequence = Sequence([Dataset()])
    code = request.ScheduledProtocolCodeSequence[0]
    code.CodeValue = "P1"
    code.CodingSchemeDesignator = "99LOCAL"
    code.CodeMeaning = "Routine"
    ds.RequestAttributesSequence = Sequence([request])
    # Private block with a private sequence, and a GE block with one safe attribute (E.3.10).
    block = ds.private_block(0x0009, "ACME PHI 01", create=True)
    block.add_new(0x01, "LO", f"{patient.name} {patient.patient_id}")
    inner = Dataset()
    inner.add_new(0x00091010, "LO", "ACME PHI 01")  # creator repeated inside the item
    inner.add_new(0x00091001, "LO", patient.address)
    block.add_new(0x02, "SQ", Sequence([inner]))
    ge = ds.private_block(0x0019, "GEMS_ACQU_01", create=True)
    ge.add_new(0x23, "DS", "12.5")
    ge.add_new(0x30, "LO", patient.operator)
    return ds


def _pixels(ds: Dataset, rng: np.random.Generator, frames: int = 1) -> None:
    ds.Rows, ds.Columns = 16, 20
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.RescaleSlope, ds.RescaleIntercept = "1", "-1024"
    ds.WindowCenter, ds.WindowWidth = "40", "400"
    ds.PixelSpacing = [0.7, 0.7]
    ds.SliceThickness = "2.5"
    ds.ImagePositionPatient = [-100.0, -120.0, float(ds.InstanceNumber) * 2.5]
    ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    if frames > 1:
        ds.NumberOfFrames = frames
    ds.PixelData = rng.integers(0, 4096, size=(frames, 16, 20), dtype="<u2").tobytes()


def _overlay(ds: Dataset, patient: Patient) -> None:
    ds.add_new(0x60000010, "US", 16)
    ds.add_new(0x60000011, "US", 20)
    ds.add_new(0x60000022, "LO", f"Marker for {patient.name}")
    ds.add_new(0x60000040, "CS", "G")
    ds.add_new(0x60000050, "SS", [1, 1])
    ds.add_new(0x60000100, "US", 1)
    ds.add_new(0x60000102, "US", 0)
    ds.add_new(0x60001500, "LO", f"OVL {patient.patient_id}")
    ds.add_new(0x60003000, "OW", np.packbits(np.eye(16, 20, dtype=np.uint8).ravel()[::-1]).tobytes())
    ds.add_new(0x60004000, "LT", f"overlay drawn for {patient.name}")
    ds.add_new(0x50002500, "LO", f"ECG {patient.name}")  # a retired curve group (50xx)


def _graphics_and_content(ds: Dataset, patient: Patient) -> None:
    text = Dataset()
    text.UnformattedTextValue = f"{patient.name} {patient.patient_id}"
    text.AnchorPointAnnotationUnits = "PIXEL"
    annotation = Dataset()
    annotation.GraphicLayer = "LAYER1"
    annotation.TextObjectSequence = Sequence([text])
    ds.GraphicAnnotationSequence = Sequence([annotation])
    leaf = Dataset()
    leaf.ValueType = "TEXT"
    leaf.TextValue = f"Seen by {patient.physician} for {patient.name} MRN {patient.patient_id}; nodule 4 mm"
    person = Dataset()
    person.ValueType = "PNAME"
    person.PersonName = patient.physician
    container = Dataset()
    container.ValueType = "CONTAINER"
    container.ContentSequence = Sequence([leaf, person])  # depth 2
    ds.ContentSequence = Sequence([container])


def _meta(ds: Dataset, patient: Patient, transfer_syntax: str) -> None:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = transfer_syntax
    meta.SourceApplicationEntityTitle = patient.station[:16]
    ds.file_meta = meta


def build_corpus(folder: Path, seed: int = 7) -> Corpus:
    """Write the corpus under ``folder``; return its files and the planted PHI strings."""
    rng = np.random.default_rng(seed)
    corpus = Corpus()
    folder.mkdir(parents=True, exist_ok=True)
    for p_index, patient in enumerate(PATIENTS):
        for study in range(len(STUDY_DATES)):
            ct_uids = []
            for instance in (1, 2):
                ds = _base(patient, "CT", study, 1, instance, CTImageStorage)
                _pixels(ds, rng)
                _overlay(ds, patient)
                ref = None
                if instance == 2:  # depth-1 reference to the first slice
                    item = Dataset()
                    item.ReferencedSOPClassUID = CTImageStorage
                    item.ReferencedSOPInstanceUID = ct_uids[0]
                    ds.ReferencedImageSequence = Sequence([item])
                    ref = ct_uids[0]
                ct_uids.append(ds.SOPInstanceUID)
                corpus.files.append(_write(folder, ds, patient, study, "CT", ExplicitVRLittleEndian, ref))
            ds = _base(patient, "MR", study, 2, 1, MRImageStorage)
            _pixels(ds, rng)
            _graphics_and_content(ds, patient)
            corpus.files.append(_write(folder, ds, patient, study, "MR", ExplicitVRLittleEndian))
            ds = _base(patient, "CR", study, 3, 1, CR_STORAGE)
            _pixels(ds, rng)
            ds.PhotometricInterpretation = "MONOCHROME1"
            # Compressed: the bytes are not a decodable JPEG; the test only needs them unchanged.
            ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
            ds.PixelData = encapsulate([b"\xff\xd8" + rng.bytes(300) + b"\xff\xd9"])
            corpus.files.append(_write(folder, ds, patient, study, "CR", JPEGBaseline8Bit))
            if p_index == 0:
                corpus.files.append(_enhanced(folder, patient, study, rng, ct_uids[0]))
        corpus.planted |= _planted(patient)
    return corpus


def _enhanced(folder: Path, patient: Patient, study: int, rng: np.random.Generator, source_uid: str) -> CorpusFile:
    ds = _base(patient, "CT", study, 4, 1, ENHANCED_CT_STORAGE)
    _pixels(ds, rng, frames=3)
    del ds.ImagePositionPatient, ds.ImageOrientationPatient, ds.PixelSpacing, ds.SliceThickness
    shared = Dataset()
    measures = Dataset()
    measures.PixelSpacing = [0.7, 0.7]
    measures.SliceThickness = "2.5"
    shared.PixelMeasuresSequence = Sequence([measures])
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    frames = []
    for k in range(3):
        frame = Dataset()
        position = Dataset()
        position.ImagePositionPatient = [-100.0, -120.0, 2.5 * k]
        frame.PlanePositionSequence = Sequence([position])
        content = Dataset()
        content.FrameAcquisitionDateTime = STUDY_DATES[study] + f"0815{30 + k}"
        content.FrameComments = f"frame for {patient.name}"
        frame.FrameContentSequence = Sequence([content])
        # Depth 3: PerFrame > DerivationImageSequence > SourceImageSequence > ReferencedSOPInstanceUID
        source = Dataset()
        source.ReferencedSOPClassUID = CTImageStorage
        source.ReferencedSOPInstanceUID = source_uid
        derivation = Dataset()
        derivation.DerivationDescription = f"derived for {patient.name}"
        derivation.SourceImageSequence = Sequence([source])
        frame.DerivationImageSequence = Sequence([derivation])
        frames.append(frame)
    ds.PerFrameFunctionalGroupsSequence = Sequence(frames)
    return _write(folder, ds, patient, study, "CT-ENH", ExplicitVRLittleEndian, source_uid)


def _write(
    folder: Path, ds: Dataset, patient: Patient, study: int, modality: str, ts: str, ref: str | None = None
) -> CorpusFile:
    _meta(ds, patient, ts)
    path = folder / f"{patient.patient_id}_{study}_{modality}_{ds.SeriesNumber}_{ds.InstanceNumber}.dcm"
    ds.save_as(path, enforce_file_format=True)
    return CorpusFile(path, patient, study, modality, ds.SOPInstanceUID, ds.StudyInstanceUID,
                      ds.FrameOfReferenceUID, ref)


def _planted(patient: Patient) -> set[str]:
    family, given = patient.name.split("^")[:2]
    values = {
        patient.name, family, given, patient.patient_id, patient.birth_date, patient.institution,
        patient.address, patient.phone, patient.physician, patient.physician.split("^")[0],
        patient.operator, patient.operator.split("^")[0], patient.station, patient.serial, patient.other_id,
        f"{ORG_ROOT}.{patient.patient_id}",
    }
    for study in range(len(STUDY_DATES)):
        values |= {f"ACC{patient.patient_id[-5:]}{study}", f"ST{patient.patient_id[:4]}{study}", STUDY_DATES[study]}
    return values


def encodings(value: str) -> set[bytes]:
    """The byte forms a planted value can take in a file: UTF-8 and Latin-1 (when encodable)."""
    forms = {value.encode("utf-8")}
    try:
        forms.add(value.encode("latin-1"))
    except UnicodeEncodeError:
        pass
    return forms
