"""Reading element values from pydicom's raw (still encoded) elements, without building DataElements.

A dataset read by pydicom holds :class:`~pydicom.dataelem.RawDataElement` tuples (tag, VR, bytes)
until an element is accessed; :meth:`Dataset.__getitem__` then converts it (VR lookup, value
conversion per PS3.5 6.2, validation, a new DataElement). The walker visits every element but
needs the value of few of them, and most elements it keeps unchanged, so it works on a
:class:`RawView` of each raw element instead:

* the tag and VR come from the raw element (explicit VR other than UN) or from the public data
  dictionary (implicit VR, a tag with one VR), exactly as pydicom's default ``raw_element_vr``
  hook resolves them; anything else (UN, private tags of implicit VR, ambiguous VRs such as
  ``US or SS``, deferred values) is converted by pydicom as before;
* :attr:`RawView.value` decodes what pydicom's converters would return for the string, number
  and binary VRs (:func:`pydicom.values.convert_value` semantics: trailing padding stripped,
  multiple values split at ``\\``); DS, IS, AT and sequences are converted by pydicom;
* :meth:`RawView.kept` returns the raw element itself when its bytes are exactly what pydicom
  would write for the converted value (the "canonical" encoding: one pad byte at most, no
  padding inside multiple values, text that decodes strictly in a single-byte or UTF-8
  character set), so that the output is byte-identical to converting and writing back;
  otherwise the element converted by pydicom.

:func:`fast_path_allowed` is False when pydicom is configured to convert differently (hooks,
callbacks, numpy DS/IS, datetime conversion, strict validation): the walker then converts every
element, as it always did.
"""

from __future__ import annotations

import copy
import re
from struct import unpack

from pydicom import config as pydicom_config
from pydicom import hooks as pydicom_hooks
from pydicom.charset import default_encoding
from pydicom.datadict import DicomDictionary, dictionary_keyword, dictionary_VR
from pydicom.dataelem import DataElement, RawDataElement, empty_value_for_VR
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

UNDEFINED_LENGTH = 0xFFFFFFFF
#: VRs whose value pydicom decodes with the default encoding (PS3.5 6.1.2.2: default repertoire).
_DEFAULT_CHARSET_VRS = frozenset({"AE", "AS", "CS", "DA", "DT", "TM", "UI", "UR"})
#: VRs decoded with (0008,0005) Specific Character Set.
_CHARSET_VRS = frozenset({"LO", "SH", "UC", "LT", "ST", "UT", "PN"})
#: Text VRs that are never split at backslashes (PS3.5 6.2, VM 1).
_SINGLE_VRS = frozenset({"LT", "ST", "UT", "UR"})
_NUMBER_FORMATS = {"US": "H", "SS": "h", "UL": "L", "SL": "l", "UV": "Q", "SV": "q", "FL": "f", "FD": "d"}
_NUMBER_SIZES = {"H": 2, "h": 2, "L": 4, "l": 4, "Q": 8, "q": 8, "f": 4, "d": 8}
_BINARY_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW"})
#: Python codecs (pydicom's names, see pydicom.charset.python_encoding) for which decoding then
#: encoding gives back the same bytes and a backslash byte is always the value delimiter.
_ROUND_TRIP_CODECS = frozenset({
    "iso8859", "latin_1", "iso_ir_6", "ascii", "UTF8", "utf_8", "utf-8",
    "iso8859_2", "iso8859_3", "iso8859_4", "iso8859_5", "iso8859_6", "iso8859_7", "iso8859_8",
    "iso8859_9", "iso8859_15", "tis_620",
})
_DS = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")
_IS = re.compile(r"[-+]?\d+")
_ESC = 0x1B
_MISSING = object()
_KEYWORDS: dict[int, str] = {}
_IMPLICIT_VRS: dict[int, str | None] = {}


def fast_path_allowed() -> bool:
    """True when pydicom converts raw elements with its defaults (what :class:`RawView` mirrors)."""
    from pydicom.hooks import raw_element_value, raw_element_vr

    return (
        pydicom_hooks.hooks.raw_element_vr is raw_element_vr
        and pydicom_hooks.hooks.raw_element_value is raw_element_value
        and not pydicom_hooks.hooks.raw_element_kwargs
        and pydicom_config.data_element_callback is None
        and not pydicom_config.datetime_conversion
        and not pydicom_config.use_DS_numpy
        and not pydicom_config.use_IS_numpy
        and not pydicom_config.use_DS_decimal
        and not pydicom_config.use_none_as_empty_text_VR_value
        and pydicom_config.settings.reading_validation_mode != pydicom_config.RAISE
    )


def conversion_state() -> tuple[object, ...]:
    """The pydicom settings (beyond :func:`fast_path_allowed`'s) that change what raw bytes convert to.

    A memo of results computed from raw bytes is valid for one state (see :mod:`medflow.deid.phi`
    and :mod:`medflow.deid.walkmemo`).
    """
    settings = pydicom_config.settings
    return (
        settings.reading_validation_mode, settings.writing_validation_mode, settings.infer_sq_for_un_vr,
        pydicom_config.convert_wrong_length_to_UN, pydicom_config.replace_un_with_known_vr,
        pydicom_config.assume_implicit_vr_switch, pydicom_config.allow_DS_float, pydicom_config._use_future,
    )


_DATASET_STATE: dict[tuple[type, bool], tuple[dict[str, object], tuple[str, ...]] | None] = {}
_PLAIN_TYPES = (type(None), bool, int, str, tuple)


def new_dataset(cls: type[Dataset] = Dataset) -> Dataset:
    """A new empty ``cls()`` (``Dataset`` or ``FileMetaDataset``), made by copying the attributes a fresh one has.

    pydicom's ``Dataset.__init__`` sets about fourteen attributes through
    ``Dataset.__setattr__`` (a Python method): some 15 microseconds per dataset, several per
    file. The state of a fresh instance is copied instead (its dicts and lists copied too); if a
    pydicom version gives it an attribute of another type, ``cls()`` is called as before.
    """
    future = bool(pydicom_config._use_future)
    template = _DATASET_STATE.get((cls, future), _MISSING)
    if template is _MISSING:
        state = dict(cls().__dict__)
        mutable = tuple(k for k, v in state.items() if type(v) in (dict, list))
        plain = all(type(v) in _PLAIN_TYPES or k in mutable for k, v in state.items())
        template = _DATASET_STATE[(cls, future)] = (state, mutable) if plain else None
    if template is None:
        return cls()
    state, mutable = template  # type: ignore[misc]
    ds = object.__new__(cls)
    attributes = ds.__dict__
    attributes.update(state)
    for name in mutable:
        attributes[name] = state[name].copy()  # type: ignore[attr-defined]
    return ds


def keyword_of(tag: int) -> str:
    """``DataElement.keyword`` of ``tag`` (``""`` for private and unknown tags), memoised."""
    keyword = _KEYWORDS.get(tag)
    if keyword is None:
        keyword = _KEYWORDS[tag] = dictionary_keyword(tag) if tag in DicomDictionary else ""
    return keyword


def _implicit_vr(tag: int) -> str | None:
    """The VR pydicom gives a public implicit-VR element, or None to let pydicom decide."""
    try:
        return _IMPLICIT_VRS[tag]
    except KeyError:
        pass
    vr: str | None
    try:
        vr = dictionary_VR(tag)
    except KeyError:
        vr = None
    if vr is not None and (" or " in vr or vr == "UN"):
        vr = None
    _IMPLICIT_VRS[tag] = vr
    return vr


def view_vr(raw: RawDataElement) -> str | None:
    """The VR of ``raw`` as pydicom resolves it, or None when only pydicom's conversion can tell.

    None for deferred values, explicit UN (pydicom may replace it by the dictionary VR), and
    implicit-VR elements that are private, unknown or of ambiguous VR.
    """
    if raw.value is None and raw.length != 0:
        return None  # deferred read: pydicom reads it from the file
    vr = raw.VR
    if vr is None:
        tag = raw.tag
        if tag >> 16 & 1 or not tag & 0xFFFF:
            return None
        return _implicit_vr(tag)
    if vr == "UN" or len(vr) != 2:
        return None
    return vr


def encodings_of(ds: Dataset) -> list[str]:
    """The character sets pydicom decodes ``ds``'s text with (as in ``Dataset.__getitem__``)."""
    encodings = ds.original_character_set or ds._character_set
    return [encodings] if isinstance(encodings, str) else list(encodings)


def value_of(ds: Dataset, tag: int, default: object = None) -> object:
    """``ds[tag].value`` (``default`` when absent), a raw element decoded without converting it in ``ds``.

    What ``ds.get(keyword, default)`` returns, as far as str() and iteration tell (a UID as str,
    several values as a list): reading a few attributes before de-identification (filters,
    burned-in policy) leaves the elements raw, so the walker's memo still applies to them.
    """
    item = ds._dict.get(tag)
    if item is None:
        return default
    if type(item) is RawDataElement and fast_path_allowed():
        vr = view_vr(item)
        if vr is not None and vr != "SQ":
            return RawView(item, vr, ds, encodings_of(ds)).value
    return ds[tag].value


PIXEL_REPRESENTATION = 0x00280103
_CONVERTED: dict[tuple, DataElement] = {}


def convert_in_place(ds: Dataset, tag: int) -> None:
    """Do what ``ds[tag]`` does to a raw element: store pydicom's DataElement of it in ``ds``.

    For a raw element of an explicit, public, unambiguous VR holding an immutable value, the
    DataElement is a copy of the one pydicom made for the same bytes before (per process, with
    pydicom's default conversion): ``Dataset.add`` of a sequence converts (0028,0103) Pixel
    Representation this way in every de-identified file, reading a file converts its transfer
    syntax and character set. Other elements (pixel data, values over 1 KiB...) are converted by
    pydicom, as ``ds[tag]`` does.
    """
    item = ds._dict.get(tag)
    if type(item) is not RawDataElement:
        return
    vr, value = item.VR, item.value
    if (vr is None or len(vr) != 2 or vr in ("UN", "SQ") or tag >> 16 & 1 or tag >> 16 == 0x7FE0
            or (value is None and item.length) or (value is not None and len(value) > 1024)
            or not fast_path_allowed()):
        ds[tag]  # noqa: B018 - pydicom converts it in place
        return
    # as Dataset.__getitem__: (0008,0005) itself is read in the default repertoire
    encoding = default_encoding if tag == 0x00080005 else (ds.original_character_set or ds._character_set)
    key = (tag, vr, item.length, item.value, item.is_little_endian, item.is_implicit_VR,
           encoding if isinstance(encoding, str) else tuple(encoding), conversion_state())
    made = _CONVERTED.get(key)
    if made is None:
        elem = ds[tag]
        value = elem.value
        if type(elem) is DataElement and elem.VR == vr and (value is None or isinstance(value, str | bytes | int | float)):
            if len(_CONVERTED) >= 1024:
                _CONVERTED.clear()
            made = _CONVERTED[key] = copy.copy(elem)
        return
    elem = copy.copy(made)
    elem.tag, elem.file_tell = item.tag, item.value_tell  # what converting this raw element sets
    ds._dict[item.tag] = elem  # Dataset.__setitem__ of a public element that is no sequence or pixel data


_PYDICOM_30 = __import__("pydicom").__version__.startswith("3.0.")


def add_sequence(ds: Dataset, elem: DataElement) -> None:
    """``ds.add(elem)`` for a public sequence element holding a Sequence (pydicom 3.0's ``__setitem__``).

    The same dataset state: the element stored under its tag, then ``_set_pixel_representation``:
    ``ds`` and each item get ``_pixel_rep`` from (0028,0103) or from ``ds``, as there, without
    pydicom's ``hasattr`` on a Dataset (a keyword lookup and an AttributeError when absent).
    Other pydicom versions, private tags and other values go through ``ds.add``.
    """
    value = elem.value
    tag = elem.tag
    if not _PYDICOM_30 or type(value) is not Sequence or tag >> 16 & 1 or elem.VR != "SQ":
        ds.add(elem)
        return
    ds._dict[tag] = elem
    convert_in_place(ds, PIXEL_REPRESENTATION)
    own = ds.__dict__
    pr = None
    if PIXEL_REPRESENTATION in ds._dict:
        pr = ds._dict[PIXEL_REPRESENTATION].value
    elif "_pixel_rep" in own:
        pr = own["_pixel_rep"]
    if pr is not None:
        ds._pixel_rep = int(b"\x01" in pr) if isinstance(pr, bytes) else pr
    for item in value:
        if PIXEL_REPRESENTATION in item._dict:
            pr = item._dict[PIXEL_REPRESENTATION].value
            if pr is not None:
                item._pixel_rep = int(b"\x01" in pr) if isinstance(pr, bytes) else pr
            elif "_pixel_rep" in own:
                item._pixel_rep = own["_pixel_rep"]
        elif "_pixel_rep" in own:
            item._pixel_rep = own["_pixel_rep"]


class RawView:
    """One raw element seen by the walker: tag, VR, keyword, and its value decoded on demand.

    It offers what the walker reads from a DataElement (``tag``, ``VR``, ``keyword``,
    ``value``, ``private_creator``, ``is_undefined_length``); :meth:`converted` is pydicom's
    own DataElement for the cases this module does not decode.
    """

    __slots__ = ("tag", "VR", "raw", "ds", "encodings", "_value", "_text", "_elem")

    private_creator = None  # views are made for public tags only

    def __init__(self, raw: RawDataElement, vr: str, ds: Dataset, encodings: list[str]):
        self.tag = raw.tag
        self.VR = vr
        self.raw = raw
        self.ds = ds
        self.encodings = encodings
        self._value: object = _MISSING
        self._text: str | None = None
        self._elem: DataElement | None = None

    @property
    def keyword(self) -> str:
        return keyword_of(self.tag)

    @property
    def is_undefined_length(self) -> bool:
        return self.raw.length == UNDEFINED_LENGTH

    def converted(self) -> DataElement:
        """pydicom's DataElement of this element (converted once, in the source dataset)."""
        if self._elem is None:
            self._elem = self.ds[self.tag]
        return self._elem

    # -- decoding -------------------------------------------------------------------------
    def _decode_text(self) -> str | None:
        """The whole value as pydicom's converter leaves it (joined at ``\\``), or None."""
        vr, data = self.VR, self.raw.value
        if vr in _DEFAULT_CHARSET_VRS:
            text = data.decode("latin-1")  # pydicom's default_encoding "iso8859"
            if vr == "AE":
                return "\\".join(part.strip() for part in text.split("\\"))
            if vr == "UI":  # convert_UI, then UID() strips each value
                return "\\".join(part.strip() for part in text.rstrip("\0 ").split("\\"))
            if vr == "UR":
                return text.rstrip()
            return text.rstrip(" \x00")
        if vr not in _CHARSET_VRS or _ESC in data:
            return None
        if vr == "PN":
            data = data.rstrip(b"\x00 ")
        try:
            text = data.decode(self.encodings[0])
        except (UnicodeError, LookupError):
            return None  # pydicom warns and replaces: let it
        if vr == "PN":  # PersonName drops empty trailing component groups ("A==" is "A"): pydicom's
            return None if "=" in text else text
        if vr in _SINGLE_VRS:
            return text.rstrip("\0 ")
        return "\\".join(part.rstrip("\0 ") for part in text.split("\\"))

    def _decode(self) -> object:
        raw, vr = self.raw, self.VR
        if not raw.length:
            return empty_value_for_VR(vr)
        if vr in _DEFAULT_CHARSET_VRS or vr in _CHARSET_VRS:
            text = self._decode_text()
            if text is None:
                return self.converted().value
            self._text = text
            if vr in _SINGLE_VRS:
                return text
            parts = text.split("\\")
            return parts[0] if len(parts) == 1 else parts
        if vr in _BINARY_VRS:
            return raw.value
        fmt = _NUMBER_FORMATS.get(vr)
        if fmt is not None and len(raw.value) % _NUMBER_SIZES[fmt] == 0:
            count = len(raw.value) // _NUMBER_SIZES[fmt]
            values = unpack(("<" if raw.is_little_endian else ">") + str(count) + fmt, raw.value)
            return values[0] if count == 1 else list(values)
        return self.converted().value

    @property
    def value(self) -> object:
        if self._value is _MISSING:
            self._value = self._decode()
        return self._value

    def _number_text(self) -> str | None:
        r"""``str`` of pydicom's DS/IS value(s) joined at ``\`` (its original strings), or None.

        Only for values pydicom parses as written (:data:`_DS`, :data:`_IS`): their string form
        is the stripped original string (``DSfloat``/``IS.original_string``).
        """
        text = (self.raw.value or b"").decode("latin-1")
        if self.VR == "DS":
            parts, regex = text.strip().split("\\"), _DS  # convert_DS_string strips the whole value
        else:
            parts, regex = text.rstrip(" \x00").split("\\"), _IS  # convert_IS_string: multi_string
        parts = [part.strip() for part in parts]
        return "\\".join(parts) if all(regex.fullmatch(part) for part in parts) else None

    def value_bytes(self) -> bytes | None:
        """The audit's value bytes (``_value_bytes`` of pydicom's value) where this module can tell
        them without pydicom's conversion, else None (the caller uses ``value``)."""
        if self.VR in ("DS", "IS") and self._value is _MISSING and self.raw.length:
            text = self._number_text()
            return None if text is None else text.encode("ascii")
        if self._value is _MISSING:
            self._value = self._decode()
        return None if self._text is None else self._text.encode("utf-8", "surrogateescape")

    # -- keeping ---------------------------------------------------------------------------
    def _canonical(self) -> bool:
        """True when pydicom would write the converted value back as exactly these bytes."""
        raw, vr = self.raw, self.VR
        data = raw.value or b""
        if raw.length == UNDEFINED_LENGTH:
            return vr in ("OB", "OW") and raw.tag == 0x7FE00010  # encapsulated pixel data, as read
        if len(data) & 1:
            return False  # pydicom pads odd values
        if not data:
            return True
        if vr in _BINARY_VRS:
            return True
        fmt = _NUMBER_FORMATS.get(vr)
        if fmt is not None:
            if len(data) % _NUMBER_SIZES[fmt]:
                return False
            if fmt in "fd":  # a signalling NaN comes back quiet from a Python float
                values = self.value
                return all(v == v for v in (values if isinstance(values, list) else [values]))  # type: ignore[attr-defined]
            return True
        if vr in ("DS", "IS"):
            body = data.rstrip(b" ")
            if len(data) - len(body) != len(body) % 2:
                return False
            regex = _DS if vr == "DS" else _IS
            return all(regex.fullmatch(part) for part in body.decode("latin-1").split("\\"))
        if vr in _DEFAULT_CHARSET_VRS:
            if self.value is None:
                return False
            text = self._text
            if text is None:
                return False
            encoded = text.encode("latin-1")
        elif vr in _CHARSET_VRS and self.encodings[0] in _ROUND_TRIP_CODECS and len(self.encodings) == 1:
            if self.value is None:
                return False
            text = self._text
            if text is None:
                return False
            encoded = text.encode(self.encodings[0])
        else:
            return False
        pad = b"\x00" if vr == "UI" else b" "
        return data == (encoded + pad if len(encoded) & 1 else encoded)

    def kept(self) -> RawDataElement | DataElement:
        """The element to put in the output unchanged: the raw element when canonical."""
        if self._elem is None and self._canonical():
            return self.raw
        return copy.copy(self.converted())


__all__ = ["PIXEL_REPRESENTATION", "RawView", "add_sequence", "conversion_state", "convert_in_place", "encodings_of", "fast_path_allowed", "keyword_of", "new_dataset", "value_of", "view_vr"]
