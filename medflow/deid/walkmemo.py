"""Per-process memo of the walker's per-element outcomes: the values of a series repeat file after file.

Most elements of the instances of a series hold the same bytes (descriptions, names, dates, codes,
equipment, geometry that does not change). :class:`~medflow.deid.walker.Walker` then takes, for a
raw element it has seen before in the same context, the outcome it computed then: the output
element (removed, the raw element kept as read, or a new value) and the audit records (which hold
rules, paths and keyed hashes, never values), without decoding, scrubbing, hashing or looking up
the table again.

An outcome also keeps the encoded bytes of its output element per writer state (transfer
syntax, character sets...), filled by :func:`medflow.deid.encode.encode_file`, so the element is
encoded once per series too.

An outcome is a function of everything below, so each is part of the key:

* the key and configuration: one :class:`WalkMemo` per (key, options, keep and replace rules,
  pydicom's conversion settings, see :func:`medflow.deid.rawelem.conversion_state`);
* the file: its identifying values less the retained categories (the scrubber's input) and its
  PatientID (pseudonyms, date and time offsets), interned as a *file token*;
* the dataset being walked: the file token, the audit path prefix, the character sets, top level
  or not, the Type 1 value tag of an SR content item, the safe private tags kept, interned as a
  *scope token*;
* the element: tag, VR as resolved, length, value bytes, VR encoding and endianness.

Elements whose outcome reads another element are never memoized (a DA moved with the TM of its
item under retain-longitudinal-modified-dates; a sequence holds its items, so its outcome is a
function of its bytes), nor values longer than :data:`MAX_VALUE_BYTES` (sequences:
:data:`MAX_SEQUENCE_BYTES`), or outcomes other than the four kinds above. Tokens come from a counter
that never repeats, and everything is forgotten at once when a table is full, so a token can never
name another context. The memo lives in process memory only (never in the cache, never written).
"""

from __future__ import annotations

from itertools import count

#: Outcome kinds: the element is removed, kept as the raw element read, given a new value, or a
#: sequence whose items were walked (its output copied whole, see walker.clone_sequence).
REMOVED, KEEP_RAW, VALUE, SEQUENCE = 0, 1, 2, 3
#: Longer values are not memoized (pixel data, large private blobs: rarely repeated, costly to keep).
MAX_VALUE_BYTES = 1024
MAX_SEQUENCE_BYTES = 65536
MAX_OUTCOMES = 65536
#: Value bytes the outcomes of one memo hold at most (sequences up to 64 KiB are kept whole).
MAX_BYTES = 16 * 1024 * 1024
MAX_TOKENS = 16384
MAX_MEMOS = 4


class WalkMemo:
    """Outcomes of one key and configuration (see the module docstring)."""

    __slots__ = ("outcomes", "_tokens", "_counter", "_bytes")

    def __init__(self) -> None:
        self.outcomes: dict[tuple, tuple] = {}
        self._tokens: dict[tuple, int] = {}
        self._counter = count()
        self._bytes = 0  # value bytes in the keys (the encoded bytes kept are of the same order)

    def token(self, context: tuple) -> int:
        """A small int naming ``context`` (a file or a scope); equal contexts, equal tokens."""
        token = self._tokens.get(context)
        if token is None:
            if len(self._tokens) >= MAX_TOKENS:
                self.clear()
            token = self._tokens[context] = next(self._counter)
        return token

    def store(self, key: tuple, outcome: tuple) -> None:
        """Keep ``outcome`` under ``key`` (its value bytes at index 4), or start afresh when full."""
        if len(self.outcomes) >= MAX_OUTCOMES or self._bytes >= MAX_BYTES:
            self.clear()  # the tokens go too: outcomes are only found through a live token
            return
        self._bytes += len(key[4] or b"")
        self.outcomes[key] = outcome

    def clear(self) -> None:
        self.outcomes.clear()
        self._tokens.clear()
        self._bytes = 0


_MEMOS: dict[tuple, WalkMemo] = {}


def walk_memo(key: bytes, config_state: tuple) -> WalkMemo:
    """The memo of ``key`` and ``config_state`` (options, rules, conversion settings) in this process."""
    memo_key = (key, config_state)
    memo = _MEMOS.get(memo_key)
    if memo is None:
        if len(_MEMOS) >= MAX_MEMOS:
            _MEMOS.pop(next(iter(_MEMOS)))
        memo = _MEMOS[memo_key] = WalkMemo()
    return memo


def forget_all() -> None:
    """Drop every memo of this process (tests; a caller that wants the memory back)."""
    _MEMOS.clear()


__all__ = ["KEEP_RAW", "MAX_SEQUENCE_BYTES", "MAX_VALUE_BYTES", "REMOVED", "SEQUENCE", "VALUE", "WalkMemo", "forget_all", "walk_memo"]
