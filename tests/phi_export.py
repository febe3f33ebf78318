"""A generated multi-patient clinical export for end-to-end de-identification tests (no real data).

:func:`build_export` writes what a PACS export of three patients looks like: folders named after
the patient and the MRN (``BRACKENFIELD^THEODORA_40719263/20200114_CT/CT_40719263_0001.dcm``),
per patient a CT series with geometry, an MR series and two MR localizers, an enhanced
(multi-frame) MR, two DX images without patient geometry, two US images (one with
BurnedInAnnotation NO, one without the attribute), a Comprehensive SR whose content tree
names the patient and references a CT image, and a Key Object Selection document referencing CT
images. Identity is planted in standard attributes, in code sequences nested two deep, in free
text (the birth date in several written forms, MRN with and without separators, phone, e-mail),
in overlays, in private blocks (with a private sequence), in the file meta information and in
UIDs built from an organisation root and the MRN.

:attr:`Export.planted` holds every planted identifying string; :func:`variants` gives the text
forms a value can be written in and :func:`variant_bytes` their encodings, for byte-level search.
Values that legitimately survive de-identification (modality, the shared study description
``CT CHEST W/O CONTRAST``, manufacturer) are not in the planted set.
"""

from __future__ import annotations

import datetime
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pydicom import Dataset, Sequence
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian

ORG_ROOT = "1.2.826.0.1.3680043.10.543"
CT_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
MR_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
ENHANCED_MR_STORAGE = "1.2.840.10008.5.1.4.1.1.4.1"
DX_STORAGE = "1.2.840.10008.5.1.4.1.1.1.1"  # Digital X-Ray Image Storage - For Presentation
US_STORAGE = "1.2.840.10008.5.1.4.1.1.6.1"
COMPREHENSIVE_SR_STORAGE = "1.2.840.10008.5.1.4.1.1.88.33"
KO_STORAGE = "1.2.840.10008.5.1.4.1.1.88.59"
STUDY_MANAGEMENT_CLASS = "1.2.840.10008.3.1.2.3.1"  # Detached Study Management (retired; still seen)
MPPS_CLASS = "1.2.840.10008.3.1.2.3.3"  # Modality Performed Procedure Step
#: A description several patients share: not identifying, must survive where descriptors are kept.
SHARED_STUDY_DESCRIPTION = "CT CHEST W/O CONTRAST"
MANUFACTURER = "ACME MEDICAL"
_MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September",
           "October", "November", "December")


@dataclass(frozen=True)
class Patient:
    name: str
    mrn: str
    mrn_separated: str
    birth_date: str
    charset: str | None
    sex: str
    age: str
    institution: str
    department: str
    address: str
    phone: str
    email: str
    referring: str
    performing: str
    reading: str
    operator: str
    station: str
    serial: str
    other_id: str
    study_dates: tuple[str, str, str, str]  # CT, MR, DX, US


PATIENTS = (
    Patient("BRACKENFIELD^THEODORA^J", "40719263", "40-719-263", "19570314", "ISO_IR 100", "F", "062Y",
            "SAINT ULFRIDA MEMORIAL INFIRMARY", "THORACIC IMAGING UNIT BRUMSWORTH", "17 Vellichor Lane Brumsworth",
            "555-0187-4411", "t.brackenfield@mailbox-tb.example", "PLOVERWICK^ARABELLA", "QUENTHAM^ISIDORE",
            "MARCHBANKS^DELPHINE", "FENWHISTLE^OSKAR", "BRMCT01", "SN-ZX-778812", "OPID-44120987",
            ("20200114", "20200302", "20200417", "20200529")),
    Patient("WOJCIECHOWSKA^MAŁGORZATA", "58130947", "58-130-947", "19690822", "ISO_IR 192", "F", "051Y",
            "SZPITAL ŚWIĘTEJ JADWIGI ZŁOTORYJA", "PRACOWNIA TOMOGRAFII ŁĘCZYCKA", "ul. Żurawinowa 42 Złotoryja",
            "48-601-334-972", "mwojciechowska@poczta-mw.example", "KRZYWICKI^BOLESŁAW", "DĄBROWSKA^HALINA",
            "SZCZEPAŃSKI^MIROSŁAW", "PIETRUSZEWSKA^EDYTA", "ZLTMR02", "SN-PL-330917", "OPID-27182818",
            ("20190908", "20191021", "20191203", "20200115")),
    Patient("OKAFOR-LINDQVIST^ADEBAYO", "69244185", "69-244-185", "19881231", None, "M", "031Y",
            "NORTHGATE VALLEY CLINIC", "CROSS-SECTIONAL SUITE NORTHGATE", "88 Sonnenblumen Road Trollhaven",
            "0049-301-778899", "adebayo.ol@inbox-ao.example", "HALVERSEN^SIGRUN", "MBEKIWANE^THANDEKA",
            "ROSSELLINI^FABRIZIO", "VANTERPOOL^GWENDOLYN", "NGVUS03", "SN-NG-551199", "OPID-99887766",
            ("20210611", "20210723", "20210830", "20211012")),
)


@dataclass(frozen=True)
class ExportFile:
    """One written file: where, what (role, modality, SOP class), whose, and which instances it references."""

    path: Path
    role: str  # ct, mr, localizer, enhanced-mr, dx, us-burned-in-no, us-burned-in-absent, sr, ko
    modality: str
    sop_class_uid: str
    patient: Patient
    sop_instance_uid: str
    study_uid: str
    series_uid: str
    frame_of_reference_uid: str | None
    references: tuple[str, ...] = ()


@dataclass
class Export:
    root: Path
    files: list[ExportFile] = field(default_factory=list)
    planted: set[str] = field(default_factory=set)

    def by_role(self, role: str) -> list[ExportFile]:
        return [f for f in self.files if f.role == role]


# -- written forms ------------------------------------------------------------------------------


def _date_forms(value: str) -> set[str]:
    day = datetime.date(int(value[:4]), int(value[4:6]), int(value[6:]))
    month = _MONTHS[day.month - 1]
    return {
        value, day.isoformat(), day.strftime("%d/%m/%Y"), day.strftime("%m/%d/%Y"), day.strftime("%d.%m.%Y"),
        day.strftime("%Y/%m/%d"), f"{month} {day.day}, {day.year}", f"{day.day} {month} {day.year}",
    }


def _ascii_fold(value: str) -> str:
    folded = unicodedata.normalize("NFKD", value.replace("Ł", "L").replace("ł", "l"))
    return "".join(c for c in folded if not unicodedata.combining(c))


def variants(value: str) -> set[str]:
    """The text forms ``value`` may be written in: dates in 8 notations, names in 4 orders, folded.

    Case is not varied: search case-insensitively.
    """
    forms = {value}
    if len(value) == 8 and value.isdigit() and value[:2] in ("19", "20"):
        forms |= _date_forms(value)
    if "^" in value:
        parts = [p for p in value.split("^") if p]
        family, given = parts[0], parts[1] if len(parts) > 1 else ""
        forms |= {" ".join(parts), f"{given} {family}".strip(), f"{family}, {given}".strip(", ")}
    forms |= {_ascii_fold(f) for f in forms}
    return forms


def variant_bytes(value: str) -> set[bytes]:
    """Every text form of ``value`` as bytes: UTF-8 and, where encodable, Latin-1."""
    out = set()
    for form in variants(value):
        out.add(form.encode("utf-8"))
        try:
            out.add(form.encode("latin-1"))
        except UnicodeEncodeError:
            pass
    return out


# -- building blocks ----------------------------------------------------------------------------


def _uid(p: Patient, *parts: int) -> str:
    return ".".join([ORG_ROOT, p.mrn, *map(str, parts)])


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, scheme, meaning
    return item


def _ref(sop_class: str, sop_instance: str) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID, item.ReferencedSOPInstanceUID = sop_class, sop_instance
    return item


@dataclass(frozen=True)
class _Study:
    index: int
    modality: str
    date: str
    description: str

    def uid(self, p: Patient) -> str:
        return _uid(p, self.index)


def _studies(p: Patient) -> dict[str, _Study]:
    ct, mr, dx, us = p.study_dates
    return {
        "CT": _Study(1, "CT", ct, SHARED_STUDY_DESCRIPTION),
        "MR": _Study(2, "MR", mr, "MR BRAIN W/WO CONTRAST"),
        "DX": _Study(3, "DX", dx, "XR CHEST PA AND LATERAL"),
        "US": _Study(4, "US", us, "US ABDOMEN COMPLETE"),
    }


def _patient_module(ds: Dataset, p: Patient) -> None:
    if p.charset:
        ds.SpecificCharacterSet = p.charset
    ds.PatientName = p.name
    ds.PatientID = p.mrn
    ds.IssuerOfPatientID = p.institution[:64]
    ds.PatientBirthDate = p.birth_date
    ds.PatientSex = p.sex
    ds.PatientAge = p.age
    ds.PatientSize = "1.71"
    ds.PatientWeight = "68.5"
    ds.PatientAddress = p.address
    ds.PatientTelephoneNumbers = p.phone
    ds.add_new(0x00101000, "LO", [p.other_id, f"MRN{p.mrn}"])  # OtherPatientIDs (retired, still exported)
    other = Dataset()
    other.PatientID = p.other_id
    other.IssuerOfPatientID = p.institution[:64]
    other.TypeOfPatientID = "TEXT"
    ds.OtherPatientIDsSequence = Sequence([other])
    ds.AdditionalPatientHistory = (
        f"Born {_fmt(p.birth_date, '%Y-%m-%d')} (DOB {_fmt(p.birth_date, '%d/%m/%Y')}); prior CT elsewhere"
    )
    ds.PatientComments = f"Contact {p.phone} or {p.email}"


def _fmt(value: str, pattern: str) -> str:
    return datetime.date(int(value[:4]), int(value[4:6]), int(value[6:])).strftime(pattern)


def _long_date(value: str) -> str:
    day = datetime.date(int(value[:4]), int(value[4:6]), int(value[6:]))
    return f"{_MONTHS[day.month - 1]} {day.day}, {day.year}"


def _study_module(ds: Dataset, p: Patient, study: _Study) -> None:
    ds.StudyInstanceUID = study.uid(p)
    ds.StudyDate = study.date
    ds.StudyTime = "081522.125"
    ds.AccessionNumber = f"A{p.mrn[-5:]}{study.index}"
    ds.StudyID = f"S{p.mrn[:4]}{study.index}"
    ds.StudyDescription = study.description
    ds.ReferringPhysicianName = p.referring
    ds.NameOfPhysiciansReadingStudy = p.reading
    ds.add_new(0x00324000, "LT", f"DOB {_fmt(p.birth_date, '%d.%m.%Y')}; call {p.phone}, {p.email}")  # StudyComments
    ds.RequestingPhysician = p.referring
    # Depth 2: ProcedureCodeSequence > EquivalentCodeSequence > CodeMeaning = the patient's name.
    procedure = _code(f"P{study.index}", "99ORDER", study.description)
    procedure.EquivalentCodeSequence = Sequence([_code(f"EQ{study.index}", "99LOCAL", p.name.replace("^", " "))])
    ds.ProcedureCodeSequence = Sequence([procedure])
    ds.ReferencedStudySequence = Sequence([_ref(STUDY_MANAGEMENT_CLASS, study.uid(p))])
    ds.ReferencedPerformedProcedureStepSequence = Sequence([_ref(MPPS_CLASS, _uid(p, study.index, 900))])
    request = Dataset()
    request.RequestedProcedureID = f"RP{p.mrn}"
    request.RequestedProcedureDescription = f"{study.description} for {p.name.split('^')[0]}"
    request.RequestedProcedureCodeSequence = Sequence([_code("RPC1", "99LOCAL", p.institution)])
    request.ScheduledProcedureStepID = f"SPS{p.mrn[-6:]}"
    ds.RequestAttributesSequence = Sequence([request])


def _series_module(ds: Dataset, p: Patient, study: _Study, modality: str, series: int, description: str) -> None:
    ds.Modality = modality
    ds.SeriesInstanceUID = _uid(p, study.index, series)
    ds.SeriesNumber = series
    ds.SeriesDate = study.date
    ds.SeriesTime = "081530"
    ds.SeriesDescription = description
    ds.PerformingPhysicianName = p.performing
    ds.OperatorsName = p.operator
    ds.PerformedProcedureStepID = f"PPS{p.mrn[-4:]}{series}"
    ds.PerformedProcedureStepStartDate = study.date
    ds.PerformedProcedureStepStartTime = "081500"
    ds.PerformedProcedureStepDescription = study.description
    ds.PerformedProtocolCodeSequence = Sequence([_code("PROT7", "99LOCAL", p.institution)])


def _equipment_module(ds: Dataset, p: Patient) -> None:
    ds.Manufacturer = MANUFACTURER
    ds.InstitutionName = p.institution
    ds.InstitutionAddress = p.address
    ds.InstitutionalDepartmentName = p.department
    ds.StationName = p.station
    ds.DeviceSerialNumber = p.serial
    ds.ManufacturerModelName = "ORBIS 9"
    ds.SoftwareVersions = "VB21"


def _instance(ds: Dataset, p: Patient, study: _Study, sop_class: str, series: int, number: int) -> None:
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = _uid(p, study.index, series, number)
    ds.InstanceNumber = number
    ds.InstanceCreationDate = study.date
    ds.InstanceCreationTime = "081533"
    ds.InstanceCreatorUID = f"{ORG_ROOT}.{p.mrn}"
    ds.ContentDate = study.date
    ds.ContentTime = "081531"


def _private(ds: Dataset, p: Patient) -> None:
    block = ds.private_block(0x0029, "ACME EXPORT 1.0", create=True)
    block.add_new(0x01, "LO", p.name)
    block.add_new(0x02, "LO", f"MRN {p.mrn}")
    inner = Dataset()
    inner.add_new(0x00290010, "LO", "ACME EXPORT 1.0")
    inner.add_new(0x00291001, "LO", p.name)
    raw = p.address.encode("utf-8")
    inner.add_new(0x00291003, "UN", raw + b" " * (len(raw) % 2))  # UN is not padded by pydicom
    block.add_new(0x03, "SQ", Sequence([inner]))


def _overlay(ds: Dataset, p: Patient, rows: int, columns: int) -> None:
    ds.add_new(0x60000010, "US", rows)
    ds.add_new(0x60000011, "US", columns)
    ds.add_new(0x60000040, "CS", "G")
    ds.add_new(0x60000050, "SS", [1, 1])
    ds.add_new(0x60000100, "US", 1)
    ds.add_new(0x60000102, "US", 0)
    ds.add_new(0x60001500, "LO", p.name.replace("^", " "))  # OverlayLabel
    ds.add_new(0x60003000, "OW", np.zeros(rows * columns // 8, dtype=np.uint8).tobytes())
    ds.add_new(0x60004000, "LT", f"marked for {p.name}")  # OverlayComments


def _mono_pixels(ds: Dataset, rng: np.random.Generator, rows: int = 16, columns: int = 16, frames: int = 1) -> None:
    """12-bit values in 16-bit words: every high byte is < 0x10, so no run of text can hide in them."""
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = rows, columns
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    if frames > 1:
        ds.NumberOfFrames = frames
    ds.PixelData = rng.integers(0, 4096, size=(frames, rows, columns), dtype="<u2").tobytes()


def _meta(ds: Dataset, p: Patient) -> None:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.SourceApplicationEntityTitle = p.station
    ds.file_meta = meta


def _write(
    export: Export, folder: Path, name: str, ds: Dataset, p: Patient, role: str, references: tuple[str, ...] = ()
) -> ExportFile:
    _meta(ds, p)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    ds.save_as(path, enforce_file_format=True)
    entry = ExportFile(path, role, ds.Modality, ds.SOPClassUID, p, ds.SOPInstanceUID, ds.StudyInstanceUID,
                       ds.SeriesInstanceUID, ds.get("FrameOfReferenceUID"), references)
    export.files.append(entry)
    return entry


def _image(p: Patient, study: _Study, modality: str, sop_class: str, series: int, number: int, description: str) -> Dataset:
    ds = Dataset()
    _patient_module(ds, p)
    _study_module(ds, p, study)
    _series_module(ds, p, study, modality, series, description)
    _equipment_module(ds, p)
    _instance(ds, p, study, sop_class, series, number)
    ds.AcquisitionDate = study.date
    ds.AcquisitionTime = "081530.500"
    ds.BurnedInAnnotation = "NO"
    ds.Laterality = ""  # type 2C in General Series for paired body parts; empty = unknown
    _private(ds, p)
    return ds


# -- series ---------------------------------------------------------------------------------------


def _ct(export: Export, root: Path, p: Patient, study: _Study, rng: np.random.Generator) -> list[ExportFile]:
    folder = root / f"{study.date}_CT"
    files = []
    for n in range(1, 5):
        ds = _image(p, study, "CT", CT_STORAGE, 2, n, f"AXIAL 2.5 MRN {p.mrn}")
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.FrameOfReferenceUID = _uid(p, study.index, 800)
        ds.PositionReferenceIndicator = ""
        ds.PatientPosition = "HFS"
        ds.ImagePositionPatient = [-120.0, -115.5, -50.0 + 2.5 * n]
        ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
        ds.PixelSpacing = [0.75, 0.75]
        ds.SliceThickness = "2.5"
        ds.SliceLocation = str(-50.0 + 2.5 * n)
        ds.KVP = "120"
        ds.AcquisitionNumber = 1
        ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = "-1024", "1", "HU"
        ds.WindowCenter, ds.WindowWidth = "40", "400"
        ds.ImageComments = f"pt born {_long_date(p.birth_date)}; MRN {p.mrn_separated}"
        _mono_pixels(ds, rng)
        if n == 1:
            _overlay(ds, p, 16, 16)
        files.append(_write(export, folder, f"CT_{p.mrn}_{n:04d}.dcm", ds, p, "ct"))
    return files


def _mr(export: Export, root: Path, p: Patient, study: _Study, rng: np.random.Generator) -> None:
    folder = root / f"{study.date}_MR"
    frame_of_reference = _uid(p, study.index, 800)
    orientations = {1: [0.0, 1.0, 0.0, 0.0, 0.0, -1.0], 2: [1.0, 0.0, 0.0, 0.0, 0.0, -1.0]}  # sagittal, coronal
    for n, iop in orientations.items():
        ds = _image(p, study, "MR", MR_STORAGE, 1, n, "LOCALIZER 3-PLANE")
        ds.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
        _mr_attributes(ds, frame_of_reference)
        ds.ImageOrientationPatient = iop
        ds.ImagePositionPatient = [0.0, -120.0, 120.0] if n == 1 else [-120.0, 0.0, 120.0]
        ds.SliceThickness = "8"
        _mono_pixels(ds, rng)
        _write(export, folder / "LOCALIZER", f"IM{n:04d}", ds, p, "localizer")
    for n in range(1, 4):
        ds = _image(p, study, "MR", MR_STORAGE, 3, n, f"T1 AX {p.mrn_separated}")
        ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "NONE"]
        _mr_attributes(ds, frame_of_reference)
        ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
        ds.ImagePositionPatient = [-120.0, -120.0, -20.0 + 5.0 * n]
        ds.SliceThickness = "5"
        ds.SliceLocation = str(-20.0 + 5.0 * n)
        ds.ImageComments = f"DOB {_fmt(p.birth_date, '%d.%m.%Y')}"
        _mono_pixels(ds, rng)
        _write(export, folder / "T1_AX", f"IM{n:04d}", ds, p, "mr")


def _mr_attributes(ds: Dataset, frame_of_reference: str) -> None:
    ds.FrameOfReferenceUID = frame_of_reference
    ds.PositionReferenceIndicator = ""
    ds.PatientPosition = "HFS"
    ds.PixelSpacing = [1.0, 1.0]
    ds.ScanningSequence, ds.SequenceVariant, ds.ScanOptions = "SE", "NONE", ""
    ds.MRAcquisitionType = "2D"
    ds.RepetitionTime, ds.EchoTime, ds.EchoTrainLength = "500", "12", "1"
    ds.MagneticFieldStrength = "1.5"
    ds.AcquisitionNumber = 1


def _enhanced_mr(export: Export, root: Path, p: Patient, study: _Study, rng: np.random.Generator) -> None:
    ds = _image(p, study, "MR", ENHANCED_MR_STORAGE, 5, 1, f"ENH T2 {p.mrn}")
    for keyword in ("AcquisitionDate", "AcquisitionTime", "BurnedInAnnotation", "Laterality"):
        delattr(ds, keyword)
    ds.ImageType = ["ORIGINAL", "PRIMARY", "T2", "NONE"]
    ds.FrameOfReferenceUID = _uid(p, study.index, 800)
    ds.PositionReferenceIndicator = ""
    ds.AcquisitionDateTime = study.date + "081530.500000"
    ds.ContentQualification = "PRODUCT"
    ds.PatientPosition = "HFS"
    ds.PixelPresentation, ds.VolumetricProperties, ds.VolumeBasedCalculationTechnique = "MONOCHROME", "VOLUME", "NONE"
    ds.ComplexImageComponent, ds.AcquisitionContrast = "MAGNITUDE", "T2"
    ds.BurnedInAnnotation = "NO"
    ds.LossyImageCompression = "00"
    ds.PresentationLUTShape = "IDENTITY"
    _enhanced_mr_acquisition(ds)
    _mono_pixels(ds, rng, frames=3)
    ds.DimensionOrganizationSequence = Sequence([Dataset()])
    ds.DimensionOrganizationSequence[0].DimensionOrganizationUID = _uid(p, study.index, 5, 700)
    index = Dataset()
    index.DimensionOrganizationUID = _uid(p, study.index, 5, 700)
    index.DimensionIndexPointer = 0x00200032  # ImagePositionPatient
    index.FunctionalGroupPointer = 0x00209113  # PlanePositionSequence
    ds.DimensionIndexSequence = Sequence([index])
    shared = Dataset()
    measures = Dataset()
    measures.PixelSpacing, measures.SliceThickness = [1.0, 1.0], "4"
    shared.PixelMeasuresSequence = Sequence([measures])
    orientation = Dataset()
    orientation.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    shared.PlaneOrientationSequence = Sequence([orientation])
    frame_type = Dataset()
    frame_type.FrameType = ["ORIGINAL", "PRIMARY", "T2", "NONE"]
    frame_type.PixelPresentation, frame_type.VolumetricProperties = "MONOCHROME", "VOLUME"
    frame_type.VolumeBasedCalculationTechnique, frame_type.ComplexImageComponent = "NONE", "MAGNITUDE"
    frame_type.AcquisitionContrast = "T2"
    shared.MRImageFrameTypeSequence = Sequence([frame_type])
    _enhanced_mr_shared(shared)
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    frames = []
    for k in range(3):
        frame = Dataset()
        content = Dataset()
        content.FrameAcquisitionDateTime = study.date + f"08153{k}.000000"
        content.FrameReferenceDateTime = study.date + f"08153{k}.000000"
        content.FrameAcquisitionDuration = 1000.0
        content.DimensionIndexValues = [k + 1]
        content.FrameComments = f"frame for {p.name}"
        frame.FrameContentSequence = Sequence([content])
        position = Dataset()
        position.ImagePositionPatient = [-120.0, -120.0, -20.0 + 4.0 * k]
        frame.PlanePositionSequence = Sequence([position])
        frames.append(frame)
    ds.PerFrameFunctionalGroupsSequence = Sequence(frames)
    ds.InstanceNumber = 1
    _write(export, root / f"{study.date}_MR" / "ENH_T2", f"{ds.SOPInstanceUID}.dcm", ds, p, "enhanced-mr")


def _enhanced_mr_acquisition(ds: Dataset) -> None:
    """The MR Image and Spectroscopy Instance macro and MR Pulse Sequence module (PS3.3 C.8.13)."""
    ds.AcquisitionContextSequence = Sequence([])
    ds.AcquisitionDuration = 12.5
    ds.ApplicableSafetyStandardAgency = "IEC"
    ds.KSpaceFiltering, ds.MagneticFieldStrength, ds.ResonantNucleus = "NONE", "1.5", "1H"
    ds.PulseSequenceName, ds.MRAcquisitionType = "TSE2D", "2D"
    ds.EchoPulseSequence, ds.MultipleSpinEcho, ds.MultiPlanarExcitation = "SPIN", "NO", "NO"
    ds.PhaseContrast, ds.TimeOfFlightContrast, ds.SteadyStatePulseSequence = "NO", "NO", "NONE"
    ds.EchoPlanarPulseSequence, ds.SaturationRecovery, ds.SpectrallySelectedSuppression = "NO", "NO", "NONE"
    ds.OversamplingPhase, ds.GeometryOfKSpaceTraversal, ds.SegmentedKSpaceTraversal = "NONE", "RECTILINEAR", "SINGLE"
    ds.RectilinearPhaseEncodeReordering, ds.NumberOfKSpaceTrajectories = "LINEAR", 1


def _enhanced_mr_shared(shared: Dataset) -> None:
    """Functional group macros an Enhanced MR image needs (PS3.3 C.8.13.5), one item each."""
    def item(**values) -> Sequence:
        entry = Dataset()
        for keyword, value in values.items():
            setattr(entry, keyword, value)
        return Sequence([entry])

    shared.FrameAnatomySequence = item(AnatomicRegionSequence=Sequence([_code("12738006", "SCT", "Brain")]),
                                       FrameLaterality="U")
    shared.MRAveragesSequence = item(NumberOfAverages=1.0)
    shared.MREchoSequence = item(EffectiveEchoTime=12.0)
    shared.MRImagingModifierSequence = item(MagnetizationTransfer="NONE", BloodSignalNulling="NO", Tagging="NONE",
                                            TransmitterFrequency=63.9, PixelBandwidth=200.0)
    shared.MRModifierSequence = item(InversionRecovery="NO", FlowCompensation="NONE", T2Preparation="NO",
                                     SpectrallySelectedExcitation="NONE", SpatialPresaturation="NONE",
                                     PartialFourier="NO", ParallelAcquisition="NO")
    shared.MRReceiveCoilSequence = item(ReceiveCoilName="HEAD 8CH", ReceiveCoilType="MULTICOIL",
                                        QuadratureReceiveCoil="NO", ReceiveCoilManufacturerName="",
                                        MultiCoilDefinitionSequence=item(MultiCoilElementName="H1",
                                                                         MultiCoilElementUsed="YES"))
    shared.MRTimingAndRelatedParametersSequence = item(RepetitionTime=3000.0, FlipAngle=90.0, EchoTrainLength=8,
                                                       RFEchoTrainLength=8, GradientEchoTrainLength=0,
                                                       GradientOutputType="DB_DT", GradientOutput=20.0,
                                                       OperatingModeSequence=item(OperatingModeType="STATIC FIELD",
                                                                                  OperatingMode="IEC_NORMAL"),
                                                       SpecificAbsorptionRateSequence=item(
                                                           SpecificAbsorptionRateDefinition="IEC_WHOLE_BODY",
                                                           SpecificAbsorptionRateValue=0.5))
    shared.MRTransmitCoilSequence = item(TransmitCoilName="BODY", TransmitCoilType="BODY",
                                         TransmitCoilManufacturerName="")
    shared.MRFOVGeometrySequence = item(InPlanePhaseEncodingDirection="ROW", MRAcquisitionFrequencyEncodingSteps=16,
                                        MRAcquisitionPhaseEncodingStepsInPlane=16, PercentSampling=100.0,
                                        PercentPhaseFieldOfView=100.0)
    shared.PixelValueTransformationSequence = item(RescaleIntercept=0, RescaleSlope=1, RescaleType="US")


def _dx(export: Export, root: Path, p: Patient, study: _Study, rng: np.random.Generator) -> None:
    for n, view in ((1, "PA"), (2, "LL")):
        ds = _image(p, study, "DX", DX_STORAGE, 1, n, f"CHEST {view} {p.mrn}")
        ds.ImageType = ["ORIGINAL", "PRIMARY"]
        ds.PresentationIntentType = "FOR PRESENTATION"
        ds.ViewPosition = view
        ds.PatientOrientation = ["P", "F"] if view == "PA" else ["A", "F"]
        ds.ImagerPixelSpacing = [0.15, 0.15]
        ds.BodyPartExamined = "CHEST"
        ds.KVP = "110"
        ds.DetectorType = "SCINTILLATOR"
        ds.PixelIntensityRelationship, ds.PixelIntensityRelationshipSign = "LOG", 1
        ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = "0", "1", "US"
        ds.WindowCenter, ds.WindowWidth = "2048", "4096"
        ds.LossyImageCompression = "00"
        ds.PresentationLUTShape = "IDENTITY"
        ds.ImageComments = f"DOB {_fmt(p.birth_date, '%Y-%m-%d')}"
        del ds.Laterality  # DX: ImageLaterality instead
        ds.ImageLaterality = "U"
        ds.PositionerType = ""
        ds.AcquisitionContextSequence = Sequence([])
        ds.AnatomicRegionSequence = Sequence([_code("51185008", "SCT", "Chest")])
        _mono_pixels(ds, rng)
        _write(export, root / f"{study.date}_DX", f"DX_{p.mrn}_{n}.dcm", ds, p, "dx")


def _us(export: Export, root: Path, p: Patient, study: _Study, rng: np.random.Generator) -> None:
    for n, role in ((1, "us-burned-in-no"), (2, "us-burned-in-absent")):
        ds = _image(p, study, "US", US_STORAGE, 1, n, "ABDOMEN")
        if role == "us-burned-in-absent":
            del ds.BurnedInAnnotation
        ds.ImageType = ["ORIGINAL", "PRIMARY", "ABDOMINAL", "0001"]
        ds.PatientOrientation = ""
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows, ds.Columns = 16, 16
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
        ds.LossyImageCompression = "00"
        # Values below 0x20: no printable byte, so no planted text can appear in the pixels by chance.
        ds.PixelData = rng.integers(0, 0x20, size=(16, 16), dtype=np.uint8).tobytes()
        ds.ImageComments = f"{p.name.split('^')[0]} {_fmt(p.birth_date, '%d/%m/%Y')}"
        _write(export, root / f"{study.date}_US", f"US{n:04d}", ds, p, role)


def _document(p: Patient, study: _Study, sop_class: str, modality: str, series: int, description: str) -> Dataset:
    ds = Dataset()
    _patient_module(ds, p)
    _study_module(ds, p, study)
    _series_module(ds, p, study, modality, series, description)
    _equipment_module(ds, p)
    _instance(ds, p, study, sop_class, series, 1)
    _private(ds, p)
    ds.ReferencedPerformedProcedureStepSequence = Sequence([])  # type 2 in SR Document Series
    return ds


def _evidence(study_uid: str, series_uid: str, refs: list[ExportFile]) -> Sequence:
    series = Dataset()
    series.SeriesInstanceUID = series_uid
    series.ReferencedSOPSequence = Sequence([_ref(f.sop_class_uid, f.sop_instance_uid) for f in refs])
    study = Dataset()
    study.StudyInstanceUID = study_uid
    study.ReferencedSeriesSequence = Sequence([series])
    return Sequence([study])


def _content(value_type: str, relationship: str, concept: Dataset) -> Dataset:
    item = Dataset()
    item.RelationshipType = relationship
    item.ValueType = value_type
    item.ConceptNameCodeSequence = Sequence([concept])
    return item


def _sr(export: Export, root: Path, p: Patient, study: _Study, ct: list[ExportFile]) -> None:
    ds = _document(p, study, COMPREHENSIVE_SR_STORAGE, "SR", 90, "CHEST CT REPORT")
    ds.CompletionFlag, ds.VerificationFlag = "COMPLETE", "UNVERIFIED"
    ds.ValueType = "CONTAINER"
    ds.ContinuityOfContent = "SEPARATE"
    ds.ConceptNameCodeSequence = Sequence([_code("18748-4", "LN", "Diagnostic Imaging Report")])
    ds.ContentTemplateSequence = Sequence([Dataset()])
    ds.ContentTemplateSequence[0].MappingResource = "DCMR"
    ds.ContentTemplateSequence[0].TemplateIdentifier = "2000"
    text = _content("TEXT", "CONTAINS", _code("121071", "DCM", "Finding"))
    text.TextValue = (f"Patient {p.name.replace('^', ' ')} examined {_fmt(study.date, '%d/%m/%Y')}: "
                      f"4 mm nodule, right upper lobe. DOB {_fmt(p.birth_date, '%Y-%m-%d')}.")
    person = _content("PNAME", "HAS OBS CONTEXT", _code("121008", "DCM", "Person Observer Name"))
    person.PersonName = p.reading
    date = _content("DATE", "HAS OBS CONTEXT", _code("111060", "DCM", "Study Date"))
    date.Date = study.date
    code = _content("CODE", "CONTAINS", _code("121071", "DCM", "Finding"))
    code.ConceptCodeSequence = Sequence([_code("27925004", "SCT", "Nodule")])
    uidref = _content("UIDREF", "HAS OBS CONTEXT", _code("121018", "DCM", "Procedure Study Instance UID"))
    uidref.UID = study.uid(p)
    image = _content("IMAGE", "CONTAINS", _code("121112", "DCM", "Source of Measurement"))
    image.ReferencedSOPSequence = Sequence([_ref(CT_STORAGE, ct[1].sop_instance_uid)])
    ds.ContentSequence = Sequence([person, date, uidref, text, code, image])
    ds.CurrentRequestedProcedureEvidenceSequence = _evidence(study.uid(p), ct[1].series_uid, [ct[1]])
    ds.PerformedProcedureCodeSequence = Sequence([])
    _write(export, root / f"{study.date}_CT" / "SR", f"SR_{p.mrn}.dcm", ds, p, "sr", (ct[1].sop_instance_uid,))


def _ko(export: Export, root: Path, p: Patient, study: _Study, ct: list[ExportFile]) -> None:
    ds = _document(p, study, KO_STORAGE, "KO", 91, "KEY IMAGES")
    ds.ValueType = "CONTAINER"
    ds.ContinuityOfContent = "SEPARATE"
    ds.ConceptNameCodeSequence = Sequence([_code("113000", "DCM", "Of Interest")])
    ds.ContentTemplateSequence = Sequence([Dataset()])
    ds.ContentTemplateSequence[0].MappingResource = "DCMR"
    ds.ContentTemplateSequence[0].TemplateIdentifier = "2010"
    chosen = [ct[0], ct[2]]
    items = []
    for f in chosen:
        image = Dataset()
        image.RelationshipType, image.ValueType = "CONTAINS", "IMAGE"
        image.ReferencedSOPSequence = Sequence([_ref(f.sop_class_uid, f.sop_instance_uid)])
        items.append(image)
    ds.ContentSequence = Sequence(items)
    ds.CurrentRequestedProcedureEvidenceSequence = _evidence(study.uid(p), ct[0].series_uid, chosen)
    ds.ContentTime = "081540"
    refs = tuple(f.sop_instance_uid for f in chosen)
    _write(export, root / f"{study.date}_CT" / "KO", f"KO_{p.mrn}.dcm", ds, p, "ko", refs)


def _planted(p: Patient) -> set[str]:
    values = {
        p.name, p.mrn, p.mrn_separated, f"MRN{p.mrn}", p.birth_date, p.institution, p.department, p.address,
        p.phone, p.email, p.referring, p.performing, p.reading, p.operator, p.station, p.serial, p.other_id,
        f"{ORG_ROOT}.{p.mrn}", f"RP{p.mrn}", f"SPS{p.mrn[-6:]}",
    }
    values |= {part for part in p.name.split("^") if len(part) >= 4}
    for person in (p.referring, p.performing, p.reading, p.operator):
        values.add(person.split("^")[0])
    for study in _studies(p).values():
        values |= {study.date, f"A{p.mrn[-5:]}{study.index}", f"S{p.mrn[:4]}{study.index}"}
    return values


def build_export(folder: Path, seed: int = 11) -> Export:
    """Write the export under ``folder`` (created); returns its files and the planted identifying strings.

    Deterministic: the same ``seed`` gives the same bytes.
    """
    rng = np.random.default_rng(seed)
    export = Export(Path(folder))
    for p in PATIENTS:
        root = Path(folder) / f"{p.name.split('^')[0]}^{p.name.split('^')[1]}_{p.mrn}"
        studies = _studies(p)
        ct = _ct(export, root, p, studies["CT"], rng)
        _sr(export, root, p, studies["CT"], ct)
        _ko(export, root, p, studies["CT"], ct)
        _mr(export, root, p, studies["MR"], rng)
        _enhanced_mr(export, root, p, studies["MR"], rng)
        _dx(export, root, p, studies["DX"], rng)
        _us(export, root, p, studies["US"], rng)
        export.planted |= _planted(p)
    generic = {SHARED_STUDY_DESCRIPTION, MANUFACTURER, "CT", "MR", "DX", "US", "SR", "KO"}
    assert not export.planted & generic
    return export
