"""Encode a de-identified Dataset as a DICOM file: the bytes of pydicom's ``dcmwrite(enforce_file_format=True)``.

pydicom's writer converts and re-encodes through layers of per-element machinery (a buffer per
element, a writer lookup, validation); the de-identified datasets of :mod:`medflow.deid` hold
mostly raw elements the walker kept as read, so most of that work only copies bytes. This module
writes the same file directly:

* preamble (128 bytes) and ``DICM`` prefix (PS3.10 7.1);
* the File Meta Information (explicit VR little endian, PS3.10 7.1) completed exactly as
  :func:`pydicom.dataset.validate_file_meta` and ``dcmwrite`` complete it: Media Storage SOP
  Class/Instance UID taken from the data set when they differ, File Meta Information Version,
  Implementation Class UID and Version Name added when missing, and (0002,0000) File Meta
  Information Group Length computed over the elements that follow it;
* the data set in the transfer syntax the file meta names (implicit or explicit VR, little or big
  endian), elements in tag order, group lengths (gggg,0000) of groups above 6 left out (PS3.5 7.2);
  raw elements (:class:`~pydicom.dataelem.RawDataElement`, still in their encoded form) copied
  through, changed values encoded per VR with PS3.5 6.2 padding (``\\0`` for UI, ``\\0`` for
  binary VRs, space for text), sequences with defined or undefined length as the element says and
  items of defined length (PS3.5 7.5); Pixel Data (7FE0,0010) copied as stored, with undefined length
  exactly when the transfer syntax is compressed (PS3.5 A.4), as ``dcmwrite`` sets it.

Element values this module does not encode itself (PN, DS, IS, AT, UN, multi-byte character
sets, non-ASCII text in ISO 2022 sets...) are written by pydicom's own
:func:`~pydicom.filewriter.write_data_element`, with the encodings pydicom would pass it. Whole
datasets it cannot promise pydicom's bytes for raise :class:`NotEncodable` and the caller writes
the file with pydicom: no or a private or deflated transfer syntax, implicit VR big endian,
elements of an ambiguous VR (``US or SS``...), raw elements in a dataset that pydicom would
convert before writing (its encoding or character set differs from the file's), raw elements of
unknown VR in an explicit-VR file, deferred or buffered values, Command (0000) or File Meta
(0002) elements in the data set, a missing Type 1 file meta value, or any error.
"""

from __future__ import annotations

from struct import Struct, pack

from pydicom import __version_info__ as _pydicom_version
from pydicom.charset import convert_encodings, custom_encoders, need_tail_escape_sequence_encodings
from pydicom.dataelem import DataElement, RawDataElement, convert_raw_data_element
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_data_element
from pydicom.multival import MultiValue
from pydicom.tag import _LUT_DESCRIPTOR_TAGS
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, UID, DeflatedExplicitVRLittleEndian
from pydicom.valuerep import EXPLICIT_VR_LENGTH_32, PersonName

from medflow.deid.rawelem import conversion_state, fast_path_allowed

PIXEL_DATA = 0x7FE00010
UNDEFINED_LENGTH = 0xFFFFFFFF
_LONG_VRS = frozenset(str(vr) for vr in EXPLICIT_VR_LENGTH_32)  # PS3.5 Table 7.1-1: 32-bit length field
#: VRs pydicom writes with ``write_string`` (default character repertoire, PS3.5 6.1.2.2).
_ASCII_VRS = frozenset({"AE", "AS", "CS", "DA", "DT", "TM", "UR", "UI"})
#: VRs pydicom writes with ``write_text`` (Specific Character Set applies, PS3.5 6.1.2.3).
_TEXT_VRS = frozenset({"LO", "LT", "SH", "ST", "UC", "UT"})
_NUMBER_FORMATS = {"US": "H", "SS": "h", "UL": "L", "SL": "l", "UV": "Q", "SV": "q", "FL": "f", "FD": "d"}
_BINARY_VRS = frozenset({"OB", "OD", "OF", "OL", "OW", "OV"})
_PIXEL_VRS = frozenset({"OB", "OW"})
_META_VERSION, _META_CLASS, _META_INSTANCE = 0x00020001, 0x00020002, 0x00020003
_META_TRANSFER_SYNTAX, _META_IMPLEMENTATION, _META_VERSION_NAME = 0x00020010, 0x00020012, 0x00020013
_SOP_CLASS, _SOP_INSTANCE = 0x00080016, 0x00080018
_SPECIFIC_CHARACTER_SET = 0x00080005


class NotEncodable(Exception):
    """The dataset needs pydicom's writer to get pydicom's bytes (the message says why)."""


def _simple_codec(encodings: list[str]) -> str | None:
    """The codec ``encode_string`` uses for a str it can encode with the first encoding, if plain.

    pydicom encodes with ``value.encode(encodings[0])`` when that succeeds, except for the
    ISO 2022 codecs it implements itself or ends with an escape sequence.
    """
    first = encodings[0]
    if first in custom_encoders or first in need_tail_escape_sequence_encodings:
        return None
    return first


class _Writer:
    """Encodes datasets in one transfer syntax's encoding (``implicit`` VR, ``little`` endian)."""

    def __init__(self, implicit: bool, little: bool):
        self.implicit = implicit
        self.little = little
        self.encoding = (implicit, little)
        self.order = "<" if little else ">"
        self.tag = Struct(self.order + "HH").pack
        self.us = Struct(self.order + "H").pack
        self.ul = Struct(self.order + "L").pack
        self.item = self.tag(0xFFFE, 0xE000)
        self.item_end = self.tag(0xFFFE, 0xE00D) + self.ul(0)
        self.sequence_end = self.tag(0xFFFE, 0xE0DD) + self.ul(0)
        self._headers: dict[tuple[int, str | None], bytes] = {}

    # -- element framing (PS3.5 7.1) -------------------------------------------------------
    def header(self, tag: int, vr: str | None, length: int, undefined: bool) -> bytes:
        """Tag, VR (explicit) and length field, as ``write_data_element`` writes them."""
        if self.implicit:
            return self.tag(tag >> 16, tag & 0xFFFF) + self.ul(UNDEFINED_LENGTH if undefined else length)
        if vr is None or len(vr) != 2:
            raise NotEncodable(f"no explicit VR for ({tag >> 16:04X},{tag & 0xFFFF:04X})")
        if vr not in _LONG_VRS and not undefined and length > 0xFFFF:
            vr = "UN"  # pydicom's rule (PS3.5 6.2.2): a value too long for a 16-bit length field
        prefix = self._headers.get((tag, vr))
        if prefix is None:
            prefix = self.tag(tag >> 16, tag & 0xFFFF) + vr.encode("ascii") + (b"\0\0" if vr in _LONG_VRS else b"")
            if len(self._headers) < 4096:
                self._headers[(tag, vr)] = prefix
        if vr in _LONG_VRS or undefined:
            return prefix + self.ul(UNDEFINED_LENGTH if undefined else length)
        return prefix + self.us(length)

    # -- datasets --------------------------------------------------------------------------
    def dataset(
        self, ds: Dataset, parent_encoding: str | list[str], top: bool = False, cached: dict[int, dict] | None = None,
    ) -> bytearray:
        """``write_dataset(fp, ds, parent_encoding)``'s bytes."""
        # pydicom converts every raw element (and resolves ambiguous VRs) of a dataset whose
        # original encoding or character set differs from what it writes (filewriter.write_dataset)
        convert = ds.original_encoding != self.encoding or ds.original_character_set != _character_set(ds)
        elements = sorted([(int(tag), elem) for tag, elem in ds._dict.items()])
        return self.elements(elements, ds, parent_encoding, convert, top, cached)

    def elements(
        self, elements: list[tuple[int, object]], ds: Dataset, parent_encoding: str | list[str],
        convert: bool, top: bool, cached: dict[int, dict] | None = None, encodings: list[str] | None = None,
    ) -> bytearray:
        """The encoded elements; ``cached``: tag -> a slot keeping that element's bytes by writer state.

        ``encodings``: the character sets of ``ds`` when the caller has them (else found when needed).
        """
        out = bytearray()
        if cached:
            # an element's bytes depend on it and on this state only (the character sets are
            # those the loop below finds for a DataElement: computed here, the same value)
            encodings = self._encodings(ds, parent_encoding)
            state = (self.implicit, self.little, self.compressed, convert, top, tuple(encodings))
            for tag, elem in elements:
                slot = cached.get(tag)
                if slot is None:
                    out += self.elements([(tag, elem)], ds, parent_encoding, convert, top, None, encodings)
                    continue
                data = slot.get(state)
                if data is None:
                    data = bytes(self.elements([(tag, elem)], ds, parent_encoding, convert, top, None, encodings))
                    slot[state] = data
                out += data
            return out
        for tag, elem in elements:
            if not tag & 0xFFFF and tag >> 16 > 6:
                continue  # retired group lengths are not written (PS3.5 7.2)
            if type(elem) is RawDataElement:
                if convert:
                    raise NotEncodable("raw elements in a dataset pydicom converts before writing")
                value = elem.value
                if value is None:
                    if elem.length:
                        raise NotEncodable("deferred value")
                    value = b""  # an empty value as read
                if top and tag == PIXEL_DATA:
                    out += self.pixel_data(tag, elem.VR, value)
                    continue
                undefined = elem.length == UNDEFINED_LENGTH
                if undefined and tag == PIXEL_DATA:
                    self._check_encapsulated(value)
                out += self.header(tag, elem.VR, len(value), undefined)
                out += value
                if undefined:
                    out += self.sequence_end
                continue
            vr = elem.VR
            if len(vr) != 2:
                raise NotEncodable(f"ambiguous VR {vr}")
            if top and tag == PIXEL_DATA:
                out += self.pixel_data(tag, vr, elem.value)
                continue
            if encodings is None:
                encodings = self._encodings(ds, parent_encoding)
            if vr == "SQ":
                out += self.sequence(elem, encodings)
                continue
            value = self.value(elem, vr, encodings)
            undefined = elem.is_undefined_length
            if value is None:  # pydicom's own writer for this element
                out += self._pydicom_element(elem, encodings)
                continue
            if undefined and tag == PIXEL_DATA:
                self._check_encapsulated(value)
            out += self.header(tag, vr, len(value), undefined)
            out += value
            if undefined:
                out += self.sequence_end
        return out

    @staticmethod
    def _encodings(ds: Dataset, parent_encoding: str | list[str]) -> list[str]:
        """``convert_encodings(ds.get("SpecificCharacterSet", parent_encoding) or default)``."""
        value = _converted_value(ds, _SPECIFIC_CHARACTER_SET) if _SPECIFIC_CHARACTER_SET in ds._dict else parent_encoding
        return convert_encodings(value or ["iso8859"])

    def sequence(self, elem: DataElement, encodings: list[str]) -> bytearray:
        """An SQ element: items of defined length unless read with undefined length (PS3.5 7.5)."""
        body = bytearray()
        for item in elem.value or ():
            content = self.dataset(item, encodings)
            if getattr(item, "is_undefined_length_sequence_item", False):
                body += self.item + self.ul(UNDEFINED_LENGTH)
                body += content
                body += self.item_end
            else:
                body += self.item + self.ul(len(content))
                body += content
        undefined = elem.is_undefined_length
        out = bytearray(self.header(elem.tag, "SQ", len(body), undefined))
        out += body
        if undefined:
            out += self.sequence_end
        return out

    def pixel_data(self, tag: int, vr: str | None, value: object) -> bytes:
        """Top-level Pixel Data as stored: undefined length exactly when compressed (PS3.5 A.4)."""
        if vr not in _PIXEL_VRS or type(value) is not bytes:
            raise NotEncodable(f"pixel data of VR {vr}")
        if self.compressed:
            self._check_encapsulated(value)
        data = value + b"\0" if len(value) & 1 else value
        head = self.header(tag, vr, len(data), self.compressed)
        return head + data + self.sequence_end if self.compressed else head + data

    compressed = False

    def _check_encapsulated(self, value: bytes) -> None:
        if value[:4] != self.item:  # pydicom refuses unencapsulated data of undefined length
            raise NotEncodable("pixel data of undefined length is not encapsulated")

    # -- values (PS3.5 6.2) ----------------------------------------------------------------
    def value(self, elem: DataElement, vr: str, encodings: list[str]) -> bytes | None:
        """The encoded, padded value of a non-sequence element, or None for pydicom's writer."""
        value = elem.value
        if value is None:
            return b""
        kind = type(value)
        if kind is str or kind is UID:
            if not value:
                return b""
            if vr in _ASCII_VRS:
                return self._padded(value, "\0" if vr == "UI" else " ", "latin-1")
            if vr in _TEXT_VRS:
                codec = _simple_codec(encodings)
                if codec is None:
                    return None
                try:
                    data = value.encode(codec)
                except UnicodeError:
                    return None
                return data + b" " if len(data) & 1 else data  # write_text pads the encoded bytes
            return None
        if kind is MultiValue or kind is list:
            if not value:
                return b""
            if vr in _ASCII_VRS or vr in _TEXT_VRS:
                if not all(type(v) is str or type(v) is UID for v in value):
                    return None
                if vr in _ASCII_VRS:
                    return self._padded("\\".join(value), "\0" if vr == "UI" else " ", "latin-1")
                codec = _simple_codec(encodings)
                if codec is None:
                    return None
                try:
                    data = b"\\".join([v.encode(codec) for v in value])
                except UnicodeError:
                    return None
                return data + b" " if len(data) & 1 else data
            fmt = _NUMBER_FORMATS.get(vr)
            if fmt is None or (fmt == "h" and elem.tag in _LUT_DESCRIPTOR_TAGS):
                return None
            try:
                return pack(f"{self.order}{len(value)}{fmt}", *value)
            except Exception:  # noqa: BLE001 - pydicom's writer reports it
                return None
        if kind is bytes:
            if not value:
                return b""
            if vr in _BINARY_VRS:
                return value + b"\0" if len(value) & 1 else value
            return None
        if kind is int or kind is float:
            fmt = _NUMBER_FORMATS.get(vr)
            if fmt is None:
                return None
            try:
                return pack(self.order + fmt, value)
            except Exception:  # noqa: BLE001 - pydicom's writer reports it
                return None
        if kind is PersonName:
            return self._person_name(value, encodings)
        return None

    @staticmethod
    def _person_name(value: PersonName, encodings: list[str]) -> bytes | None:
        """``write_PN`` of one name built from a str (no original bytes): its ASCII text, padded."""
        if not value:
            return b""
        if value.original_string is not None or value.encodings is not None or _simple_codec(encodings) is None:
            return None
        text = str(value)
        if "=" in text or not text.isascii():  # component groups and other repertoires: pydicom's
            return None
        data = text.encode("ascii")
        return data + b" " if len(data) & 1 else data

    @staticmethod
    def _padded(text: str, pad: str, codec: str) -> bytes | None:
        """``write_string``: padded as text, then encoded (one byte per character here)."""
        if len(text) & 1:
            text += pad
        try:
            return text.encode(codec)
        except UnicodeError:
            return None

    def _pydicom_element(self, elem: DataElement, encodings: list[str]) -> bytes:
        fp = DicomBytesIO()
        fp.is_little_endian, fp.is_implicit_VR = self.little, self.implicit
        write_data_element(fp, elem, encodings)
        return fp.getvalue()


_WRITERS: dict[tuple[bool, bool, bool], _Writer] = {}


def _writer(implicit: bool, little: bool, compressed: bool) -> _Writer:
    """The writer of one encoding (made once: its structs and header cache are kept)."""
    writer = _WRITERS.get((implicit, little, compressed))
    if writer is None:
        writer = _WRITERS[(implicit, little, compressed)] = _Writer(implicit, little)
        writer.compressed = compressed
    return writer


def _converted_value(ds: Dataset, tag: int) -> object:
    """``ds[tag].value`` without converting the element inside ``ds`` (None if absent)."""
    elem = ds._dict.get(tag)
    if elem is None:
        return None
    if type(elem) is RawDataElement:
        if elem.value is None and elem.length:
            raise NotEncodable("deferred value")
        # as Dataset.__getitem__ converts it: (0008,0005) itself in the default repertoire
        encoding = "iso8859" if tag == _SPECIFIC_CHARACTER_SET else (ds.original_character_set or _character_set(ds))
        vr = elem.VR
        if (not _memo_allowed or vr is None or len(vr) != 2 or vr == "UN" or tag >> 16 & 1
                or elem.value is None or len(elem.value) > 1024):
            return convert_raw_data_element(elem, encoding=encoding, ds=ds).value
        # an explicit public VR: the value depends on the element and the encoding only
        key = (tag, vr, elem.length, elem.value, elem.is_little_endian, elem.is_implicit_VR,
               encoding if isinstance(encoding, str) else tuple(encoding))
        value = _VALUES.get(key, _MISSING)
        if value is _MISSING:
            value = convert_raw_data_element(elem, encoding=encoding, ds=ds).value
            if type(value) in _IMMUTABLE:
                if len(_VALUES) >= 4096:
                    _VALUES.clear()
                _VALUES[key] = value
        return value
    return elem.value


#: Values of raw elements converted by pydicom (see _converted_value), while the conversion
#: settings are those of :data:`_values_state` (checked per file by encode_file).
_VALUES: dict[tuple, object] = {}
_IMMUTABLE = frozenset({str, UID, bytes, int, float, type(None)})
_MISSING = object()
_memo_allowed = False
_values_state: list[tuple[object, ...]] = []


def _check_values_state() -> None:
    global _memo_allowed
    _memo_allowed = fast_path_allowed()
    state = conversion_state()
    if _values_state != [state]:
        _VALUES.clear()
        _values_state[:] = [state]


def _character_set(ds: Dataset) -> str | list[str]:
    """``ds._character_set`` without converting a raw (0008,0005) inside ``ds``."""
    if _SPECIFIC_CHARACTER_SET not in ds._dict:
        return ds._parent_encoding
    return convert_encodings(_converted_value(ds, _SPECIFIC_CHARACTER_SET))


def _empty(elem: object) -> bool:
    if type(elem) is RawDataElement:
        return not elem.length
    return elem.is_empty  # type: ignore[attr-defined]


def _file_meta(ds: Dataset) -> tuple[bytes, UID]:
    """The File Meta Information group as ``dcmwrite(enforce_file_format=True)`` writes it."""
    meta = getattr(ds, "file_meta", None)
    if meta is None:
        raise NotEncodable("no file meta information")
    elements = dict(meta._dict)
    if any(tag >> 16 != 2 for tag in elements):
        raise NotEncodable("non-group-2 element in the file meta")
    transfer_syntax = _converted_value(meta, _META_TRANSFER_SYNTAX)
    if not transfer_syntax:
        raise NotEncodable("no transfer syntax")
    transfer_syntax = UID(transfer_syntax)
    # dcmwrite: the meta's SOP class/instance follow the data set's when they differ
    for meta_tag, ds_tag in ((_META_CLASS, _SOP_CLASS), (_META_INSTANCE, _SOP_INSTANCE)):
        in_meta, in_ds = _converted_value(meta, meta_tag), _converted_value(ds, ds_tag)
        if in_meta is None or (in_ds and in_ds != in_meta):
            elements[meta_tag] = DataElement(meta_tag, "UI", in_ds)
    # validate_file_meta(enforce_standard=True)
    if _META_VERSION not in elements or _empty(elements[_META_VERSION]):
        elements[_META_VERSION] = DataElement(_META_VERSION, "OB", b"\x00\x01")
    if _META_IMPLEMENTATION not in elements or _empty(elements[_META_IMPLEMENTATION]):
        elements[_META_IMPLEMENTATION] = DataElement(_META_IMPLEMENTATION, "UI", PYDICOM_IMPLEMENTATION_UID)
    if _META_VERSION_NAME not in elements:
        elements[_META_VERSION_NAME] = DataElement(_META_VERSION_NAME, "SH", f"PYDICOM {'.'.join(_pydicom_version)}")
    for tag in (_META_CLASS, _META_INSTANCE, _META_TRANSFER_SYNTAX):
        if _empty(elements[tag]):
            raise NotEncodable("a Type 1 file meta element is empty")
    elements.pop(0x00020000, None)  # (0002,0000) is computed below
    writer = _writer(False, True, False)  # PS3.10 7.1: explicit VR little endian
    convert = meta.original_encoding != writer.encoding or meta.original_character_set != _character_set(meta)
    body = writer.elements(sorted((int(t), e) for t, e in elements.items()), meta, "iso8859", convert, False)
    length = writer.header(0x00020000, "UL", 4, False) + pack("<L", len(body))
    return length + bytes(body), transfer_syntax


def encode_file(ds: Dataset, element_bytes: dict[int, dict] | None = None) -> bytes:
    """The bytes ``ds.save_as(buffer, enforce_file_format=True)`` writes, without changing ``ds``.

    ``element_bytes`` (:attr:`medflow.deid.profile.DeidResult.element_bytes` of ``ds``): per
    top-level tag, a slot where the bytes of that element are kept by writer state and taken
    again for the next file whose element comes from the same memoized outcome.

    Raises:
        NotEncodable: the dataset needs pydicom's writer (see the module docstring); nothing
            is written and ``ds`` is unchanged.
    """
    _check_values_state()
    try:
        return _encode(ds, element_bytes)
    except NotEncodable:
        raise
    except Exception as exc:  # noqa: BLE001 - whatever it is, pydicom's writer decides
        raise NotEncodable(f"{type(exc).__name__}: {exc}") from exc


def _encode(ds: Dataset, element_bytes: dict[int, dict] | None = None) -> bytes:
    if any(tag >> 16 in (0, 2) for tag in ds._dict):
        raise NotEncodable("command or file meta elements in the data set")
    preamble = getattr(ds, "preamble", None) or b"\x00" * 128
    if len(preamble) != 128:
        raise NotEncodable("preamble is not 128 bytes")
    meta, transfer_syntax = _file_meta(ds)
    if not transfer_syntax.is_transfer_syntax or transfer_syntax.is_private:
        raise NotEncodable(f"transfer syntax {transfer_syntax} is not a public transfer syntax")
    if transfer_syntax == DeflatedExplicitVRLittleEndian:
        raise NotEncodable("deflated transfer syntax")
    implicit, little = transfer_syntax.is_implicit_VR, transfer_syntax.is_little_endian
    if implicit and not little:
        raise NotEncodable("implicit VR big endian")
    writer = _writer(implicit, little, transfer_syntax.is_compressed)
    body = writer.dataset(ds, "iso8859", top=True, cached=element_bytes)
    return b"".join((preamble, b"DICM", meta, body))


__all__ = ["NotEncodable", "encode_file"]
