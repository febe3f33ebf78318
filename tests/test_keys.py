"""Cache keys: canonical, order-independent, and pinned (a silent change of the key scheme fails here)."""

import hashlib
import json

from hypothesis import given
from hypothesis import strategies as st

from medflow.engine import keys

json_scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6),
                         st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=8))
json_objects = st.dictionaries(st.text(min_size=1, max_size=6), json_scalars, max_size=8)


@given(json_objects)
def test_key_order_never_changes_the_hash(params):
    reordered = dict(reversed(list(params.items())))
    assert keys.hash_json(params) == keys.hash_json(reordered)


@given(json_objects, json_objects)
def test_different_params_give_different_step_keys(a, b):
    if a != b:
        assert keys.step_key("k", "window", 1, a) != keys.step_key("k", "window", 1, b)


def test_canonical_json_is_sorted_and_compact():
    assert keys.canonical_json({"b": 1, "a": [1.5, "é"]}) == '{"a":[1.5,"é"],"b":1}'.encode()


def test_hash_json_is_sha256_of_canonical_json():
    value = {"width": 1500.0, "level": -600.0}
    expected = hashlib.sha256(b'{"level":-600.0,"width":1500.0}').hexdigest()
    assert keys.hash_json(value) == expected


def test_step_key_depends_on_version_and_previous_key():
    base = keys.step_key("prev", "window", 1, {"level": 40})
    assert keys.step_key("prev", "window", 2, {"level": 40}) != base
    assert keys.step_key("other", "window", 1, {"level": 40}) != base


def test_pinned_key_scheme():
    # If this fails, every user's cache is invalidated: bump CACHE_FORMAT_VERSION on purpose and re-pin.
    read = keys.read_key("f" * 64, "dicom_read", 1, {"duplicates": "first"})
    expected_read = hashlib.sha256(
        json.dumps({"fingerprint": "f" * 64, "format": keys.CACHE_FORMAT_VERSION, "params": {"duplicates": "first"},
                    "reader": "dicom_read", "version": 1}, separators=(",", ":"), sort_keys=True).encode()
    ).hexdigest()
    assert read == expected_read
    # 3: cached Samples name their source files by index, not path; 4: entries checked with BLAKE3
    assert keys.CACHE_FORMAT_VERSION == 4


nested_params = st.recursive(
    json_scalars,
    lambda children: st.one_of(st.lists(children, max_size=4), st.dictionaries(st.text(max_size=6), children, max_size=4)),
    max_leaves=12,
)
field_values = st.one_of(st.text(max_size=70), st.just(keys.KeyTemplate._SLOT), st.from_regex(r"[0-9a-f]{64}", fullmatch=True))


@given(st.dictionaries(st.text(max_size=6), nested_params, max_size=6), field_values, st.text(max_size=10))
def test_a_key_template_gives_the_key_hash_json_gives(params, value, name):
    step = keys.step_key_template(name, 3, params)
    assert step.key(value) == keys.step_key(value, name, 3, params)
    read = keys.read_key_template(name, 2, params)
    assert read.key(value) == keys.read_key(value, name, 2, params)


def test_params_holding_the_slot_text_fall_back_to_the_plain_hash():
    params = {"note": keys.KeyTemplate._SLOT, "nested": [keys.KeyTemplate._SLOT]}
    template = keys.step_key_template("window", 1, params)
    assert template._parts is None
    assert template.key("a" * 64) == keys.step_key("a" * 64, "window", 1, params)
