"""The element walker of :func:`medflow.deid.profile.deidentify`: one visit per element, at any depth.

Decides and applies the action of each element (recipe rules, private attributes, overlay and
curve groups, pseudonyms, Table E.1-1, then medflow's rules for unlisted attributes; see
:mod:`medflow.deid.profile`) and records an :class:`AuditRecord` for each attribute it acts on.
A raw element seen before in the same context gets the outcome computed then
(:mod:`medflow.deid.walkmemo`): the same output element and audit records, without the work.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from dataclasses import dataclass, replace
from json.encoder import encode_basestring_ascii as _json_str  # what json.dumps uses (ensure_ascii)

from pydicom import Dataset, Sequence
from pydicom import config as pydicom_config
from pydicom.datadict import tag_for_keyword
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.multival import MultiValue
from pydicom.uid import UID_dictionary
from pydicom.valuerep import PersonName

from medflow.deid.actions import (
    BINARY_VRS,
    CODE_KEYWORDS,
    COMPOSITE,
    CONTENT_ITEM_VALUE,
    TEXT_VRS,
    VALUE_TYPE,
    dummy_for,
    empty_for,
)
from medflow.deid.config import DeidConfig
from medflow.deid.phi import IdentityValues, Scrubber
from medflow.deid.pseudonyms import Pseudonymizer
from medflow.deid.rawelem import (
    PIXEL_REPRESENTATION,
    RawView,
    add_sequence,
    conversion_state,
    convert_in_place,
    encodings_of,
    fast_path_allowed,
    keyword_of,
    new_dataset,
    value_of,
    view_vr,
)
from medflow.deid.table import compile_actions, load_safe_private
from medflow.deid.temporal import (
    date_time_pairs,
    shift_date_with_time,
    shift_datetime_whole,
    shift_time,
)
from medflow.deid.walkmemo import (
    KEEP_RAW,
    MAX_SEQUENCE_BYTES,
    MAX_VALUE_BYTES,
    REMOVED,
    SEQUENCE,
    VALUE,
    walk_memo,
)

PATIENT_ID = 0x00100020
PATIENT_NAME = 0x00100010
PIXEL_DATA = 0x7FE00010
MEDIA_STORAGE_SOP_INSTANCE_UID = 0x00020003
#: File meta elements that name the sending/receiving systems or carry private data.
META_REMOVE = frozenset({0x00020016, 0x00020017, 0x00020018, 0x00020100, 0x00020102})
_KEEP_UID_SUFFIXES = ("ClassUID", "TransferSyntaxUID", "CodingSchemeUID", "ContextUID", "MappingResourceUID")
#: Identity categories (:mod:`medflow.deid.phi`) that a retain option asks to keep in the text.
_RETAINED_IDENTITY = {
    "retain-institution-identity": ("institution", "department", "issuer"),  # issuers name the institution
    "retain-device-identity": ("station", "device"),
    "retain-longitudinal-full-dates": ("date",),
}
#: Kept text VRs that go through the scrubber (PN is emptied instead, LT/ST/UT need a clean option).
_SCRUBBED_VRS = frozenset({"LO", "SH", "UC", "UR"})


@dataclass(frozen=True)
class AuditRecord:
    """What was done to one attribute; never its value.

    ``action`` is the rule that decided (a Table E.1-1 letter such as ``X/Z/D``, ``rule:keep``,
    ``rule:replace`` or ``medflow:<rule>`` for the rules beyond the table); ``applied`` is what
    was done: remove, empty, dummy, keep, clean, uid, pseudonym, shift, replace, mask.
    ``old_hash`` is HMAC-SHA256(key, old value)[:16 hex] (``None`` for sequences).
    """

    tag: str
    keyword: str
    path: str
    action: str
    applied: str
    old_hash: str | None

    def as_dict(self) -> dict[str, str | None]:
        # written out rather than dataclasses.asdict (which deep-copies): one call per audited element
        return {"tag": self.tag, "keyword": self.keyword, "path": self.path, "action": self.action,
                "applied": self.applied, "old_hash": self.old_hash}

    def json_line(self) -> str:
        """``json.dumps(self.as_dict(), sort_keys=True)`` and a newline (made once per record).

        Formatted with json's own string encoder, one call per field; records of memoized
        outcomes (:mod:`medflow.deid.walkmemo`) are shared by the files of a series, so the
        line is kept in the record (outside its fields: equality and ``replace`` ignore it).
        """
        line = self.__dict__.get("_json_line")
        if line is None:
            line = self.__dict__["_json_line"] = self._format_line()
        return line

    def _format_line(self) -> str:
        fields = (self.action, self.applied, self.keyword, self.path, self.tag)
        if type(self.old_hash) not in (str, type(None)) or any(type(f) is not str for f in fields):
            return json.dumps(self.as_dict(), sort_keys=True) + "\n"
        old = "null" if self.old_hash is None else _json_str(self.old_hash)
        return (
            f'{{"action": {_json_str(self.action)}, "applied": {_json_str(self.applied)}, '
            f'"keyword": {_json_str(self.keyword)}, "old_hash": {old}, "path": {_json_str(self.path)}, '
            f'"tag": {_json_str(self.tag)}}}\n'
        )


_new_object = object.__new__
_TAG_TEXT: dict[int, str] = {}


def tag_text(tag: int) -> str:
    text = _TAG_TEXT.get(tag)
    if text is None:
        text = f"({tag >> 16:04X},{tag & 0xFFFF:04X})"
        if len(_TAG_TEXT) < 65536:  # bounded: private tags of arbitrary inputs
            _TAG_TEXT[tag] = text
    return text


def _value_bytes(value: object) -> bytes:
    if isinstance(value, bytes | bytearray):
        return bytes(value)
    if isinstance(value, MultiValue | list | tuple):
        return "\\".join(str(v) for v in value).encode("utf-8", "surrogateescape")
    return str(value if value is not None else "").encode("utf-8", "surrogateescape")


def clone_element(elem: DataElement) -> DataElement:
    """A new DataElement with the same attributes as ``elem`` (its value shared: str, bytes, numbers, UID, PN).

    What ``DataElement(tag, VR, value)`` makes again from the same arguments, without converting
    and validating the value again; multi-values (mutable) are never cloned this way.
    """
    new = _new_object(DataElement)
    new.__dict__.update(elem.__dict__)
    return new


def _immutable(value: object) -> bool:
    """Whether ``value`` (a DataElement's) can be shared by copies: None, str, bytes, a number or a name."""
    return value is None or isinstance(value, str | bytes | int | float | PersonName)


def _copyable(elem: DataElement) -> bool:
    """Whether :func:`clone_sequence` copies the SQ element ``elem`` whole (every value immutable)."""
    for item in elem._value:
        for sub in item._dict.values():
            if type(sub) is RawDataElement:
                continue
            if type(sub) is not DataElement:
                return False
            if sub.VR == "SQ":
                if not _copyable(sub):
                    return False
            elif not _immutable(sub._value):
                return False
    return True


def clone_sequence(elem: DataElement) -> DataElement:
    """A copy of the SQ element ``elem`` (see :func:`_copyable`): new Sequence, new item datasets.

    Each item gets the attributes of the original (its dicts and lists copied), raw elements are
    shared (immutable tuples), other elements cloned with :func:`clone_element`, sequences copied
    the same way: what the walker would build again from the same input, as pydicom objects.
    """
    new = clone_element(elem)
    new._value = Sequence([_clone_item(item) for item in elem._value])
    return new


def _clone_item(ds: Dataset) -> Dataset:
    new = _new_object(type(ds))
    attributes = new.__dict__
    for name, value in ds.__dict__.items():
        attributes[name] = value.copy() if type(value) is dict or type(value) is list else value
    elements = attributes["_dict"]
    for tag, elem in elements.items():
        if type(elem) is DataElement:
            elements[tag] = clone_sequence(elem) if elem.VR == "SQ" else clone_element(elem)
    return new


def _is_well_known_uid(uid: str) -> bool:
    return uid in UID_dictionary or uid.startswith("1.2.840.10008.")




def _blank(value: object) -> bool:
    if isinstance(value, MultiValue | list):
        return all(_blank(v) for v in value)
    return value is None or str(value).strip(" \x00") == ""


class Walker:
    """State of one :func:`~medflow.deid.profile.deidentify` call: visits elements, records audit."""

    def __init__(self, ds: Dataset, config: DeidConfig, pseudo: Pseudonymizer, *, convert_all: bool = False):
        self.config = config
        # Raw elements are read through RawView (see medflow.deid.rawelem) unless pydicom is
        # configured to convert differently or the caller asks for pydicom's conversion of all.
        self.fast = not convert_all and fast_path_allowed()
        self.options = config.options
        self.table = compile_actions(config.options)
        self.pseudo = pseudo
        self.audit: list[AuditRecord] = []
        self.notes: list[str] = []
        self.keep = frozenset(tag_for_keyword(k) for k in config.rules.keep)
        self.replace = {tag_for_keyword(k): v for k, v in config.rules.replace.items()}
        self.retain_uids = "retain-uids" in self.options
        self.full_dates = "retain-longitudinal-full-dates" in self.options
        self.patient_id = str(value_of(ds, PATIENT_ID, "") or "")
        modified = "retain-longitudinal-modified-dates" in self.options
        self.offset = pseudo.date_offset(self.patient_id) if modified else None
        self.seconds = pseudo.time_of_day_offset(self.patient_id) if modified else 0
        self.clean_free_text = bool({"clean-descriptors", "clean-structured-content"} & self.options)
        self._source = ds
        self._identity: IdentityValues | None = None
        self._scrubber: Scrubber | None = None
        self._item = ds  # the input item being walked: a DA finds its TM there
        self._required: int | None = None  # tag of the Type 1 value of the SR content item being walked
        self.safe_private = load_safe_private() if "retain-safe-private" in self.options else frozenset()
        self._made: DataElement | None = None  # the element the last with_value made
        #: Top-level tag -> encoded-bytes slot of its memoized outcome (see visit); the caller
        #: drops the tags it changes after the walk.
        self.element_bytes: dict[int, dict] = {}
        # Outcomes of raw elements seen before in the same context (medflow.deid.walkmemo).
        self.memo = None
        if self.fast:
            rules = (frozenset(self.keep), tuple(sorted(self.replace.items())))
            self.memo = walk_memo(pseudo.key, (self.options, rules, conversion_state()))
            self.file_token = self.memo.token(("file", self.identity.key, self.patient_id))

    # -- helpers ---------------------------------------------------------------------------
    def record(self, elem: DataElement | RawView, path: str, action: str, applied: str) -> None:
        if elem.VR == "SQ":
            old = None
        else:
            data = elem.value_bytes() if type(elem) is RawView else None
            old = self.pseudo.hash(_value_bytes(elem.value) if data is None else data)
        # the frozen dataclass's fields set directly: its __init__ sets each through object.__setattr__
        record = _new_object(AuditRecord)
        record.__dict__.update(tag=tag_text(elem.tag), keyword=elem.keyword, path=path, action=action,
                               applied=applied, old_hash=old)
        self.audit.append(record)

    @staticmethod
    def keep_elem(elem: DataElement | RawView) -> DataElement | RawDataElement:
        """The element unchanged: the raw element itself when it can be written back as read."""
        return elem.kept() if type(elem) is RawView else copy.copy(elem)

    @staticmethod
    def keep_private(elem: DataElement | RawView) -> DataElement:
        # converted, so that the output dataset records its private creator as before
        return copy.copy(elem.converted() if type(elem) is RawView else elem)

    @property
    def identity(self) -> IdentityValues:
        """The input's identifying values, less what the options ask to retain (built once)."""
        if self._identity is None:
            retained = [c for o in self.options for c in _RETAINED_IDENTITY.get(o, ())]
            identity = IdentityValues.from_dataset(self._source, convert_all=not self.fast)
            self._identity = identity.without(retained) if retained else identity
        return self._identity

    def scrub(self, elem: DataElement, path: str, action: str, *, patterns: bool, audit: bool = True) -> DataElement:
        """Text with the identity (and PHI patterns) removed; audited with the rules that fired.

        A value that had text and is left blank gets the VR's dummy: the attribute may be Type 1.
        """
        if self._scrubber is None:
            self._scrubber = Scrubber(self.identity)
        scrubber, value, fired = self._scrubber, elem.value, set()
        multi = isinstance(value, MultiValue | list)
        cleaned: list[object] = []
        for raw in value if multi else [value]:
            if raw is None or raw == "":
                cleaned.append(raw)
                continue
            text = raw.decode("latin-1") if isinstance(raw, bytes) else str(raw)
            new, rules = scrubber(text, patterns)
            if rules:
                fired.update(rules)
                if text.strip() and not new.strip():
                    new = dummy_for(elem.VR)  # type: ignore[assignment]
            cleaned.append(new)
        if fired:
            self.record(elem, path, action, "clean:" + "+".join(sorted(fired)))
            return self.with_value(elem, cleaned if multi else cleaned[0])
        if audit:
            self.record(elem, path, action, "clean")
        return self.keep_elem(elem)

    def map_uid(self, value: str) -> str:
        return value if _is_well_known_uid(value) else self.pseudo.uid(value)

    def with_value(self, elem: DataElement, value: object) -> DataElement:
        # Values written here are ours (dummies, pseudonyms, shifted dates) or the input's own
        # (scrubbed text), so pydicom's per-value validation is skipped on this hot path.
        new = DataElement(elem.tag, elem.VR, value, validation_mode=pydicom_config.IGNORE)
        new.private_creator = elem.private_creator
        self._made = new
        return new

    # -- traversal -------------------------------------------------------------------------
    def dataset(self, ds: Dataset, prefix: str, top: bool = False) -> Dataset:
        out = new_dataset()
        saved = self._item, self._required
        self._item = ds
        self._required = None
        if VALUE_TYPE in ds:
            self._required = CONTENT_ITEM_VALUE.get(str(ds[VALUE_TYPE].value).strip())
        private_keep = self.safe_private_tags(ds) if self.safe_private else frozenset()
        as_read = True  # every element added is raw or has a definite VR: the item can keep its encoding

        def decide(elem: DataElement | RawView, tag: int) -> DataElement | RawDataElement | None:
            return self.element(elem, tag, prefix + (keyword_of(tag) or tag_text(tag)), top, private_keep)

        slots = self.element_bytes if top else None
        for tag, new in self.visit(ds, ("scope", prefix, top, self._required, private_keep), decide, slots):
            if type(new) is RawDataElement:
                out._dict[new.tag] = new  # what Dataset.__setitem__ does for a public raw element
            elif tag >> 16 & 1:
                if new.VR == "SQ":  # Dataset.__setitem__ reads (0028,0103) of ``out`` for its items
                    convert_in_place(out, PIXEL_REPRESENTATION)
                out.add(new)  # private creator and sequence bookkeeping
            elif new.VR == "SQ":
                add_sequence(out, new)  # Dataset.add's bookkeeping: the items' pixel representation
            else:
                if " or " in new.VR:
                    as_read = False
                out._dict[new.tag] = new
        if not top and as_read and None not in ds.original_encoding:
            # Items keep the encoding they were read with, as the top level does (profile.py), so
            # pydicom writes their raw elements as read instead of converting them.
            out._parent_encoding = ds._parent_encoding
            out.set_original_encoding(*ds.original_encoding, ds.original_character_set)
        self._item, self._required = saved
        return out

    def visit(
        self, ds: Dataset, scope: tuple, decide: Callable[[DataElement | RawView, int], DataElement | RawDataElement | None],
        slots: dict[int, dict] | None = None,
    ) -> list[tuple[int, DataElement | RawDataElement]]:
        """``(tag, output element)`` of the elements of ``ds`` in tag order, removed ones left out.

        ``decide(element, tag)`` gives an element's output and appends its audit records; raw
        elements are seen as :class:`RawView` s. A raw element whose outcome is in the memo for
        this file and ``scope`` (what else ``decide`` depends on) is not decided again. ``slots``
        receives, per tag of an output element from the memo, its outcome's encoded-bytes slot
        (:func:`medflow.deid.encode.encode_file` keeps the element's bytes there).
        """
        out: list[tuple[int, DataElement | RawDataElement]] = []
        pairs = sorted([(int(tag), item) for tag, item in ds._dict.items()])  # int tags: BaseTag compares slowly
        memo = self.memo
        if memo is None:
            for tag, item in pairs:
                new = decide(ds[tag] if not self.fast else self._view(ds, tag, item), tag)
                if new is not None:
                    out.append((tag, new))
            return out
        encodings = encodings_of(ds)
        token = memo.token((self.file_token, tuple(encodings), *scope))
        dates_paired = self.offset is not None  # a DA then moves with the TM of its item: never memoized
        outcomes, audit = memo.outcomes, self.audit
        for tag, item in pairs:
            vr = value = None
            if type(item) is RawDataElement:
                vr, value = item.VR, item.value
                if vr is None or value is None or vr == "UN" or len(vr) != 2:
                    vr = view_vr(item)  # implicit VR, deferred or unknown: as a RawView sees it
            if vr is None or (value is not None and len(value) > (MAX_SEQUENCE_BYTES if vr == "SQ" else MAX_VALUE_BYTES)) \
                    or (vr == "DA" and dates_paired):
                new = decide(RawView(item, vr, ds, encodings) if vr is not None else ds[tag], tag)
            else:
                key = (token, tag, vr, item.length, value, item.is_implicit_VR, item.is_little_endian)
                outcome = outcomes.get(key)
                if outcome is None:
                    new = self._memoized(key, RawView(item, vr, ds, encodings), item, tag, decide)
                    outcome = outcomes.get(key)
                else:
                    kind, made, records, _ = outcome
                    audit.extend(records)
                    if kind == KEEP_RAW:
                        new = item
                    elif kind == VALUE:
                        new = clone_element(made)
                    elif kind == SEQUENCE:
                        new = clone_sequence(made)
                    else:
                        new = None
                if slots is not None and new is not None and outcome is not None:
                    slots[tag] = outcome[3]
            if new is not None:
                out.append((tag, new))
        return out

    def _memoized(
        self, key: tuple, elem: RawView, item: RawDataElement, tag: int,
        decide: Callable[[DataElement | RawView, int], DataElement | RawDataElement | None],
    ) -> DataElement | RawDataElement | None:
        """``decide`` of a raw element, its outcome stored in the memo when it is one of its kinds."""
        audit = self.audit
        before = len(audit)
        last = audit[-1] if before else None
        self._made = None
        new = decide(elem, tag)
        if before and audit[before - 1] is not last:
            return new  # an earlier record was rewritten: not this element's outcome alone
        # (kind, what to make the output from, audit records, encoded bytes of the output by writer state)
        # copies of ``new`` are kept: ``new`` may change with the dataset it goes into
        if new is None:
            outcome: tuple = (REMOVED, None, tuple(audit[before:]), {})
        elif new is item:
            outcome = (KEEP_RAW, None, tuple(audit[before:]), {})
        elif type(new) is DataElement and new.VR == "SQ":
            if not _copyable(new):
                return new
            outcome = (SEQUENCE, clone_sequence(new), tuple(audit[before:]), {})
        elif self._made is new and _immutable(new._value):
            outcome = (VALUE, clone_element(new), tuple(audit[before:]), {})
        else:
            return new  # a converted copy (not canonical, private kept...): made again next time
        self.memo.store(key, outcome)  # type: ignore[union-attr]
        return new

    def _view(self, ds: Dataset, tag: int, item: object) -> DataElement | RawView:
        """The walker's element for ``item``: a :class:`RawView` of a raw element pydicom converts the default way."""
        vr = view_vr(item) if type(item) is RawDataElement else None  # type: ignore[arg-type]
        return RawView(item, vr, ds, encodings_of(ds)) if vr is not None else ds[tag]  # type: ignore[arg-type]

    def meta_element(self, elem: DataElement | RawView, tag: int) -> DataElement | RawDataElement | None:
        """The output of a File Meta Information element: sending systems removed, the SOP instance keyed."""
        path = "file_meta." + (elem.keyword or tag_text(tag))
        if tag in META_REMOVE:
            self.record(elem, path, "medflow:file-meta", "remove")
            return None
        if tag == MEDIA_STORAGE_SOP_INSTANCE_UID:
            return self.uid(elem, path, self.table.by_tag.get(tag, "U"))
        if tag & 0xFFFF != 0:
            return self.keep_elem(elem)
        return None  # the group length: recomputed by the writer

    def elements(self, ds: Dataset) -> list[tuple[int, DataElement | RawView]]:
        """``(tag, element)`` in tag order, as ``for elem in ds`` visits them; raw ones as views."""
        elements = ds._dict
        # sorting int tags, not pydicom's BaseTag (whose comparisons are Python methods)
        pairs = sorted([(int(tag), item) for tag, item in elements.items()])
        if not self.fast:
            return [(tag, ds[tag]) for tag, _ in pairs]
        encodings = encodings_of(ds)
        out: list[tuple[int, DataElement | RawView]] = []
        for tag, item in pairs:
            vr = view_vr(item) if type(item) is RawDataElement else None
            out.append((tag, RawView(item, vr, ds, encodings) if vr is not None else ds[tag]))
        return out

    def safe_private_tags(self, ds: Dataset) -> frozenset[int]:
        creators: dict[tuple[int, int], str] = {}
        kept: set[int] = set()
        for tag in sorted(map(int, ds._dict)):
            group, el = tag >> 16, tag & 0xFFFF
            if not group & 1:
                continue
            if 0x0010 <= el <= 0x00FF:
                creators[(group, el)] = str(ds[tag].value).strip()
            elif el >= 0x1000:
                creator = creators.get((group, el >> 8))
                if creator is not None and (creator, group, el & 0xFF) in self.safe_private:
                    kept.add(tag)
                    kept.add((group << 16) | (el >> 8))
        return frozenset(kept)

    def sequence(self, elem: DataElement, path: str) -> DataElement:
        items = Sequence([self.dataset(item, f"{path}[{i}].") for i, item in enumerate(elem.value)])
        new = DataElement(elem.tag, "SQ", items)
        new.is_undefined_length = elem.is_undefined_length
        return new

    def element(
        self, elem: DataElement, tag: int, path: str, top: bool, private_keep: frozenset[int]
    ) -> DataElement | None:
        group = tag >> 16
        if group & 1:  # private (odd group): Table E.1-1 row (gggg,eeee)
            if tag in private_keep:
                self.record(elem, path, self.table.private, "keep")
                return self.keep_private(elem)
            self.record(elem, path, "X", "remove")
            return None
        if tag & 0xFFFF == 0:  # group length: recomputed by the writer
            return None
        if tag in self.replace:
            self.record(elem, path, "rule:replace", "replace")
            return self.with_value(elem, self.replace[tag])
        if tag in self.keep:
            self.record(elem, path, "rule:keep", "keep")
            return self.sequence(elem, path) if elem.VR == "SQ" else self.keep_elem(elem)
        if 0x5000 <= group <= 0x501E and not group & 1:
            return self.graphics(elem, path, self.table.curves, whole_group=True)
        if 0x6000 <= group <= 0x601E and not group & 1:
            return self.overlay(elem, tag, path)
        if tag == PATIENT_ID or (tag == PATIENT_NAME and top):
            self.record(elem, path, self.table.by_tag.get(tag, "Z"), "pseudonym")
            return self.with_value(elem, self.pseudo.patient(self.patient_id if top else str(elem.value or "")))
        if tag == self._required:
            return self.content_value(elem, tag, path)
        action = self.table.by_tag.get(tag)
        if action is not None:
            return self.apply(elem, action, path)
        return self.unlisted(elem, path)

    # -- actions ---------------------------------------------------------------------------
    def apply(self, elem: DataElement, action: str, path: str) -> DataElement | None:
        vr = elem.VR
        if vr == "SQ":
            if action == "X" or (action == "X/D" and not elem.value):
                self.record(elem, path, action, "remove")
                return None
            if action == "Z":
                self.record(elem, path, action, "empty")
                return self.with_value(elem, [])
            self.record(elem, path, action, "keep" if action == "K" else "clean")
            return self.sequence(elem, path)
        resolved = COMPOSITE.get(action, action)
        if resolved == "U" and vr != "UI":
            resolved = "Z"
        if resolved == "D" and vr == "UI":
            resolved = "U"
        if resolved == "X":
            self.record(elem, path, action, "remove")
            return None
        if resolved == "Z":
            self.record(elem, path, action, "empty")
            return self.with_value(elem, empty_for(vr))
        if resolved == "D":
            self.record(elem, path, action, "dummy")
            return self.with_value(elem, dummy_for(vr))
        if resolved == "U":
            return self.uid(elem, path, action)
        if resolved == "K":
            if vr in TEXT_VRS and vr != "PN":  # kept text still loses identity the options do not retain
                return self.scrub(elem, path, action, patterns=False)
            self.record(elem, path, action, "keep")
            return self.keep_elem(elem)
        return self.clean(elem, path, action)

    def content_value(self, elem: DataElement, tag: int, path: str) -> DataElement:
        """The Type 1 value of an SR content item: cleaned or a dummy, never removed or emptied."""
        action = self.table.by_tag.get(tag)
        if elem.VR == "SQ":
            self.record(elem, path, action or "medflow:content-value", "clean")
            return self.sequence(elem, path)
        if action is None:  # e.g. TextValue, which the table does not list
            if self.clean_free_text:
                new = self.clean(elem, path, "medflow:content-value")
            else:
                self.record(elem, path, "medflow:content-value", "dummy")
                return self.with_value(elem, dummy_for(elem.VR))
        else:
            new = self.apply(elem, "D" if COMPOSITE.get(action, action) in ("X", "Z") else action, path)
        if new is None or _blank(elem.value if type(new) is RawDataElement else new.value):
            self.audit[-1] = replace(self.audit[-1], applied="dummy")
            return self.with_value(elem, dummy_for(elem.VR))
        return new

    def uid(self, elem: DataElement, path: str, action: str) -> DataElement:
        if self.retain_uids:
            self.record(elem, path, action, "keep")
            return self.keep_elem(elem)
        self.record(elem, path, action, "uid")
        value = elem.value
        if isinstance(value, MultiValue | list):
            return self.with_value(elem, [self.map_uid(str(v)) for v in value])
        return self.with_value(elem, self.map_uid(str(value)) if value else value)

    def clean(self, elem: DataElement, path: str, action: str) -> DataElement | None:
        """Action C for a non-sequence value, by VR."""
        vr = elem.VR
        if vr in ("DA", "DT", "TM"):
            return self.shift(elem, path, action)
        if vr == "UI":
            return self.uid(elem, path, action)
        if vr in TEXT_VRS or vr in ("CS", "UR"):
            patterns = vr != "CS" and elem.keyword not in CODE_KEYWORDS
            return self.scrub(elem, path, action, patterns=patterns)
        if vr in BINARY_VRS or " or " in vr:
            self.record(elem, path, action, "remove")  # nothing generic can clean bytes
            return None
        if vr == "AE":
            self.record(elem, path, action, "dummy")
            return self.with_value(elem, dummy_for(vr))
        self.record(elem, path, action, "keep")  # numbers and codes carry no identity
        return self.keep_elem(elem)

    def shift(self, elem: DataElement, path: str, action: str) -> DataElement | None:
        """DA, TM, DT: kept (full dates), moved by the patient's offset (modified dates) or emptied."""
        if self.full_dates:
            self.record(elem, path, action, "keep")
            return self.keep_elem(elem)
        if self.offset is None:
            self.record(elem, path, action, "empty")
            return self.with_value(elem, "")
        vr, raw = elem.VR, elem.value
        values = [str(v) for v in raw] if isinstance(raw, MultiValue | list) else [str(raw or "")]
        if vr == "TM":
            moved = [shift_time(v, self.seconds) for v in values if v]
            shifted: list[str | None] = [m[0] if m else None for m in moved]
        elif vr == "DT":
            shifted = [shift_datetime_whole(v, self.offset, self.seconds) for v in values if v]
        else:
            time = self._time_of(int(elem.tag)) if len(values) == 1 else None
            shifted = [shift_date_with_time(v, time, self.offset, self.seconds) for v in values if v]
        if not shifted or any(s is None for s in shifted):  # partial or invalid: cannot be moved
            self.record(elem, path, action, "empty" if shifted else "keep")
            return self.with_value(elem, "") if shifted else self.keep_elem(elem)
        self.record(elem, path, action, "shift")
        return self.with_value(elem, shifted if len(shifted) > 1 else shifted[0])

    def _time_of(self, date_tag: int) -> str | None:
        """The single TM written with the DA ``date_tag`` in the current item, if any."""
        time_tag = date_time_pairs().get(date_tag)
        if time_tag is None or time_tag not in self._item:
            return None
        value = self._item[time_tag].value
        return None if isinstance(value, MultiValue | list) or not value else str(value)

    def unlisted(self, elem: DataElement, path: str) -> DataElement | None:
        """Public attributes that Table E.1-1 does not list (see the module docstring)."""
        vr = elem.VR
        if vr == "SQ":
            return self.sequence(elem, path)
        if vr in _SCRUBBED_VRS:
            return self.scrub(elem, path, "medflow:text", patterns=elem.keyword not in CODE_KEYWORDS, audit=False)
        if vr == "UI":
            if self.retain_uids or elem.keyword.endswith(_KEEP_UID_SUFFIXES):
                return self.keep_elem(elem)
            values = elem.value if isinstance(elem.value, MultiValue | list) else [elem.value]
            if all(not v or _is_well_known_uid(str(v)) for v in values):
                return self.keep_elem(elem)
            return self.uid(elem, path, "medflow:uid")
        if vr in ("DA", "DT"):
            return self.shift(elem, path, "medflow:date")
        if vr == "TM":
            if self.full_dates or self.offset is not None:
                return self.shift(elem, path, "medflow:time")
            self.record(elem, path, "medflow:time", "empty")
            return self.with_value(elem, "")
        if vr == "PN":
            self.record(elem, path, "medflow:person-name", "empty")
            return self.with_value(elem, "")
        if vr in ("LT", "ST", "UT"):
            if self.clean_free_text:
                return self.clean(elem, path, "medflow:free-text")
            self.record(elem, path, "medflow:free-text", "remove")
            return None
        return self.keep_elem(elem)

    def graphics(self, elem: DataElement, path: str, action: str, whole_group: bool) -> DataElement | None:
        if action == "X" and whole_group:
            self.record(elem, path, "X", "remove")
            return None
        if elem.VR in TEXT_VRS:
            return self.clean(elem, path, action)
        self.record(elem, path, action, "keep")
        return self.sequence(elem, path) if elem.VR == "SQ" else self.keep_elem(elem)

    def overlay(self, elem: DataElement, tag: int, path: str) -> DataElement | None:
        if self.table.overlay_data == "X":  # basic: the whole overlay plane goes with its data
            self.record(elem, path, "X", "remove")
            return None
        if tag & 0xFFFF == 0x4000:
            return self.clean(elem, path, self.table.overlay_comments)
        return self.graphics(elem, path, self.table.overlay_data, whole_group=False)
