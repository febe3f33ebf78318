"""Keyed, deterministic pseudonyms: UIDs, patient IDs, date offsets and audit hashes.

Every value is an HMAC-SHA256 under the secret key with a distinct domain label, so the same
input gives the same output on every machine, process and worker count, and nobody without the
key can recompute (or test guesses of) the mapping.

* UID: ``2.25.`` + the decimal integer of the first 128 bits of HMAC(key, "uid" | original UID).
  PS3.5 B.2 allows a UUID-derived ``2.25.`` root for a 128-bit integer; 128 bits are at most 39
  decimal digits, so the UID has at most 44 characters (limit 64) and, being a decimal integer
  written without leading zeros, it is a valid UID component.
* Patient pseudonym: ``MF-`` + 16 base32 characters (the first 80 bits of
  HMAC(key, "patient" | original PatientID)); PatientName gets the same string.
* Date offset: a whole number of days in [-365, -1] U [1, 365] from
  HMAC(key, "date-offset" | original PatientID): one offset per patient, never zero.
* Time offset: ``days * 86400 + seconds`` with ``days`` the date offset above and ``seconds`` in
  [0, 86399] from HMAC(key, "time-offset" | original PatientID); DA, TM and DT values of a
  patient all move by it (see :mod:`medflow.deid.temporal`).
* Audit hash: hex of the first 64 bits of HMAC(key, "audit" | value bytes).
"""

from __future__ import annotations

import base64
import hashlib
import hmac

UID_ROOT = "2.25."
UID_BITS = 128
PATIENT_PREFIX = "MF-"
MAX_OFFSET_DAYS = 365
_BLOCK = 64  # SHA-256 block size in bytes (RFC 2104 "B")
_IPAD = bytes(b ^ 0x36 for b in range(256))
_OPAD = bytes(b ^ 0x5C for b in range(256))


def _mac(key: bytes, label: bytes, value: bytes) -> bytes:
    return hmac.new(key, label + b"\x00" + value, hashlib.sha256).digest()


def keyed_uid(key: bytes, uid: str) -> str:
    """The pseudonym UID of ``uid`` (see module docstring); stable for a given key."""
    digest = _mac(key, b"uid", uid.strip("\x00 ").encode("ascii", "surrogateescape"))
    return UID_ROOT + str(int.from_bytes(digest[: UID_BITS // 8], "big"))


def patient_pseudonym(key: bytes, patient_id: str) -> str:
    """``MF-`` + base32 of 80 HMAC bits of the original PatientID (trailing spaces ignored)."""
    digest = _mac(key, b"patient", patient_id.strip().encode("utf-8"))
    return PATIENT_PREFIX + base64.b32encode(digest[:10]).decode("ascii")


def date_offset_days(key: bytes, patient_id: str) -> int:
    """Whole-day offset in [-365, -1] U [1, 365], one per patient."""
    digest = _mac(key, b"date-offset", patient_id.strip().encode("utf-8"))
    n = int.from_bytes(digest[:8], "big") % (2 * MAX_OFFSET_DAYS)
    return n - MAX_OFFSET_DAYS if n < MAX_OFFSET_DAYS else n - MAX_OFFSET_DAYS + 1


def time_of_day_offset(key: bytes, patient_id: str) -> int:
    """The seconds part of the time offset, in [0, 86399], one per patient."""
    digest = _mac(key, b"time-offset", patient_id.strip().encode("utf-8"))
    return int.from_bytes(digest[:8], "big") % 86400


def time_offset_seconds(key: bytes, patient_id: str) -> int:
    """The whole offset in seconds: ``date_offset_days * 86400 + time_of_day_offset``."""
    return date_offset_days(key, patient_id) * 86400 + time_of_day_offset(key, patient_id)


def audit_hash(key: bytes, value: bytes) -> str:
    """16 hex characters of HMAC(key, "audit" | value): links records without the value."""
    return _mac(key, b"audit", value).hex()[:16]


#: Entries a :class:`Pseudonymizer` memo holds before it starts again (UIDs of many files).
MAX_MEMO = 65536


class Pseudonymizer:
    """The keyed mappings of one key, with a per-instance memo of UIDs and patients (the hot path)."""

    def __init__(self, key: bytes):
        if not isinstance(key, bytes | bytearray) or len(key) < 16:
            raise ValueError("the de-identification key must be at least 16 bytes")
        self.key = bytes(key)
        self._uids: dict[str, str] = {}
        self._patients: dict[str, str] = {}
        # HMAC (RFC 2104) from its two keyed SHA-256 states, copied per value: the same MAC as
        # hmac.new(key, msg, sha256), without hmac's per-call Python setup (the audit hot path)
        block = self.key if len(self.key) <= _BLOCK else hashlib.sha256(self.key).digest()
        block = block.ljust(_BLOCK, b"\0")
        self._inner = hashlib.sha256(block.translate(_IPAD) + b"audit\x00")
        self._outer = hashlib.sha256(block.translate(_OPAD))

    def uid(self, uid: str) -> str:
        return _memoized(self._uids, uid, lambda: keyed_uid(self.key, uid))

    def patient(self, patient_id: str) -> str:
        return _memoized(self._patients, patient_id, lambda: patient_pseudonym(self.key, patient_id))

    def date_offset(self, patient_id: str) -> int:
        return date_offset_days(self.key, patient_id)

    def time_of_day_offset(self, patient_id: str) -> int:
        return time_of_day_offset(self.key, patient_id)

    def hash(self, value: bytes) -> str:
        """Same as :func:`audit_hash` (the audit hot path)."""
        inner = self._inner.copy()
        inner.update(value)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.hexdigest()[:16]


def _memoized(memo: dict[str, str], value: str, compute) -> str:
    """``memo[value]``, computed on a miss; the memo starts again when it holds :data:`MAX_MEMO` entries."""
    found = memo.get(value)
    if found is None:
        if len(memo) >= MAX_MEMO:
            memo.clear()
        found = memo[value] = compute()
    return found


_BY_KEY: dict[bytes, Pseudonymizer] = {}


def pseudonymizer(key: bytes) -> Pseudonymizer:
    """The :class:`Pseudonymizer` of ``key`` in this process, its memos kept from file to file.

    Raises:
        ValueError: ``key`` is not bytes of at least 16 bytes (as :class:`Pseudonymizer`).
    """
    found = _BY_KEY.get(key) if type(key) is bytes else None
    if found is None:
        found = Pseudonymizer(key)
        if len(_BY_KEY) >= 4:
            _BY_KEY.pop(next(iter(_BY_KEY)))
        _BY_KEY[found.key] = found
    return found
