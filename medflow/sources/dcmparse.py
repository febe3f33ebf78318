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
from pydicom.config import logger
from pydicom.datadict import _dictionary_vr_fast
from pydicom.dataelem import DataElement, RawDataElement, convert_raw_data_element, empty_value_for_VR
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.fileutil import read_undefined_length_value
from pydicom.tag import BaseTag, SequenceDelimiterTag
from pydicom.valuerep import EXPLICIT_VR_LENGTH_32
from pydicom.valuerep import VR as VR_

from medflow.deid.rawelem import convert_in_place

#: The pydicom this module mirrors (its RawDataElement made directly from its fields).
_SUPPORTED = pydicom.__version__.startswith("3.0.") and RawDataElement._fields == (
    "tag", "VR", "length", "value", "value_tell", "is_implicit_VR", "is_little_endian", "is_raw", "is_buffered"
) and RawDataElement._field_defaults == {"is_raw": True, "is_buffered": False}
_EXPLICIT = Struct("<HH2sH").unpack_from
_IMPLICIT = Struct("<HHL").unpack_from
_LONG_LENGTH = Struct("<L").unpack_from
#: Standard VRs as the two bytes of an explicit VR element -> their str (pydicom's ENCODED_VR).
_VRS = {vr.encode(default_encoding): vr.encode(default_encoding).decode(default_encoding)
        for vr in pydicom.valuerep.VR}
_LONG_VRS = frozenset(str(vr) for vr in EXPLICIT_VR_LENGTH_32)
_UNDEFINED = 0xFFFFFFFF
_TAGS: dict[int, BaseTag] = {}
_new_tuple = tuple.__new__
_SPECIFIC_CHARACTER_SET = 0x00080005
_TRANSFER_SYNTAX = 0x00020010


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
    file_meta, start = _file_meta(data, fileobj)
    if file_meta is None:
        file_meta = _read_file_meta_info(fileobj)
        start = fileobj.tell()
    if len(data) - start < 8 or data[start] == 0 and data[start + 1] == 0:
        raise _Declined  # no data set, or command set elements (group 0000) first
    convert_in_place(file_meta, _TRANSFER_SYNTAX)  # what file_meta.get converts, from a memo
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
    elements, _ = _elements(data, start, implicit, fileobj)
    if _SPECIFIC_CHARACTER_SET in elements:  # read_dataset's encoding (its warnings included)
        convert_encodings(convert_raw_data_element(elements[BaseTag(_SPECIFIC_CHARACTER_SET)]).value)
    # FileDataset(fileobj, read_dataset's Dataset, ...): the same elements dict, the same
    # parent encoding, so that Dataset's character set is the FileDataset's (it is dropped)
    ds = FileDataset(fileobj, elements, preamble, file_meta, implicit, True)
    convert_in_place(ds, _SPECIFIC_CHARACTER_SET)  # what reading the character set converts, from a memo
    ds.set_original_encoding(implicit, True, ds._character_set)
    return ds


def _file_meta(data: bytes, fileobj: io.BytesIO) -> tuple[FileMetaDataset | None, int]:
    """``filereader._read_file_meta_info`` of the group 2 elements after the preamble, and where they end.

    ``(None, 132)`` when they do not start with an explicit VR group 2 element (no or odd file
    meta: pydicom's function reads them).
    """
    start = 132
    if len(data) < start + 8 or data[start : start + 2] != b"\x02\x00" or data[start + 4 : start + 6] not in _VRS:
        return None, start
    # read_dataset(fp, is_implicit_VR=False, is_little_endian=True, stop_when=_not_group_0002)
    elements, end = _elements(data, start, False, fileobj, stop_after_group=2)
    fileobj.seek(end)
    # FileMetaDataset(read_dataset's Dataset of these elements): the same elements dict (that
    # Dataset, its encoding set, is dropped)
    file_meta = FileMetaDataset(elements)
    file_meta.set_original_encoding(is_implicit_vr=False, is_little_endian=True, character_encoding=default_encoding)
    if not file_meta._dict:
        return file_meta, end
    first = min(file_meta._dict, key=int)  # list(file_meta.elements())[0].tag: the smallest tag
    convert_in_place(file_meta, first)  # as pydicom tests the first element (converts it)
    file_meta[first]  # noqa: B018
    if "FileMetaInformationGroupLength" in file_meta:
        convert_in_place(file_meta, 0x00020000)
        actual_len = end - (start + 12)
        elem_len = file_meta.FileMetaInformationGroupLength
        if elem_len != actual_len:
            logger.info(
                "_read_file_meta_info: (0002,0000) 'File Meta Information "
                "Group Length' value doesn't match the actual File Meta "
                f"Information length ({elem_len} vs {actual_len} bytes)"
            )
    return file_meta, end


def _elements(
    data: bytes, pos: int, implicit: bool, fileobj: io.BytesIO, stop_after_group: int | None = None,
) -> tuple[dict[BaseTag, RawDataElement | DataElement], int]:
    """``{e.tag: e for e in data_element_generator(...)}`` from ``pos``, and where it stopped.

    To the end of ``data``, or (``stop_after_group``) before the first element of another group,
    as pydicom's ``stop_when`` rewinds to it.
    """
    from pydicom.filereader import read_sequence
    from pydicom.values import convert_string

    elements: dict[BaseTag, RawDataElement | DataElement] = {}
    encoding: str | list[str] = default_encoding
    end = len(data)
    vrs, long_vrs = _VRS, _LONG_VRS
    while pos < end:
        if end - pos < 8:
            raise _Declined  # pydicom stops silently on a truncated header: let it
        if stop_after_group is not None and data[pos] | data[pos + 1] << 8 != stop_after_group:
            if not implicit and vrs.get(data[pos + 4 : pos + 6]) in long_vrs and end - pos < 12:
                raise _Declined  # pydicom fails reading the long length it would then rewind
            break  # pydicom's stop_when: rewound to this element's start
        if implicit:
            group, elem, length = _IMPLICIT(data, pos)
            vr = None
            header = 8
        else:
            group, elem, raw_vr, length = _EXPLICIT(data, pos)
            vr = vrs.get(raw_vr)
            if vr is None:
                raise _Declined  # implicit VR switch or an unknown VR: pydicom guesses
            header = 8
            if vr in long_vrs:
                if end - pos < 12:
                    raise _Declined
                length = _LONG_LENGTH(data, pos + 8)[0]
                header = 12
        pos += header
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
        key = _TAGS.get(tag)  # one object for the key and the element's tag, as {e.tag: e for e in ...}
        if key is None:
            key = BaseTag(tag)
            if len(_TAGS) < 65536:  # BaseTag is an int: the same immutable object serves every file
                _TAGS[tag] = key
        # RawDataElement(key, vr, length, value, value_tell, implicit, True): the namedtuple's fields
        elements[key] = _new_tuple(RawDataElement, (key, vr, length, value, value_tell, implicit, True, True, False))
    else:
        fileobj.seek(end)
    return elements, pos


__all__ = ["read_file_bytes"]
