"""``pydicom.dcmread`` of a file's bytes, with pydicom's element loop replaced by a tighter one.

:func:`read_file_bytes` returns the same :class:`~pydicom.dataset.FileDataset` as
``pydicom.dcmread(io.BytesIO(data))``: the same preamble, file meta, raw elements (the same
:class:`~pydicom.dataelem.RawDataElement` tuples, in the same order) and original encoding. It
runs pydicom's own functions for everything but the loop over the data set's top-level elements
(``filereader.data_element_generator``), which it does with ``struct.unpack_from`` on the
bytes. Files outside what that loop mirrors exactly are read by ``dcmread`` itself: big endian,
deflated or private transfer syntaxes, a missing transfer syntax, command (0000) elements,
an element of undefined length and VR UN or of unknown implicit VR, a VR that is not a standard
one (pydicom then switches to implicit VR or guesses), an implicit/explicit VR mismatch at the start, a truncated
header or value, an item delimitation tag at the top level, or pydicom's debugging mode. The
loop is written against pydicom 3.0 and is used only with it.

The loop mirrors these lines of ``data_element_generator`` (pydicom 3.0), for each element: read
the tag, VR (explicit VR: the two bytes, a 4-byte length for the VRs of
``EXPLICIT_VR_LENGTH_32``) and length; ``value_tell`` is the offset of the value; a defined
length gives the value bytes (``empty_value_for_VR(vr, raw=True)`` for length 0) and the Specific
Character Set the encodings of what follows; an undefined length gives ``read_sequence`` (a
``DataElement``) for a sequence (the dictionary's VR in implicit VR), else
``read_undefined_length_value``; the element is ``RawDataElement(BaseTag(tag), vr, length, value,
value_tell, is_implicit_VR, is_little_endian)``, stored by tag.
"""

from __future__ import annotations

import io
from struct import Struct

import pydicom
from pydicom import config
from pydicom.charset import convert_encodings, default_encoding
from pydicom.datadict import _dictionary_vr_fast
from pydicom.dataelem import DataElement, RawDataElement, convert_raw_data_element, empty_value_for_VR
from pydicom.dataset import Dataset, FileDataset
from pydicom.fileutil import read_undefined_length_value
from pydicom.tag import BaseTag, SequenceDelimiterTag
from pydicom.valuerep import EXPLICIT_VR_LENGTH_32
from pydicom.valuerep import VR as VR_

_SUPPORTED = pydicom.__version__.startswith("3.0.")
_EXPLICIT = Struct("<HH2sH").unpack_from
_IMPLICIT = Struct("<HHL").unpack_from
_LONG_LENGTH = Struct("<L").unpack_from
#: Standard VRs as the two bytes of an explicit VR element -> their str (pydicom's ENCODED_VR).
_VRS = {vr.encode(default_encoding): vr.encode(default_encoding).decode(default_encoding)
        for vr in pydicom.valuerep.VR}
_LONG_VRS = frozenset(str(vr) for vr in EXPLICIT_VR_LENGTH_32)
_UNDEFINED = 0xFFFFFFFF
_SPECIFIC_CHARACTER_SET = 0x00080005


class _Declined(Exception):
    """The bytes hold something the loop does not mirror: pydicom reads the file."""


def read_file_bytes(data: bytes) -> FileDataset:
    """``pydicom.dcmread(io.BytesIO(data))``, faster for the common files (see the module docstring).

    Raises:
        what ``dcmread`` raises for these bytes.
    """
    if _SUPPORTED and not config.debugging:
        try:
            return _read(data)
        except Exception:  # noqa: BLE001 - _Declined, or whatever pydicom objects to: dcmread reports it
            pass
    return pydicom.dcmread(io.BytesIO(data))


def _read(data: bytes) -> FileDataset:
    from pydicom.filereader import _read_file_meta_info, read_preamble

    # read_partial(fileobj, stop_when=None, defer_size=None, force=False, specific_tags=None)
    fileobj = io.BytesIO(data)
    preamble = read_preamble(fileobj, False)
    file_meta = _read_file_meta_info(fileobj)
    start = fileobj.tell()
    if len(data) - start < 8 or data[start] == 0 and data[start + 1] == 0:
        raise _Declined  # no data set, or command set elements (group 0000) first
    transfer_syntax = file_meta.get("TransferSyntaxUID")
    uid = pydicom.uid
    if transfer_syntax is None:
        raise _Declined
    if transfer_syntax == uid.ImplicitVRLittleEndian:
        implicit = True
    elif transfer_syntax == uid.ExplicitVRLittleEndian:
        implicit = False
    elif transfer_syntax in (uid.ExplicitVRBigEndian, uid.DeflatedExplicitVRLittleEndian) \
            or transfer_syntax in uid.PrivateTransferSyntaxes:
        raise _Declined
    else:
        implicit = False  # every other syntax (encapsulated: JPEG...) is explicit VR little endian
    # read_dataset: _is_implicit_vr keeps the syntax's VR encoding when the first element agrees
    vr_bytes = data[start + 4 : start + 6]
    if (not (0x40 < vr_bytes[0] < 0x5B and 0x40 < vr_bytes[1] < 0x5B)) != implicit:
        raise _Declined
    elements = _elements(data, start, implicit, fileobj)
    dataset = Dataset(elements, parent_encoding=default_encoding)
    encoding: str | list[str]
    if _SPECIFIC_CHARACTER_SET in elements:
        char_set = convert_raw_data_element(elements[BaseTag(_SPECIFIC_CHARACTER_SET)]).value
        encoding = convert_encodings(char_set)
    else:
        encoding = default_encoding
    dataset.set_original_encoding(implicit, True, encoding)
    ds = FileDataset(fileobj, dataset, preamble, file_meta, implicit, True)
    ds.set_original_encoding(implicit, True, dataset._character_set)
    return ds


def _elements(data: bytes, pos: int, implicit: bool, fileobj: io.BytesIO) -> dict[BaseTag, RawDataElement | DataElement]:
    """``{e.tag: e for e in data_element_generator(...)}`` from ``pos`` to the end of ``data``."""
    from pydicom.filereader import read_sequence
    from pydicom.values import convert_string

    elements: dict[BaseTag, RawDataElement | DataElement] = {}
    encoding: str | list[str] = default_encoding
    end = len(data)
    vrs, long_vrs = _VRS, _LONG_VRS
    while pos < end:
        if end - pos < 8:
            raise _Declined  # pydicom stops silently on a truncated header: let it
        if implicit:
            group, elem, length = _IMPLICIT(data, pos)
            vr = None
            pos += 8
        else:
            group, elem, raw_vr, length = _EXPLICIT(data, pos)
            vr = vrs.get(raw_vr)
            if vr is None:
                raise _Declined  # implicit VR switch or an unknown VR: pydicom guesses
            pos += 8
            if vr in long_vrs:
                if end - pos < 4:
                    raise _Declined
                length = _LONG_LENGTH(data, pos)[0]
                pos += 4
        tag = group << 16 | elem
        if tag == 0xFFFEE00D:
            raise _Declined  # an item delimitation tag ends pydicom's loop
        value_tell = pos
        if length != _UNDEFINED:
            if pos + length > end:
                raise _Declined  # a truncated value: pydicom keeps the bytes that are there
            value = data[pos : pos + length] if length > 0 else empty_value_for_VR(vr, raw=True)
            pos += length
            if tag == _SPECIFIC_CHARACTER_SET:  # for the sequences that follow, as the generator does
                encoding = convert_encodings(convert_string(value or b"", True))
        else:
            if vr == "UN":
                raise _Declined  # pydicom may take it for a sequence
            if vr is None:
                try:
                    vr = _dictionary_vr_fast(tag)
                except KeyError:
                    raise _Declined from None  # pydicom looks ahead for an item tag
            key = BaseTag(tag)
            fileobj.seek(pos)
            if vr == VR_.SQ:  # parsed now by pydicom, in the character set read so far
                seq = read_sequence(fileobj, implicit, True, length, encoding)
                elements[key] = DataElement(key, vr, seq, value_tell, is_undefined_length=True)
                pos = fileobj.tell()
                continue
            value = read_undefined_length_value(fileobj, True, SequenceDelimiterTag, None)
            pos = fileobj.tell()
        key = BaseTag(tag)  # one object for the key and the element's tag, as {e.tag: e for e in ...}
        elements[key] = RawDataElement(key, vr, length, value, value_tell, implicit, True)
    fileobj.seek(end)
    return elements


__all__ = ["read_file_bytes"]
