"""Keyed pseudonyms: formula, validity, injectivity, stability across processes; key loading."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import random
import re
import subprocess
import sys
import warnings

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from medflow.deid import DeidKeyError, keyed_uid, load_key, patient_pseudonym
from medflow.deid.pseudonyms import date_offset_days

KEY = b"pseudonym-test-key-0123456789abc"
# PS3.5 9.1: components of digits separated by dots, no leading zero unless the component is "0".
UID_RE = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")

uid_strategy = st.lists(st.integers(min_value=0, max_value=10**12), min_size=2, max_size=12).map(
    lambda parts: ".".join(map(str, parts))
)


def test_uid_formula_independent():
    uid = "1.2.826.0.1.3680043.2.1125.98765432.0.1.1"
    digest = hmac.new(KEY, b"uid\x00" + uid.encode(), hashlib.sha256).digest()
    assert keyed_uid(KEY, uid) == "2.25." + str(int.from_bytes(digest[:16], "big"))


def test_patient_pseudonym_formula_independent():
    digest = hmac.new(KEY, b"patient\x00" + b"98765432", hashlib.sha256).digest()
    assert patient_pseudonym(KEY, "98765432") == "MF-" + base64.b32encode(digest[:10]).decode()
    assert patient_pseudonym(KEY, "98765432 ") == patient_pseudonym(KEY, "98765432")


@given(uid_strategy)
@settings(max_examples=300, deadline=None)
def test_keyed_uid_is_a_valid_uid(uid):
    new = keyed_uid(KEY, uid)
    assert len(new) <= 64
    assert UID_RE.match(new), new
    assert new.startswith("2.25.")


def test_keyed_uid_injective_on_large_sample():
    rng = random.Random(1234)
    sample = {
        ".".join(str(rng.randrange(0, 10**rng.randint(1, 9))) for _ in range(rng.randint(3, 10)))
        for _ in range(50_000)
    }
    mapped = {keyed_uid(KEY, uid) for uid in sample}
    assert len(mapped) == len(sample)
    # near neighbours (differing in one last digit) also map apart
    base = "1.2.826.0.1.3680043.2.1125.98765432.1."
    assert len({keyed_uid(KEY, base + str(i)) for i in range(10_000)}) == 10_000


def test_keyed_uid_stable_across_processes():
    uids = [f"1.2.3.{i}.{i * 7}" for i in range(200)]
    code = (
        "import json,sys; from medflow.deid import keyed_uid;"
        "key=sys.stdin.buffer.readline().strip(); uids=json.loads(sys.stdin.readline());"
        "print(json.dumps([keyed_uid(key,u) for u in uids]))"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    proc = subprocess.run(
        [sys.executable, "-c", code], input=KEY + b"\n" + json.dumps(uids).encode() + b"\n",
        capture_output=True, check=True, env=env,
    )
    assert json.loads(proc.stdout) == [keyed_uid(KEY, u) for u in uids]


@given(st.text(min_size=0, max_size=20))
@settings(max_examples=200, deadline=None)
def test_date_offset_in_range_and_never_zero(patient_id):
    offset = date_offset_days(KEY, patient_id)
    assert offset != 0 and -365 <= offset <= 365


def test_date_offsets_cover_both_signs():
    offsets = {date_offset_days(KEY, str(i)) for i in range(2000)}
    assert min(offsets) == -365 and max(offsets) == 365 and 0 not in offsets


def test_load_key_from_env(monkeypatch):
    monkeypatch.setenv("MEDFLOW_TEST_KEY", "s3cret-key-of-enough-length")
    assert load_key(env_var="MEDFLOW_TEST_KEY") == b"s3cret-key-of-enough-length"
    monkeypatch.delenv("MEDFLOW_TEST_KEY")
    with pytest.raises(DeidKeyError, match="MEDFLOW_TEST_KEY.*not set"):
        load_key(env_var="MEDFLOW_TEST_KEY")


def test_load_key_from_file_and_mode_warning(tmp_path):
    path = tmp_path / "deid.key"
    path.write_bytes(b"0123456789abcdef0123\n")
    path.chmod(0o600)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert load_key(key_file=path) == b"0123456789abcdef0123"
    path.chmod(0o644)
    with pytest.warns(UserWarning, match="readable by group or others"):
        load_key(key_file=path)


def test_load_key_errors(tmp_path):
    with pytest.raises(DeidKeyError, match="exactly one"):
        load_key()
    with pytest.raises(DeidKeyError, match="exactly one"):
        load_key(env_var="X", key_file=tmp_path / "k")
    with pytest.raises(DeidKeyError, match="missing.key: cannot read"):
        load_key(key_file=tmp_path / "missing.key")
    short = tmp_path / "short.key"
    short.write_bytes(b"abc")
    short.chmod(0o600)
    with pytest.raises(DeidKeyError, match="3 bytes; at least 16"):
        load_key(key_file=short)


@given(st.sets(uid_strategy, min_size=2, max_size=400))
@settings(max_examples=50, deadline=None)
def test_keyed_uid_injective_property(uids):
    assert len({keyed_uid(KEY, uid) for uid in uids}) == len(uids)
