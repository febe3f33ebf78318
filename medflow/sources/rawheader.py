"""Discovery facts of a plain DICOM file read straight from its header bytes, without pydicom.

:func:`scan_file` is a fast path of :func:`medflow.sources.discovery._memoized_file_info`: for a
file it is sure of, it returns exactly the facts the pydicom path computes (``_file_info`` and
:func:`medflow.sources.series.read_facts`, same types, floats equal bit for bit); for anything
else it returns ``None`` ("decline"), and the pydicom path, which stays the reference, reads the
file and names its problems. Importing this module imports no pydicom.

The files it accepts (every rule mirrors what ``pydicom.dcmread(stop_before_pixels=True)`` 3.0
and the value conversions of ``Dataset.get`` do with such bytes):

* a 128-byte preamble and ``DICM``; a file meta group (0002) in explicit VR little endian with
  standard VRs, whose TransferSyntaxUID is Implicit VR Little Endian (1.2.840.10008.1.2) or
  Explicit VR Little Endian (1.2.840.10008.1.2.1) (PS3.5 A.1, A.2), and whose
  MediaStorageSOPClassUID is not the media directory's;
* a data set whose first element agrees with that VR encoding, whose top-level tags rise
  strictly (no command or file meta group, no DirectoryRecordSequence), and which reaches Pixel
  Data (7FE0,0010) with its whole element header inside the file. Values are skipped by length; a sequence of defined length is skipped (pydicom
  reads it only when asked), one of undefined length is walked item by item (pydicom parses
  it while reading) and must be well formed: items (FFFE,E000), item and sequence delimiters
  (FFFE,E00D/E0DD) of length 0, defined-length items exactly filled, standard VRs, and an
  implicit VR element of undefined length only when it is a known sequence (:data:`_SEQUENCE_TAGS`)
  or a private one followed by an item;
* the values it converts have their standard VR (explicit VR) and are printable ASCII, with
  numbers as pydicom parses them (DS: Python ``float()`` of each backslash-separated value, IS:
  ``int()``), and single-valued text without a backslash;
* no Float Pixel Data, no functional group sequences (5200,9229/9230) and, when the reading facts
  are needed, group-0028 elements whose conversion cannot fail (no sequence, no UN, binary
  numbers of a whole number of values).

Anything else, including a file that cannot be opened, is declined. The file is read in one
``open``: a 16 KiB prefix, then 64 KiB windows only when the header is longer; large values
before the pixels are skipped by offset, never read, and neither is the pixel data beyond
what the first windows hold.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
from struct import Struct

#: Must equal ``medflow.sources.series.READ_FACTS_VERSION`` (checked by a test): this module
#: produces the same facts list, without importing series (which imports pydicom).
READ_FACTS_VERSION = 3
PREFIX = 16384  # bytes read first: most headers are a few KiB
CHUNK = 65536  # bytes read when the walk goes past what was read (long headers)

_IMPLICIT_LE = "1.2.840.10008.1.2"
_EXPLICIT_LE = "1.2.840.10008.1.2.1"
_MEDIA_DIRECTORY = "1.2.840.10008.1.3.10"
_UNDEFINED = 0xFFFFFFFF
_ITEM = 0xFFFEE000
_SEQUENCE_END = 0xFFFEE0DD
_PIXEL_DATA = 0x7FE00010
_MODALITY_LUT_SEQUENCE = 0x00283000
_CHARSET = 0x00080005
_MAX_DEPTH = 16  # sequences nested deeper are declined (real headers nest a few levels)

_TAG_LENGTH = Struct("<HHL").unpack_from  # implicit VR: group, element, 4-byte length
_TAG_VR_LENGTH = Struct("<HH2sH").unpack_from  # explicit VR: group, element, VR, 2-byte length
_LONG = Struct("<L").unpack_from

#: Element header size of the standard VRs (PS3.5 6.2, 7.1.2) in explicit VR: 12 for those with
#: a 4-byte length (pydicom's ``EXPLICIT_VR_LENGTH_32``), else 8. The keys are pydicom's
#: ``ENCODED_VR`` (checked by a test).
_HEADER_SIZE = {
    vr: 12 if vr in (b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV")
    else 8
    for vr in (b"AE", b"AS", b"AT", b"CS", b"DA", b"DS", b"DT", b"FD", b"FL", b"IS", b"LO", b"LT", b"OB",
               b"OD", b"OF", b"OL", b"OV", b"OW", b"PN", b"SH", b"SL", b"SQ", b"SS", b"ST", b"SV", b"TM",
               b"UC", b"UI", b"UL", b"UN", b"UR", b"US", b"UT", b"UV")
}

#: The attributes the facts are made of, with their standard VR (the dictionary's, PS3.6; used
#: for implicit VR files, required in explicit VR files).
_WANTED = {
    _CHARSET: b"CS",  # SpecificCharacterSet
    0x00080008: b"CS",  # ImageType
    0x00080016: b"UI",  # SOPClassUID
    0x00080018: b"UI",  # SOPInstanceUID
    0x00080060: b"CS",  # Modality
    0x0008103E: b"LO",  # SeriesDescription
    0x00180050: b"DS",  # SliceThickness
    0x00180086: b"IS",  # EchoNumbers
    0x00180088: b"DS",  # SpacingBetweenSlices
    0x00181120: b"DS",  # GantryDetectorTilt
    0x0020000E: b"UI",  # SeriesInstanceUID
    0x00200013: b"IS",  # InstanceNumber
    0x00200032: b"DS",  # ImagePositionPatient
    0x00200037: b"DS",  # ImageOrientationPatient
    0x00280002: b"US",  # SamplesPerPixel
    0x00280004: b"CS",  # PhotometricInterpretation
    0x00280008: b"IS",  # NumberOfFrames
    0x00280010: b"US",  # Rows
    0x00280011: b"US",  # Columns
    0x00280030: b"DS",  # PixelSpacing
    0x00280100: b"US",  # BitsAllocated
    0x00280101: b"US",  # BitsStored
    0x00280103: b"US",  # PixelRepresentation
    0x00281052: b"DS",  # RescaleIntercept
    0x00281053: b"DS",  # RescaleSlope
}

#: Sequences (VR SQ in PS3.6) often written with undefined length in implicit VR files: pydicom
#: knows their VR from its dictionary; this module knows only these (checked against pydicom's
#: dictionary by a test) and declines other public elements of undefined length in implicit VR.
_SEQUENCE_TAGS = frozenset({
    0x00080082,  # InstitutionCodeSequence
    0x00080096,  # ReferringPhysicianIdentificationSequence
    0x00081032,  # ProcedureCodeSequence
    0x00081049,  # PhysiciansOfRecordIdentificationSequence
    0x00081062,  # PhysiciansReadingStudyIdentificationSequence
    0x00081072,  # OperatorIdentificationSequence
    0x00081084,  # AdmittingDiagnosesCodeSequence
    0x00081110,  # ReferencedStudySequence
    0x00081111,  # ReferencedPerformedProcedureStepSequence
    0x00081115,  # ReferencedSeriesSequence
    0x00081120,  # ReferencedPatientSequence
    0x00081140,  # ReferencedImageSequence
    0x00081199,  # ReferencedSOPSequence
    0x00081250,  # RelatedSeriesSequence
    0x00082112,  # SourceImageSequence
    0x00082218,  # AnatomicRegionSequence
    0x00082228,  # PrimaryAnatomicStructureSequence
    0x00089121,  # ReferencedRawDataSequence
    0x00089215,  # DerivationCodeSequence
    0x00101002,  # OtherPatientIDsSequence
    0x00120064,  # DeidentificationMethodCodeSequence
    0x00180012,  # ContrastBolusAgentSequence
    0x00189346,  # CTDIPhantomTypeCodeSequence
    0x0018A001,  # ContributingEquipmentSequence
    0x00283000,  # ModalityLUTSequence
    0x00283010,  # VOILUTSequence
    0x00321064,  # RequestedProcedureCodeSequence
    0x00400008,  # ScheduledProtocolCodeSequence
    0x00400260,  # PerformedProtocolCodeSequence
    0x00400270,  # ScheduledStepAttributesSequence
    0x00400275,  # RequestAttributesSequence
    0x00400340,  # PerformedSeriesSequence
    0x00400555,  # AcquisitionContextSequence
    0x0040A043,  # ConceptNameCodeSequence
    0x0040A168,  # ConceptCodeSequence
    0x0040A170,  # PurposeOfReferenceCodeSequence
    0x00540012,  # EnergyWindowInformationSequence
    0x00540013,  # EnergyWindowRangeSequence
    0x00540016,  # RadiopharmaceuticalInformationSequence
    0x00540220,  # ViewCodeSequence
    0x00540300,  # RadionuclideCodeSequence
    0x00540304,  # RadiopharmaceuticalCodeSequence
    0x00540410,  # PatientOrientationCodeSequence
    0x00540412,  # PatientOrientationModifierCodeSequence
    0x00540414,  # PatientGantryRelationshipCodeSequence
    0x00880200,  # IconImageSequence
    0x04000561,  # OriginalAttributesSequence
})

#: Group-0028 attributes whose dictionary VR is known here, as the size of one binary value
#: (2: US, SS or "US or SS"; 4: UL, SL, FL, AT; 8: FD) or 0 (text or bytes: any length
#: converts). In an implicit VR file pydicom converts these by the dictionary VR; a group-0028
#: element outside this table makes the reading facts (their pixel key) unknown here.
_GROUP_0028_IMPLICIT = {
    0x00280000: 4, 0x00280002: 2, 0x00280004: 0, 0x00280006: 2, 0x00280008: 0, 0x00280009: 4,
    0x00280010: 2, 0x00280011: 2, 0x00280030: 0, 0x00280034: 0, 0x00280051: 0, 0x00280100: 2,
    0x00280101: 2, 0x00280102: 2, 0x00280103: 2, 0x00280106: 2, 0x00280107: 2, 0x00280108: 2,
    0x00280109: 2, 0x00280120: 2, 0x00280121: 2, 0x00280300: 0, 0x00280301: 0, 0x00280302: 0,
    0x00280303: 0, 0x00280A02: 0, 0x00280A04: 0, 0x00281040: 0, 0x00281041: 2, 0x00281050: 0,
    0x00281051: 0, 0x00281052: 0, 0x00281053: 0, 0x00281054: 0, 0x00281055: 0, 0x00281056: 0,
    0x00281090: 0, 0x00282000: 0, 0x00282110: 0, 0x00282112: 0, 0x00282114: 0,
}
#: Size of one value of the binary number VRs (explicit VR); other VRs convert at any length.
_NUMBER_SIZES = {b"US": 2, b"SS": 2, b"UL": 4, b"SL": 4, b"FL": 4, b"AT": 4, b"FD": 8, b"SV": 8, b"UV": 8}

_NOT_PRINTABLE = re.compile(rb"[^\x20-\x7e]").search

# What the walk does with a top-level tag (other tags are skipped).
_PIXELS, _DECLINED = object(), object()
_SPECIAL: dict[int, object] = {
    _PIXEL_DATA: _PIXELS,
    # Float/Double Float Pixel Data (the pydicom path names them), DirectoryRecordSequence (a
    # media directory), Shared/PerFrameFunctionalGroupsSequence (read_facts would look inside)
    **dict.fromkeys((0x7FE00008, 0x7FE00009, 0x00041220, 0x52009229, 0x52009230), _DECLINED),
    **_WANTED,  # a value to keep: its standard VR
}


class _Decline(Exception):
    """The file is not one this module is sure of; ``args[0]`` says why (for tests and profiling)."""


def scan_file(path) -> tuple[dict, list | None] | None:
    """The discovery facts of ``path``, or ``None`` when the pydicom path must read it.

    Never raises: an unreadable file is declined too (the pydicom path names the problem).

    Returns:
        ``(fields, read)``: ``fields`` are the keyword arguments of discovery's ``_FileInfo``
        but ``rel`` (modality, series_uid, sop_uid, description, image_type, n_frames,
        orientation, size, echo, has_position, sop_class), equal to what ``_file_info`` gives
        for the file; ``read`` is :func:`medflow.sources.series.read_facts`'s list (``None``
        where it gives ``None``), except ``pixel_key``: a ``"raw:"`` digest of the group-0028
        elements' bytes (see :func:`_pixel_key`), never equal to a ``"ds:"`` key.
    """
    try:
        return scan_or_decline(path)
    except _Decline:
        return None


def scan_or_decline(path) -> tuple[dict, list | None]:
    """:func:`scan_file`, raising :class:`_Decline` (with the reason) instead of returning ``None``."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except (OSError, ValueError, TypeError) as exc:
        raise _Decline(f"cannot open: {exc}") from None
    try:
        header = _Header(fd)
        header.walk()
        return _facts(header)
    except _Decline:
        raise
    except OSError as exc:
        raise _Decline(f"cannot read: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - a case the walk missed: the pydicom path decides
        raise _Decline(f"unexpected {type(exc).__name__}: {exc}") from None
    finally:
        os.close(fd)


def _letters(vr: bytes) -> bool:
    """pydicom's test of whether an element starts with an explicit VR (two letters A-Z)."""
    return 0x40 < vr[0] < 0x5B and 0x40 < vr[1] < 0x5B


class _Header:
    """One file's header: a window on its bytes, the walk, and what the facts need from it."""

    def __init__(self, fd: int):
        self.fd = fd
        self.size = os.fstat(fd).st_size
        self.base = 0
        self.buf = self._read_at(0, PREFIX)
        self.values: dict[int, bytes] = {}  # wanted tag -> value bytes
        self.group_0028 = (0, 0)  # file offsets of the group-0028 elements: [start, end)
        self.key_problem: str | None = None  # why a pixel key cannot be given, if one cannot
        self.has_modality_lut = False
        self.implicit = True

    # --- bytes -----------------------------------------------------------------------------
    def _read_at(self, pos: int, n: int) -> bytes:
        data = os.pread(self.fd, n, pos)
        while len(data) < n:  # a short read before the end of a regular file: rare, but allowed
            more = os.pread(self.fd, n - len(data), pos + len(data))
            if not more:
                break
            data += more
        return data

    def _window(self, pos: int, n: int) -> tuple[bytes, int]:
        """``(buffer, offset of pos in it)`` with ``n`` bytes from file offset ``pos`` (declines past the end)."""
        if pos + n > self.size:
            raise _Decline(f"file ends inside an element at byte {pos}")
        start = pos - self.base
        if start < 0 or start + n > len(self.buf):
            self.buf, self.base = self._read_at(pos, max(n, CHUNK)), pos
            start = 0
            if len(self.buf) < n:
                raise _Decline("file shorter than its size")
        return self.buf, start

    def bytes_at(self, pos: int, n: int) -> bytes:
        buf, start = self._window(pos, n)
        return buf[start : start + n]

    # --- structure ---------------------------------------------------------------------------
    def walk(self) -> None:
        """Check the file meta group, then walk the data set up to Pixel Data."""
        self._data_set(self._file_meta())

    def _file_meta(self) -> int:
        """Check the preamble and the file meta group; return where the data set starts."""
        if self.buf[128:132] != b"DICM":
            raise _Decline("no DICM marker")
        pos, meta = 132, {}
        while True:
            buf, at = self._window(pos, 8)
            group, element, vr, length = _TAG_VR_LENGTH(buf, at)
            if group != 2:
                break
            header = _HEADER_SIZE.get(vr)
            if header is None or vr == b"SQ":
                raise _Decline(f"file meta element (0002,{element:04X}) with VR {vr!r}")
            if header == 12:
                buf, at = self._window(pos, 12)
                length = _LONG(buf, at + 8)[0]
            if length == _UNDEFINED or pos + header + length > self.size:
                raise _Decline(f"file meta element (0002,{element:04X}) of undefined or excessive length")
            if element in (0x0002, 0x0010):  # MediaStorageSOPClassUID, TransferSyntaxUID
                if vr != b"UI":
                    raise _Decline(f"file meta element (0002,{element:04X}) with VR {vr!r}")
                meta[element] = self.bytes_at(pos + header, length)
            pos += header + length
        syntax = _ui(meta[0x0010]) if 0x0010 in meta else None
        if syntax not in (_IMPLICIT_LE, _EXPLICIT_LE):
            raise _Decline(f"transfer syntax {syntax!r}")
        self.implicit = syntax == _IMPLICIT_LE
        if 0x0002 in meta and _ui(meta[0x0002]) == _MEDIA_DIRECTORY:
            raise _Decline("media directory")
        return pos

    def _data_set(self, pos: int) -> None:
        """Walk the top-level elements up to Pixel Data, keeping what the facts need."""
        buf, at = self._window(pos, 12)
        if _letters(buf[at + 4 : at + 6]) == self.implicit:  # pydicom would switch VR encoding
            raise _Decline("the data set's VR encoding differs from the transfer syntax's")
        implicit, size, special, header_size = self.implicit, self.size, _SPECIAL, _HEADER_SIZE
        values = self.values
        previous = 0x0003FFFF  # no command (0000) or file meta (0002) group in the data set
        while True:
            if pos + 8 > size:
                raise _Decline("no Pixel Data before the end of the file")
            buf, at = self.buf, pos - self.base
            if at < 0 or at + 12 > len(buf):
                buf, at = self._window(pos, min(12, size - pos))
            if implicit:
                group, element, length = _TAG_LENGTH(buf, at)
                vr, header = None, 8
            else:
                group, element, vr, length = _TAG_VR_LENGTH(buf, at)
                header = header_size.get(vr)
                if header is None:
                    raise _Decline(f"unknown VR {vr!r} at byte {pos}")  # pydicom guesses
                if header == 12:
                    if pos + 12 > size:
                        raise _Decline("file ends inside an element header")
                    length = _LONG(buf, at + 8)[0]
            tag = group << 16 | element
            if tag <= previous:  # also keeps (FFFE,E00D), which ends pydicom's walk, out
                raise _Decline(f"tag ({group:04X},{element:04X}) out of order")
            previous = tag
            what = special.get(tag)
            if what is _PIXELS:
                if vr is not None and vr not in (b"OB", b"OW"):
                    raise _Decline(f"Pixel Data with VR {vr!r}")
                if length == _UNDEFINED or pos + header + length > size:
                    raise _Decline("Pixel Data encapsulated or cut short")
                return
            if what is _DECLINED:
                raise _Decline(f"element ({group:04X},{element:04X}) at the top level")
            value_at = pos + header
            if length == _UNDEFINED:
                if what is not None:
                    raise _Decline(f"({group:04X},{element:04X}) of undefined length")
                self._check_sequence(tag, vr, value_at)
                end = self._sequence(value_at, 1)
                vr = b"SQ"
            else:
                end = value_at + length
                if end > size:
                    raise _Decline(f"element ({group:04X},{element:04X}) runs past the end of the file")
                if what is not None:
                    if vr is not None and vr != what:
                        raise _Decline(f"({group:04X},{element:04X}) with VR {vr!r}")
                    value_end = at + header + length
                    values[tag] = buf[at + header : value_end] if value_end <= len(buf) else self.bytes_at(value_at, length)
            if group == 0x0028:
                self._group_0028(pos, end, tag, vr, length)
            pos = end

    def _group_0028(self, start: int, end: int, tag: int, vr: bytes | None, length: int) -> None:
        """Note a group-0028 element: its bytes join the pixel key; can pydicom convert it safely?"""
        if tag == _MODALITY_LUT_SEQUENCE:
            self.has_modality_lut = True
        first, _ = self.group_0028
        self.group_0028 = (first or start, end)  # the group's elements are contiguous (tags rise)
        if vr in (b"SQ", b"UN"):
            self.key_problem = f"group-0028 element ({tag >> 16:04X},{tag & 0xFFFF:04X}) with VR {vr!r}"
            return
        unit = _GROUP_0028_IMPLICIT.get(tag) if vr is None else _NUMBER_SIZES.get(vr, 0)
        if unit is None:
            self.key_problem = f"group-0028 element ({tag >> 16:04X},{tag & 0xFFFF:04X}) of unknown VR"
        elif unit and length % unit:
            self.key_problem = f"group-0028 element ({tag >> 16:04X},{tag & 0xFFFF:04X}) with a partial value"

    def _check_sequence(self, tag: int, vr: bytes | None, value_at: int) -> None:
        """Decline an undefined-length element that pydicom would not read as a sequence here."""
        if vr is not None:
            if vr != b"SQ":  # UN: pydicom infers a sequence by rules of its own; others: a value
                raise _Decline(f"undefined length with VR {vr!r}")
            return
        if tag in _SEQUENCE_TAGS:
            return
        if tag >> 16 & 1:  # private: pydicom takes it for a sequence when an item tag follows
            buf, at = self._window(value_at, 4)
            if buf[at : at + 4] == b"\xfe\xff\x00\xe0":
                return
        raise _Decline(f"implicit VR element ({tag >> 16:04X},{tag & 0xFFFF:04X}) of undefined length")

    def _sequence(self, pos: int, depth: int) -> int:
        """Walk a sequence of undefined length from its first item; return where it ends."""
        if depth > _MAX_DEPTH:
            raise _Decline("sequences nested too deep")
        while True:
            buf, at = self._window(pos, 8)
            group, element, length = _TAG_LENGTH(buf, at)
            tag = group << 16 | element
            pos += 8
            if tag == _SEQUENCE_END:
                if length:
                    raise _Decline("sequence delimiter with a length")
                return pos
            if tag != _ITEM:
                raise _Decline(f"({group:04X},{element:04X}) where a sequence item belongs")
            pos = self._item(pos, None if length == _UNDEFINED else pos + length, depth)

    def _item(self, pos: int, end: int | None, depth: int) -> int:
        """Walk one item's elements (to ``end``, or to its delimiter); return where it ends.

        pydicom reads these elements while reading the file, so they must be well formed.
        """
        implicit = self.implicit
        if end is not None and end > self.size:
            raise _Decline("item runs past the end of the file")
        if not implicit and (end is None or end > pos):
            buf, at = self._window(pos, 8)
            if buf[at : at + 4] != b"\xfe\xff\x0d\xe0" and not _letters(buf[at + 4 : at + 6]):
                raise _Decline("implicit VR item in an explicit VR data set")  # pydicom switches
        while end is None or pos < end:
            buf, at = self._window(pos, 8)
            group, element, length = _TAG_LENGTH(buf, at)
            vr, header = None, 8
            if group == 0xFFFE:
                if element == 0xE00D and end is None and length == 0:
                    return pos + 8
                raise _Decline(f"(FFFE,{element:04X}) inside an item")
            if not implicit:
                group, element, vr, length = _TAG_VR_LENGTH(buf, at)
                header = _HEADER_SIZE.get(vr)
                if header is None:
                    raise _Decline(f"unknown VR {vr!r} in an item")
                if header == 12:
                    buf, at = self._window(pos, 12)
                    length = _LONG(buf, at + 8)[0]
            value_at = pos + header
            if length == _UNDEFINED:
                self._check_sequence(group << 16 | element, vr, value_at)
                pos = self._sequence(value_at, depth + 1)
            else:
                pos = value_at + length
                if pos > self.size:
                    raise _Decline("item element runs past the end of the file")
        if pos != end:
            raise _Decline("item elements overrun the item's length")
        return pos


# --- values, as pydicom converts them ------------------------------------------------------------
# DS, IS, UI and CS values are decoded as latin-1 whatever the character set (pydicom's
# default_encoding "iso8859"); only text VRs (here LO) depend on SpecificCharacterSet.

def _ascii(value: bytes) -> str:
    if not value.isascii():
        raise _Decline("value not ASCII")
    return value.decode("ascii")


def _printable(value: bytes) -> str:
    """A text value as pydicom decodes it, when it is printable ASCII but trailing NUL/space padding.

    Every character set pydicom knows decodes printable ASCII but the backslash as ASCII
    (checked by a test); ESC and other control characters could switch or confuse a decoder.
    """
    if _NOT_PRINTABLE(value.rstrip(b"\0 ")):
        raise _Decline("text value not printable ASCII")
    return value.decode("ascii")


def _single(text: str) -> str:
    if "\\" in text:
        raise _Decline("several values where one is expected")
    return text


def _ui(value: bytes | None) -> str:
    """UI: ``convert_UI`` (trailing NUL/space removed twice) and ``UID()`` (stripped); one value."""
    return _single(_ascii(value).rstrip("\0 ").rstrip(" \x00")).strip() if value else ""


def _cs(value: bytes | None) -> list[str]:
    """CS: ``multi_string``: trailing NUL/space removed, split on backslash (values not stripped)."""
    return _ascii(value).rstrip(" \x00").split("\\") if value else []


def _cs_single(value: bytes | None) -> str:
    return _single(_ascii(value).rstrip(" \x00")) if value else ""


def _ds(value: bytes | None):
    """DS as ``convert_DS_string``: None (absent or empty), "" (blank), a float, or a list of
    floats and "" (blank values)."""
    if not value:
        return None
    out = []
    for part in _ascii(value).strip().rstrip(" \x00").split("\\"):
        if part.strip() == "":
            out.append("")  # DSfloat("  ") is the string itself; only "not a number" matters here
            continue
        try:
            number = float(part)  # DSfloat: float.__new__ of this very string
        except ValueError:
            raise _Decline("DS value that is no number (pydicom retries other VRs)") from None
        if number != number:
            raise _Decline("DS value NaN")  # the same in both paths, but never equal to itself
        out.append(number)
    return out[0] if len(out) == 1 else out


def _is(value: bytes | None):
    """IS as ``convert_IS_string``: None, "" (blank), ``(int, str(IS))`` or a list of them."""
    if not value:
        return None
    out = []
    for part in _ascii(value).rstrip(" \x00").split("\\"):
        if part.strip() == "":
            out.append("")
            continue
        try:
            number = int(part)  # IS: int.__new__ of this very string; str(IS) is its stripped text
        except ValueError:
            raise _Decline("IS value that is no integer (pydicom tries float)") from None
        if not -(1 << 53) < number < 1 << 53:
            raise _Decline("IS value beyond float precision (pydicom makes an ISfloat)")
        out.append((number, part.strip()))
    return out[0] if len(out) == 1 else out


def _us(value: bytes | None) -> int | None:
    if not value:
        return None
    if len(value) != 2:
        raise _Decline("US value of another length than 2")
    return value[0] | value[1] << 8


def _floats(value, count: int) -> list[float] | None:
    """``series._floats(value, count).tolist()`` for a value as :func:`_ds` gives it."""
    if not isinstance(value, list):  # None; "" (no values); a float (iterating it fails)
        return None
    if "" in value or len(value) != count or not all(math.isfinite(v) for v in value):
        return None  # float("") fails
    return value


def _number(value, default: float) -> float:
    """``series._number``: ``float()`` of a list (MultiValue) fails, so it gives the default too."""
    if value is None or value == "" or isinstance(value, list):
        return default
    return float(value[0]) if isinstance(value, tuple) else value


_DTYPES = {(8, False): "|u1", (8, True): "|i1", (16, False): "<u2", (16, True): "<i2"}  # numpy dtype.str


def _facts(h: _Header) -> tuple[dict, list | None]:
    """``discovery._file_info`` and ``series.read_facts`` of the values kept (mirrors their rules)."""
    get = h.values.get
    charset = get(_CHARSET)
    if charset:
        _printable(charset)  # other bytes there could make pydicom's decoding differ or fail
    iop = _ds(get(0x00200037))
    if isinstance(iop, float):
        if iop:  # tuple(float(v) for v in iop): iterating a float fails
            raise _Decline("ImageOrientationPatient with one value")
        iop = None  # 0.0 is false: no orientation
    if iop and "" in iop:
        raise _Decline("blank ImageOrientationPatient value")  # float("") fails in _file_info
    echo = _is(get(0x00180086))
    frames = _is(get(0x00280008))
    if isinstance(echo, list) or isinstance(frames, list):
        raise _Decline("several EchoNumbers or NumberOfFrames")
    image_type = _cs(get(0x00080008))
    if image_type == [""]:
        image_type = []  # one empty value: ("" or ()) -> ()
    ipp = _ds(get(0x00200032))
    description = get(0x0008103E)
    fields = {
        "modality": _cs_single(get(0x00080060)).strip(),
        "series_uid": _ui(get(0x0020000E)),
        "sop_uid": _ui(get(0x00080018)),
        "description": _single(_printable(description)).rstrip("\0 ") if description else "",
        "image_type": tuple(v.strip().upper() for v in image_type),
        "n_frames": frames[0] if isinstance(frames, tuple) and frames[0] else 1,  # int(v or 1)
        "orientation": tuple(iop) if iop else None,
        "size": (_us(get(0x00280010)) or 0, _us(get(0x00280011)) or 0),
        "echo": echo[1] if isinstance(echo, tuple) and echo[0] else "",  # str(echo or "")
        "has_position": bool(ipp),  # a list is a non-empty MultiValue; a float, its truth
        "sop_class": _ui(get(0x00080016)),
    }
    read = _read_facts(h, fields, ipp, iop) if fields["n_frames"] == 1 else None
    return fields, read


def _read_facts(h: _Header, fields: dict, ipp, iop) -> list | None:
    """``series.read_facts`` (with ``pixels._native_spec`` and ``series._slice``)."""
    get = h.values.get
    bits = _us(get(0x00280100)) or 0
    if (_us(get(0x00280002)) or 1) != 1 or bits not in (8, 16):
        return None
    rows, cols = _us(get(0x00280010)), _us(get(0x00280011))
    if rows is None or cols is None:  # int(ds.Rows) of an absent or empty value fails
        return None
    signed = (_us(get(0x00280103)) or 0) == 1
    stored_bits = _us(get(0x00280101)) or bits
    photometric = _cs_single(get(0x00280004)).strip()
    if h.has_modality_lut or photometric not in ("MONOCHROME1", "MONOCHROME2"):
        return None
    spacing = _floats(_ds(get(0x00280030)), 2)
    instance = _number(_is(get(0x00200013)), math.inf)
    tilt = _ds(get(0x00181120))
    return [
        READ_FACTS_VERSION, rows, cols, _DTYPES[bits, signed], stored_bits,
        _floats(ipp, 3),
        _floats(iop, 6),
        None if spacing is None else list(spacing),
        _number(_ds(get(0x00281053)), 1.0),
        _number(_ds(get(0x00281052)), 0.0),
        None if instance == math.inf else instance,
        fields["sop_uid"],
        [_number(_ds(get(0x00180050)), 0.0), _number(_ds(get(0x00180088)), 0.0)],
        None if tilt is None or tilt == "" else _number(tilt, 0.0),
        _pixel_key(h),
        photometric,
        0x00281053 in h.values or 0x00281052 in h.values,  # "RescaleSlope" in ds: present, even empty
        "",  # syntax: native (the only files scanned here)
        None,  # pixel_offset: known to native files' reader
    ]


def _pixel_key(h: _Header) -> str:
    """A key equal for two files whose group-0028 elements are equal byte for byte.

    ``"raw:"`` + a digest of the VR encoding, the SpecificCharacterSet bytes and the bytes of
    the group-0028 elements (contiguous: tags rise), i.e. their tags, VRs (explicit VR),
    lengths and values. pydicom's description of these elements
    (:func:`medflow.sources.pixels.header_pixel_key`: their VRs and converted values) is a
    function of exactly these: an implicit VR comes from the dictionary by tag, an ambiguous
    one is resolved by PixelRepresentation or LUTDescriptor (group 0028 too), text is decoded
    by the character set. So equal keys mean equal descriptions. Declines when pydicom's
    conversion of one of them could fail (the pydicom path's facts would then differ).
    """
    if h.key_problem:
        raise _Decline(h.key_problem)
    charset = h.values.get(_CHARSET)
    start, end = h.group_0028
    return "raw:" + hashlib.sha256(b"".join((
        b"medflow-raw-0028-v1\0", b"I" if h.implicit else b"E",
        b"-" if charset is None else len(charset).to_bytes(4, "little") + charset,
        h.bytes_at(start, end - start),
    ))).hexdigest()[:32]
